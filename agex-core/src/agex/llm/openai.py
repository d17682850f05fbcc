"""LLM "openai": chat completions, streamed, through the official SDK. Works with any server
that speaks the same API (``base_url=``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from agex.llm import Message
from agex.llm.sdk import SDKClient


class OpenAILLM(SDKClient):
    provider = "openai"
    requires = ("openai",)
    key_env = "OPENAI_API_KEY"
    default_model = "gpt-4.1-mini"

    def _connect(self, key: str) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
        )

    async def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        import openai

        client = self.client()
        try:
            stream = await client.chat.completions.create(
                model=self.model, messages=list(messages), stream=True, **self.options
            )
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except openai.OpenAIError as exc:
            raise self.explain(exc, lambda e: getattr(e, "status_code", None)) from None
