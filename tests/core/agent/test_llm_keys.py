"""Keys never travel inside an agent: a provider takes the name of the variable that holds
its key, and refuses a key given in its place. No SDK is needed to check this: the providers'
modules import theirs only when they talk to a model."""

import pickle

import pytest

from agex.errors import LLMError
from agex.llm.anthropic import AnthropicLLM
from agex.llm.gemini import GeminiLLM
from agex.llm.openai import OpenAILLM

CLIENTS = [OpenAILLM, AnthropicLLM, GeminiLLM]
KEYS = [
    "sk-proj-Abc123Def456Ghi789Jkl012",
    "sk-ant-api03-Abc123Def456Ghi789Jkl012",
    "AIzaSyAbc123Def456Ghi789Jkl012Mno345",
]


@pytest.fixture(params=CLIENTS, ids=lambda c: c.provider)
def client(request):
    return request.param


@pytest.mark.parametrize("key", KEYS)
def test_a_key_given_as_key_env_is_refused_without_repeating_it(client, key) -> None:
    with pytest.raises(
        ValueError, match="key_env takes the name of the environment variable"
    ) as info:
        client(key_env=key)
    assert key not in str(info.value)  # an error message ends up in logs


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",  # a variable, but no API key: a server's other secrets
        "AGEX_STATE_API_KEY",  # agex's own variables are never a model's key
        "VLLM KEY",
        "",
        "VLLM_API_KEY\n",
    ],
)
def test_key_env_names_only_api_key_variables(client, name) -> None:
    with pytest.raises(ValueError, match='ending in _API_KEY \\(like key_env="VLLM_API_KEY"\\)'):
        client(key_env=name)


def test_key_env_must_be_a_string(client) -> None:
    with pytest.raises(ValueError, match="key_env takes the name"):
        client(key_env=42)


@pytest.mark.parametrize(
    "options",
    [
        {"api_key": "anything"},
        {"extra_headers": {"Authorization": "Bearer abc"}},
        {"extra_headers": {"X-Key": KEYS[0]}},
        {"user": KEYS[2]},
    ],
    ids=["api_key", "bearer", "key-in-header", "key-as-value"],
)
def test_options_holding_a_key_are_refused(client, options) -> None:
    (name,) = options
    with pytest.raises(ValueError, match=f"do not pass {name}; the key is read from .*_KEY"):
        client(**options)


def test_a_key_inside_base_url_is_refused(client) -> None:
    with pytest.raises(ValueError, match="do not pass base_url with a key in it"):
        client(base_url=f"https://proxy.example/v1?key={KEYS[2]}")
    assert client(base_url="http://127.0.0.1:11434/v1").base_url == "http://127.0.0.1:11434/v1"


def test_the_refusal_names_the_variables_read(monkeypatch) -> None:
    with pytest.raises(ValueError, match="read from GEMINI_API_KEY or GOOGLE_API_KEY where"):
        GeminiLLM(api_key="x")
    with pytest.raises(ValueError, match="read from MY_API_KEY where"):
        OpenAILLM(api_key="x", key_env="MY_API_KEY")


def test_ordinary_options_are_kept(client) -> None:
    llm = client(model="m", key_env="LOCAL_API_KEY", temperature=0.2, stop=["```\n"])
    assert llm.config()["key_env"] == "LOCAL_API_KEY"
    assert llm.config()["temperature"] == 0.2
    assert "key_env" not in client(model="m").config()  # the provider's own variables


def test_the_key_is_read_where_the_loop_runs(client, monkeypatch) -> None:
    llm = client(model="m", key_env="FAR_API_KEY")
    monkeypatch.delenv("FAR_API_KEY", raising=False)
    data = pickle.dumps(llm)
    monkeypatch.setenv("FAR_API_KEY", "the-far-key")
    assert pickle.loads(data).key() == "the-far-key"
    monkeypatch.delenv("FAR_API_KEY")
    with pytest.raises(LLMError, match="FAR_API_KEY is not set where the loop runs"):
        pickle.loads(data).key()


def test_only_openai_may_go_keyless_and_only_to_a_server_of_the_caller(monkeypatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert OpenAILLM(base_url="http://127.0.0.1:11434/v1").key() is None
    with pytest.raises(LLMError, match="OPENAI_API_KEY is not set"):
        OpenAILLM().key()
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY is not set"):
        AnthropicLLM(base_url="http://127.0.0.1:8080").key()
    with pytest.raises(LLMError, match="GEMINI_API_KEY or GOOGLE_API_KEY is not set"):
        GeminiLLM(base_url="http://127.0.0.1:8080").key()
