"""Errors as the agent should see them: its own lines and code, nothing of agex's or the
host's internals.

Agent code shapes much of a traceback (its messages, its lines, how deep it recurses, how
long a chain of exceptions it builds), so each part is cut to a bound as it is built and
the whole fits an event (``EVENT_TEXT_LIMIT``): the event and the model's feedback show the
same text, and a 50 MB message is never copied whole."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from types import TracebackType

from agex.errors import CodeRejected
from agex.events import EVENT_TEXT_LIMIT, bound_text

#: Longest exception message shown, in characters: a few chained exceptions and their
#: frames still fit an event.
MESSAGE_LIMIT = 4_000
#: Longest frame shown (line number, function and line of code), in characters.
FRAME_LIMIT = 300
#: Frames shown of one exception: the oldest half and the newest half of this many.
FRAMES_SHOWN = 50
#: A frame repeated in a row (recursion) is shown this many times, then counted.
REPEATS_SHOWN = 3
#: Exceptions shown of a chain, the newest ones.
CHAIN_LIMIT = 10


def agent_traceback(exc: BaseException, source: str, filename: str) -> str:
    """A traceback of ``exc`` showing only frames of the agent's code, with its chain.

    The exception may be the agent's own, with a ``__str__`` that raises or lies: whatever
    goes wrong while describing it, the description falls back to the exception's type."""
    try:
        return bound_text(_traceback(exc, source, filename), EVENT_TEXT_LIMIT)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # a signal raised in there is still recorded on the run
        return f"{_name(exc)} (its message could not be shown)\n"


def _traceback(exc: BaseException, source: str, filename: str) -> str:
    lines = source.splitlines()
    chain: list[tuple[BaseException, str]] = []  # newest first, each with how an older led to it
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None:
        seen.add(id(current))
        older: BaseException | None = None
        join = ""
        if current.__cause__ is not None:
            older = current.__cause__
            join = "\nThe above exception was the direct cause of the following:\n\n"
        elif current.__context__ is not None and not current.__suppress_context__:
            older = current.__context__
            join = "\nDuring handling of the above exception, another occurred:\n\n"
        if older is not None and id(older) in seen:  # a cycle: stop where it closes
            older, join = None, ""
        chain.append((current, join))
        current = older
    # Python prints the oldest first.
    shown = chain[:CHAIN_LIMIT]
    out = []
    if len(chain) > len(shown):
        out.append(f"[... {len(chain) - len(shown):,} older exceptions of the chain not shown]\n")
    for current, join in reversed(shown):
        out.append(join)
        out.append(_one(current, lines, filename))
    return "".join(out)


def _one(exc: BaseException, lines: list[str], filename: str) -> str:
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        text = bound_text((exc.text or "").rstrip("\n"), FRAME_LIMIT)
        caret = ""
        if text and exc.offset:
            indent = len(text) - len(text.lstrip())
            caret = "\n    " + " " * min(max(exc.offset - 1 - indent, 0), FRAME_LIMIT) + "^"
        where = f"  line {exc.lineno}\n    {text.strip()}{caret}\n" if exc.lineno else ""
        return f"{where}SyntaxError: {_message(exc.msg)}\n"
    if isinstance(exc, CodeRejected):
        return f"CodeRejected: {_message(exc)}\n"
    frames = _ends(_frames(exc.__traceback__, lines, filename), FRAMES_SHOWN // 2)
    head = "Traceback (most recent call last):\n" + "".join(frames) if frames else ""
    message = _message(exc)
    return f"{head}{_name(exc)}{': ' + message if message else ''}\n"


def _message(value: object) -> str:
    return bound_text(str.__str__(str(value)), MESSAGE_LIMIT)


def _name(exc: BaseException) -> str:
    return bound_text(type(exc).__name__, FRAME_LIMIT)


def _frames(tb: TracebackType | None, lines: list[str], filename: str) -> Iterator[str]:
    """The frames of the agent's code, oldest first; one repeated in a row (recursion) is
    shown ``REPEATS_SHOWN`` times, then counted, as Python does."""
    last, run = "", 0
    cut: dict[int, str] = {}  # each line of code cut once, however often it recurs
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            lineno = tb.tb_lineno
            if lineno not in cut:
                line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
                cut[lineno] = bound_text(line, FRAME_LIMIT).strip()
            frame = bound_text(
                f"  line {lineno}, in {code.co_name}\n    {cut[lineno]}", FRAME_LIMIT
            )
            if frame == last:
                run += 1
            else:
                if run > REPEATS_SHOWN:
                    yield _repeated(run)
                last, run = frame, 1
            if run <= REPEATS_SHOWN:
                yield frame + "\n"
        tb = tb.tb_next
    if run > REPEATS_SHOWN:
        yield _repeated(run)


def _repeated(run: int) -> str:
    return f"  [Previous line repeated {run - REPEATS_SHOWN:,} more times]\n"


def _ends(items: Iterator[str], keep: int) -> list[str]:
    """The first and the last ``keep`` items, and a note of how many between were left out."""
    first: list[str] = []
    last: deque[str] = deque(maxlen=keep)
    left_out = 0
    for item in items:
        if len(first) < keep:
            first.append(item)
            continue
        left_out += len(last) == keep
        last.append(item)
    note = [f"  [... {left_out:,} more frames]\n"] if left_out else []
    return first + note + list(last)
