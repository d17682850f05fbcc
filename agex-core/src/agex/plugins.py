"""Finding, loading and asking plugins.

Nothing here runs at ``import agex``. The plugin manager is built on the first question,
each entry point of the ``agex`` group is imported only when it is first needed, and a
plugin that fails to import (or whose hook raises) is recorded and reported, never fatal to
the others. ``AGEX_LOAD_PLUGINS`` (comma-separated distributions to load; empty means none)
and ``AGEX_DISABLE_PLUGINS`` (distributions to skip) are read on every call. Core's own
providers register through the same hooks and are always on.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import warnings
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import pluggy

from agex import hookspecs
from agex.catalog import SUPPLIERS
from agex.entry_points import EntryPoint, canonical, entry_points
from agex.errors import (
    DuplicateProviderError,
    PluginWarning,
    ProviderNotInstalledError,
    ProviderOptionError,
    UnknownProviderError,
)
from agex.registry import HOOKS, Provider, Registry
from agex.version import __version__

GROUP = "agex"
CORE = "agex-core"
#: Core's own providers: a plugin like any other, loaded by name (it sits above everything
#: this module serves, so it is never imported from here).
CORE_PLUGIN = "agex.core_plugin"
LOAD_ENV = "AGEX_LOAD_PLUGINS"
DISABLE_ENV = "AGEX_DISABLE_PLUGINS"


class _Plugin:
    __slots__ = (
        "distribution",
        "entry_point",
        "error",
        "loaded",
        "name",
        "origin",
        "traceback",
        "version",
    )

    def __init__(
        self,
        name: str,
        distribution: str,
        version: str | None,
        origin: str,  # "builtin", "entry point" or "in-process"
        entry_point: EntryPoint | None = None,
        loaded: bool = False,
    ) -> None:
        self.name = name
        self.distribution = distribution
        self.version = version
        self.origin = origin
        self.entry_point = entry_point
        self.loaded = loaded
        self.error: str | None = None
        self.traceback: str | None = None


class PluginState(NamedTuple):
    """One plugin as ``agex plugins`` shows it."""

    name: str
    distribution: str
    version: str | None
    origin: str
    status: str  # "loaded", "failed" or "disabled"
    detail: str | None
    traceback: str | None
    providers: tuple[Provider, ...]


_Key = tuple[frozenset[str] | None, frozenset[str], int]


class _Manager:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, _Plugin] = {}
        self.generation = 0
        self.lock = threading.RLock()
        self._collected: dict[str, tuple[_Key, Mapping[str, tuple[Provider, ...]]]] = {}
        self._warned: set[str] = set()

        self.plugins[CORE] = _Plugin(CORE, CORE, __version__, "builtin", loaded=True)
        self.pm.register(importlib.import_module(CORE_PLUGIN), name=CORE)
        found = [
            _Plugin(f"{ep.distribution}:{ep.name}", ep.distribution, ep.version, "entry point", ep)
            for ep in entry_points(GROUP)
        ]
        for plugin in sorted(found, key=lambda p: p.name):
            self.plugins.setdefault(plugin.name, plugin)

    # -- which plugins count -------------------------------------------------------------

    def _switches(self) -> tuple[frozenset[str] | None, frozenset[str]]:
        load, disable = os.environ.get(LOAD_ENV), os.environ.get(DISABLE_ENV, "")
        allow = None if load is None else _names(load)
        block = _names(disable)
        installed = {p.distribution for p in self.plugins.values()}
        for var, names in ((LOAD_ENV, allow or frozenset()), (DISABLE_ENV, block)):
            for unknown in sorted(names - installed):
                self._warn_once(
                    f"{var} names {unknown!r}, which is not an installed agex plugin; "
                    "`agex plugins` lists the installed ones"
                )
        return allow, block

    @staticmethod
    def _off(plugin: _Plugin, allow: frozenset[str] | None, block: frozenset[str]) -> str | None:
        """Why the environment turns this plugin off, or None when it is on."""
        if plugin.origin != "entry point":
            return None
        if allow is not None and plugin.distribution not in allow:
            return f"not named in {LOAD_ENV}"
        if plugin.distribution in block:
            return f"named in {DISABLE_ENV}"
        return None

    def _on(self, allow: frozenset[str] | None, block: frozenset[str]) -> list[_Plugin]:
        """The plugins that are switched on and loaded, importing any not yet imported."""
        on = []
        for plugin in list(self.plugins.values()):
            if self._off(plugin, allow, block) is None:
                self._load(plugin)
                if plugin.error is None:
                    on.append(plugin)
        return on

    # -- loading ---------------------------------------------------------------------------

    def _load(self, plugin: _Plugin) -> None:
        if plugin.loaded or plugin.error is not None or plugin.entry_point is None:
            return
        try:
            module = plugin.entry_point.load()
            self.pm.register(module, name=plugin.name)
            try:
                self.pm.check_pending()
            except Exception:
                self.pm.unregister(name=plugin.name)
                raise
        except Exception as exc:
            self._fail(plugin, exc, "could not be loaded")
        else:
            plugin.loaded = True

    def _fail(self, plugin: _Plugin, exc: Exception, what: str) -> None:
        import traceback  # only for a failing plugin: the first lookup stays cheap

        plugin.error = f"{type(exc).__name__}: {exc}"
        plugin.traceback = "".join(traceback.format_exception(exc))
        self.generation += 1
        self._warn_once(
            f"agex plugin {plugin.distribution} {what} ({plugin.error}); its providers are "
            "unavailable. `agex plugins` shows the details."
        )

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, PluginWarning, stacklevel=_outside_agex())

    # -- asking ----------------------------------------------------------------------------

    def providers(self, kind: str) -> Mapping[str, tuple[Provider, ...]]:
        allow, block = self._switches()
        cached = self._collected.get(kind)
        if cached is not None and cached[0] == (allow, block, self.generation):
            return cached[1]
        with self.lock:
            on = self._on(allow, block)  # imports what is newly switched on
            hook = getattr(self.pm.hook, HOOKS[kind])
            impls = {impl.plugin_name: impl for impl in hook.get_hookimpls()}
            found: dict[str, list[Provider]] = {}
            for plugin in on:
                impl = impls.get(plugin.name)
                if impl is None:
                    continue
                registry = Registry(kind, plugin.name, plugin.distribution, plugin.version)
                try:
                    impl.function(*([registry] if impl.argnames else []))
                except Exception as exc:
                    self._fail(plugin, exc, f"failed in {HOOKS[kind]}")
                    continue
                for provider in registry.providers:
                    found.setdefault(provider.name, []).append(provider)
            frozen = MappingProxyType({name: tuple(ps) for name, ps in found.items()})
            self._collected[kind] = ((allow, block, self.generation), frozen)
            return frozen

    def states(self) -> list[PluginState]:
        everything = [p for kind in HOOKS for ps in self.providers(kind).values() for p in ps]
        allow, block = self._switches()
        states = []
        for plugin in self.plugins.values():
            off = self._off(plugin, allow, block)
            status, detail = (
                ("failed", plugin.error)
                if plugin.error
                else ("disabled", off)
                if off
                else ("loaded", None)
            )
            mine = tuple(p for p in everything if p.plugin == plugin.name)
            states.append(
                PluginState(
                    plugin.name,
                    plugin.distribution,
                    plugin.version,
                    plugin.origin,
                    status,
                    detail,
                    plugin.traceback,
                    mine,
                )
            )
        return states

    def missing(self, kind: str, name: str) -> Exception:
        supplier = SUPPLIERS.get((kind, name))
        present = {p.distribution for p in self.plugins.values()}
        if supplier is not None and supplier.distribution not in present:
            return ProviderNotInstalledError(kind, name, supplier.distribution, supplier.install)
        names = sorted(self.providers(kind))
        lines = [
            f"No {kind} provider named {name!r}. "
            f"Installed {kind} providers: {', '.join(names) or '(none)'}."
        ]
        import difflib  # only for a missing provider: the first lookup stays cheap

        close = difflib.get_close_matches(name, names, n=1)
        if close:
            lines.append(f"Did you mean {close[0]!r}?")
        idle = [s for s in self.states() if s.status != "loaded"]
        if idle:
            why = "; ".join(f"{s.distribution} ({s.status}: {s.detail})" for s in idle)
            lines.append(f"Plugins not loaded: {why}. `agex plugins` shows the details.")
        elif supplier is not None:
            lines.append(
                f"{supplier.distribution} is installed but did not register it; its version "
                f"should match agex-core {__version__}."
            )
        return UnknownProviderError(kind, name, " ".join(lines))

    def register(self, plugin: object, name: str | None) -> str:
        with self.lock:
            name = name or self.pm.get_canonical_name(plugin)
            if name in self.plugins:
                raise ValueError(f"a plugin named {name!r} is already registered")
            self.pm.register(plugin, name=name)
            try:
                self.pm.check_pending()
            except Exception:
                self.pm.unregister(name=name)
                raise
            self.plugins[name] = _Plugin(name, name, None, "in-process", loaded=True)
            self.generation += 1
            return name

    def unregister(self, name: str) -> None:
        with self.lock:
            plugin = self.plugins.get(name)
            if plugin is None or plugin.origin != "in-process":
                raise ValueError(f"no plugin named {name!r} was registered in this process")
            self.pm.unregister(name=name)
            del self.plugins[name]
            self.generation += 1


def _outside_agex() -> int:
    """The stacklevel of the first caller outside agex, so a warning points at user code."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("agex."):
        frame, level = frame.f_back, level + 1
    return level


