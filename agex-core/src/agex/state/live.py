"""Live state: the agent's variables kept as live objects in this process, per agent name
and session. Nothing is serialized, so nothing survives the process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agex.errors import AgexError

_namespaces: dict[tuple[str, str], dict[str, Any]] = {}
_running: set[tuple[str, str]] = set()
_lock = threading.Lock()


class SessionBusy(AgexError):
    """A task is already running in this agent's live session."""


@contextmanager
def live_session(agent_name: str, session: str) -> Iterator[dict[str, Any]]:
    """The session's variables, for one task at a time: a second concurrent task in the same
    session would overwrite the first one's variables, so it is refused."""
    key = (agent_name, session)
    with _lock:
        if key in _running:
            raise SessionBusy(
                f"agent {agent_name!r} is already running a task in session {session!r}; wait "
                "for it to finish, or use another session"
            )
        _running.add(key)
        namespace = _namespaces.setdefault(key, {})
    try:
        yield namespace
    finally:
        with _lock:
            _running.discard(key)


def forget(agent_name: str, session: str | None = None) -> None:
    """Drop the live variables of an agent (one session, or all of them)."""
    with _lock:
        for key in [k for k in _namespaces if k[0] == agent_name]:
            if session is None or key[1] == session:
                del _namespaces[key]
