"""A provider's options are checked against its factory's signature before it is called:
a required option left out, or one it does not take, is named with what to do, for every
provider (core's, ours, a third party's), never as a TypeError about a class inside the
plugin. An error the factory raises itself reaches the caller as it is."""

from __future__ import annotations

from typing import Any

import pytest

from agex import connect_host, connect_llm, hookimpl, plugins
from agex.errors import ProviderOptionError


class Made:
    """What the third party's factories build: the options they were given."""

    def __init__(self, **options: Any) -> None:
        self.options = options


class Service:
    """A provider that is a class: its __init__'s parameters are its options."""

    def __init__(self, endpoint: str, retries: int = 3) -> None:
        self.endpoint, self.retries = endpoint, retries


CALLS: list[str] = []


def make_host(url: str, token: str | None = None, *, timeout: float = 30.0) -> Made:
    CALLS.append("make_host")
    return Made(url=url, token=token, timeout=timeout)


def make_open_host(**options: Any) -> Made:
    return Made(**options)


def make_broken_host(url: str) -> Made:
    # A bug inside the factory: a TypeError about a missing argument, as Python words it.
    def connect(url: str, region: str) -> None: ...

    connect(url)  # type: ignore[call-arg]
    return Made(url=url)


def make_llm(model: str | None, api_base: str) -> Made:
    return Made(model=model, api_base=api_base)


def make_storage(path: str, bucket: str) -> Made:
    return Made(path=path, bucket=bucket)


class ThirdParty:
    """A third party's plugin, registered in-process."""

    @hookimpl
    def agex_register_hosts(self, registry: Any) -> None:
        registry.register("acme", make_host)
        registry.register("acme-open", make_open_host)
        registry.register("acme-broken", make_broken_host)
        registry.register("acme-service", Service)

    @hookimpl
    def agex_register_llms(self, registry: Any) -> None:
        registry.register("acme-llm", make_llm)

    @hookimpl
    def agex_register_storages(self, registry: Any) -> None:
        registry.register("acme-bucket", make_storage)


@pytest.fixture(autouse=True)
def third_party(register_plugin: Any) -> None:
    register_plugin(ThirdParty(), name="acme-plugin")
    CALLS.clear()


def test_a_missing_required_option_is_named_with_the_call_that_passes_it() -> None:
    with pytest.raises(ValueError, match="requires the option 'url'") as caught:
        connect_host(provider="acme")
    error = caught.value
    assert isinstance(error, ProviderOptionError)
    assert 'connect_host(provider="acme", url=...)' in str(error)
    assert (error.kind, error.provider) == ("host", "acme")
    assert error.missing == ("url",)
    assert error.unknown == ()
    assert error.accepted == ("url", "token", "timeout")
    assert CALLS == [], "the factory is not called with options that do not fit"


def test_an_unknown_option_lists_what_the_provider_takes_and_a_close_match() -> None:
    with pytest.raises(TypeError) as caught:  # a TypeError, as Python's own for a bad keyword
        connect_host(provider="acme", url="http://a", tokn="secret")
    error = caught.value
    assert isinstance(error, ProviderOptionError)
    assert isinstance(error, ValueError)
    assert "does not take the option 'tokn'" in str(error)
    assert "Did you mean 'token'?" in str(error)
    assert "It takes: url, token, timeout." in str(error)
    assert error.unknown == ("tokn",)
    assert "Made" not in str(error)


def test_no_close_match_is_suggested_when_there_is_none() -> None:
    with pytest.raises(ProviderOptionError) as caught:
        connect_host(provider="acme", url="http://a", gpu="A10G")
    assert "Did you mean" not in str(caught.value)
    assert "It takes: url, token, timeout." in str(caught.value)