def _names(raw: str) -> frozenset[str]:
    return frozenset(canonical(n.strip()) for n in raw.split(",") if n.strip())


_manager: _Manager | None = None
_manager_lock = threading.Lock()


def manager() -> _Manager:
    """The process's plugin manager, built on first use."""
    global _manager
    if _manager is None:
        with _manager_lock:
            if _manager is None:
                _manager = _Manager()
    return _manager


def providers(kind: str) -> Mapping[str, tuple[Provider, ...]]:
    """Every provider of ``kind`` that the switched-on plugins register, by name (read-only)."""
    if kind not in HOOKS:
        raise ValueError(f"unknown provider kind {kind!r}; kinds are {', '.join(HOOKS)}")
    return manager().providers(kind)


def resolve(kind: str, name: str) -> Provider:
    """The one provider of ``kind`` called ``name``, or an error that says what to do."""
    found = providers(kind).get(name, ())
    if len(found) == 1:
        return found[0]
    if found:
        raise DuplicateProviderError(kind, name, [p.source for p in found])
    raise manager().missing(kind, name)


def create(kind: str, name: str, **options: Any) -> Any:
    """Resolve a provider and build it: ``factory(**options)``.

    The options are checked against the factory's signature first, so a missing or misspelt
    option is named with what to do (a :class:`ProviderOptionError`), never reported as a
    TypeError about some class inside the plugin; and an error the factory itself raises
    reaches the caller as it is. A factory that takes ``**options`` accepts anything.
    """
    provider = resolve(kind, name)
    _check_options(provider, options)
    return provider.factory(**options)


