"""Signals between processes that share one database (the replicas of an agex server),
over PostgreSQL's LISTEN/NOTIFY: one replica sends a small JSON object on a channel, and
every process listening on that channel gets it, the sender included.

A :class:`Channel` listens on a connection of its own, in a thread of its own; when that
connection breaks (the database restarted), it connects again, waiting a little longer
each time, and goes on listening. A connection that went silent (a NAT or firewall that
forgot the flow says nothing to either end) is found out: after a few seconds with nothing
arriving, the listener asks the database for ``SELECT 1`` under a deadline, and listens on
a new connection when no answer comes. Signals sent while no connection was listening are
not seen: what a signal asks must be harmless to miss, or be asked again, or be recorded
where a listener that starts listening again reads it (``on_listening``).

Every wait on the database is bounded by the channel's ``timeout``
(:func:`~agex_state_postgres.deadline.deadline`), a database that stops answering included;
a send or a clock read that waits for another one to end waits at most what is left of its
own timeout. A catch-up (``on_listening``) that fails is a lost listen: the channel
connects again, a little later, and catches up again.

What arrives is handed on only when it is a JSON object; what it says is the receiver's
to check before acting on it (anyone who may connect to the database may send one).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agex.errors import StateLoadError, StateWriteError
from agex_state_postgres.deadline import deadline
from agex_state_postgres.place import Place

T = TypeVar("T")

log = logging.getLogger(__name__)

#: The largest payload PostgreSQL's NOTIFY carries is 8000 bytes; a signal keeps below.
LIMIT = 7900
#: Seconds between attempts to listen again after the connection broke: then the last.
RECONNECT = (0.1, 0.25, 0.5, 1.0, 2.0)
#: Seconds with nothing arriving after which the listener checks its connection answers.
QUIET = 5.0
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"
#: The ``application_name`` of a listening connection, as ``pg_stat_activity`` shows it.
LISTENER = "agex-listen"

#: Called with each signal that arrives, in the listening thread.
OnSignal = Callable[[dict[str, Any]], None]
#: Called, in the listening thread, each time a new connection listens, with the database's
#: clock then (seconds since the epoch): signals sent before it may have been missed. When
#: it raises, the connection is dropped and, a little later, a new one listens and calls it.
OnListening = Callable[[float], None]


class Channel:
    """A named channel in the database at ``url`` (else where the storage finds it:
    ``$AGEX_POSTGRES_URL``, then libpq's environment)."""

    def __init__(self, name: str, url: str | None = None, timeout: float = 10.0) -> None:
        if not _NAME.match(name):
            raise ValueError(
                f"a channel's name is lower-case letters, digits and '_' (at most 63), got {name!r}"
            )
        self.name = name
        self.place = Place.find(url)
        self.timeout = timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()
        self._sender: Any = None
        self._send_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {self.place})"

    # -- sending -----------------------------------------------------------------------

    def send(self, signal: dict[str, Any]) -> None:
        """Send ``signal`` (a JSON object) to every listener; StateWriteError when the
        database cannot be reached (tried twice: once more on a new connection)."""
        payload = json.dumps(signal, separators=(",", ":"))
        if len(payload.encode()) > LIMIT:
            raise ValueError(f"a signal is at most {LIMIT} bytes of JSON, got {len(payload)}")
        self._on_sender(
            "signal the other replicas",
            StateWriteError,
            lambda db: db.execute("SELECT pg_notify(%s, %s)", (self.name, payload)),
            attempts=2,
        )

    def clock(self) -> float:
        """The database's clock (seconds since the epoch): the one frame of reference every
        replica shares, whatever their machines' clocks say. StateLoadError when the
        database does not answer within the timeout."""
        row = self._on_sender(
            "read the database's clock", StateLoadError, lambda db: db.execute(_NOW).fetchone()
        )
        assert row is not None
        return float(row[0])

    def _on_sender(
        self,
        what: str,
        error: type[StateLoadError] | type[StateWriteError],
        work: Callable[[Any], T],
        attempts: int = 1,
    ) -> T:
        """``work`` on the sending connection (made if need be), one caller at a time, all
        within the timeout: waiting for the caller before, connecting, and the statement.
        A failure drops the connection; ``attempts`` > 1 tries again on a new one."""
        import psycopg

        began = time.monotonic()
        if not self._send_lock.acquire(timeout=self.timeout):
            raise error(self._busy(what))
        try:
            for attempt in range(1, attempts + 1):
                try:
                    if self._stop.is_set():
                        raise error(f"{self!r} is closed")
                    if self._sender is None or self._sender.closed:
                        self._sender = self.place.connect(self.timeout)
                    left = max(0.1, self.timeout - (time.monotonic() - began))
                    with deadline(self._sender, left):
                        done = work(self._sender)
                    if self._stop.is_set():  # closed while it ran: close() left it open
                        self._drop_sender()
                    return done
                except error:
                    raise
                except psycopg.Error as exc:
                    self._drop_sender()
                    cause = f"through the {self.place}: {self.place.cause(exc)}"
                except Exception as exc:  # the connection could not be made
                    self._drop_sender()
                    cause = f": {exc}"
                if attempt == attempts:
                    failure = error(f"could not {what} {cause}")
                    break
        finally:
            self._send_lock.release()
        raise failure  # outside the handler: no psycopg error (nor connection) as context

    def _busy(self, what: str) -> str:
        return (
            f"could not {what}: the {self.place} did not answer the requests before this one "
            f"within {self.timeout:g} s; check that the database is up and reachable"
        )

    def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            try:
                sender.close()
            except Exception:  # already broken: nothing to give back
                log.debug("closing a broken connection failed", exc_info=True)

    # -- listening ---------------------------------------------------------------------

    def listen(self, on_signal: OnSignal, on_listening: OnListening | None = None) -> None:
        """Start listening, in a daemon thread: each signal that arrives (a JSON object)
        goes to ``on_signal``; ``on_listening`` is called each time a connection starts
        listening (the first included), before what arrives on it. Returns at once;
        :meth:`wait_listening` waits until the first connection listens."""
        if self._thread is not None:
            raise RuntimeError(f"{self!r} listens already")
        self._thread = threading.Thread(
            target=self._listen,
            args=(on_signal, on_listening),
            name=f"agex-listen-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def wait_listening(self, timeout: float) -> bool:
        """Whether a connection listens (now, or within ``timeout`` seconds)."""
        return self._listening.wait(timeout)

    def close(self) -> None:
        """Stop listening and sending; the listening thread ends within a second. Never
        waits behind a send that is stuck: that send ends within its timeout, and drops its
        connection itself."""
        self._stop.set()
        if self._send_lock.acquire(timeout=0.5):
            try:
                self._drop_sender()
            finally:
                self._send_lock.release()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self, on_signal: OnSignal, on_listening: OnListening | None) -> None:
        import psycopg

        delays = iter(RECONNECT)
        while not self._stop.is_set():
            try:
                db = self.place.connect(self.timeout, application_name=LISTENER)
            except StateLoadError as exc:
                self._lost(f"could not listen: {exc.message}")
                self._stop.wait(next(delays, RECONNECT[-1]))
                continue
            try:
                with db:
                    with deadline(db, self.timeout):
                        db.execute(f'LISTEN "{self.name}"')
                        row = db.execute(_NOW).fetchone()
                    assert row is not None
                    if on_listening is not None:  # failing, it is a lost listen: again
                        on_listening(float(row[0]))
                    self._listening.set()
                    delays = iter(RECONNECT)
                    heard = time.monotonic()
                    while not self._stop.is_set():
                        for notice in db.notifies(timeout=1.0):
                            heard = time.monotonic()
                            signal = _decoded(notice.payload)
                            if signal is not None:
                                self._deliver(on_signal, signal)
                        if time.monotonic() - heard > QUIET:
                            with deadline(db, self.timeout):  # silent: is anyone there?
                                db.execute("SELECT 1")
                            heard = time.monotonic()
            except psycopg.Error as exc:
                why = self.place.cause(exc)
            except Exception as exc:  # a payload it could not decode, say: never the end
                why = f"{type(exc).__name__}: {self.place.scrub(str(exc))}"
            else:
                continue
            self._listening.clear()
            self._lost(f"stopped listening on the {self.place}: {why}")
            self._stop.wait(next(delays, RECONNECT[-1]))
        self._listening.clear()

    def _deliver(self, handle: Callable[[Any], None], what: Any) -> None:
        try:
            handle(what)
        except Exception:  # one bad signal must not end the listening
            log.exception("a signal on channel %s could not be handled", self.name)

    def _lost(self, why: str) -> None:
        log.warning("%s; listening again shortly", why)


def _decoded(payload: str) -> dict[str, Any] | None:
    """The signal a payload holds: a JSON object, else None (dropped)."""
    if len(payload) > LIMIT:
        return None
    try:
        signal = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return signal if isinstance(signal, dict) else None
