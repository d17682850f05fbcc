"""Where versioned state is kept: one storage object per (provider, path), so that successive
tasks (and agents sharing a state configuration) see the same store.

A :class:`Stores` is handed to whatever runs a loop; nothing below it looks storage up.
:data:`LOCAL` serves this process. A server makes its own, confined to its state directory:
the paths come from clients, so a client's ``/shared/state`` is the server's
``<state-dir>/shared/state``, and a path that would lead out of it is refused.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agex import plugins
from agex.errors import StatePathRefused
from agex.protocols import StateConfig, Storage


class Stores:
    """The storages of one place that runs loops: this process (:data:`LOCAL`), or a server,
    whose ``root`` confines every state path to its state directory."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        #: Every state path is read inside this directory (None: as given).
        self.root: Path | None = None if root is None else Path(root).resolve()
        self._made: dict[tuple[str, str | None], Storage] = {}
        self._lock = threading.Lock()

    def storage(self, config: StateConfig) -> Storage:
        """The storage ``config`` names, made on first use and shared from then on."""
        if config.storage is None:
            raise ValueError(f"{config.type} state keeps no storage")
        path = config.path
        if path is not None and self.root is not None:
            path = confined(path, self.root)
        key = (config.storage, path)
        with self._lock:
            made = self._made.get(key)
            if made is None:
                options = {} if path is None else {"path": path}
                made = self._made[key] = plugins.create("storage", config.storage, **options)
            return made

    def forget(self) -> None:
        """Drop the storage objects made so far, so the next use makes new ones (a test that
        puts another backend behind the same names)."""
        with self._lock:
            self._made.clear()

    def __repr__(self) -> str:
        return f"Stores(root={None if self.root is None else str(self.root)!r})"


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


def named(path: str | os.PathLike[str]) -> str:
    """``path`` as a name inside one shared store (a database): its parts joined by ``/``,
    without empty or ``.`` ones, so that ``/team/analyst/`` and ``team//analyst`` name one
    state; a path with ``..`` (or nothing in it) is refused, as a name is not a way through
    folders."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"a state path is a string, got {path!r}")
    parts = [part for part in text.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts or "\0" in text or not parts:
        raise StatePathRefused(
            f"state path {text!r} is not a name inside the store: give one like "
            "'team/analyst' (parts separated by '/', no '..')"
        )
    return "/".join(parts)


#: The storages of this process.
LOCAL = Stores()
