"""Ready-made callbacks: ``on_event=pprint_events``, ``on_token=pprint_tokens``.

Readable in a terminal: colour when standard output is a TTY (and NO_COLOR is unset), lines
fitted to the terminal's width.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable

from agex.events import (
    ActionEvent,
    CancelledEvent,
    ClarifyEvent,
    ErrorEvent,
    Event,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
)

_STYLES = {"dim": "2", "bold": "1", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


#: Control characters (ESC among them) shown as escapes: text from the model or the agent's
#: code must not be able to drive the terminal (clear it, retitle it, write the clipboard).
_VISIBLE = {
    c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"
}


def visible(text: object) -> str:
    return str.__str__(str(text)).translate(_VISIBLE)


#: Whether pprint_tokens left the cursor mid-line, so the next event starts a line of its own.
_mid_line = False


def pprint_tokens(token: str) -> None:
    """Write each streamed piece of the model's reply as it arrives."""
    global _mid_line
    text = visible(token)
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()
        _mid_line = not text.endswith("\n")


def pprint_events(event: Event) -> None:
    """Print one event as a small titled block."""
    global _mid_line
    out = sys.stdout
    if _mid_line:
        out.write("\n")
        _mid_line = False
    colour = out.isatty() and "NO_COLOR" not in os.environ
    width = max(shutil.get_terminal_size((100, 24)).columns, 40)

    def paint(text: str, style: str) -> str:
        return f"\x1b[{_STYLES[style]}m{text}\x1b[0m" if colour else text

    def block(text: str, style: str | None = None, prefix: str = "  ") -> list[str]:
        lines = []
        for raw in visible(text).splitlines() or [""]:
            for piece in textwrap.wrap(
                raw, width - len(prefix), replace_whitespace=False, drop_whitespace=False
            ) or [""]:
                lines.append(prefix + (paint(piece, style) if style else piece))
        return lines

    kind = type(event).__name__.removesuffix("Event").lower()
    title = f"-- {event.agent_name} . step {event.step} . {kind} "
    lines = [paint(title + "-" * max(width - len(title), 0), "bold")]
    lines += _body(event, block)
    out.write("\n".join(lines) + "\n")
    out.flush()


def _body(event: Event, block: Callable[..., list[str]]) -> list[str]:
    if isinstance(event, TaskStartEvent):
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
    return block(repr(event))
