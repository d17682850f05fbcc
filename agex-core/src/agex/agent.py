"""The Agent: a primer, the things its code may use, where its loop runs (host), what it
remembers (state), and which model writes its code."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any, overload

from agex import llm as models
from agex import plugins
from agex.errors import RebuildError
from agex.isolation import check as check_isolation
from agex.protocols import LLM, Host, StateConfig
from agex.sandbox import Policy, Sandbox
from agex.sandbox.live import check_live, kind_of
from agex.sandbox.policy import Description, describe
from agex.state.pickling import AgentStateSerializer
from agex.state.versioned import VersionedState
from agex.stores import LOCAL
from agex.task import Task, check_primer


class Agent:
    _host: Host
    _llm: LLM | None
    _isolation: str | None

    def __init__(
        self,
        primer: str = "You are helpful.",
        name: str | None = None,
        host: Host | None = None,
        state: StateConfig | None = None,
        llm: LLM | None = None,
        max_iterations: int = 10,
        timeout: float | None = None,
        isolation: str | None = None,
        max_memory_mb: int | None = None,
    ) -> None:
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if state is not None and not isinstance(state, StateConfig):
            raise TypeError("state must come from connect_state(...)")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if isolation is not None:
            isolation = check_isolation(isolation)
        if max_memory_mb is not None and (
            type(max_memory_mb) is not int or not 64 <= max_memory_mb <= 1 << 30
        ):
            raise ValueError(
                f"max_memory_mb must be a whole number of MB (64 or more), got {max_memory_mb!r}"
            )
        if state is not None and state.type == "live" and isolation not in (None, "none"):
            raise ValueError(
                f"live state keeps live objects in this process, and isolation={isolation!r} "
                "runs agent code in a worker process that cannot share them; use versioned "
                'state, or isolation="none"'
            )
        if state is not None and state.type == "live" and name is None:
            raise ValueError(
                'live state needs a name: Agent(name="...") says whose variables they are, '
                "and agents with one name share them"
            )
        self.primer = primer
        self.name = name or "agent"
        self._configs: dict[str, Any] = {}  # host and model not yet built where it landed
        self.host = host if host is not None else plugins.create("host", "local")
        self.state_config = state if state is not None else StateConfig("ephemeral", None, None)
        self.llm = llm
        self.max_iterations = max_iterations
        self.timeout = timeout
        self.isolation = isolation
        #: The worker's memory limit, with isolation.
        self.max_memory_mb = max_memory_mb
        self.policy = Policy()
        self._sandbox: Sandbox | None = None
        self.host.validate(self)

    # -- registrations ---------------------------------------------------------------

    def fn(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        visibility: str = "high",
        docstring: str | None = None,
    ) -> Any:
        """Let the agent's code call a function (``@agent.fn`` or ``agent.fn(f)``). A task of
        another agent registered this way becomes a sub-agent.

        ``docstring`` is what the model reads about it instead of its own docstring (which
        stays as it is); ``visibility`` says how much of it the system prompt shows:
        ``"high"`` (signature and docstring), ``"medium"`` (signature) or ``"low"`` (name)."""
        describe(visibility, docstring)  # a bad value fails before anything is registered

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if isinstance(f, Task):
                _check_nesting(self, f.agent)
                _check_travel(self, self.host, f.agent, f"sub-agent {f.agent.name!r}")
                call = f.as_function()
                if docstring is not None:
                    call.__doc__ = docstring  # the sub-agent's own function, made just now
                self.policy.fn(
                    call, name=name or f.name, visibility=visibility, docstring=docstring
                )
            else:
                self.policy.fn(f, name=name, visibility=visibility, docstring=docstring)
                with contextlib.suppress(AttributeError, TypeError):  # builtins take none
                    f.__agex_fn_of__ = self.name  # type: ignore[attr-defined]
            self._sandbox = None
            return f

        return register if func is None else register(func)

    def cls(
        self,
        cls: type | None = None,
        *,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = ("_*",),
        constructable: bool = True,
        name: str | None = None,
        visibility: str = "high",
        docstring: str | None = None,
    ) -> Any:
        """Let the agent's code use a class: the members matching ``include`` and not
        ``exclude``; construct it unless ``constructable`` is False. ``visibility`` and
        ``docstring`` as for :meth:`fn`."""
        describe(visibility, docstring)

        def register(c: type) -> type:
            self.policy.cls(
                c,
                include=include,
                exclude=exclude,
                constructable=constructable,
                name=name,
                visibility=visibility,
                docstring=docstring,
            )
            self._sandbox = None
            return c

        return register if cls is None else register(cls)

    def module(
        self,
        module: Any,
        *,
        name: str | None = None,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = ("_*",),
        visibility: str | None = None,
        docstring: str | None = None,
    ) -> None:
        """Let the agent's code import a module (an object or its name), seeing the members
        matching ``include``; or call the methods of a live object (a database connection, a
        client) as ``name.method(...)``, the object itself staying out of reach.

        A module is only listed in the prompt unless ``visibility`` asks for more (``"low"``:
        the model knows it can import it; ``"medium"``/``"high"`` describe every member, which
        for a large module is a long prompt); a live object's methods are described in full.

        A live object stays in this process: agents whose host ships them elsewhere, or
        whose code runs in a worker process (isolation), refuse it. ``visibility`` and
        ``docstring`` as for :meth:`fn`."""
        if isinstance(module, ModuleType | str):
            if name is not None:
                raise ValueError(
                    f"name= is for live objects; agent code imports a module by its own name "
                    f"(import {getattr(module, '__name__', module)})"
                )
            self.policy.module(
                module,
                include=include,
                exclude=exclude,
                visibility="low" if visibility is None else visibility,
                docstring=docstring,
            )
        else:
            visibility = "high" if visibility is None else visibility
            describe(visibility, docstring)
            name = check_live(module, name)
            _check_live_here(self, self.host, f"live object {name!r} ({kind_of(module)})")
            self.policy.live_object(
                module,
                name,
                include=include,
                exclude=exclude,
                visibility=visibility,
                docstring=docstring,
            )
        self._sandbox = None

    @overload
    def task(
        self,
        func: Callable[..., Any],
        *,
        setup: str | None = None,
        on_conflict: str = "wait",
        max_conflict_retries: int = 3,
    ) -> Task: ...

    @overload
    def task(
        self,
        func: str | None = None,
        *,
        setup: str | None = None,
        on_conflict: str = "wait",
        max_conflict_retries: int = 3,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        func: Callable[..., Any] | str | None = None,
        *,
        setup: str | None = None,
        on_conflict: str = "wait",
        max_conflict_retries: int = 3,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Turn a function with an empty body into a task this agent solves:
        ``@agent.task`` (the docstring is the agent's instructions) or
        ``@agent.task("instructions")`` (the string is; the docstring, if any, stays the
        caller's documentation).

        ``setup`` is Python code run in the sandbox before the agent's first step, with the
        task's arguments and the registrations in scope; what it prints (or its error) is
        the model's first observation, and its variables stay for the agent's code.

        ``on_conflict`` says what a task does about another task on its session (versioned
        state; see docs/state.md): ``"wait"`` for its turn (the default), or race it and, if
        the other finishes first, ``"retry"`` from the new state (up to
        ``max_conflict_retries`` times), ``"abandon"`` (return None) or ``"fail"`` (raise
        StateConflict)."""
        primer = None
        if func is not None and not inspect.isfunction(func):
            if not isinstance(func, str) and callable(func):
                return Task(self, func, on_conflict, max_conflict_retries, setup=setup)
            primer, func = check_primer(func), None

        def make(f: Callable[..., Any]) -> Task:
            return Task(self, f, on_conflict, max_conflict_retries, primer=primer, setup=setup)

        return make if func is None else make(func)

    # -- running -----------------------------------------------------------------------

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.policy)
        return self._sandbox

    def resolved_llm(self) -> LLM:
        """The model client, from ``llm=`` or the environment (AGEX_LLM_PROVIDER)."""
        if self.llm is None:
            self.llm = models.create()
        return self.llm

    def state(self, session: str = "default") -> VersionedState:
        """The versioned state of a session: ``history()``, ``checkout(commit)``,
        ``revert(commit)``, ``diff(a, b)``, ``values()``."""
        if self.state_config.type != "versioned":
            raise ValueError(
                f"agent {self.name!r} has {self.state_config.type} state; only versioned "
                "state keeps a history to inspect"
            )
        storage = self.host.state_storage(self, session)
        if storage is None:  # the host keeps no state of its own: this process keeps it
            storage = LOCAL.storage(self.state_config)
        return VersionedState(
            storage,
            AgentStateSerializer(),
            self.name,
            session,
            load_shaped=_load_shaped,
            sandbox_namespace=self.sandbox.namespace,
        )

    def warmup(self) -> None:
        """Prepare the host ahead of the first task (e.g. build the Modal image)."""
        self.host.warmup(self)

    @property
    def fingerprint(self) -> str:
        """A stable hash of what defines this agent: name, primer, registrations, model."""
        described = {
            "name": self.name,
            "primer": self.primer,
            "names": sorted(f"{k}={_qualname(v)}" for k, v in self.policy.names.items()),
            "modules": sorted(self.policy.modules),
            "llm": _llm_identity(self.llm),
        }
        # How registrations are described changes the prompt; left out when it is the
        # default, so an agent registering as before keeps its fingerprint (and the state
        # named by it).
        told = {
            **{n: d for n, d in self.policy.descriptions.items() if d != Description()},
            **{
                f"import {n}": d
                for n, d in self.policy.module_descriptions.items()
                if d != Description("low")
            },
        }
        if told:
            described["described"] = sorted(f"{n}={list(d)}" for n, d in told.items())
        live = {n: [found.kind, sorted(found.methods)] for n, found in self.policy.live.items()}
        if live:
            described["live"] = live
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    # -- host and model: built where the agent is used --------------------------------

    @property
    def host(self) -> Host:
        """Where its loop runs."""
        if "host" in self._configs:
            self._host = _rebuild("host", self._configs.pop("host"), self.name)
        return self._host

    @host.setter
    def host(self, value: Host) -> None:
        if "policy" in self.__dict__:  # set again, after registrations
            _check_travel(self, value, self, f"agent {self.name!r}")
        self._configs.pop("host", None)
        self._host = value

    @property
    def isolation(self) -> str | None:
        """Where its code runs: "none" (this process), "process" or "kernel" (a confined
        worker process); None lets the host decide (see docs/security.md)."""
        return self._isolation

    @isolation.setter
    def isolation(self, value: str | None) -> None:
        if "policy" in self.__dict__:  # set again, after registrations
            _check_travel(self, self.host, self, f"agent {self.name!r}", isolation=value)
            if self.state_config.type == "live" and value not in (None, "none"):
                raise ValueError(
                    f"agent {self.name!r} has live state, kept in this process, and "
                    f"isolation={value!r} runs its code in a worker process that cannot share "
                    'it; keep isolation="none", or use versioned state'
                )
        self._isolation = None if value is None else check_isolation(value)

    @property
    def llm(self) -> LLM | None:
        """Which model writes its code (None: the default, see resolved_llm)."""
        if "llm" in self._configs:
            self._llm = _rebuild("llm", self._configs.pop("llm"), self.name)
        return self._llm

    @llm.setter
    def llm(self, value: LLM | None) -> None:
        self._configs.pop("llm", None)
        self._llm = value

    # -- pickling: host and model travel as their configuration --------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The agent as it travels to where its task runs (a server, a Modal container): its
        host and model go as their configuration, plain data without secrets, and are built
        again there by their providers when first used (a worker process that only runs the
        agent's code never builds them); the sandbox is rebuilt from the policy."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("_host", "_llm")}
        state["_sandbox"] = None
        configs = dict(self._configs)
        if "host" not in configs:
            configs["host"] = _config_of(self._host, "dump_config", "host", self.name)
        if "llm" not in configs and self._llm is not None:
            configs["llm"] = _config_of(self._llm, "config", "llm", self.name)
        state["_configs"] = configs
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._host = None  # type: ignore[assignment]
        self._llm = None

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r})"


