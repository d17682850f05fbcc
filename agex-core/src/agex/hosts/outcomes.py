"""How a run that ended without a value travels back from a remote host: as plain data
(type name, message, traceback), raised again on the caller's side.

The task outcomes keep their type across the wire; anything else becomes a
RemoteExecutionError that carries the remote traceback.
"""

from __future__ import annotations

from typing import Any

#: Task outcomes the caller raises as their own type; anything else is a RemoteExecutionError.
OUTCOMES = ("TaskFail", "TaskClarify", "TaskTimeout", "TaskCancelled")


def encode_error(exc: BaseException) -> dict[str, Any]:
    import traceback

    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def raise_error(message: dict[str, Any]) -> None:
    """Raise, on the caller's side, what ended the remote run."""
    from agex import errors

    kind = message.get("type")
    text = str(message.get("message", ""))
    if kind in OUTCOMES:
        raise getattr(errors, str(kind))(text)
    raise errors.RemoteExecutionError(
        f"{kind}: {text}",
        remote_traceback=message.get("traceback"),
        remote_type=str(kind),
    )
