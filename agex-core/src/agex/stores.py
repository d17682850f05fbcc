"""Where versioned state is kept: one storage object per (provider, path), so that successive
tasks (and agents sharing a state configuration) see the same store.

A :class:`Stores` is handed to whatever runs a loop; nothing below it looks storage up.
:data:`LOCAL` serves this process. A server makes its own, confined to its state directory:
the paths come from clients, so a client's ``/shared/state`` is the server's
``<state-dir>/shared/state``, and a path that would lead out of it is refused. A server
whose replicas share one database makes :class:`DatabaseStores` instead: there a client's
``/shared/state`` is the name ``shared/state`` inside that database, whichever replica runs
the task.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from agex import plugins
from agex.errors import AgexError, StatePathRefused
from agex.protocols import StateConfig, Storage


class Stores:
    """The storages of one place that runs loops: this process (:data:`LOCAL`), or a server,
    whose ``root`` confines every state path to its state directory, and whose ``kept``
    are the only storages its clients may name: those whose state is a path in that
    directory. (Any other reads its place from the server's environment or options, a
    database or a bucket the server was never told to give clients.)"""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, kept: tuple[str, ...] | None = None
    ) -> None:
        #: Every state path is read inside this directory (None: as given).
        self.root: Path | None = None if root is None else Path(root).resolve()
        #: The storages state may be kept in here (None: any).
        self.kept = kept
        self._made: dict[tuple[str, str | None], Storage] = {}
        self._lock = threading.Lock()

    def storage(self, config: StateConfig) -> Storage:
        """The storage ``config`` names, made on first use and shared from then on."""
        if config.storage is None:
            raise ValueError(f"{config.type} state keeps no storage")
        key = self.where(config.storage, config.path)
        with self._lock:
            made = self._made.get(key)
            if made is None:
                made = self._made[key] = self._make(*key)
            return made

    def where(self, storage: str, path: str | None) -> tuple[str, str | None]:
        """The storage provider and the path state named so is kept at here; StatePathRefused
        for a path this place does not keep state at, StorageRefused for a storage."""
        if self.kept is not None and storage not in self.kept:
            raise StorageRefused(
                f"this server keeps clients' state in its state directory, where storage "
                f"{storage!r} cannot be kept; use "
                + " or ".join(f'storage="{name}"' for name in self.kept)
            )
        if path is not None and self.root is not None:
            path = confined(path, self.root)
        return storage, path

    def forget(self) -> None:
        """Drop the storage objects made so far, so the next use makes new ones (a test that
        puts another backend behind the same names)."""
        with self._lock:
            self._made.clear()

    def close(self) -> None:
        """Let go of the storages' connections, where they hold any (a server stopping)."""
        with self._lock:
            made, self._made = list(self._made.values()), {}
        for storage in made:
            closing = getattr(storage, "close", None)
            if callable(closing):
                closing()

    def _make(self, provider: str, path: str | None) -> Storage:
        options = {} if path is None else {"path": path}
        made: Storage = plugins.create("storage", provider, **options)
        return made

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


class DatabaseStores(Stores):
    """The storages of a server that keeps every client's state in one PostgreSQL database
    (``agex serve --state-url``), which other replicas of it share: a client's path is a
    name inside that database, so a session's next task sees the same variables on any
    replica.

    Clients name their state as for any server: ``storage="disk"`` (the seed's) and
    ``storage="postgres"`` are both kept in the database, under the path's name, so the
    two name one state. Other storages are refused: state kept anywhere else would be seen
    by one replica only. Names whose first part is :data:`RESERVED` are the server's own.
    """

    #: The storages clients may name; each is kept in the database.
    KEPT = ("disk", "postgres")
    #: The first part of the names the server keeps its own records under.
    RESERVED = ".agex"

    def __init__(self, url: str, pool_size: int = 10, timeout: float = 30.0) -> None:
        super().__init__(None)
        self._url = url
        #: Each storage's most connections, and seconds an operation may wait
        #: (``agex serve --state-pool-size``, ``--state-timeout``).
        self.pool_size = pool_size
        self.timeout = timeout

    def where(self, storage: str, path: str | None) -> tuple[str, str | None]:
        if storage not in self.KEPT:
            raise StorageRefused(
                f"this server keeps state in a database its replicas share, where storage "
                f'{storage!r} cannot be kept; use connect_state(type="versioned", '
                'storage="disk", path="...") (kept in that database too)'
            )
        name = named("" if path is None else path)
        if name.split("/", 1)[0] == self.RESERVED:
            raise StatePathRefused(
                f"state path {path!r} is under {self.RESERVED!r}, where the server keeps its "
                "own records; give another path"
            )
        return "postgres", name

    def server(self) -> Storage:
        """The store the server's own records live in (which replica holds which run), on
        connections of its own, so that clients' commits holding every other connection
        never keep a run from starting."""
        with self._lock:
            key = ("postgres", f"{self.RESERVED}/server")
            made = self._made.get(key)
            if made is None:
                made = self._made[key] = plugins.create(
                    "storage",
                    "postgres",
                    path=key[1],
                    url=self._url,
                    pool_size=2,
                    timeout=self.timeout,
                )
            return made

    def _make(self, provider: str, path: str | None) -> Storage:
        made: Storage = plugins.create(
            "storage",
            provider,
            path=path,
            url=self._url,
            pool_size=self.pool_size,
            timeout=self.timeout,
        )
        return made

    def __repr__(self) -> str:
        return "DatabaseStores()"  # never the URL: it may hold a password


class StorageRefused(AgexError, ValueError):
    """A storage this place does not keep clients' state in."""


#: The storages of this process.
LOCAL = Stores()
