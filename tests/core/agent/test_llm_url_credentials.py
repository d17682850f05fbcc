"""Item 6: "a key never travels with the agent". The guard is a heuristic on the text
(``looks_like_key``: a word of 20+ characters starting with a known provider prefix, or
"Bearer "), so credentials in ``base_url`` that do not look like an OpenAI/Google key are
kept in config(), shipped to the server or container in the envelope, sent back in every
outcome (``with_model``), and printed in LLMError messages ("could not reach <base_url>")."""

from __future__ import annotations

import asyncio
import json

import pytest

from agex.errors import LLMError
from agex.llm.gemini import GeminiLLM
from agex.llm.openai import OpenAILLM

from .fake_llm_server import serving, stream

SECRET = "Zq8vL2mN4pR6tX0yB3dF5hJ7kA9cE1gS"  # e.g. an Azure/Mistral/Together-style key

URLS = [
    f"https://svc:{SECRET}@llm-proxy.internal/v1",  # credentials in the userinfo
    f"https://llm-proxy.internal/v1?api-key={SECRET}",  # a key in the query
]


@pytest.mark.parametrize("url", URLS, ids=["userinfo", "query"])
@pytest.mark.parametrize("cls", [OpenAILLM, GeminiLLM], ids=lambda c: c.provider)
def test_a_base_url_carrying_credentials_is_refused(cls, url) -> None:
    try:
        llm = cls(model="m", base_url=url)
    except ValueError:
        return  # refused: safe
    assert SECRET not in str(llm.config()), "the credential travels in config()"


def test_llm_errors_do_not_print_credentials_of_base_url(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    try:
        llm = OpenAILLM(model="m", base_url=f"http://svc:{SECRET}@127.0.0.1:9/v1", max_retries=0)
    except ValueError:
        return

    async def ask() -> None:
        async for _ in llm.stream([{"role": "user", "content": "hi"}]):
            pass

    with pytest.raises(LLMError) as caught:
        asyncio.run(ask())
    assert SECRET not in str(caught.value), str(caught.value)


@pytest.mark.parametrize(
    "options",
    [
        {"extra_headers": {"api-key": SECRET}},
        {"extra_headers": {"Authorization": "Basic " + SECRET}},
        {"extra_headers": {"X-Api-Key": SECRET}},
        {"extra_query": {"key": SECRET}},
        {"extra_query": {"access_token": SECRET}},
        {"http_options": {"headers": {"x-goog-api-key": SECRET}}},
    ],
    ids=lambda options: json.dumps(options)[:40],
)
def test_header_or_query_mappings_with_credentials_are_refused(options) -> None:
    (name,) = options
    with pytest.raises(ValueError, match=f"do not pass {name};.*key_env") as refused:
        OpenAILLM(model="m", **options)
    assert SECRET not in str(refused.value)


def test_mappings_that_are_not_sent_as_headers_keep_their_names() -> None:
    """A JSON schema may well have a property called "token"."""
    schema = {"type": "object", "properties": {"token": {"type": "string"}}}
    llm = OpenAILLM(
        model="m",
        response_format={"type": "json_schema", "json_schema": {"schema": schema}},
        extra_headers={"X-Request-Source": "agex"},
    )
    assert llm.config()["extra_headers"] == {"X-Request-Source": "agex"}


def test_an_llm_error_never_holds_the_key_read_nor_any_line_of_it(monkeypatch) -> None:
    """An SDK may quote the key it was given (a header it refused); the error says what
    went wrong, with the key's every line hidden."""
    pytest.importorskip("google.genai", reason="the gemini SDK is not installed")
    key = "AIzaSyLocalKey0123456789abcdef\nsecond-line-of-the-key"
    monkeypatch.setenv("MULTILINE_API_KEY", key)

    async def ask(llm: GeminiLLM) -> None:
        async for _ in llm.stream([{"role": "user", "content": "hi"}]):
            pass

    with serving() as (fake, url):
        fake.script = [stream("never sent")]
        llm = GeminiLLM(model="m", base_url=url, key_env="MULTILINE_API_KEY", max_retries=0)
        with pytest.raises(LLMError) as caught:
            asyncio.run(ask(llm))
    assert not fake.requests
    text = str(caught.value)
    assert "AIzaSyLocalKey" not in text
    assert "second-line-of-the-key" not in text
    assert "***" in text
    assert "Error:" in text, "the exception's type is kept"
