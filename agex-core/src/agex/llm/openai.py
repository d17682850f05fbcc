"""LLM "openai": chat completions, streamed, through the official SDK. Works with any server
that speaks the same API (``base_url=``): Ollama, vLLM, LM Studio... A server of the caller's
may need no key: with ``base_url`` and no key set, requests go without an Authorization
header."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from agex.llm import Message
from agex.llm.sdk import KEY_VARIABLES, SDKClient

#: The SDK wants a key even for a server that needs none: it gets this one, never sent.
NO_KEY = "unused"


class OpenAILLM(SDKClient):
    provider = "openai"
    requires = ("openai",)
    key_envs = KEY_VARIABLES["openai"]
    default_model = "gpt-4.1-mini"

    def _connect(self, key: str | None) -> Any:
        import openai

        return openai.AsyncOpenAI(
            api_key=key or NO_KEY,
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    async def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        import openai

        client = self.client()
        options = dict(self.options)
        if client.api_key == NO_KEY:  # no Authorization header, rather than a made-up key
            headers = {"Authorization": openai.Omit(), **options.get("extra_headers", {})}
            options["extra_headers"] = headers
        try:
            stream = await client.chat.completions.create(
                model=self.model, messages=list(messages), stream=True, **options
            )
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
        except openai.OpenAIError as exc:
            raise self.explain(exc, lambda e: getattr(e, "status_code", None)) from None
