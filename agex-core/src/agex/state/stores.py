"""One storage object per (provider, path) in this process, so that successive tasks (and
agents sharing a state configuration) see the same store.

A server confines every state path to its state directory (:func:`confine_to`): the paths
come from clients, and a client's "/shared/state" is the server's
"<state-dir>/shared/state"; a path that would lead out of it is refused.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from agex import plugins
from agex.errors import StatePathRefused
from agex.state.config import StateConfig

_stores: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()
_root: Path | None = None


def confine_to(root: str | Path | None) -> None:
    """Resolve every state path from now on inside ``root`` (None: as given)."""
    global _root
    _root = None if root is None else Path(root).resolve()


def confined(path: str, root: Path) -> str:
    """``path`` read inside ``root``: absolute paths count from ``root``, and a path that
    resolves outside it (through ``..`` or a symlink) is refused."""
    try:
        inside = (root / path.lstrip("/\\")).resolve()
    except (ValueError, OSError):  # a NUL byte, a symlink loop
        inside = None
    if inside is None or not inside.is_relative_to(root):
        raise StatePathRefused(
            f"state path {path!r} does not lead to a place inside the server's state "
            "directory; use a plain path inside it (absolute paths count from the state "
            "directory)"
        )
    return str(inside)


def storage_for(config: StateConfig) -> Any:
    if config.storage is None:
        raise ValueError(f"{config.type} state keeps no storage")
    path = config.path
    if path is not None and _root is not None:
        path = confined(path, _root)
    key = (config.storage, path)
    with _lock:
        store = _stores.get(key)
        if store is None:
            options = {} if path is None else {"path": path}
            store = _stores[key] = plugins.create("storage", config.storage, **options)
        return store


def forget() -> None:
    """Drop the storage objects made so far, so the next use makes new ones (a test that
    puts another backend behind the same names)."""
    with _lock:
        _stores.clear()