def test_a_misspelt_required_option_is_both_missing_and_unknown_in_one_error() -> None:
    with pytest.raises(ProviderOptionError) as caught:
        connect_host(provider="acme", ur="http://a")
    error = caught.value
    assert (error.missing, error.unknown) == (("url",), ("ur",))
    assert "requires the option 'url'" in str(error)
    assert "Did you mean 'url'?" in str(error)


def test_options_that_fit_reach_the_factory() -> None:
    built = connect_host(provider="acme", url="http://a", timeout=5.0)
    assert built.options == {"url": "http://a", "token": None, "timeout": 5.0}
    assert CALLS == ["make_host"]


def test_a_factory_taking_any_options_accepts_anything() -> None:
    built = connect_host(provider="acme-open", anything="goes", at=1)
    assert built.options == {"anything": "goes", "at": 1}


def test_a_class_registered_as_the_factory_is_checked_by_its_init() -> None:
    with pytest.raises(ProviderOptionError, match="requires the option 'endpoint'") as caught:
        connect_host(provider="acme-service", retries=1)
    assert caught.value.accepted == ("endpoint", "retries")
    assert connect_host(provider="acme-service", endpoint="e").retries == 3


def test_an_error_raised_inside_the_factory_is_not_taken_for_a_missing_option() -> None:
    with pytest.raises(TypeError, match="missing 1 required positional argument") as caught:
        connect_host(provider="acme-broken", url="http://a")
    assert not isinstance(caught.value, ProviderOptionError)
    assert "region" in str(caught.value)


def test_a_model_provider_names_connect_llm() -> None:
    with pytest.raises(ValueError, match="requires the option 'api_base'") as caught:
        connect_llm(provider="acme-llm", model="m1")
    assert 'connect_llm(provider="acme-llm", api_base=...)' in str(caught.value)
    built = connect_llm(provider="acme-llm", model="m1", api_base="http://llm")
    assert built.options == {"model": "m1", "api_base": "http://llm"}


def test_a_storage_option_agex_cannot_pass_is_the_plugins_to_default() -> None:
    # connect_state passes a storage only its path: a required bucket is a bug of the plugin.
    with pytest.raises(ProviderOptionError) as caught:
        plugins.create("storage", "acme-bucket", path="p")
    assert caught.value.missing == ("bucket",)
    assert "agex gives a storage provider only path=" in str(caught.value)
    assert "the factory acme-plugin registers must give 'bucket' a default" in str(caught.value)


def test_a_required_path_is_passed_with_connect_state() -> None:
    with pytest.raises(ProviderOptionError, match="requires the options 'path', 'bucket'") as e:
        plugins.create("storage", "acme-bucket")
    assert 'connect_state(type="versioned", storage="acme-bucket", path=...)' not in str(e.value)
    with pytest.raises(ProviderOptionError) as caught:
        plugins.create("storage", "acme-bucket", bucket="b")
    assert 'connect_state(type="versioned", storage="acme-bucket", path=...)' in str(caught.value)


# -- core's own providers ------------------------------------------------------------------


def test_core_storage_memory_suggests_path() -> None:
    with pytest.raises(ProviderOptionError) as caught:
        plugins.create("storage", "memory", pth="x")
    assert "storage provider 'memory' does not take the option 'pth'" in str(caught.value)
    assert "Did you mean 'path'?" in str(caught.value)


def test_core_serializer_takes_no_options() -> None:
    with pytest.raises(ProviderOptionError, match="It takes no options"):
        plugins.create("serializer", "cloudpickle", protocol=5)


def test_a_host_whose_options_do_not_fit_where_its_agent_lands_is_a_rebuild_error() -> None:
    # A sub-agent's host is built again from its configuration: a configuration that no
    # longer fits the factory says which option, inside the RebuildError.
    from agex.agent import _rebuild
    from agex.errors import RebuildError

    with pytest.raises(RebuildError, match="does not take the option 'tokn'"):
        _rebuild("host", {"provider": "acme", "url": "http://a", "tokn": "t"}, "helper")