def _load_shaped(blobs: dict[str, bytes]) -> dict[str, Any]:
    """Variables an isolated run wrote: loaded in a worker, back as results come back."""
    from agex.isolation.supervisor import inspect

    return inspect(blobs)


_UNCHANGED: Any = object()


def _check_travel(
    leaving: Agent, host: Host, carried: Agent, what: str, isolation: Any = _UNCHANGED
) -> None:
    """An agent that leaves this process takes ``carried`` along (itself, or a sub-agent:
    the tasks of its sub-agents travel with it), and a live object stays here. ``isolation``
    is the one ``leaving`` is about to get, when that is what changes."""
    away = _away(leaving, host, isolation)
    if away is None:
        return
    held = sorted(_live_names(carried))
    if held:
        raise ValueError(
            f"{what} holds live objects ({', '.join(held)}), and {away}; a live object (a "
            "connection, a client) stays in this process. " + _ADVICE
        )


def _check_live_here(agent: Agent, host: Host, what: str) -> None:
    """A live object registered on an agent that leaves this process is refused."""
    away = _away(agent, host)
    if away is not None:
        raise ValueError(f"{what}: {away}, and a live object stays in this process. " + _ADVICE)


_ADVICE = (
    'Run the agent on the local host with isolation="none" (agent code then calls the object '
    "here, behind the sandbox's guards), or register functions that take and return plain "
    "data and open their own connection where they run"
)