#: How a user passes options to a provider of each kind.
_PASSED_BY = {
    "host": 'connect_host(provider="{name}", {options})',
    "llm": 'connect_llm(provider="{name}", {options})',
    "storage": 'connect_state(type="versioned", storage="{name}", {options})',
}
#: What agex itself passes a provider of a kind that users do not call with options.
_AGEX_PASSES = {"storage": ("path",), "serializer": (), "command": ()}


def _check_options(provider: Provider, options: Mapping[str, Any]) -> None:
    """Raise a ProviderOptionError when ``options`` leave out one the factory requires, or
    give one it does not take."""
    import inspect  # only when a provider is built: the first lookup stays cheap

    try:
        parameters = list(inspect.signature(provider.factory).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will tell
        return
    by_name = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    anything = any(p.kind is p.VAR_KEYWORD for p in parameters)
    missing = [
        p.name
        for p in parameters
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in options
    ]
    unknown = [] if anything else [option for option in options if option not in by_name]
    if not missing and not unknown:
        return
    said = [f"{provider.kind} provider {provider.name!r}"]
    if missing:
        said.append(f"requires {_options(missing)}: {_fix(provider, missing, by_name)}.")
    if unknown:
        said.append(f"{'It' if missing else ''} does not take {_options(unknown)}.".lstrip())
        import difflib

        others = [n for n in by_name if n not in options]
        close = difflib.get_close_matches(unknown[0], others, n=1)
        if close:
            said.append(f"Did you mean {close[0]!r}?")
        said.append(f"It takes: {', '.join(by_name)}." if by_name else "It takes no options.")
    accepted = None if anything else by_name
    raise ProviderOptionError(
        provider.kind, provider.name, " ".join(said), missing, unknown, accepted
    )


def _fix(provider: Provider, missing: list[str], by_name: list[str]) -> str:
    """What to write to pass ``missing``, or, when no call to agex can, who must fix it."""
    passes = _AGEX_PASSES.get(provider.kind)
    stuck = [o for o in missing if o not in by_name or (passes is not None and o not in passes)]
    if stuck:
        given = "only " + ", ".join(f"{o}=" for o in passes) if passes else "no options"
        return (
            f"agex gives a {provider.kind} provider {given}, so the factory "
            f"{provider.source} registers must give {', '.join(map(repr, stuck))} a default"
        )
    options = ", ".join(f"{option}=..." for option in missing)
    them = "it" if len(missing) == 1 else "them"
    return f"pass {them}, e.g. " + _PASSED_BY[provider.kind].format(
        name=provider.name, options=options
    )


def _options(names: list[str]) -> str:
    quoted = ", ".join(repr(n) for n in names)
    return f"the option {quoted}" if len(names) == 1 else f"the options {quoted}"


def states() -> list[PluginState]:
    """Every plugin agex knows of, loaded or not, with what it registers."""
    return manager().states()


def register(plugin: object, name: str | None = None) -> str:
    """Register an in-process plugin (a module or object with hook implementations).

    Returns the name to pass to :func:`unregister`. Hook names are checked against the
    hookspecs, so a misspelt hook raises here instead of being silently ignored.
    """
    return manager().register(plugin, name)


def unregister(name: str) -> None:
    """Remove a plugin added with :func:`register`."""
    manager().unregister(name)


def reset() -> None:
    """Forget every loaded plugin and in-process registration; the next question rescans the
    installed distributions. For a process that installed a plugin after asking, and tests."""
    global _manager
    with _manager_lock:
        _manager = None
