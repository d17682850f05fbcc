"""What happens while an agent works, as events: delivered to ``on_event`` as they happen,
kept in versioned state, sent over the wire as JSON.

Every event carries the agent's name, the session, the loop step, when it happened, and the
state commit it belongs to (None without versioned state). ``to_json``/``from_json`` round
trip exactly; the ``type`` field names the class. In a notebook an event shows itself
(``_repr_html_``, ``_repr_markdown_``: see ``agex.notebook``).

Events are checked: every field is of its type when the event is made, from the loop or
from JSON alike, so an event a far side sent (an agex server, a Modal container) with a
string for its step, say, is refused with a TypeError or ValueError rather than shown.

Events are bounded: agent code shapes much of their text (an exception's message, what it
prints, a ``task_fail`` message), so every text an event carries is cut to
``EVENT_TEXT_LIMIT`` characters when the event is made, from the loop or from JSON alike.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import attrs

#: Longest text, in characters, one field of an event carries; longer text keeps its start
#: and its end around a note of how much was cut. Large enough for any traceback or printed
#: output worth reading (printed output is capped at this size already), small enough that
#: a stream or a store of events cannot be flooded by one step.
EVENT_TEXT_LIMIT = 20_000

#: Longest string inside a success value too large to show whole: the structure stays.
_INNER_LIMIT = EVENT_TEXT_LIMIT // 20
#: Nesting of a success value walked to cut its strings; deeper ones are shown as JSON text.
_MAX_DEPTH = 100
#: Longest input name shown, and most inputs shown, in a ``TaskStartEvent``.
_NAME_LIMIT = 100
_MAX_INPUTS = 50


def bound_text(text: str, limit: int = EVENT_TEXT_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters; else its start and its end around a
    note of how many characters were cut, ``limit`` characters in all. Both ends, because
    a traceback ends with its error and printed output with its last lines."""
    if len(text) <= limit:
        return text
    if limit < 100:
        raise ValueError(f"limit is {limit}; give at least 100, room for the note of the cut")
    # The note's length depends on the count it shows: make room for the longest it can be.
    kept = limit - len(_cut_note(len(text)))
    head = kept - kept // 2
    tail = len(text) - kept // 2
    return text[:head] + _cut_note(len(text) - kept) + text[tail:]


def _cut_note(count: int) -> str:
    return f"\n[... {count:,} characters cut ...]\n"


def _plain(value: object, what: str) -> str:
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{what} must be a str, not {type(value).__name__}; pass str(...) of it")


def _text(value: str) -> str:
    return bound_text(_plain(value, "an event's text"))


def _optional_text(value: str | None) -> str | None:
    return None if value is None else _text(value)


