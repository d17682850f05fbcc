"""Storage "postgres": agex's key-value store in one table of a PostgreSQL database, so that
several processes and machines (the replicas of an agex server) share versioned state.

Where the database is comes from the side that runs the loop, never from a shipped agent:
the ``url`` given (``agex serve --state-url``), else ``AGEX_POSTGRES_URL``, else libpq's own
environment (``PGHOST``, ``PGDATABASE``, ``PGUSER``, ``PGPASSWORD``, ``PGPASSFILE``...).
``path`` names the state inside the database: every key lives under it, apart from every
other path's.

Every operation is a transaction of its own; ``compare_and_set`` is one
``UPDATE ... WHERE value = expected`` (or an insert of an absent key), which PostgreSQL runs
atomically however many writers race; ``put_and_set`` writes a commit and moves the head in
one transaction. A connection broken under an operation (the database restarted) is
replaced and the operation tried once more, once the database answers; a set whose COMMIT
went out unanswered asks PostgreSQL whether that transaction committed (``txid_status``)
rather than guess from the value. An operation that gets no connection within ``timeout``
seconds, or whose try gets no answer within it (a deadline of ours: a server that stopped
answering with its connections open), is a ``StateWriteError`` or ``StateLoadError`` naming
the cause, never the password.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agex.errors import StateIntegrityError, StateLoadError, StateWriteError
from agex.storage import check_items, check_key, check_value
from agex.stores import named
from agex_state_postgres import schema
from agex_state_postgres.place import Place

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

T = TypeVar("T")

_GET = "SELECT value FROM agex_kv WHERE store = %s AND key = %s"
_PUT = (
    "INSERT INTO agex_kv (store, key, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (store, key) DO UPDATE SET value = EXCLUDED.value"
)
# Both return the transaction's id when they change the row, so that a writer whose
# connection broke before it heard the COMMIT's answer can ask whether it landed; and when
# the server started, as after a crash it may give an id again that no record on disk held.
_SWAP = (
    "UPDATE agex_kv SET value = %s WHERE store = %s AND key = %s AND value = %s "
    "RETURNING txid_current(), pg_postmaster_start_time()"
)
_CREATE = (
    "INSERT INTO agex_kv (store, key, value) VALUES (%s, %s, %s) "
    "ON CONFLICT (store, key) DO NOTHING RETURNING txid_current(), pg_postmaster_start_time()"
)
_LANDED = "SELECT txid_status(%s), pg_postmaster_start_time() = %s"
_DELETE = "DELETE FROM agex_kv WHERE store = %s AND key = %s"
# A prefix is a range of the primary key (keys sort by code point, collation "C"): one
# index scan whatever the prefix holds, with no pattern characters to escape.
_KEYS = "SELECT key FROM agex_kv WHERE store = %s AND key >= %s ORDER BY key"
_KEYS_BELOW = "SELECT key FROM agex_kv WHERE store = %s AND key >= %s AND key < %s ORDER BY key"
_NOTHING = "Nothing was written: a session stays on its last commit"
_UNSURE = (
    "It may have been written (the connection broke as it committed): a session is on "
    "its last commit or on this one; read its head to see"
)
#: Most bytes of a key (with its path): PostgreSQL indexes rows of up to about 2.7 kB.
MAX_KEY_BYTES = 2000
#: Seconds the pool keeps trying to replace a broken connection before it leaves the next
#: one to the next operation: short, so that an operation after a long outage connects at
#: once rather than after a backoff grown during it.
_RECONNECT = 1.0
#: Seconds an operation waits on the pool at a time, so that each wait asks it anew to
#: connect (see _RECONNECT).
_WAIT_SLICE = 1.0


class PostgresStorage:
    """``path``: the name of this state in the database (default ``"default"``); ``url``:
    where the database is (see the module). ``timeout``: seconds an operation may wait for
    a connection (the database restarting, or every connection busy). ``pool_size``: most
    connections open to the database, shared by every storage on it (see ``_Pools``)."""

    def __init__(
        self,
        path: str | None = None,
        *,
        url: str | None = None,
        timeout: float = 30.0,
        pool_size: int = 10,
    ) -> None:
        self.store = "default" if path is None else named(path)
        self.place = Place.find(url)
        self.timeout = float(timeout)
        self.pool_size = int(pool_size)
        if self.pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size!r}")
        self._pool: ConnectionPool[Any] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresStorage({self.store!r}, {self.place})"

    # -- the storage protocol ----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        self._key(key)
        # Binary results: a value arrives as its bytes, not as hex text to decode.
        rows = self._run(
            "read", lambda db: db.execute(_GET, (self.store, key), binary=True).fetchall()
        )
        return None if not rows else self._bytes(key, rows[0][0])

    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        if not checked:
            return
        for key in checked:
            self._key(key)

        # One transaction: a break under it writes none of them, and the retry all.
        self._write(
            lambda cursor: cursor.executemany(
                _PUT, [(self.store, k, v) for k, v in checked.items()]
            )
        )

    def delete(self, key: str) -> None:
        self._key(key)
        self._write(lambda cursor: cursor.execute(_DELETE, (self.store, key)))

    def _write(self, statements: Callable[[psycopg.Cursor[Any]], object]) -> None:
        """``statements`` in one transaction. Failing after its COMMIT went out, unanswered,
        it says the write may have been done (the server may have taken the COMMIT)."""
        committing: list[bool] = []

        def work(db: psycopg.Connection[Any]) -> None:
            with db.transaction(), db.cursor() as cursor:
                statements(cursor)
                committing.append(True)  # what follows is the COMMIT

        try:
            self._run("write", work)
            return
        except StateWriteError as exc:
            if not committing:
                raise
            unsure = _unsure(exc)
        raise unsure

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        return self.put_and_set({}, key, expected, new)

    def put_and_set(
        self, items: Mapping[str, bytes], key: str, expected: bytes | None, new: bytes
    ) -> bool:
        """Write ``items`` and set ``key`` from ``expected`` to ``new`` in one transaction:
        all of it, or (``key`` not holding ``expected``: False) none of it."""
        checked = check_items(items)
        for name in (key, *checked):
            self._key(name)
        new = check_value(key, new)
        expected = None if expected is None else check_value(key, expected)
        # The transactions that set the key, then lost their connection (id, server start).
        sent: list[tuple[int, Any]] = []

        def swap(db: psycopg.Connection[Any]) -> bool:
            with db.transaction(), db.cursor() as cursor:
                if expected is None:
                    cursor.execute(_CREATE, (self.store, key, new))
                else:
                    cursor.execute(_SWAP, (new, self.store, key, expected))
                row = cursor.fetchone()
                if row is None:
                    # Not set. After a broken connection, that may be because the try
                    # before landed (its COMMIT reached the server, its answer did not):
                    # PostgreSQL says whether it did.
                    return any(_landed(cursor, try_, key, new, self.store) for try_ in sent)
                sent.append((int(row[0]), row[1]))
                if checked:
                    cursor.executemany(_PUT, [(self.store, k, v) for k, v in checked.items()])
                committing.append(True)  # what follows is the COMMIT
            sent.clear()  # committed, and heard so
            return True

        committing: list[bool] = []
        try:
            return self._run("write", swap)
        except _Unknown:
            pass  # (raised below, outside the handler)
        except StateWriteError as exc:
            if not committing:
                raise
            # A COMMIT was sent and no answer came, nor could PostgreSQL be asked since.
            unsure = _unsure(exc)
            raise unsure from None
        raise StateWriteError(
            f"could not write to the state {self.store!r} in {self.place}: the database "
            "restarted as this write committed, and whether it did cannot be told. " + _UNSURE
        )

    def keys(self, prefix: str = "") -> list[str]:
        if prefix:
            self._key(prefix)
        above = _above(prefix)
        params: tuple[str, ...]
        if above is None:
            query, params = _KEYS, (self.store, prefix)
        else:
            query, params = _KEYS_BELOW, (self.store, prefix, above)
        rows = self._run("read", lambda db: db.execute(query, params).fetchall())
        return [key for (key,) in rows]

    def close(self) -> None:
        """Let go of this object's connections (closed once no storage of the same database
        uses them); the next operation takes them again."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            _Pools.give(pool)

    # -- connections -------------------------------------------------------------------

    def _run(self, doing: str, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` on a pooled connection, for at most ``timeout`` seconds on the database
        (a deadline of ours: a server that stops answering with its connections open
        bounds nothing). Run again, once, on another connection when the one it had was
        broken (the database restarted since it was opened) or cut by that deadline:
        every operation here may be, as each is one transaction (and ``put_and_set`` asks
        whether its first try landed)."""
        import psycopg

        from agex_state_postgres.deadline import deadline

        pool = self._opened()
        unanswered = False  # (a try was cut by the deadline)
        for attempt in (1, 2):
            if attempt == 1:
                db = self._connection(pool, doing)
            else:
                db = self._answering(pool, doing, unanswered)
            failure: Exception | None = None
            try:
                with deadline(db, self.timeout) as expired:
                    return work(db)
            except psycopg.OperationalError as exc:
                unanswered = unanswered or bool(expired)
                if attempt == 2 or not (expired or _broken(exc)):
                    failure = self._failed(
                        doing, self._unanswered() if expired else self.place.cause(exc)
                    )
            except psycopg.Error as exc:
                failure = self._failed(doing, self.place.cause(exc))
            finally:
                pool.putconn(db)
            if failure is not None:
                # Raised here, outside the handler, so that it carries no psycopg error
                # (nor the connection that error holds) as its context.
                raise failure
        raise AssertionError("unreachable")

    def _answering(
        self, pool: ConnectionPool[Any], doing: str, unanswered: bool
    ) -> psycopg.Connection[Any]:
        """For the retry, a pooled connection that answers: the others opened before a
        break are broken too (each fails its check at once, and is replaced), and one that
        does not answer within ``timeout`` (the database hung) ends the operation."""
        import time

        import psycopg

        from agex_state_postgres.deadline import deadline

        due = time.monotonic() + self.timeout
        while True:
            left = due - time.monotonic()
            if left <= 0:
                raise self._failed(doing, self._unanswered())
            db = self._connection(pool, doing, left, unanswered)
            try:
                with deadline(db, max(0.01, due - time.monotonic())) as expired:
                    db.execute(b"")
                return db
            except psycopg.Error:
                pool.putconn(db)  # broken: the pool discards it and opens another
            if expired:
                raise self._failed(doing, self._unanswered())

    def _unanswered(self) -> str:
        return (
            f"the database did not answer within {self.timeout:g} s (its server hung, or "
            "the network to it); check that it runs and answers, or give the storage a "
            "larger timeout (agex serve: --state-timeout)"
        )

    def _connection(
        self,
        pool: ConnectionPool[Any],
        doing: str,
        within: float | None = None,
        unanswered: bool = False,
    ) -> psycopg.Connection[Any]:
        """A connection from the pool within ``timeout`` seconds, asked for a slice at a
        time so that each ask may start a new connection (the database came back). When
        none comes after the database stopped answering (``unanswered``), that is why."""
        import time

        from psycopg_pool import PoolTimeout

        deadline = time.monotonic() + (self.timeout if within is None else within)
        while True:
            left = deadline - time.monotonic()
            try:
                db: psycopg.Connection[Any] = pool.getconn(
                    timeout=max(0.01, min(left, _WAIT_SLICE))
                )
                return db
            except PoolTimeout:
                if left > _WAIT_SLICE:
                    continue
            if unanswered:
                raise self._failed(doing, self._unanswered())
            raise self._failed(doing, self.place.diagnose(self.timeout))

    def _opened(self) -> ConnectionPool[Any]:
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._pool is None:
                self._pool = _Pools.take(self.place, self.timeout, self.pool_size)
            return self._pool

    def _key(self, key: str) -> None:
        """Refuse, by what it is, a key PostgreSQL could not keep."""
        check_key(key)
        if "\x00" in key:
            raise ValueError(f"storage 'postgres' keys cannot hold NUL characters: {key[:80]!r}")
        try:
            size = len(self.store.encode()) + len(key.encode())
        except UnicodeEncodeError:
            size = -1
        if size < 0:
            raise ValueError(
                f"storage 'postgres' keys are text PostgreSQL can keep (UTF-8, no lone "
                f"surrogates): {key[:80]!r}"
            )
        if size > MAX_KEY_BYTES:
            raise ValueError(
                f"storage 'postgres' keys are at most {MAX_KEY_BYTES} bytes with their path "
                f"({self.store[:40]!r}); {key[:40]!r}... is longer"
            )

    def _failed(self, doing: str, cause: str) -> Exception:
        if doing == "write":
            return StateWriteError(
                f"could not write to the state {self.store!r} in {self.place}: {cause}. " + _NOTHING
            )
        return StateLoadError(f"could not read the state {self.store!r} in {self.place}: {cause}")

    def _bytes(self, key: str, value: object) -> bytes:
        if isinstance(value, bytes):
            return value
        if isinstance(value, memoryview | bytearray):
            return bytes(value)
        raise StateIntegrityError(
            f"the state {self.store!r} in {self.place} is damaged: the value of key {key!r} "
            "is not bytes"
        )


class _Pools:
    """One pool of connections per database (and timeout and size), shared by every
    storage on it: a server keeps each client path's state in a storage of its own, and
    a pool each would soon hold more connections than PostgreSQL allows."""

    _lock = threading.Lock()
    _open: ClassVar[dict[tuple[str, float, int], tuple[ConnectionPool[Any], int]]] = {}
    #: Held while a pool is made for its key (the schema prepared, up to ``timeout`` on a
    #: database that does not answer): the storages of that database wait their turn,
    #: those of every other database go on.
    _making: ClassVar[dict[tuple[str, float, int], threading.Lock]] = {}

    @classmethod
    def take(cls, place: Place, timeout: float, size: int) -> ConnectionPool[Any]:
        key = (place.conninfo, timeout, size)
        with cls._lock:
            making = cls._making.setdefault(key, threading.Lock())
        with making:
            with cls._lock:
                found = cls._open.get(key)
                if found is not None:
                    cls._open[key] = (found[0], found[1] + 1)
                    return found[0]
            pool = cls._made(place, timeout, size)  # (not under the process-wide lock)
            with cls._lock:
                cls._open[key] = (pool, 1)
            return pool

    @classmethod
    def give(cls, pool: ConnectionPool[Any]) -> None:
        with cls._lock:
            for key, (held, users) in cls._open.items():
                if held is pool:
                    if users > 1:
                        cls._open[key] = (held, users - 1)
                        return
                    del cls._open[key]
                    break
        pool.close()

    @staticmethod
    def _made(place: Place, timeout: float, size: int) -> ConnectionPool[Any]:
        # The first use: the schema is made or checked on a connection of its own, so that
        # bad configuration is reported as itself, at once.
        schema.prepare(place, timeout)
        from psycopg_pool import ConnectionPool

        from agex_state_postgres.deadline import deadline

        ms = max(2, int(timeout * 1000))

        def configure(db: psycopg.Connection[Any]) -> None:
            # Bound what waits on the server. A statement waits at most ``timeout`` for a
            # lock; and a transaction of ours left open (its client cut off by the network,
            # the server never told) is ended by the server after half that, releasing the
            # rows it held before the retry waiting on them gives up. (Ours are never idle
            # for longer than a round trip.) Under a deadline of ours: the pool's worker
            # must not wait for ever on a server that stopped answering.
            with deadline(db, timeout):
                db.execute(f"SET lock_timeout = {ms}".encode())
                db.execute(f"SET idle_in_transaction_session_timeout = {ms // 2}".encode())

        return ConnectionPool(
            place.conninfo,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, **place.options(timeout)},
            configure=configure,
            timeout=timeout,
            reconnect_timeout=_RECONNECT,
            name="agex",
            open=True,
        )


def _unsure(failure: Exception) -> Exception:
    """``failure`` saying that its write may have been done, if it says nothing was."""
    if isinstance(failure, StateWriteError) and _NOTHING in failure.message:
        return StateWriteError(failure.message.replace(_NOTHING, _UNSURE))
    return failure


class _Unknown(Exception):
    """Whether a write landed cannot be told."""


def _landed(
    cursor: psycopg.Cursor[Any], sent: tuple[int, Any], key: str, new: bytes, store: str
) -> bool:
    """Whether the transaction ``sent`` (its id, and when the server had started) committed
    (one still running has ended: the set above found the row it held free only then).

    A server that crashed since may have given that id again, to a transaction that did
    commit, when none of ours had reached its disk: then the key holding ``new`` says it
    landed, and anything else cannot tell (``_Unknown``)."""
    xid, started = sent
    status, same_server = cursor.execute(_LANDED, (xid, started)).fetchall()[0]
    if status != "committed":
        return False  # (an id of ours that committed is on disk, and never given again)
    if same_server:
        return True
    found = cursor.execute(_GET, (store, key), binary=True).fetchall()
    if found and bytes(found[0][0]) == new:
        return True
    raise _Unknown


def _above(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (by code point);
    None when there is none (no prefix, or one of the highest code points only)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:
            last = 0xE000  # (surrogates are no characters PostgreSQL keeps)
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def _broken(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself broke (not that a statement failed)."""
    import psycopg

    ended = (
        psycopg.errors.AdminShutdown,
        psycopg.errors.CannotConnectNow,
        psycopg.errors.IdleInTransactionSessionTimeout,
    )
    if isinstance(exc, ended):
        return True
    state = getattr(exc, "sqlstate", None)
    return state is None or str(state).startswith("08")
