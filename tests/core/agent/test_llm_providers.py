"""The openai, anthropic and gemini providers, through their official SDKs, against a real
HTTP server on loopback that speaks each provider's streaming format."""

import asyncio
import importlib.util
import pickle

import pytest

from agex import Agent, connect_llm
from agex.errors import LLMError, ProviderNotInstalledError

from .fake_llm_server import error, serving, stall, stream

#: Provider: (its key's variable, the base URL's path, the path a streamed request goes to).
PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "/v1", "/v1/chat/completions"),
    "anthropic": ("ANTHROPIC_API_KEY", "", "/v1/messages"),
    "gemini": ("GEMINI_API_KEY", "", "/v1/models/fake-model:streamGenerateContent?alt=sse"),
}
#: The module each provider's SDK is imported as.
SDKS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google.genai"}
#: Every variable a provider may read its key from.
KEY_ENVS = {"openai": ["OPENAI_API_KEY"], "anthropic": ["ANTHROPIC_API_KEY"]}
KEY_ENVS["gemini"] = ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
#: An option each provider sends in its request, and where it lands in the request's body.
OPTION = {
    "openai": ("max_tokens", lambda body: body["max_tokens"]),
    "anthropic": ("max_tokens", lambda body: body["max_tokens"]),
    "gemini": ("max_output_tokens", lambda body: body["generationConfig"]["maxOutputTokens"]),
}


def installed(provider: str) -> bool:
    try:
        return importlib.util.find_spec(SDKS[provider]) is not None
    except ModuleNotFoundError:  # google, for google.genai
        return False


def sent_key(request) -> str:
    """The key a request carried, in whichever header its API puts it."""
    headers = request["headers"]
    if "authorization" in headers:
        return headers["authorization"].removeprefix("Bearer ")
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or ""


def pieces(llm, messages=None) -> list[str]:
    async def run():
        return [p async for p in llm.stream(messages or [{"role": "user", "content": "hi"}])]

    return asyncio.run(run())


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request, monkeypatch):
    if not installed(request.param):
        pytest.skip(f"the {request.param} SDK is not installed in this session")
    for name in KEY_ENVS[request.param]:
        monkeypatch.delenv(name, raising=False)
    key_env, _, _ = PROVIDERS[request.param]
    monkeypatch.setenv(key_env, "test-key-123")
    return request.param


@pytest.fixture
def server():
    with serving() as (fake, url):
        yield fake, url


def connect(provider, url, **options):
    _, prefix, _ = PROVIDERS[provider]
    return connect_llm(provider=provider, model="fake-model", base_url=url + prefix, **options)


def test_streams_pieces_as_they_come(provider, server) -> None:
    fake, url = server
    fake.script.append(stream("Hel", "lo ", "world"))
    llm = connect(provider, url)
    assert pieces(llm) == ["Hel", "lo ", "world"]
    (request,) = fake.requests
    assert request["path"] == PROVIDERS[provider][2]  # gemini's names the model and streaming
    if provider != "gemini":
        assert request["body"]["stream"] is True
        assert request["body"]["model"] == "fake-model"
    assert sent_key(request) == "test-key-123"