def _away(agent: Agent, host: Host, isolation: Any = _UNCHANGED) -> str | None:
    """Why ``agent`` on ``host`` (with ``isolation``, its own unless given) leaves this
    process, or None when it runs here."""
    if isolation is _UNCHANGED:
        isolation = agent.isolation
    if host.ships_agent:
        return f"host {type(host).__name__} ships the agent to another machine"
    if isolation not in (None, "none"):
        return (
            f"isolation={isolation!r} sends the agent, its sub-agents included, to a worker process"
        )
    return None


def _live_names(agent: Agent, depth: int = 0) -> set[str]:
    """The live objects an agent and its sub-agents hold, by name."""
    found = set(agent.policy.live)
    for registered in agent.policy.names.values():
        task = getattr(registered, "__agex_task__", None)
        if task is not None and depth < 20:  # deeper than any host nests
            found |= {f"{task.agent.name}.{n}" for n in _live_names(task.agent, depth + 1)}
    return found


def _check_nesting(parent: Agent, sub: Agent) -> None:
    """Either agent's host may refuse the pair (e.g. one it cannot nest), at registration
    rather than at the first call."""
    for host in (parent.host, sub.host):
        host.validate_subagent(parent, sub)


def _config_of(provided: Any, method: str, kind: str, agent: str) -> dict[str, Any]:
    """What rebuilds ``provided`` (the agent's host or model) where the agent lands."""
    dump = getattr(provided, method, None)
    config = dump() if dump is not None else None
    if not isinstance(config, dict) or not isinstance(config.get("provider"), str):
        raise TypeError(
            f"the {kind} of agent {agent!r} ({type(provided).__name__}) cannot travel with "
            f"it: its {method}() must return a dict naming its provider, from which that "
            f"provider's factory builds it again; make it with connect_{kind}(...)"
        )
    return dict(config)


def _rebuild(kind: str, config: Mapping[str, Any], agent: str) -> Any:
    """The host or model ``config`` describes, built by its provider here."""
    options = dict(config)
    provider = options.pop("provider")
    try:
        return plugins.create(kind, provider, **options)
    except Exception as exc:
        raise RebuildError(
            f"the {kind} of agent {agent!r} (provider {provider!r}) cannot be built here from "
            f"its configuration: {type(exc).__name__}: {exc}"
        ) from exc


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _llm_identity(llm: LLM | None) -> dict[str, Any] | None:
    if llm is None:
        return None
    return {"provider": getattr(llm, "provider", None), "model": getattr(llm, "model", None)}
