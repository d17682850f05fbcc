"""LLM "anthropic": the Messages API, streamed, through the official SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from agex.llm import Message
from agex.llm.sdk import KEY_VARIABLES, SDKClient


class AnthropicLLM(SDKClient):
    provider = "anthropic"
    requires = ("anthropic",)
    key_envs = KEY_VARIABLES["anthropic"]
    default_model = "claude-sonnet-4-5"

    def _connect(self, key: str | None) -> Any:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=self.max_retries
        )

    async def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        import anthropic

        client = self.client()
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [dict(m) for m in messages if m["role"] != "system"]
        options = {"max_tokens": 4096, **self.options}
        if system:
            options["system"] = system
        try:
            stream = await client.messages.create(
                model=self.model, messages=turns, stream=True, **options
            )
            async for event in stream:
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    yield event.delta.text
        except anthropic.AnthropicError as exc:
            raise self.explain(exc, lambda e: getattr(e, "status_code", None)) from None
