"""Gemini's GenerateContentConfig takes ``http_options`` that replace, per request, the
client's address, headers, API version and HTTP client: the provider refuses them wherever
it is made, so that ``base_url`` (which a server's gate checks) alone says where requests go."""

from __future__ import annotations

import pytest

from agex import connect_llm


@pytest.mark.parametrize(
    "options",
    [
        {"http_options": {"base_url": "http://elsewhere.example/"}},
        {"httpOptions": {"base_url": "http://elsewhere.example/"}},  # the SDK's alias
        {"http_options": {"async_client_args": {"proxy": "http://proxy.example:3128"}}},
        {"http_options": None},
    ],
)
def test_gemini_refuses_http_options_and_names_what_to_use(options) -> None:
    [name] = options
    with pytest.raises(ValueError, match="do not pass") as refused:
        connect_llm(provider="gemini", model="m", **options)
    message = str(refused.value)
    assert message.startswith(f"gemini: do not pass {name};"), message
    assert "base_url" in message, message
    assert "timeout" in message, message
    assert "elsewhere" not in message, message
    assert "proxy.example" not in message, message


def test_gemini_still_takes_its_generation_settings() -> None:
    pytest.importorskip("google.genai", reason="google-genai is not installed")
    llm = connect_llm(provider="gemini", model="m", temperature=0.3, max_output_tokens=10)
    assert llm.config()["temperature"] == 0.3  # type: ignore[attr-defined]
