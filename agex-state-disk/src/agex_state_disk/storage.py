"""Storage "disk": a SQLite database in WAL mode under the state path.

Safe for several threads and processes on one machine: every write is one transaction, and
``compare_and_set`` holds the database's write lock between its read and its write, so two
processes moving one session head cannot both win. Committed writes survive the process
being killed at any moment; ``synchronous=NORMAL`` trades the last commits on a power loss
for speed.

What SQLite reports is turned into agex errors naming the store and the cause: a write that
fails (a full disk, a read-only or vanished directory, a lock held too long, a damaged file)
raises ``StateWriteError`` and leaves the store as it was; a read of a damaged file raises
``StateIntegrityError``, any other failed read ``StateLoadError``. A connection that failed
is closed and the next call opens a new one, so the same object goes on once the cause is
gone. A key that is not found is looked for once more without the index, so a damaged index
never reads as an absent key.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from agex.errors import StateIntegrityError, StateLoadError, StateWriteError
from agex.storage import check_items, check_key, check_value

FILENAME = "agex-state.sqlite3"

# The row is found through the index and read by its rowid, so its key comes from the table
# and is compared with the one asked for: an index entry damaged into pointing at another
# row is caught, not read as that row's value.
_GET = "SELECT key, value FROM kv WHERE rowid = (SELECT rowid FROM kv WHERE key = ?)"


class DiskStorage:
    """``path``: the directory, made if missing (``create=False``: it must already hold a
    store). ``timeout``: seconds a write waits for another writer's lock."""

    def __init__(
        self, path: str | os.PathLike[str], *, create: bool = True, timeout: float = 30.0
    ) -> None:
        if not path:
            raise ValueError('storage "disk" needs a path: the directory to keep state in')
        self.directory = Path(path)
        self.file = self.directory / FILENAME
        self._path = os.path.abspath(self.file)
        self.timeout = float(timeout)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        if create:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateWriteError(
                    f"the state store {self.directory} cannot be created: "
                    f"{_os_cause(exc)}; give a path this process may create a directory at"
                ) from exc
        elif not self.file.is_file():
            raise StateLoadError(f"{self.directory} is not an agex state store: no {FILENAME}")
        # Only the first connection may make the file: later ones refuse a missing one, so a
        # store removed under a live process is reported, not silently started afresh.
        self._mode = "rwc" if create else "rw"
        try:
            tables = self._db().execute("SELECT name FROM sqlite_master").fetchall()
        except _FAILURES as exc:
            raise self._failed(exc, "open") from exc
        if ("kv",) not in tables:
            if tables:  # not a new database: a table of its own is never taken for ours
                raise self._damaged("its database has no table kv")
            if not create:
                raise StateLoadError(f"{self.directory} is not an agex state store: no kv table")
            with self._write() as db:
                # A rowid table: values are large blobs, and SQLite's WITHOUT ROWID tables
                # slow every write down as their rows grow (5 ms a write at 100 MB, against
                # 0.05 ms).
                db.execute(
                    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL)"
                )
        self._mode = "rw"

    def _db(self) -> sqlite3.Connection:
        """This thread's connection (SQLite connections stay in their thread)."""
        db = getattr(self._local, "db", None)
        if db is None:
            # Used by one thread only; check_same_thread=False lets close() run elsewhere.
            db = sqlite3.connect(
                f"{Path(self._path).as_uri()}?mode={self._mode}",
                uri=True,
                timeout=self.timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                _wal(db, self.timeout)
                db.execute("PRAGMA synchronous=NORMAL")
            except BaseException:
                db.close()
                raise
            self._local.db = db
            # What the file is: a write checks it is still there (see _write). And whether
            # it could be written: SQLite opens it read-only if not, for good.
            self._local.file = _identity(self._path)
            self._local.writable = os.access(self._path, os.W_OK)
            with self._lock:
                self._all.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from its first statement."""
        db = None
        try:
            db = self._db()
            if not self._local.writable:  # opened while read-only: it may be writable now
                self._drop()
                db = self._db()
            db.execute("BEGIN IMMEDIATE")
            yield db
            # In WAL mode SQLite goes on writing to a file that was deleted or replaced: the
            # commit would be lost without a word.
            if _identity(self._path) != self._local.file:
                raise _Moved
            db.execute("COMMIT")
        except BaseException as exc:
            # SQLite has rolled back already after some errors (a full disk, an I/O error).
            try:
                if db is not None and db.in_transaction:
                    db.execute("ROLLBACK")
            except _FAILURES:
                pass  # the connection is dropped below; closing it rolls back
            if isinstance(exc, _Moved):
                raise self._failed(exc, "write") from None
            if isinstance(exc, _FAILURES):
                raise self._failed(exc, "write") from exc
            raise

    def get(self, key: str) -> bytes | None:
        check_key(key)
        try:
            db = self._db()
            # fetchall, not fetchone: a statement left open holds a read transaction, and
            # the WAL can then never be reset (for other processes either).
            found = db.execute(_GET, (key,)).fetchall()
            if not found:
                # Looked at again in one read transaction: another process may be writing
                # the key right now, and the checks must all see the same store.
                db.execute("BEGIN")
                try:
                    found = db.execute(_GET, (key,)).fetchall()
                    if not found:
                        self._absent(db, key)
                finally:
                    db.execute("COMMIT")
                if not found:
                    return None
        except _FAILURES as exc:
            raise self._failed(exc, "read") from exc
        return self._value(key, found)

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
            rows = db.execute(_GET, (key,)).fetchall()
            if not rows:
                self._absent(db, key)
            current = self._value(key, rows) if rows else None
            if current != expected:
                return False
            db.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, new))
            return True

    def keys(self, prefix: str = "") -> list[str]:
        try:
            # substr, not LIKE: a prefix is literal, % and _ included.
            rows = self._db().execute(
                "SELECT key FROM kv WHERE substr(key, 1, ?) = ? ORDER BY key",
                (len(prefix), prefix),
            )
            found = [key for (key,) in rows]
        except _FAILURES as exc:
            raise self._failed(exc, "read") from exc
        if not all(isinstance(key, str) for key in found):
            raise self._damaged("a stored key is not text")
        return found

    def integrity_check(self) -> list[str]:
        """What SQLite's ``PRAGMA integrity_check`` finds wrong with the database file (no
        entries: nothing). Reads the whole file."""
        try:
            rows = self._db().execute("PRAGMA integrity_check").fetchall()
        except _FAILURES as exc:
            self._drop()
            return [f"{exc} ({_code_name(exc)})"]
        found = [str(row[0]) for row in rows]
        return [] if found == ["ok"] else found

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            for db in self._all:
                db.close()
            self._all.clear()
        self._local = threading.local()

    # -- failures ----------------------------------------------------------------------

    def _value(self, key: str, rows: list[tuple[object, object]]) -> bytes:
        stored, value = rows[0]
        if stored != key:
            raise self._damaged(f"its index leads key {key!r} to the row of another key")
        if type(value) is not bytes:
            raise self._damaged(f"the value of key {key!r} is not bytes")
        return value

    def _absent(self, db: sqlite3.Connection, key: str) -> None:
        """Raise unless ``key`` is truly absent: neither the index nor the table holds it."""
        if db.execute("SELECT rowid FROM kv WHERE key = ?", (key,)).fetchall():
            raise self._damaged(f"its index holds key {key!r}, whose row is missing")
        if db.execute("SELECT 1 FROM kv NOT INDEXED WHERE key = ?", (key,)).fetchall():
            raise self._damaged(f"its index has lost key {key!r}, which is stored")

    def _damaged(self, what: str) -> StateIntegrityError:
        return StateIntegrityError(
            f"the state store {self.directory} is damaged: {what}; run "
            f"`agex state check {self.directory}`. SQLite's REINDEX repairs a damaged index; "
            "otherwise restore the store from a backup"
        )

    def _failed(self, exc: BaseException, doing: str) -> Exception:
        """The agex error for ``exc`` met while ``doing`` ("write", "read" or "open"); this
        thread's connection is closed, and the next call opens a new one."""
        self._drop()
        cause, damaged = self._cause(exc)
        if isinstance(exc, _FAILURES):
            cause += f" (SQLite: {exc}, {_code_name(exc)})"
        if doing == "write":
            return StateWriteError(
                f"could not write to the state store {self.directory}: {cause}. Nothing was "
                "written: a session stays on its last commit"
            )
        if damaged:
            return StateIntegrityError(f"the state store {self.directory} is damaged: {cause}")
        return StateLoadError(f"could not {doing} the state store {self.directory}: {cause}")

    def _cause(self, exc: BaseException) -> tuple[str, bool]:
        """What went wrong, in plain words with what to do; and whether the file is
        damaged."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if (
            primary in (_CORRUPT, _NOTADB)
            or isinstance(exc, UnicodeDecodeError)  # text SQLite reported, or a stored key
            or any(sign in str(exc) for sign in _DAMAGE)
        ):
            return (
                f"its database file is damaged; run `agex state check {self.directory}`, "
                "then restore the store from a backup (SQLite's REINDEX repairs a damaged "
                "index)",
                True,
            )
        if primary == _FULL:
            return "the disk is full; free space on it, then try again", False
        if primary in (_BUSY, _LOCKED):
            return (
                f"another connection held its write lock for over {self.timeout:g} s; try "
                "again once that writer is done (or end a process stuck holding it)",
                False,
            )
        if isinstance(exc, _Moved) or code == _READONLY_DBMOVED:
            return (
                "its database file was removed or replaced while in use; put the store back "
                "where it was, then try again",
                False,
            )
        found = self._diagnosis()
        if found:
            return found, False
        if primary in (_READONLY, _PERM):
            return "it is read-only; make it writable, then try again", False
        if primary == _CANTOPEN:
            return "its database file cannot be opened; check its permissions", False
        if primary == _IOERR:
            return "the operating system reported an I/O error; check the disk", False
        return "SQLite refused the operation", False

    def _diagnosis(self) -> str | None:
        """What is wrong with the store's directory or file, if something is."""
        if not self.directory.is_dir():
            return "its directory is gone (removed while in use?); put it back, then try again"
        if not self.file.is_file():
            return f"{FILENAME} is gone from it; put it back, then try again"
        try:
            flags = os.statvfs(self.directory).f_flag if hasattr(os, "statvfs") else 0
        except OSError:
            flags = 0
        if flags & getattr(os, "ST_RDONLY", 0):
            return "its file system is mounted read-only; remount it read-write, then try again"
        if not (os.access(self.directory, os.W_OK) and os.access(self.file, os.W_OK)):
            return (
                "it is read-only: this process may not write to its directory or its file; "
                "fix the permissions, then try again"
            )
        return None

    def _drop(self) -> None:
        db = getattr(self._local, "db", None)
        if db is None:
            return
        self._local.db = None
        with self._lock:
            if db in self._all:
                self._all.remove(db)
        with suppress(sqlite3.Error):
            db.close()


#: What SQLite (and its Python module) raise: text read from a damaged file may not decode.
_FAILURES = (sqlite3.Error, UnicodeDecodeError)
#: Signs of a damaged file in what SQLite reports without a code of its own for it.
_DAMAGE = ("malformed", "unsupported file format", "Could not decode to UTF-8")

# SQLite's primary result codes (an extended code's low byte).
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT = 3, 5, 6, 8, 10, 11
_FULL, _CANTOPEN, _NOTADB = 13, 14, 26
_READONLY_DBMOVED = _READONLY | (4 << 8)


class _Moved(Exception):
    """The database file was deleted or replaced under an open connection."""


def _identity(file: str) -> tuple[int, int] | None:
    try:
        found = os.stat(file)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _code_name(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", None) or type(exc).__name__)


def _os_cause(exc: OSError) -> str:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "a file, not a directory, is in the way"
    return exc.strerror or str(exc)


def _wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch to WAL mode. Processes opening a new database at once can meet a lock that
    SQLite does not wait out for this one statement, so it is retried for a while."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