def test_system_message_goes_where_the_api_wants_it(provider, server) -> None:
    fake, url = server
    fake.script.append(stream("ok"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    pieces(connect(provider, url), messages)
    body = fake.requests[0]["body"]
    if provider == "anthropic":
        assert body["system"] == "Be brief."
        assert body["messages"] == [{"role": "user", "content": "Q"}]
    elif provider == "gemini":
        assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Q"}]}]
    else:
        assert body["messages"] == messages


def test_transient_errors_are_retried(provider, server) -> None:
    fake, url = server
    fake.script += [error(429), error(503), stream("fine")]
    assert pieces(connect(provider, url, max_retries=3)) == ["fine"]
    assert len(fake.requests) == 3


def test_persistent_errors_give_a_clear_error(provider, server) -> None:
    fake, url = server
    fake.script += [error(500)] * 3
    with pytest.raises(LLMError, match="answered HTTP 500 after 2 retries"):
        pieces(connect(provider, url, max_retries=2))
    assert len(fake.requests) == 3


def test_timeouts_are_retried_then_explained(provider, server) -> None:
    fake, url = server
    fake.script += [stall(1.0), stall(1.0)]
    with pytest.raises(LLMError, match=r"did not answer within 0\.3s after 1 retries"):
        pieces(connect(provider, url, timeout=0.3, max_retries=1))
    assert len(fake.requests) == 2  # the retry the message counts was made


def test_unreachable_server(provider) -> None:
    llm = connect(provider, "http://127.0.0.1:9", max_retries=0)
    with pytest.raises(LLMError, match="could not reach"):
        pieces(llm)


@pytest.mark.parametrize("where", ["the provider's API", "a server of ours"])
def test_missing_key_is_named(provider, server, monkeypatch, where) -> None:
    _, url = server
    monkeypatch.delenv(PROVIDERS[provider][0])
    if where == "the provider's API":
        llm = connect_llm(provider=provider, model="fake-model")
    else:
        llm = connect(provider, url)
        if provider == "openai":  # an OpenAI-compatible server may need no key
            assert llm.key() is None
            return
    names = " or ".join(KEY_ENVS[provider])
    with pytest.raises(LLMError, match=f"{names} is not set where the loop runs"):
        pieces(llm)


def test_a_named_variable_holds_the_key(provider, server, monkeypatch) -> None:
    fake, url = server
    fake.script.append(stream("ok"))
    monkeypatch.setenv("VLLM_API_KEY", "other-key-456")
    llm = connect(provider, url, key_env="VLLM_API_KEY")
    assert pieces(llm) == ["ok"]
    assert sent_key(fake.requests[0]) == "other-key-456"  # not the provider's usual variable
    config = llm.config()
    assert config["key_env"] == "VLLM_API_KEY"
    assert "other-key-456" not in repr(config)
    assert b"other-key-456" not in pickle.dumps(llm)
    assert connect_llm(**config).config() == config  # what is rebuilt where the loop runs


def test_a_named_variable_must_be_set(provider, server, monkeypatch) -> None:
    _, url = server
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    llm = connect(provider, url, key_env="VLLM_API_KEY")  # even a server of ours: it was named
    with pytest.raises(LLMError, match="VLLM_API_KEY is not set where the loop runs"):
        pieces(llm)


def test_config_and_pickles_carry_no_key(provider, server) -> None:
    _, url = server
    fake, _ = server
    fake.script.append(stream("x"))
    option, sent = OPTION[provider]
    llm = connect(provider, url, **{option: 100})
    pieces(llm)  # a client now exists, holding the key
    config = llm.config()
    assert config["model"] == "fake-model"
    assert config[option] == 100
    assert sent(fake.requests[0]["body"]) == 100  # options reach the request
    assert "test-key-123" not in repr(config)
    data = pickle.dumps(llm)
    assert b"test-key-123" not in data
    copy = pickle.loads(data)
    assert copy.config() == llm.config()


def test_an_agent_solves_a_task_through_the_sdk(provider, server) -> None:
    fake, url = server
    fake.script += [
        stream("Sum.\n```py", "thon\nx = a + b\n```"),
        stream("Done.\n```python\ntask_success(x)\n```"),
    ]
    agent = Agent(llm=connect(provider, url))

    @agent.task
    def add(a: int, b: int) -> int:
        """Add."""

    tokens = []
    assert add(2, 3, on_token=tokens.append) == 5
    assert "".join(tokens).startswith("Sum.\n```python")
    body = fake.requests[1]["body"]
    second = body["contents"] if provider == "gemini" else body["messages"]
    assert second[-1]["role"] == "user"  # the step's feedback went back to the model
    assert "Sum." in str(second[-2])  # after the model's own reply


def test_an_openai_compatible_server_may_need_no_key(server, monkeypatch) -> None:
    if not installed("openai"):
        pytest.skip("the openai SDK is not installed in this session")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake, url = server
    fake.script += [stream("local"), stream("again")]
    llm = connect_llm(provider="openai", model="llama3.2", base_url=url + "/v1", max_tokens=9)
    assert pieces(llm) == ["local"]
    assert pieces(llm) == ["again"]
    for request in fake.requests:
        assert "authorization" not in request["headers"]  # no made-up key on the wire
        assert request["body"]["max_tokens"] == 9
    monkeypatch.setenv("OPENAI_API_KEY", "test-key-123")  # a key, where there is one, goes
    fake.script.append(stream("keyed"))
    assert pieces(connect_llm(provider="openai", base_url=url + "/v1")) == ["keyed"]
    assert sent_key(fake.requests[-1]) == "test-key-123"


def test_gemini_reads_google_api_key_when_gemini_api_key_is_unset(server, monkeypatch) -> None:
    if not installed("gemini"):
        pytest.skip("the gemini SDK is not installed in this session")
    fake, url = server
    fake.script += [stream("a"), stream("b")]
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", "google-key-789")
    assert pieces(connect_llm(provider="gemini", model="fake-model", base_url=url)) == ["a"]
    assert sent_key(fake.requests[0]) == "google-key-789"
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-321")  # both set: the Gemini one
    assert pieces(connect_llm(provider="gemini", model="fake-model", base_url=url)) == ["b"]
    assert sent_key(fake.requests[1]) == "gemini-key-321"


def test_gemini_options_that_are_not_settings_are_named(server, monkeypatch) -> None:
    if not installed("gemini"):
        pytest.skip("the gemini SDK is not installed in this session")
    monkeypatch.setenv("GEMINI_API_KEY", "test-key-123")
    fake, url = server
    llm = connect_llm(provider="gemini", base_url=url, max_tokens=100)  # openai's name
    with pytest.raises(LLMError, match=r"\['max_tokens'\] are not all settings of .*Config"):
        pieces(llm)
    assert fake.requests == []


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_missing_sdk_says_what_to_install(name) -> None:
    if installed(name):
        pytest.skip(f"the {name} SDK is installed in this session")
    with pytest.raises(ProviderNotInstalledError) as info:
        connect_llm(provider=name)
    assert f'pip install "agex-core[{name}]"' in str(info.value)
