"""connect_host / connect_state / connect_llm resolve through the registries."""

import pytest

from agex import StateConfig, connect_host, connect_llm, connect_state, hookimpl
from agex.errors import UnknownProviderError


class Recorder:
    def __init__(self, **options):
        self.options = options


class Providers:
    @hookimpl
    def agex_register_hosts(self, registry):
        registry.register("recorder", Recorder)

    @hookimpl
    def agex_register_llms(self, registry):
        registry.register("recorder", Recorder)


@pytest.fixture
def recorder(register_plugin) -> None:
    register_plugin(Providers(), name="recorder-plugin")


def test_connect_host_passes_kwargs(recorder) -> None:
    host = connect_host(provider="recorder", url="http://x:8000", timeout=5.0)
    assert host.options == {"url": "http://x:8000", "timeout": 5.0}


def test_connect_host_unknown() -> None:
    with pytest.raises(UnknownProviderError, match="No host provider named 'nope'"):
        connect_host(provider="nope")


def test_connect_host_needs_a_name() -> None:
    with pytest.raises(TypeError, match="provider must be a provider name"):
        connect_host(provider=None)


def test_connect_llm_reads_the_environment(recorder, monkeypatch) -> None:
    monkeypatch.setenv("AGEX_LLM_PROVIDER", "recorder")
    monkeypatch.setenv("AGEX_LLM_MODEL", "m-1")
    assert connect_llm().options == {"model": "m-1"}
    assert connect_llm(model="m-2", temperature=0).options == {"model": "m-2", "temperature": 0}


def test_connect_llm_without_provider_says_how(monkeypatch) -> None:
    monkeypatch.delenv("AGEX_LLM_PROVIDER", raising=False)
    with pytest.raises(ValueError, match="set AGEX_LLM_PROVIDER"):
        connect_llm()


def test_connect_state_defaults() -> None:
    assert connect_state() == StateConfig("versioned", "memory", None)
    assert connect_state(type="live") == StateConfig("live", "memory", None)


def test_ephemeral_keeps_nothing() -> None:
    assert connect_state(type="ephemeral") == StateConfig("ephemeral", None, None)


def test_connect_state_bad_type() -> None:
    with pytest.raises(ValueError, match="one of versioned, live, ephemeral; got 'permanent'"):
        connect_state(type="permanent")


def test_connect_state_unknown_storage() -> None:
    with pytest.raises(UnknownProviderError, match="Did you mean 'memory'"):
        connect_state(storage="memroy")


def test_state_config_is_frozen() -> None:
    config = connect_state()
    with pytest.raises(AttributeError):
        config.type = "live"
