"""What happens while an agent works, as events: delivered to ``on_event`` as they happen,
kept in versioned state, sent over the wire as JSON.

Every event carries the agent's name, the session, the loop step, when it happened, and the
state commit it belongs to (None without versioned state). ``to_json``/``from_json`` round
trip exactly; the ``type`` field names the class.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import attrs


def _now() -> float:
    return time.time()


@attrs.frozen(kw_only=True)
class Event:
    agent_name: str
    session: str
    step: int
    timestamp: float = attrs.field(factory=_now)
    commit: str | None = None

    kinds: ClassVar[dict[str, type[Event]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Event.kinds[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, **attrs.asdict(self, recurse=False)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Event:
        fields = dict(data)
        kind = fields.pop("type", None)
        cls = Event.kinds.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f"not an agex event type: {kind!r}")
        return cls(**fields)

    @staticmethod
    def from_json(text: str) -> Event:
        return Event.from_dict(json.loads(text))


@attrs.frozen(kw_only=True)
class TaskStartEvent(Event):
    """A task began: its name and its inputs, as the agent sees them."""

    task_name: str
    inputs: dict[str, str]


@attrs.frozen(kw_only=True)
class ActionEvent(Event):
    """The model's reply for one step: its reasoning, and the code it runs."""

    thinking: str
    code: str


@attrs.frozen(kw_only=True)
class OutputEvent(Event):
    """What the step's code printed."""

    text: str


@attrs.frozen(kw_only=True)
class ErrorEvent(Event):
    """The step's code raised; ``error`` is the traceback the agent is shown."""

    error: str


@attrs.frozen(kw_only=True)
class SuccessEvent(Event):
    """The task succeeded; ``result`` is the value, in JSON where it fits, else its repr."""

    result: Any


@attrs.frozen(kw_only=True)
class FailEvent(Event):
    message: str


@attrs.frozen(kw_only=True)
class ClarifyEvent(Event):
    message: str


@attrs.frozen(kw_only=True)
class CancelledEvent(Event):
    pass


def jsonable(value: Any) -> Any:
    """``value`` as JSON carries it, if JSON carries it unchanged; else its repr (or, if even
    that fails, its type). Only plain JSON types come back."""
    try:
        carried = json.loads(json.dumps(value, allow_nan=False))
        if carried == value:
            return carried
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        return str.__str__(repr(value))
    except Exception:
        return f"<{type(value).__name__}>"
