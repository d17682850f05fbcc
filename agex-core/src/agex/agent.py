"""The Agent: a primer, the things its code may use, where its loop runs (host), what it
remembers (state), and which model writes its code."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

from agex.sandbox import Policy, Sandbox
from agex.state.config import StateConfig
from agex.task import Task


class Agent:
    def __init__(
        self,
        primer: str = "You are helpful.",
        name: str | None = None,
        host: Any = None,
        state: StateConfig | None = None,
        llm: Any = None,
        max_iterations: int = 10,
        timeout: float | None = None,
    ) -> None:
        from agex.connect import connect_host

        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if state is not None and not isinstance(state, StateConfig):
            raise TypeError("state must come from connect_state(...)")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if state is not None and state.type == "live" and name is None:
            raise ValueError(
                'live state needs a name: Agent(name="...") says whose variables they are, '
                "and agents with one name share them"
            )
        self.primer = primer
        self.name = name or "agent"
        self.host = host if host is not None else connect_host("local")
        self.state_config = state if state is not None else StateConfig("ephemeral", None, None)
        self.llm = llm
        self.max_iterations = max_iterations
        self.timeout = timeout
        self.policy = Policy()
        self._sandbox: Sandbox | None = None
        self.host.validate(self)

    # -- registrations ---------------------------------------------------------------

    def fn(self, func: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Let the agent's code call a function (``@agent.fn`` or ``agent.fn(f)``). A task of
        another agent registered this way becomes a sub-agent."""

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            if isinstance(f, Task):
                _check_nesting(self, f.agent)
                self.policy.fn(f.as_function(), name=name or f.name)
            else:
                self.policy.fn(f, name=name)
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
    ) -> Any:
        """Let the agent's code use a class: the members matching ``include`` and not
        ``exclude``; construct it unless ``constructable`` is False."""

        def register(c: type) -> type:
            self.policy.cls(
                c, include=include, exclude=exclude, constructable=constructable, name=name
            )
            self._sandbox = None
            return c

        return register if cls is None else register(cls)

    def module(
        self,
        module: ModuleType | str,
        *,
        include: Iterable[str] = ("*",),
        exclude: Iterable[str] = ("_*",),
    ) -> None:
        """Let the agent's code import a module, seeing the members matching ``include``."""
        self.policy.module(module, include=include, exclude=exclude)
        self._sandbox = None

    def task(self, func: Callable[..., Any]) -> Task:
        """Turn a function with an empty body and a docstring into a task this agent solves."""
        return Task(self, func)

    # -- running -----------------------------------------------------------------------

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = Sandbox(self.policy)
        return self._sandbox

    def resolved_llm(self) -> Any:
        """The model client, from ``llm=`` or the environment (AGEX_LLM_PROVIDER)."""
        if self.llm is None:
            from agex.connect import connect_llm

            self.llm = connect_llm()
        return self.llm

    def state(self, session: str = "default") -> Any:
        """The versioned state of a session: ``history()``, ``checkout(commit)``,
        ``revert(commit)``, ``diff(a, b)``, ``values()``."""
        if self.state_config.type != "versioned":
            raise ValueError(
                f"agent {self.name!r} has {self.state_config.type} state; only versioned "
                "state keeps a history to inspect"
            )
        from agex.state.pickling import AgentStateSerializer
        from agex.state.stores import storage_for
        from agex.state.versioned import VersionedState

        remote = getattr(self.host, "state_storage", None)  # a host that keeps state itself
        storage = remote(self, session) if remote is not None else storage_for(self.state_config)
        return VersionedState(storage, AgentStateSerializer(), self.name, session)

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
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_sandbox"] = None  # rebuilt from the policy where the agent lands
        return state

    def __repr__(self) -> str:
        return f"Agent(name={self.name!r})"


def _check_nesting(parent: Agent, sub: Agent) -> None:
    """Either agent's host may refuse the pair (e.g. one it cannot nest), at registration
    rather than at the first call."""
    for host in (parent.host, sub.host):
        check = getattr(host, "validate_subagent", None)
        if check is not None:
            check(parent, sub)


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def _llm_identity(llm: Any) -> Any:
    if llm is None:
        return None
    return {"provider": getattr(llm, "provider", None), "model": getattr(llm, "model", None)}
