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
        isolation = raw.get("isolation")
        if isolation is not None and isolation not in ("none", "process", "kernel"):
            raise Refused(422, 'isolation must be "none", "process", "kernel" or null')
        memory = raw.get("memory_mb")
        if memory is not None and (type(memory) is not int or not 64 <= memory <= 1 << 30):
            raise Refused(422, "memory_mb must be a whole number of MB, 64 or more")
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
        )


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