def _shown_inputs(value: dict[str, str]) -> dict[str, str]:
    """A task's inputs as an event shows them: whole if they fit ``EVENT_TEXT_LIMIT`` in
    all; else the first ``_MAX_INPUTS``, the longest cut to share what room is left."""
    inputs = _plain_inputs(value)
    if sum(len(k) + len(v) for k, v in inputs.items()) <= EVENT_TEXT_LIMIT:
        return inputs
    names = list(inputs)
    kept = names[: _MAX_INPUTS - 1] if len(names) > _MAX_INPUTS else names
    note = f"{len(names) - len(kept):,} more inputs not shown" if len(kept) < len(names) else ""
    keys = {k: bound_text(k, _NAME_LIMIT) for k in kept}
    room = EVENT_TEXT_LIMIT - sum(map(len, keys.values())) - len("...") - len(note)
    # Short values are shown whole; the room they leave is shared by the long ones.
    sizes = {}
    for i, k in enumerate(sorted(kept, key=lambda k: len(inputs[k]))):
        sizes[k] = min(len(inputs[k]), room // (len(kept) - i))
        room -= sizes[k]
    shown = {keys[k]: bound_text(inputs[k], sizes[k]) for k in kept}
    if note:
        shown["..."] = note
    return shown


def _plain_inputs(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(
            f"TaskStartEvent.inputs is a dict, not {type(value).__name__}; "
            "pass {name: repr(value)}"
        )
    return {_plain(k, "an input's name"): _plain(v, "an input's value") for k, v in value.items()}


class _TooLarge(Exception):
    """Too many nodes, or too deep, for the value to fit an event with its structure."""


def _shown_result(value: Any) -> Any:
    """A success value as an event shows it: whole if its JSON fits ``EVENT_TEXT_LIMIT``; else
    with each string in it cut, if that fits; else its JSON text, cut. Only the event's copy
    is cut: the caller gets the value itself."""
    if isinstance(value, str):
        return bound_text(str.__str__(value))
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise TypeError(
            f"SuccessEvent.result is a JSON value, not {type(value).__name__}; "
            "pass agex.events.jsonable(value)"
        ) from None
    if len(text) <= EVENT_TEXT_LIMIT:
        return value
    try:
        # Every node takes a character of JSON at least: past the limit in nodes, none fit.
        shown = _cut_strings(value, 0, [EVENT_TEXT_LIMIT])
        if len(json.dumps(shown, ensure_ascii=False)) <= EVENT_TEXT_LIMIT:
            return shown
    except _TooLarge:
        pass
    return bound_text(text)


def _cut_strings(value: Any, depth: int, nodes: list[int]) -> Any:
    """``value`` with each string in it cut to ``_INNER_LIMIT``; ``nodes[0]`` counts down the
    nodes it may still visit, so a huge value is given up on early."""
    nodes[0] -= 1
    if nodes[0] < 0 or depth > _MAX_DEPTH:
        raise _TooLarge
    if isinstance(value, str):
        return bound_text(value, _INNER_LIMIT)
    if isinstance(value, dict):
        return {
            bound_text(k, _INNER_LIMIT) if isinstance(k, str) else k: _cut_strings(
                v, depth + 1, nodes
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_cut_strings(item, depth + 1, nodes) for item in value]
    return value


def _now() -> float:
    return time.time()


#: The latest moment an event may carry: the start of the year 10000, past which no
#: calendar (``time.gmtime``) can show it.
_LAST_MOMENT = 253_402_300_800.0


def _moment(value: object) -> float:
    """A timestamp: seconds since the epoch, as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"an event's timestamp is seconds since the epoch (a float), not "
            f"{type(value).__name__}; pass time.time()"
        )
    if not 0 <= value < _LAST_MOMENT:  # NaN fails this too; a huge int, before float() would
        raise ValueError(
            f"an event's timestamp must be seconds since the epoch, from 0 to before the year "
            f"10000, not {bound_text(str(value), 100)}; pass time.time()"
        )
    return float(value) if isinstance(value, int) else float.__float__(value)


def _count(value: object, what: str) -> int:
    """``value``, a whole number, 0 or more, that ``what`` names."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is a whole number (an int), not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} is 0 or more, not {bound_text(str(value), 100)}")
    return int.__int__(value)


def _step(value: object) -> int:
    return _count(value, "an event's step")


@attrs.frozen(kw_only=True)
class Event:
    agent_name: str = attrs.field(converter=_text)
    session: str = attrs.field(converter=_text)
    step: int = attrs.field(converter=_step)
    timestamp: float = attrs.field(factory=_now, converter=_moment)
    commit: str | None = attrs.field(default=None, converter=_optional_text)

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
        """The event ``data`` describes (as ``to_dict`` gives it); TypeError or ValueError
        when it is not one: an unknown ``type``, a field missing, unknown or of another
        type."""
        if not isinstance(data, dict):
            raise TypeError(f"an event is a JSON object, not {type(data).__name__}")
        fields = dict(data)
        kind = fields.pop("type", None)
        cls = Event.kinds.get(kind) if isinstance(kind, str) else None
        if cls is None:
            shown = bound_text(kind, 100) if isinstance(kind, str) else kind
            raise ValueError(f"not an agex event type: {shown!r}")
        return cls(**fields)

    @staticmethod
    def from_json(text: str) -> Event:
        return Event.from_dict(json.loads(text))

    # Notebooks (Jupyter, VS Code) show an event by these; the code is in agex.notebook.

    def _repr_html_(self) -> str:
        from agex.notebook import event_html

        return event_html(self)

    def _repr_markdown_(self) -> str:
        from agex.notebook import event_markdown

        return event_markdown(self)


@attrs.frozen(kw_only=True)
class TaskStartEvent(Event):
    """A task began: its name and its inputs, as the agent sees them."""

    task_name: str = attrs.field(converter=_text)
    inputs: dict[str, str] = attrs.field(converter=_shown_inputs)


@attrs.frozen(kw_only=True)
class ActionEvent(Event):
    """The model's reply for one step: its reasoning, and the code it runs."""

    thinking: str = attrs.field(converter=_text)
    code: str = attrs.field(converter=_text)


@attrs.frozen(kw_only=True)
class OutputEvent(Event):
    """What the step's code printed."""

    text: str = attrs.field(converter=_text)


@attrs.frozen(kw_only=True)
class ErrorEvent(Event):
    """The step's code raised; ``error`` is the traceback the agent is shown."""

    error: str = attrs.field(converter=_text)


@attrs.frozen(kw_only=True)
class SuccessEvent(Event):
    """The task succeeded; ``result`` is the value, in JSON where it fits, else its repr
    (cut to the bound as ``_shown_result`` says)."""

    result: Any = attrs.field(converter=_shown_result)


@attrs.frozen(kw_only=True)
class FailEvent(Event):
    message: str = attrs.field(converter=_text)


@attrs.frozen(kw_only=True)
class ClarifyEvent(Event):
    message: str = attrs.field(converter=_text)


@attrs.frozen(kw_only=True)
class CancelledEvent(Event):
    pass


#: What a task does after a conflict: run again, or give up.
CONFLICT_ACTIONS = ("retry", "abandon")


def _conflict_action(value: object) -> str:
    action = _plain(value, "a conflict's action")
    if action not in CONFLICT_ACTIONS:
        raise ValueError(
            f"a conflict's action is one of {', '.join(map(repr, CONFLICT_ACTIONS))}, "
            f"not {bound_text(action, 100)!r}"
        )
    return action


def _attempt(value: object) -> int:
    return _count(value, "a conflict's attempt")


@attrs.frozen(kw_only=True)
class ConflictEvent(Event):
    """Another task on the session finished first: this one's steps are recorded but not
    kept, and it runs again from the new state (``action`` "retry", as attempt
    ``attempt``) or gives up (``action`` "abandon")."""

    action: str = attrs.field(converter=_conflict_action)
    attempt: int = attrs.field(converter=_attempt)
    message: str = attrs.field(converter=_text)


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
