"""Storage "disk": a SQLite database in WAL mode under the state path.

Safe for several threads and processes on one machine: every write is one transaction, and
``compare_and_set`` holds the database's write lock between its read and its write, so two
processes moving one session head cannot both win. Committed writes survive the process
being killed at any moment; ``synchronous=NORMAL`` trades the last commits on a power loss
for speed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from agex.storage import check_items, check_key, check_value

FILENAME = "agex-state.sqlite3"


class DiskStorage:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not path:
            raise ValueError('storage "disk" needs a path: the directory to keep state in')
        self.directory = Path(path)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.file = self.directory / FILENAME
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._write() as db:
            # A rowid table: values are large blobs, and SQLite's WITHOUT ROWID tables slow
            # every write down as their rows grow (5 ms a write at 100 MB, against 0.05 ms).
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections stay in their thread)."""
        db = getattr(self._local, "db", None)
        if db is None:
            # Used by one thread only; check_same_thread=False lets close() run elsewhere.
            db = sqlite3.connect(
                self.file, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            _wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from its first statement."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def get(self, key: str) -> bytes | None:
        # fetchall, not fetchone: a statement left open holds a read transaction, and the
        # WAL can then never be reset (for other processes either).
        rows = self._db().execute("SELECT value FROM kv WHERE key = ?", (check_key(key),))
        found = rows.fetchall()
        return bytes(found[0][0]) if found else None

    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        if not checked:
            return
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", checked.items())

    def delete(self, key: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM kv WHERE key = ?", (check_key(key),))

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        check_key(key)
        new = check_value(key, new)
        expected = None if expected is None else check_value(key, expected)
        with self._write() as db:
            rows = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchall()
            current = bytes(rows[0][0]) if rows else None
            if current != expected:
                return False
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, new))
            return True

    def keys(self, prefix: str = "") -> list[str]:
        # substr, not LIKE: a prefix is literal, % and _ included.
        rows = self._db().execute(
            "SELECT key FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
        )
        return [key for (key,) in rows]

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()


def _wal(db: sqlite3.Connection) -> None:
    """Switch to WAL mode. Processes opening a new database at once can meet a lock that
    SQLite does not wait out for this one statement, so it is retried for a while."""
    deadline = time.monotonic() + 30.0
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
