"""What travels with a shipped task as plain data, so the far side checks it before it loads
a byte of the task: the versions the task was serialized under, the agent and session, the
state it keeps, the serializer, and the time limit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agex.errors import AgexError
from agex.protocols import check_session
from agex.remote import shipping
from agex.state.config import STATE_TYPES, StateConfig

if TYPE_CHECKING:
    from agex.protocols import Invocation

#: Longest time limit an envelope may ask for (about 115 days).
LONGEST = 10**7
#: Longest state path an envelope may name.
MAX_PATH = 1000


class Refused(AgexError):
    """The far side will not run this envelope; the message says what to change.

    ``status`` is the HTTP status that fits: 409 for versions that differ, 422 for a field
    that is malformed, 400 for something this side does not have, 403 for a state path it
    does not allow.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Envelope:
    agent: str
    session: str
    state: StateConfig
    serializer: str = "cloudpickle"
    #: Seconds the whole run may take on the far side; None: the agent's own limits only.
    timeout: float | None = None
    versions: dict[str, str] = field(default_factory=lambda: shipping.versions())
    #: Names the run, so its caller can cancel or follow it.
    run: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    #: The isolation the agent asks for (None: the host's), and its worker's memory limit.
    isolation: str | None = None
    memory_mb: int | None = None
    #: The agent's model, as its configuration (None: the host's default model).
    llm: dict[str, Any] | None = None
    #: The sub-agents its code may call, by the name it registered them under: what the
    #: side running the loop needs to run each (see :func:`delegates`).
    delegates: dict[str, Delegate] = field(default_factory=dict)

    def delegate(self, name: str, session: str) -> Envelope:
        """The envelope of a call of the sub-agent registered as ``name``, in ``session``;
        KeyError when there is none. Everything in it comes from here, none of it from the
        agent code that makes the call."""
        found = self.delegates[name]
        return Envelope(
            agent=found.agent,
            session=session,
            state=found.state,
            serializer=self.serializer,
            isolation=found.isolation,
            memory_mb=found.memory_mb,
            llm=found.llm,
            delegates=found.delegates,
        )

    @classmethod
    def of(
        cls,
        invocation: Invocation,
        *,
        state: StateConfig | None = None,
        serializer: str = "cloudpickle",
        timeout: float | None = None,
    ) -> Envelope:
        """The envelope of a task call; ``state`` replaces the agent's state configuration
        where the host keeps state its own way."""
        agent = invocation.agent
        return cls(
            agent=agent.name,
            session=invocation.session,
            state=agent.state_config if state is None else state,
            serializer=serializer,
            timeout=timeout,
            isolation=getattr(agent, "isolation", None),
            memory_mb=getattr(agent, "max_memory_mb", None),
            llm=_model_config(agent),
            delegates=delegates(agent),
        )

    def to_json(self) -> dict[str, Any]:
        state = self.state
        return {
            "run": self.run,
            "agent": self.agent,
            "session": self.session,
            "state": {"type": state.type, "storage": state.storage, "path": state.path},
            "serializer": self.serializer,
            "timeout": self.timeout,
            "versions": self.versions,
            "isolation": self.isolation,
            "memory_mb": self.memory_mb,
            "llm": self.llm,
            "delegates": {name: d.to_json() for name, d in self.delegates.items()},
        }

    @classmethod
    def from_json(cls, raw: object) -> Envelope:
        """An envelope from plain data another process sent, checked field by field;
        :class:`Refused` says what is wrong. Versions come first: with other versions,
        nothing else the client sent can be trusted to mean the same here."""
        if not isinstance(raw, dict):
            raise Refused(422, "the envelope must be a JSON object")
        why = shipping.mismatch(raw.get("versions"), shipping.versions())
        if why is not None:
            raise Refused(409, why)
        session = raw.get("session")
        try:
            check_session(session)
        except ValueError as exc:
            raise Refused(422, str(exc)) from None
        agent = raw.get("agent")
        if not isinstance(agent, str) or not 0 < len(agent) <= 200 or not agent.isprintable():
            raise Refused(422, "agent must be the agent's name, 1 to 200 printable characters")
        timeout = raw.get("timeout")
        if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout < LONGEST):
            raise Refused(422, f"timeout must be a positive number of seconds, got {timeout!r}")
        serializer = raw.get("serializer", "cloudpickle")
        if not isinstance(serializer, str):
            raise Refused(422, "serializer must be a provider name")
        run = raw.get("run")
        if not isinstance(run, str) or not 0 < len(run) <= 64:
            raise Refused(422, "run must name the run, 1 to 64 characters")
        isolation, memory = _isolation(raw)
        assert isinstance(session, str)
        return cls(
            agent=agent,
            session=session,
            state=_state(raw.get("state")),
            serializer=serializer,
            timeout=None if timeout is None else float(timeout),
            versions=dict(raw["versions"]),
            run=run,
            isolation=isolation,
            memory_mb=memory,
            llm=_config(raw.get("llm"), "llm", optional=True),
            delegates=_delegates(raw.get("delegates", {}), 0),
        )


