"""Resolution, registration and failure isolation, with plugins registered in-process."""

import os
import warnings
from importlib import metadata

import pluggy
import pytest

from agex import hookimpl, plugins
from agex.catalog import SUPPLIERS
from agex.errors import (
    DuplicateProviderError,
    PluginWarning,
    ProviderNotInstalledError,
    UnknownProviderError,
)


class Sentinel:
    def __init__(self, **options):
        self.options = options


class StoragePlugin:
    """An in-test plugin offering one storage under a chosen name."""

    def __init__(self, name="sentinel"):
        self.name = name

    @hookimpl
    def agex_register_storages(self, registry):
        registry.register(self.name, Sentinel)


def test_in_process_plugin_resolves_and_builds(register_plugin) -> None:
    register_plugin(StoragePlugin(), name="sentinel-plugin")
    provider = plugins.resolve("storage", "sentinel")
    assert provider.distribution == "sentinel-plugin"
    built = plugins.create("storage", "sentinel", path="p")
    assert isinstance(built, Sentinel)
    assert built.options == {"path": "p"}


def test_fixture_unregisters(register_plugin) -> None:
    assert "sentinel" not in plugins.providers("storage")


def test_fixture_unregisters_even_when_the_test_fails(pytester) -> None:
    pytester.makepyfile(
        """
        from agex import hookimpl, plugins

        class P:
            @hookimpl
            def agex_register_storages(self, registry):
                registry.register("leaky", dict)

        def test_fails(register_plugin):
            register_plugin(P(), name="leaky-plugin")
            assert "leaky" in plugins.providers("storage")
            raise RuntimeError("boom")

        def test_after():
            assert "leaky" not in plugins.providers("storage")
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)


def test_duplicate_names_both_plugins(register_plugin) -> None:
    register_plugin(StoragePlugin(), name="first-plugin")
    register_plugin(StoragePlugin(), name="second-plugin")
    with pytest.raises(DuplicateProviderError) as info:
        plugins.resolve("storage", "sentinel")
    assert "first-plugin" in str(info.value)
    assert "second-plugin" in str(info.value)
    assert info.value.sources == ("first-plugin", "second-plugin")
    # Other providers of the same kind are unaffected.
    assert plugins.resolve("storage", "memory").distribution == "agex-core"


def test_unknown_lists_installed_and_suggests(register_plugin) -> None:
    register_plugin(StoragePlugin("sentinel"), name="sentinel-plugin")
    with pytest.raises(UnknownProviderError) as info:
        plugins.resolve("storage", "sentinal")
    message = str(info.value)
    assert "memory" in message
    assert "sentinel" in message
    assert "Did you mean 'sentinel'?" in message
    assert isinstance(info.value, ValueError)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kinds are host, storage"):
        plugins.providers("database")


@pytest.mark.parametrize(("kind", "name"), sorted(SUPPLIERS))
def test_missing_distribution_says_what_to_install(kind, name) -> None:
    supplier = SUPPLIERS[kind, name]
    try:
        metadata.distribution(supplier.distribution)
    except metadata.PackageNotFoundError:
        pass
    else:
        pytest.skip(f"{supplier.distribution} is installed in this session")
    with pytest.raises(ProviderNotInstalledError) as info:
        plugins.resolve(kind, name)
    assert f'pip install "agex-core[{supplier.extra}]"' in str(info.value)
    assert isinstance(info.value, ImportError)
    assert info.value.distribution == supplier.distribution


def test_builtins_register_through_the_hooks() -> None:
    impls = plugins.manager().pm.hook.agex_register_storages.get_hookimpls()
    assert "agex-core" in {impl.plugin_name for impl in impls}
    assert plugins.resolve("storage", "memory").plugin == "agex-core"


def test_builtins_stay_on_when_no_plugin_is_allowed(monkeypatch) -> None:
    monkeypatch.setenv("AGEX_LOAD_PLUGINS", "")
    assert plugins.resolve("serializer", "cloudpickle").distribution == "agex-core"


def test_a_raising_hook_drops_only_that_plugin(register_plugin) -> None:
    class Raising:
        @hookimpl
        def agex_register_storages(self, registry):
            registry.register("half", dict)
            raise RuntimeError("cannot reach the config server")

    register_plugin(StoragePlugin(), name="healthy")
    register_plugin(Raising(), name="raising")
    with pytest.warns(PluginWarning, match="raising failed in agex_register_storages"):
        found = plugins.providers("storage")
    assert "sentinel" in found
    assert "half" not in found  # nothing from a failed hook is kept
    state = next(s for s in plugins.states() if s.name == "raising")
    assert state.status == "failed"
    assert "RuntimeError: cannot reach the config server" in state.detail
    assert "Traceback" in state.traceback


@pytest.mark.parametrize(
    ("name", "factory", "error"),
    [
        ("Bad Name", dict, "is not valid"),
        ("", dict, "is not valid"),
        ("fine", "not callable", "must be callable"),
    ],
)
def test_bad_registration_fails_that_plugin_clearly(register_plugin, name, factory, error):
    class Bad:
        @hookimpl
        def agex_register_storages(self, registry):
            registry.register(name, factory)

    register_plugin(Bad(), name="bad-plugin")
    with pytest.warns(PluginWarning, match=error):
        assert plugins.resolve("storage", "memory")


def test_misspelt_hook_is_refused_at_registration() -> None:
    class Typo:
        @hookimpl
        def agex_register_storage(self, registry):  # missing the final "s"
            pass

    with pytest.raises(pluggy.PluginValidationError, match="agex_register_storage"):
        plugins.register(Typo(), name="typo")
    assert "typo" not in {s.name for s in plugins.states()}


def test_register_refuses_a_taken_name(register_plugin) -> None:
    register_plugin(StoragePlugin(), name="taken")
    with pytest.raises(ValueError, match="already registered"):
        plugins.register(StoragePlugin("other"), name="taken")


def test_unregister_refuses_what_it_did_not_register() -> None:
    with pytest.raises(ValueError, match="no plugin named 'agex-core'"):
        plugins.unregister("agex-core")


def test_env_naming_nothing_installed_warns(monkeypatch) -> None:
    already = os.environ.get("AGEX_DISABLE_PLUGINS", "")
    monkeypatch.setenv("AGEX_DISABLE_PLUGINS", f"{already},agex-no-such-plugin")
    with pytest.warns(PluginWarning, match="AGEX_DISABLE_PLUGINS names 'agex-no-such-plugin'"):
        plugins.providers("host")


def test_providers_cannot_be_changed_by_callers() -> None:
    found = plugins.providers("storage")
    with pytest.raises(TypeError):
        found["mine"] = ()  # type: ignore[index]
    assert isinstance(found["memory"], tuple)


def test_cached_until_something_changes(register_plugin) -> None:
    first = plugins.providers("storage")
    assert plugins.providers("storage") is first
    register_plugin(StoragePlugin(), name="later")
    assert "sentinel" in plugins.providers("storage")


def installed_plugins() -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sorted(
            {s.distribution for s in plugins.states() if s.status == "loaded"}
            - {"agex-core"}
            - {s.distribution for s in plugins.states() if s.origin != "entry point"}
        )


def test_env_switches_are_read_at_call_time(monkeypatch) -> None:
    names = installed_plugins()
    if not names:
        pytest.skip("no plugin distribution is installed in this session")
    target = names[0]

    def status() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return next(s for s in plugins.states() if s.distribution == target).status

    monkeypatch.setenv("AGEX_DISABLE_PLUGINS", target.upper().replace("-", "_"))
    assert status() == "disabled"
    monkeypatch.delenv("AGEX_DISABLE_PLUGINS")
    assert status() == "loaded"
    monkeypatch.setenv("AGEX_LOAD_PLUGINS", "")
    assert status() == "disabled"
    monkeypatch.setenv("AGEX_LOAD_PLUGINS", target)
    assert status() == "loaded"
