"""Live state: the agent's variables kept as live objects in this process, per agent name
and session. Nothing is serialized, so nothing survives the process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agex.errors import AgexError

#: In a live session's namespace, for the run holding it: "first" when no run used the session
#: before this one (the one time its state's ``init`` is given), else "later". Agent code
#: cannot name ``_agex...`` variables.
USE = "_agex_use"

_namespaces: dict[tuple[str, str], dict[str, Any]] = {}
_running: set[tuple[str, str]] = set()
_lock = threading.Lock()


class SessionBusy(AgexError):
    """A task is already running in this agent's live session."""


@contextmanager
def live_session(agent_name: str, session: str) -> Iterator[dict[str, Any]]:
    """The session's variables, for one task at a time: a second concurrent task in the same
    session would overwrite the first one's variables, so it is refused. Every run that
    holds the session uses it, whichever agent of the name runs it and whether or not its
    state has an ``init``: only the first is told it is (see ``first_run``)."""
    key = (agent_name, session)
    with _lock:
        if key in _running:
            raise SessionBusy(
                f"agent {agent_name!r} is already running a task in session {session!r}; wait "
                "for it to finish, or use another session"
            )
        _running.add(key)
        namespace = _namespaces.setdefault(key, {})
        namespace[USE] = "later" if USE in namespace else "first"
    try:
        yield namespace
    finally:
        with _lock:
            _running.discard(key)


def first_run(namespace: dict[str, Any]) -> bool:
    """Whether the run holding this live session is the first to use it: a new session, as a
    versioned one without a commit is."""
    return namespace.get(USE) == "first"


def unused(namespace: dict[str, Any]) -> None:
    """The run holding this live session left it as it found it (its ``init`` failed before
    any code ran there): the next run is its first again."""
    if first_run(namespace):
        del namespace[USE]


def forget(agent_name: str, session: str | None = None) -> None:
    """Drop the live variables of an agent (one session, or all of them)."""
    with _lock:
        for key in [k for k in _namespaces if k[0] == agent_name]:
            if session is None or key[1] == session:
                del _namespaces[key]