#: How deep sub-agents of sub-agents may be declared.
MAX_NESTING = 8


@dataclass(frozen=True)
class Delegate:
    """A sub-agent as the caller declares it: its name, state, model, host and isolation,
    and its own sub-agents."""

    agent: str
    state: StateConfig
    host: dict[str, Any]
    llm: dict[str, Any] | None = None
    isolation: str | None = None
    memory_mb: int | None = None
    delegates: dict[str, Delegate] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "state": {
                "type": self.state.type,
                "storage": self.state.storage,
                "path": self.state.path,
            },
            "host": self.host,
            "llm": self.llm,
            "isolation": self.isolation,
            "memory_mb": self.memory_mb,
            "delegates": {name: d.to_json() for name, d in self.delegates.items()},
        }


def delegates(agent: Any, depth: int = 0) -> dict[str, Delegate]:
    """The sub-agents ``agent`` registered (tasks of other agents), declared."""
    out: dict[str, Delegate] = {}
    if depth >= MAX_NESTING:
        return out
    for name, value in agent.policy.names.items():
        task = getattr(value, "__agex_task__", None)
        if task is None:
            continue
        sub = task.agent
        out[name] = Delegate(
            agent=sub.name,
            state=sub.state_config,
            host=_host_config(sub.host),
            llm=_model_config(sub),
            isolation=getattr(sub, "isolation", None),
            memory_mb=getattr(sub, "max_memory_mb", None),
            delegates=delegates(sub, depth + 1),
        )
    return out


def _host_config(host: Any) -> dict[str, Any]:
    """How the side running the loop rebuilds a sub-agent's host: its ``dump_config()``, or
    its ``delegate_config()`` where it has one, which may hold what ``dump_config`` keeps
    from agent code (the agent, and the configuration with it, is loaded where agent code
    runs; the envelope is read only by the side that runs the loop)."""
    config = getattr(host, "delegate_config", None)
    return dict(config() if callable(config) else host.dump_config())


def _model_config(agent: Any) -> dict[str, Any] | None:
    config = getattr(agent.llm, "config", None)
    return None if config is None else dict(config())


def _isolation(raw: dict[str, Any]) -> tuple[str | None, int | None]:
    isolation = raw.get("isolation")
    if isolation is not None and isolation not in ("none", "process", "kernel"):
        raise Refused(422, 'isolation must be "none", "process", "kernel" or null')
    memory = raw.get("memory_mb")
    if memory is not None and (type(memory) is not int or not 64 <= memory <= 1 << 30):
        raise Refused(422, "memory_mb must be a whole number of MB, 64 or more")
    return isolation, memory


def _config(raw: object, what: str, optional: bool = False) -> Any:
    """A host's or model's configuration: a JSON object naming its provider."""
    if raw is None and optional:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), str):
        raise Refused(422, f"{what} must be a configuration naming its provider")
    return raw


def _delegates(raw: object, depth: int) -> dict[str, Delegate]:
    if not isinstance(raw, dict) or (raw and depth >= MAX_NESTING):
        raise Refused(422, f"delegates must be an object, nested at most {MAX_NESTING} deep")
    out = {}
    for name, item in raw.items():
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(item, dict):
            raise Refused(422, "each delegate is an object under the name it was registered as")
        agent = item.get("agent")
        if not isinstance(agent, str) or not 0 < len(agent) <= 200 or not agent.isprintable():
            raise Refused(422, "a delegate's agent must be its name, 1 to 200 characters")
        isolation, memory = _isolation(item)
        out[name] = Delegate(
            agent=agent,
            state=_state(item.get("state")),
            host=_config(item.get("host"), "a delegate's host"),
            llm=_config(item.get("llm"), "a delegate's llm", optional=True),
            isolation=isolation,
            memory_mb=memory,
            delegates=_delegates(item.get("delegates", {}), depth + 1),
        )
    return out


def _state(raw: object) -> StateConfig:
    if not isinstance(raw, dict) or raw.get("type") not in STATE_TYPES:
        raise Refused(422, f"state must say its type, one of {', '.join(STATE_TYPES)}")
    kind, storage, path = raw["type"], raw.get("storage"), raw.get("path")
    if kind == "ephemeral":
        return StateConfig("ephemeral", None, None)
    if kind == "live":  # kept in one process: whether that is this one is the host's to say
        return StateConfig("live", storage if isinstance(storage, str) else None, None)
    if not isinstance(storage, str) or not storage:
        raise Refused(422, f"{kind} state must name its storage")
    if path is not None and (not isinstance(path, str) or not 0 < len(path) <= MAX_PATH):
        raise Refused(422, f"a state path must be a string of 1 to {MAX_PATH} characters")
    return StateConfig(kind, storage, path)
