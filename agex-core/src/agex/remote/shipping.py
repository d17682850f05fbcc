"""Sending a task to a remote host: the task (and through it the agent, its registrations
and its model's configuration) and the arguments, as bytes of the configured serializer.

When something cannot be serialized, the error names it (which argument, which
registration) instead of pointing into the serializer's internals.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from agex.errors import AgexError

if TYPE_CHECKING:
    from agex.protocols import Invocation, Serializer


class NotSerializableError(AgexError, TypeError):
    """Part of a task cannot be sent to the host that runs it."""


def ship(invocation: Invocation, serializer: Serializer) -> bytes:
    """The bytes a remote host loads with :func:`unship`."""
    try:
        return serializer.dumps({"task": invocation.task, "arguments": invocation.arguments})
    except Exception as exc:
        culprit = _culprit(invocation, serializer) or "the task"
        raise NotSerializableError(
            f"cannot send {culprit} to the host: {type(exc).__name__}: {exc}. Everything a "
            "remote task uses must be serializable: pass plain data, and register functions, "
            "classes and modules rather than open connections, locks or files"
        ) from exc


def unship(data: bytes, serializer: Serializer) -> tuple[Any, dict[str, Any]]:
    """The task and arguments :func:`ship` sent. Loading ran the payload's code already:
    checking its shape here only turns a wrong payload into a clear error."""
    shipped = serializer.loads(data)
    task = shipped.get("task") if isinstance(shipped, dict) else None
    if not hasattr(task, "agent") or not hasattr(task, "signature"):
        raise TypeError("the payload is not an agex task")
    arguments = shipped.get("arguments")
    if not isinstance(arguments, dict):
        raise TypeError("the payload carries no arguments")
    return shipped["task"], arguments


def versions() -> dict[str, str]:
    """What must match between the client and the host for serialized code to load."""
    import cloudpickle

    from agex.version import __version__

    return {
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "agex": __version__,
        "cloudpickle": cloudpickle.__version__,
    }


def mismatch(client: Any, server: dict[str, str]) -> str | None:
    """Why the client's serialized task would not load on this host, or None."""
    if not isinstance(client, dict):
        return "the request does not say which versions the client runs"
    wrong = [
        f"{name} {client.get(name)!r} on the client, {server[name]!r} on the host"
        for name in ("python", "agex", "cloudpickle")
        if client.get(name) != server[name]
    ]
    if not wrong:
        return None
    return (
        "client and host versions differ: "
        + "; ".join(wrong)
        + ". Serialized agents only load where these match: install the same versions on "
        "both sides (Python minor version, agex-core, cloudpickle)"
    )


def _culprit(invocation: Invocation, serializer: Serializer) -> str | None:
    """The first part of the invocation that fails to serialize on its own, described."""
    for described, value in _parts(invocation):
        try:
            serializer.dumps(value)
        except Exception:
            return described
    return None


def _parts(invocation: Invocation) -> Iterator[tuple[str, Any]]:
    agent = invocation.agent
    for name, value in invocation.arguments.items():
        yield f"argument {name!r} ({type(value).__name__})", value
    for name, value in agent.policy.names.items():
        yield f"registration {name!r} of agent {agent.name!r}", value
    yield f"the llm of agent {agent.name!r}", agent.llm
    yield f"the host of agent {agent.name!r}", agent.host
    yield f"the function of task {invocation.task.name!r}", invocation.task.func
