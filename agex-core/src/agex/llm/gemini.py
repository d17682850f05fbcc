"""LLM "gemini": Gemini's generateContent, streamed, through Google's official SDK
(google-genai). The key is GEMINI_API_KEY, or else GOOGLE_API_KEY."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from agex.errors import LLMError
from agex.llm import Message
from agex.llm.sdk import KEY_VARIABLES, SDKClient

#: Google's API calls the assistant "model".
_ROLES = {"user": "user", "assistant": "model"}
#: Settings of GenerateContentConfig that route a request rather than shape it: its
#: http_options replace, per request, the client's address, headers, API version and HTTP
#: client. Compared without underscores and case, as the SDK also takes ``httpOptions``.
_ROUTING = frozenset({"httpoptions"})


class GeminiLLM(SDKClient):
    provider = "gemini"
    requires = ("google-genai",)
    key_envs = KEY_VARIABLES["gemini"]
    default_model = "gemini-2.5-flash"

    def __init__(self, *args: Any, **options: Any) -> None:
        routing = sorted(n for n in options if n.replace("_", "").lower() in _ROUTING)
        if routing:
            raise ValueError(
                f"gemini: do not pass {', '.join(routing)}; where and how requests go is set "
                "by base_url, timeout and max_retries (and the key by key_env), which agex "
                "checks, and a per-request http_options would bypass them"
            )
        super().__init__(*args, **options)

    def _connect(self, key: str | None) -> Any:
        import httpx2
        from google import genai
        from google.genai import types

        # An HTTP client of ours, so that the SDK never picks aiohttp (when installed), whose
        # timeouts are not retried and cap a whole streamed reply: here, as for the other
        # providers, ``timeout`` is a wait for the server's next bytes. (The SDK also tells
        # Google's server to give up after that long, in its X-Server-Timeout header.)
        transport = httpx2.AsyncClient(timeout=self.timeout)
        options = types.HttpOptions(
            base_url=self.base_url,
            timeout=round(self.timeout * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(
                attempts=self.max_retries + 1, initial_delay=0.5, max_delay=8.0, jitter=0.25
            ),
            httpx_async_client=transport,
        )
        return genai.Client(api_key=key, vertexai=False, http_options=options)

    async def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        import httpx2
        from google.genai import errors, types

        client = self.client()
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        contents = [
            types.Content(role=_ROLES[m["role"]], parts=[types.Part(text=m["content"])])
            for m in messages
            if m["role"] != "system"
        ]
        try:
            config = types.GenerateContentConfig(system_instruction=system or None, **self.options)
        except ValueError as exc:
            raise LLMError(
                f"gemini: the options {sorted(self.options)} are not all settings of "
                f"google.genai.types.GenerateContentConfig (such as temperature or "
                f"max_output_tokens): {exc}"
            ) from None
        try:
            stream = await client.aio.models.generate_content_stream(
                model=self.model, contents=contents, config=config
            )
            async for chunk in stream:
                for candidate in (chunk.candidates or ())[:1]:  # one reply, whatever was asked
                    for part in (candidate.content and candidate.content.parts) or ():
                        if part.text and not part.thought:  # thoughts are not the reply
                            yield part.text
        except (errors.APIError, httpx2.HTTPError, OSError) as exc:
            raise self.explain(
                exc, lambda e: e.code if isinstance(e, errors.APIError) else None
            ) from None
