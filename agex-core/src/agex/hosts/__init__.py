"""Where an agent's loop runs. A host gets an invocation (which agent, which task, which
arguments, which session) and a sink for events and tokens, and runs the whole loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.events import Event
    from agex.task import Task


class Invocation:
    __slots__ = ("agent", "arguments", "session", "task")

    def __init__(self, agent: Agent, task: Task, arguments: dict[str, Any], session: str):
        self.agent, self.task, self.arguments, self.session = agent, task, arguments, session


#: Longest session name: it names state on disk and travels in URLs.
MAX_SESSION = 200


def check_session(session: object) -> None:
    """A session name is a printable string of at most MAX_SESSION characters."""
    if not isinstance(session, str) or not session:
        raise ValueError(f"session must be a non-empty string, got {session!r}")
    if len(session) > MAX_SESSION or not session.isprintable():
        raise ValueError(
            f"session must be at most {MAX_SESSION} printable characters (no control "
            f"characters or line breaks), got {session[:40]!r}"
            + ("..." if len(session) > 40 else "")
        )


class Sink:
    """Where events and tokens go as they happen."""

    __slots__ = ("on_event", "on_token")

    def __init__(
        self,
        on_event: Callable[[Event], Any] | None = None,
        on_token: Callable[[str], Any] | None = None,
    ) -> None:
        self.on_event, self.on_token = on_event, on_token

    def event(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def token(self, text: str) -> None:
        if self.on_token is not None:
            self.on_token(text)


class Host(Protocol):
    def validate(self, agent: Agent) -> None:
        """Refuse, at Agent creation, a configuration this host cannot run."""
        ...

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        """Run the whole loop; return the task's value or raise its outcome."""
        ...

    def cancel(self, agent: Agent, session: str) -> int:
        """Stop the agent's runs in ``session``; returns how many were stopped."""
        ...

    def warmup(self, agent: Agent) -> None: ...

    # Optional: ``validate_subagent(parent, sub)`` refuses, when ``parent.fn(task)``
    # registers another agent's task, a pairing this host cannot run (it is asked whether
    # it is the parent's host or the sub-agent's). ``state_storage(agent, session)``
    # gives the storage where the host keeps that state, for ``agent.state(session)``.

    def dump_config(self) -> dict[str, Any]:
        """What rebuilds this host elsewhere (for sub-agents on a server)."""
        ...
