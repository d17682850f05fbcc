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

    def warmup(self, agent: Agent) -> None: ...

    def dump_config(self) -> dict[str, Any]:
        """What rebuilds this host elsewhere (for sub-agents on a server)."""
        ...
