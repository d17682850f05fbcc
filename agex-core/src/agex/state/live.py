"""Live state: the agent's variables kept as live objects in this process, per agent name
and session. Nothing is serialized, so nothing survives the process."""

from __future__ import annotations

import threading
from typing import Any

_namespaces: dict[tuple[str, str], dict[str, Any]] = {}
_lock = threading.Lock()


def live_namespace(agent_name: str, session: str) -> dict[str, Any]:
    """The variables of ``agent_name`` in ``session`` (shared by agents of one name)."""
    with _lock:
        return _namespaces.setdefault((agent_name, session), {})


def forget(agent_name: str, session: str | None = None) -> None:
    """Drop the live variables of an agent (one session, or all of them)."""
    with _lock:
        for key in [k for k in _namespaces if k[0] == agent_name]:
            if session is None or key[1] == session:
                del _namespaces[key]
