"""Ready-made callbacks: ``on_event=pprint_events``, ``on_token=pprint_tokens``.

Readable in a terminal: colour when the stream is a TTY (and NO_COLOR is unset), lines fitted
to the terminal's width. Text from the model, the agent's code or the far side is shown, never
obeyed: its control and format characters are printed as escapes (``agex.printable``) at
every verbosity, in every line.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable
from typing import TextIO

from agex.events import (
    ActionEvent,
    CancelledEvent,
    ClarifyEvent,
    ConflictEvent,
    ErrorEvent,
    Event,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
)
from agex.notebook import utc
from agex.printable import visible

#: What each verbosity shows (see :func:`pprint_events`).
VERBOSITIES = ("brief", "normal", "verbose")

_STYLES = {"dim": "2", "bold": "1", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}

#: The narrowest width lines are fitted to.
_MIN_WIDTH = 20


#: The stream pprint_tokens left mid-line, so the next event on it starts a line of its own.
_mid_line: TextIO | None = None


def pprint_tokens(token: str, *, stream: TextIO | None = None) -> None:
    """Write each streamed piece of the model's reply as it arrives, to ``stream``
    (default: standard output at the time of the call)."""
    global _mid_line
    out = sys.stdout if stream is None else stream
    text = visible(token)
    if text:
        out.write(text)
        out.flush()
        _mid_line = None if text.endswith("\n") else out


def pprint_events(
    events: Event | Iterable[Event],
    *,
    verbosity: str = "normal",
    color: bool | None = None,
    width: int | None = None,
    stream: TextIO | None = None,
) -> None:
    """Print one event, or each of an iterable of events, for a reader at a terminal.

    ``verbosity``:

    - ``"brief"``: one line per event: agent, step, kind and the gist (the first line of the
      code, of the output, the last line of a traceback, the result), cut to the width.
    - ``"normal"``: a titled block per event: the task and its inputs, the model's
      reasoning and code, what the code printed, the traceback, the outcome.
    - ``"verbose"``: the blocks of ``"normal"``, each titled also with its time, session
      and state commit id, every input on a line of its own, and the fields of events that
      ``"normal"`` leaves out.

    ``color``: None colours only a TTY while NO_COLOR is unset; True or False forces it.
    ``width``: columns to fit lines to (None: the terminal's width). ``stream``: where to
    write (None: standard output at the time of the call).

    It is a callback as it is (``on_event=pprint_events``); with options, bind them with
    ``functools.partial(pprint_events, verbosity="brief")``.
    """
    global _mid_line
    if verbosity not in VERBOSITIES:
        raise ValueError(
            f"verbosity must be one of {', '.join(map(repr, VERBOSITIES))}, not {verbosity!r}"
        )
    if color not in (None, True, False):
        raise ValueError(f"color must be None (auto), True or False, not {color!r}")
    if width is not None and (type(width) is not int or width < _MIN_WIDTH):
        raise ValueError(
            f"width must be a whole number of columns, {_MIN_WIDTH} or more, or None for "
            f"the terminal's width; not {width!r}"
        )
    batch = _events(events)
    out = sys.stdout if stream is None else stream
    if color is None:
        isatty = getattr(out, "isatty", None)
        color = bool(isatty is not None and isatty()) and "NO_COLOR" not in os.environ
    if width is None:
        width = max(shutil.get_terminal_size((100, 24)).columns, 40)
    page = _Page(color, width)
    if _mid_line is not None and _mid_line is out:
        out.write("\n")
        _mid_line = None
    for event in batch:
        lines = page.line(event) if verbosity == "brief" else page.block(event, verbosity)
        out.write("\n".join(lines) + "\n")
    out.flush()


def _events(events: object) -> list[Event]:
    if isinstance(events, Event):
        return [events]
    if isinstance(events, str | bytes | dict) or not isinstance(events, Iterable):
        raise TypeError(
            f"pprint_events prints an event or an iterable of events, not {type(events).__name__}"
        )
    batch = list(events)
    for item in batch:
        if not isinstance(item, Event):
            raise TypeError(
                f"pprint_events prints agex events; this iterable holds a "
                f"{type(item).__name__} (events come from on_event=..., or "
                "Event.from_json(...))"
            )
    return batch


class _Page:
    """The lines of events at one colour setting and width. Every piece of a line reaches
    the stream through :meth:`paint`, which shows acting characters as escapes whatever
    composed the piece (an event's field, a future one, a number from the wire)."""

    def __init__(self, color: bool, width: int) -> None:
        self.color = color
        self.width = width

    def paint(self, text: str, style: str | None = None) -> str:
        shown = visible(text)
        return f"\x1b[{_STYLES[style]}m{shown}\x1b[0m" if self.color and style else shown

    def wrap(self, text: str, style: str | None = None, prefix: str = "  ") -> list[str]:
        lines = []
        for raw in visible(text).splitlines() or [""]:
            for piece in textwrap.wrap(
                raw, self.width - len(prefix), replace_whitespace=False, drop_whitespace=False
            ) or [""]:
                lines.append(self.paint(prefix) + self.paint(piece, style))
        return lines

    def block(self, event: Event, verbosity: str) -> list[str]:
        title = visible(f"-- {event.agent_name} . step {event.step} . {_kind(event)} ")
        lines = [self.paint(title + "-" * max(self.width - len(title), 0), "bold")]
        if verbosity == "verbose":
            about = f"{utc(event.timestamp)}  session={event.session}  commit={event.commit or '-'}"
            lines += self.wrap(about, "dim")
        return lines + _body(event, self.wrap, verbosity == "verbose")

    def line(self, event: Event) -> list[str]:
        head = visible(f"{event.agent_name} . step {event.step} . {_kind(event)}: ")
        gist = visible(_gist(event)).replace("\n", " ").replace("\t", " ")
        room = max(self.width - len(head), 10)
        if len(gist) > room:
            gist = gist[: room - 3] + "..."
        return [self.paint(head, "bold") + self.paint(gist, _STYLE_OF.get(type(event)))]


def _kind(event: Event) -> str:
    return type(event).__name__.removesuffix("Event").lower()


_STYLE_OF: dict[type, str] = {
    ActionEvent: "cyan",
    ErrorEvent: "red",
    SuccessEvent: "green",
    FailEvent: "red",
    ClarifyEvent: "yellow",
    CancelledEvent: "yellow",
    ConflictEvent: "yellow",
}


def _gist(event: Event) -> str:
    """The one thing to say of an event on its one line."""
    if isinstance(event, TaskStartEvent):
        inputs = ", ".join(f"{k}={v}" for k, v in event.inputs.items())
        return f"{event.task_name}({inputs})"
    if isinstance(event, ActionEvent):
        return _first_line(event.code)
    if isinstance(event, OutputEvent):
        return _first_line(event.text)
    if isinstance(event, ErrorEvent):
        lines = event.error.strip().splitlines()
        return lines[-1] if lines else ""
    if isinstance(event, SuccessEvent):
        return repr(event.result)
    if isinstance(event, FailEvent | ClarifyEvent):
        return event.message
    if isinstance(event, CancelledEvent):
        return "cancelled"
    if isinstance(event, ConflictEvent):
        return f"{event.action} (attempt {event.attempt})"
    return ""


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    more = f"  [+{len(lines) - 1} lines]" if len(lines) > 1 else ""
    return (lines[0] if lines else "") + more


def _body(event: Event, block: Callable[..., list[str]], verbose: bool) -> list[str]:
    if isinstance(event, TaskStartEvent):
        if verbose:
            lines = block(f"task {event.task_name}" + ("" if event.inputs else ", no inputs"))
            for name, value in event.inputs.items():
                lines += block(f"{name} = {value}", prefix="    ")
            return lines
        inputs = ", ".join(f"{k}={v}" for k, v in event.inputs.items())
        return block(f"{event.task_name}({inputs})  session={event.session}")
    if isinstance(event, ActionEvent):
        lines = block(event.thinking, "dim") if event.thinking else []
        return lines + block(event.code, "cyan", prefix="  | ")
    if isinstance(event, OutputEvent):
        return block(event.text.rstrip("\n"))
    if isinstance(event, ErrorEvent):
        return block(event.error.rstrip("\n"), "red")
    if isinstance(event, SuccessEvent):
        return block(f"result: {event.result!r}", "green")
    if isinstance(event, FailEvent):
        return block(f"failed: {event.message}", "red")
    if isinstance(event, ClarifyEvent):
        return block(f"needs clarification: {event.message}", "yellow")
    if isinstance(event, CancelledEvent):
        return block("cancelled", "yellow")
    if isinstance(event, ConflictEvent):
        return block(f"{event.action} (attempt {event.attempt}): {event.message}", "yellow")
    return block(repr(event))
