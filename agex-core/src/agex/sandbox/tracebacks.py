"""Errors as the agent should see them: its own lines and code, nothing of agex's or the
host's internals."""

from __future__ import annotations

from agex.errors import CodeRejected


def agent_traceback(exc: BaseException, source: str, filename: str) -> str:
    """A traceback of ``exc`` showing only frames of the agent's code, with its chain.

    The exception may be the agent's own, with a ``__str__`` that raises or lies: whatever
    goes wrong while describing it, the description falls back to the exception's type."""
    try:
        return _traceback(exc, source, filename)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # a signal raised in there is still recorded on the run
        return f"{type(exc).__name__} (its message could not be shown)\n"


def _traceback(exc: BaseException, source: str, filename: str) -> str:
    lines = source.splitlines()
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(_one(current, lines, filename))
        if current.__cause__ is not None:
            parts.append("\nThe above exception was the direct cause of the following:\n\n")
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.append("\nDuring handling of the above exception, another occurred:\n\n")
            current = current.__context__
        else:
            current = None
    # The chain was collected newest first; Python prints oldest first.
    blocks = parts[0::2][::-1]
    joins = parts[1::2][::-1]
    out = blocks[0]
    for join, block in zip(joins, blocks[1:], strict=True):
        out += join + block
    return out


def _one(exc: BaseException, lines: list[str], filename: str) -> str:
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        text = (exc.text or "").rstrip("\n")
        caret = ""
        if text and exc.offset:
            indent = len(text) - len(text.lstrip())
            caret = "\n    " + " " * max(exc.offset - 1 - indent, 0) + "^"
        where = f"  line {exc.lineno}\n    {text.strip()}{caret}\n" if exc.lineno else ""
        return f"{where}SyntaxError: {exc.msg}\n"
    if isinstance(exc, CodeRejected):
        return f"CodeRejected: {exc}\n"
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == filename:
            lineno = tb.tb_lineno
            text = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
            frames.append(f"  line {lineno}, in {code.co_name}\n    {text}\n")
        tb = tb.tb_next
    head = "Traceback (most recent call last):\n" + "".join(frames) if frames else ""
    message = str.__str__(str(exc))
    return f"{head}{type(exc).__name__}{': ' + message if message else ''}\n"
