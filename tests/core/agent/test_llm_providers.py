"""The openai and anthropic providers, through their official SDKs, against a real HTTP
server on loopback that speaks each provider's streaming format."""

import asyncio
import importlib.util
import pickle

import pytest

from agex import Agent, connect_llm
from agex.errors import LLMError, ProviderNotInstalledError

from .fake_llm_server import error, serving, stall, stream

PROVIDERS = {
    "openai": ("OPENAI_API_KEY", "/v1", "/v1/chat/completions"),
    "anthropic": ("ANTHROPIC_API_KEY", "", "/v1/messages"),
}


def installed(sdk: str) -> bool:
    return importlib.util.find_spec(sdk) is not None


def pieces(llm, messages=None) -> list[str]:
    async def run():
        return [p async for p in llm.stream(messages or [{"role": "user", "content": "hi"}])]

    return asyncio.run(run())


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request, monkeypatch):
    if not installed(request.param):
        pytest.skip(f"the {request.param} SDK is not installed in this session")
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
    assert request["path"] == PROVIDERS[provider][2]
    assert request["body"]["stream"] is True
    assert request["body"]["model"] == "fake-model"
    sent = request["headers"]
    assert "test-key-123" in (sent.get("authorization", "") + sent.get("x-api-key", ""))


def test_system_message_goes_where_the_api_wants_it(provider, server) -> None:
    fake, url = server
    fake.script.append(stream("ok"))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]
    pieces(connect(provider, url), messages)
    body = fake.requests[0]["body"]
    if provider == "anthropic":
        assert body["system"] == "Be brief."
        assert body["messages"] == [{"role": "user", "content": "Q"}]
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


def test_unreachable_server(provider) -> None:
    llm = connect(provider, "http://127.0.0.1:9", max_retries=0)
    with pytest.raises(LLMError, match="could not reach"):
        pieces(llm)


def test_missing_key_is_named(provider, server, monkeypatch) -> None:
    _, url = server
    key_env = PROVIDERS[provider][0]
    monkeypatch.delenv(key_env)
    with pytest.raises(LLMError, match=f"{key_env} is not set where the loop runs"):
        pieces(connect(provider, url))


def test_config_and_pickles_carry_no_key(provider, server) -> None:
    _, url = server
    fake, _ = server
    fake.script.append(stream("x"))
    llm = connect(provider, url, max_tokens=100)
    pieces(llm)  # a client now exists, holding the key
    config = llm.config()
    assert config["model"] == "fake-model"
    assert config["max_tokens"] == 100
    assert fake.requests[0]["body"]["max_tokens"] == 100  # options reach the request
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
    second = fake.requests[1]["body"]["messages"]
    assert second[-1]["role"] == "user"  # the step's feedback went back to the model


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_missing_sdk_says_what_to_install(name) -> None:
    if installed(name):
        pytest.skip(f"the {name} SDK is installed in this session")
    with pytest.raises(ProviderNotInstalledError) as info:
        connect_llm(provider=name)
    assert f'pip install "agex-core[{name}]"' in str(info.value)
