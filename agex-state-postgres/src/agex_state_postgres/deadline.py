"""A deadline, kept on our side, on a connection's waits for the database.

PostgreSQL bounds what waits *on the server* (``lock_timeout``); a server that stops
answering while its connections stay open (a hung host, a paused VM, a network path that
drops packets without a reset) bounds nothing, and a libpq call would wait for ever. Under
:func:`deadline`, a connection still waiting when its time is up has its socket shut down:
the call raises ``psycopg.OperationalError`` at once, the connection is broken (a pool
discards it), and ``expired`` says why.

One watcher thread serves every connection, looking a few times a second: registering a
wait costs a dictionary entry, not a thread.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

#: Seconds between the watcher's looks (so a deadline is kept to within this).
_TICK = 0.1


class Expired:
    """Whether a wait under :func:`deadline` was cut short."""

    def __init__(self) -> None:
        self.cut = False

    def __bool__(self) -> bool:
        return self.cut


@contextlib.contextmanager
def deadline(db: Any, seconds: float) -> Iterator[Expired]:
    """Shut ``db``'s socket down if it is still in this block ``seconds`` from now."""
    expired = Expired()
    key = object()
    _WATCH.add(key, time.monotonic() + seconds, db, expired)
    try:
        yield expired
    finally:
        _WATCH.remove(key)


class _Watch:
    def __init__(self) -> None:
        self._waits: dict[object, tuple[float, Any, Expired]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, key: object, due: float, db: Any, expired: Expired) -> None:
        with self._lock:
            self._waits[key] = (due, db, expired)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="agex-postgres-deadline", daemon=True
                )
                self._thread.start()

    def remove(self, key: object) -> None:
        with self._lock:
            self._waits.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(_TICK)
            now = time.monotonic()
            # Cut under the lock: once remove() has returned, the connection (back in its
            # pool, serving another wait) is never cut for this one. A shutdown does not
            # block.
            with self._lock:
                due = [(k, w) for k, w in self._waits.items() if w[0] <= now]
                for key, (_, db, expired) in due:
                    del self._waits[key]
                    expired.cut = True
                    _cut(db)


def _cut(db: Any) -> None:
    """End ``db``'s connection from our side, without waiting on the server."""
    with contextlib.suppress(Exception):  # closed meanwhile: nothing to cut
        fd = os.dup(db.pgconn.socket)
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)


_WATCH = _Watch()
