"""What a reliability review of the server's replicas found, each asserting the fixed
behaviour: a cancel answers while the database hangs; a listening connection that went
silent is replaced; a cancel reaches a run whose id was being claimed, and a replica that
was between listens; a finished run is not reported cancelled; a replica that stops leaves
no claims behind."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from agex import TaskCancelled
from agex.errors import StateWriteError
from agex.testing.host import scripted
from agex_state_postgres.signals import LISTENER, Channel

_spec = importlib.util.spec_from_file_location(
    "agex_replicas_review", Path(__file__).parent / "test_replicas.py"
)
assert _spec is not None
assert _spec.loader is not None
_replicas = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_replicas)
make_replica = _replicas.make_replica
in_thread, remote, shared = _replicas.in_thread, _replicas.remote, _replicas.shared

#: Seconds a channel here may wait on the database.
TIMEOUT = 3.0
#: Generous: the promise is the timeout, a retry on a new connection may double it.
BOUND = 4 * TIMEOUT + 5


# -- a database of the test's own, to freeze ----------------------------------------------


# -- a database that stops answering ----------------------------------------------------


def test_a_signal_to_a_database_that_stopped_answering_fails_within_its_timeout(own) -> None:
    channel = Channel("agex_review", own.url, timeout=TIMEOUT)
    channel.send({"warm": 1})  # its sending connection, open
    try:
        with own.paused():
            thread, box = in_thread(channel.send, {"kind": "cancel-session"})
            thread.join(BOUND)
            hung = thread.is_alive()
            closing, _ = in_thread(channel.close)  # not behind the stuck send
            closing.join(BOUND)
            close_hung = closing.is_alive()
        thread.join(30)
        assert not hung, f"Channel.send() still waiting after {BOUND:g} s"
        assert isinstance(box.get("error"), StateWriteError), box
        assert not close_hung
    finally:
        channel.close()


def test_a_cancel_through_a_replica_answers_while_the_database_hangs(make_replica, own) -> None:
    replica = make_replica(own.url)
    cancel = {"agent": "a", "session": "s"}
    warm = httpx.post(f"{replica.url}/v1/cancel", json=cancel, headers=replica.headers, timeout=30)
    assert warm.status_code == 200, warm.text
    with own.paused():
        try:
            answer = httpx.post(
                f"{replica.url}/v1/cancel", json=cancel, headers=replica.headers, timeout=45
            )
        except httpx.ReadTimeout:
            answer = None
    assert answer is not None, "POST /v1/cancel got no answer in 45 s while the database hung"
    assert answer.status_code == 503, answer.text
    assert "0 run(s) stopped here" in answer.json()["detail"]
    assert "the other replicas were not told" in answer.json()["detail"]


# -- a listening connection that went silent --------------------------------------------


class SilentRelay:
    """A TCP relay to the server; ``silence()`` drops every flow open now without telling
    the client (its socket stays open, nothing arrives on it again), as a middlebox that
    forgot the flow does. New connections pass as usual."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._flows: list[tuple[socket.socket, threading.Event]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        return url.replace(f":{self.target}/", f":{self.port}/")

    def silence(self) -> None:
        with self._lock:
            flows, self._flows = self._flows, []
        for upstream, dropped in flows:
            dropped.set()
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)  # the server ends its side

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            dropped = threading.Event()
            with self._lock:
                self._flows.append((upstream, dropped))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pass, args=(source, target, dropped), daemon=True
                ).start()

    @staticmethod
    def _pass(source: socket.socket, target: socket.socket, dropped: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not dropped.is_set():
                    target.sendall(data)


def test_a_listener_whose_connection_went_silent_listens_again(database) -> None:
    relay = SilentRelay(int(database.rsplit(":", 1)[1].split("/")[0]))
    heard: list[dict[str, Any]] = []
    name = f"agex_review_{uuid.uuid4().hex[:8]}"
    listener = Channel(name, relay.url(database), timeout=TIMEOUT)
    sender = Channel(name, database, timeout=TIMEOUT)
    try:
        listener.listen(heard.append)
        assert listener.wait_listening(10)
        sender.send({"n": 0})
        deadline = time.monotonic() + 10
        while not heard and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heard == [{"n": 0}]
        relay.silence()
        deadline = time.monotonic() + 60
        n = 0
        while len(heard) < 2 and time.monotonic() < deadline:
            n += 1
            sender.send({"n": n})
            time.sleep(0.5)
        assert len(heard) >= 2, "no signal heard after the listening connection went silent"
    finally:
        listener.close()
        sender.close()
        relay.close()


# -- cancels that came at awkward moments ------------------------------------------------


def _waiting_on_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as db:
        rows = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO agex_kv%'"
        ).fetchall()
    return bool(rows[0][0])


@pytest.mark.parametrize("through", ["same replica", "other replica"])
def test_a_cancel_sent_while_the_start_is_claimed_stops_the_run(
    make_replica, database, monkeypatch, through
) -> None:
    """The run id's claim waits on a transaction that inserted the same key (a slow
    database); the cancel, recorded under another key, goes through meanwhile."""
    from agex_host_http import transport

    a = make_replica(database)
    b = make_replica(database) if through == "other replica" else a
    agent = remote(
        a,
        scripted("x = 1", *["x += 1"] * 5, "task_success(x)", delay=0.2),
        state=shared(),
        name="claimed",
    )

    @agent.task
    def job() -> int:
        """Job."""

    holder = psycopg.connect(database)
    original = transport.Server.run

    async def run(self: Any, run_id: str, body: bytes, on_message: Any) -> Any:
        holder.execute(
            "INSERT INTO agex_kv (store, key, value) VALUES ('.agex/server', %s, 'x')",
            (f"runs/{run_id}",),
        )
        return await original(self, run_id, body, on_message)

    monkeypatch.setattr(transport.Server, "run", run)
    try:
        thread, box = in_thread(job, session="c")
        deadline = time.monotonic() + 20
        while not _waiting_on_lock(database):  # A claims the run id, behind the holder
            assert time.monotonic() < deadline, "the start never reached its claim"
            time.sleep(0.05)
        answer = httpx.post(
            f"{b.url}/v1/cancel",
            json={"agent": "claimed", "session": "c"},
            headers=b.headers,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        time.sleep(0.5)  # the signal reaches A
    finally:
        holder.rollback()
        holder.close()
    thread.join(60)
    assert not thread.is_alive()
    # The user cancelled the session's runs after this one was sent: it must not run on.
    assert isinstance(box.get("error"), TaskCancelled), box
    assert "while this run was starting" in str(box["error"])


@pytest.mark.parametrize("which", ["session", "run"])
def test_a_cancel_accepted_while_a_replica_was_reconnecting_its_listener_reaches_it(
    make_replica, own, monkeypatch, which
) -> None:
    """The listening connections are ended while new logins are refused for a moment, so
    B's open connections record and send the cancel while A is between listens: a cancel
    of the session's runs, or of A's run forwarded through B (which says it stopped it)."""
    a, b = make_replica(own.url), make_replica(own.url)
    started = _replicas.sent_start(monkeypatch)
    spinner = remote(a, scripted(*["n = 1"] * 90, delay=0.2), state=shared(), name="spin")
    turning = threading.Event()

    @spinner.task
    def spin() -> int:
        """Spin."""

    thread, box = in_thread(
        spin, session="z", on_event=lambda e: type(e).__name__ == "ActionEvent" and turning.set()
    )
    assert turning.wait(60)
    assert started.event.wait(10)
    warm = httpx.post(
        f"{b.url}/v1/cancel",
        json={"agent": "other", "session": "z"},
        headers=b.headers,
        timeout=30,
    )
    assert warm.status_code == 200  # B's connections are open
    admin = psycopg.connect(own.url, autocommit=True)
    try:
        admin.execute("ALTER ROLE agex NOLOGIN")
        ended = admin.execute(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s) AS cut",
            (LISTENER,),
        ).fetchone()
        assert ended is not None
        assert ended[0] > 0, "no listening connection was ended"
        if which == "run":
            answer = httpx.post(
                f"{b.url}/v1/runs/{started.run_id}/cancel", headers=b.headers, timeout=30
            )
        else:
            answer = httpx.post(
                f"{b.url}/v1/cancel",
                json={"agent": "spin", "session": "z"},
                headers=b.headers,
                timeout=30,
            )
        time.sleep(1)
    finally:
        admin.execute("ALTER ROLE agex LOGIN")
        admin.close()
    assert answer.status_code == 200, answer.text
    if which == "run":
        assert answer.json() == {"cancelled": 1}
    thread.join(40)
    assert not thread.is_alive()
    assert isinstance(box.get("error"), TaskCancelled), box


def _replicas_on(database: str) -> Any:
    """A replica's cancel handling, not listening: its catch-up is called by hand."""
    from agex.stores import DatabaseStores
    from agex_host_http.server.replicas import Replicas
    from agex_host_http.server.runs import RunBoard

    return Replicas(DatabaseStores(database, pool_size=1), database, RunBoard(100, 60))


def test_a_cancel_read_when_listening_again_stops_a_run_still_being_claimed(database) -> None:
    """A run whose request arrived before a cancel this replica did not hear (it was
    between listens), and whose id is still being claimed when the recorded cancel is read,
    must not start, as for a cancel heard at once; one whose request came after must."""
    replicas = _replicas_on(database)
    board = replicas.board
    offset = time.time() - time.monotonic()  # the database's clock, taken as this one's
    before = time.monotonic()  # a start request arrives; its claim is under way
    time.sleep(0.01)
    record = {"id": "0123456789abcdef", "agent": "analyst", "session": "s1", "at": time.time()}
    time.sleep(0.01)
    after = time.monotonic()
    replicas._act_on_records([record], offset)  # listening again, it reads the record
    # routes._open asks this once the claim is won:
    assert board.cancelled_since("analyst", "s1", before)
    assert not board.cancelled_since("analyst", "s1", after)
    assert not board.cancelled_since("analyst", "s2", before)


def test_a_run_cancel_read_or_heard_while_its_id_is_claimed_stops_it_once_started(
    database,
) -> None:
    replicas = _replicas_on(database)
    record = {"id": "0123456789abcdef", "run": "run-being-claimed", "at": time.time()}
    replicas._act_on_records([record], time.time() - time.monotonic())
    replicas.act({"v": 1, "from": "elsewhere", "kind": "cancel-run", "run": "run-two-claimed"})
    assert replicas.cancelled_while_claimed("run-being-claimed")
    assert replicas.cancelled_while_claimed("run-two-claimed")
    assert not replicas.cancelled_while_claimed("run-not-cancelled")


def test_cancelling_a_finished_run_through_another_replica_says_none_was_stopped(
    make_replica, database, monkeypatch
) -> None:
    a, b = make_replica(database), make_replica(database)
    started = _replicas.sent_start(monkeypatch)
    agent = remote(a, scripted("x = 1", "task_success(x)"), state=shared(), name="done")

    @agent.task
    def job() -> int:
        """Job."""

    assert job(session="f") == 1
    run_id = started.wait()
    on_a = httpx.post(f"{a.url}/v1/runs/{run_id}/cancel", headers=a.headers, timeout=30)
    assert on_a.json() == {"cancelled": 0}
    deadline = time.monotonic() + 20
    while True:  # the claim is marked ended just after the run ends
        on_b = httpx.post(f"{b.url}/v1/runs/{run_id}/cancel", headers=b.headers, timeout=30)
        assert on_b.status_code == 200, on_b.text
        if on_b.json() == {"cancelled": 0} or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert on_b.json() == {"cancelled": 0}


# -- claims ------------------------------------------------------------------------------


def _claims(url: str) -> int:
    with psycopg.connect(url) as db:
        query = "SELECT count(*) FROM agex_kv WHERE store = '.agex/server' AND key LIKE 'runs/%'"
        return int(db.execute(query).fetchall()[0][0])


def test_a_replica_that_stops_leaves_no_claims_behind(make_replica, database) -> None:
    replica = make_replica(database)
    agent = remote(replica, scripted(*["x = 1", "task_success(x)"] * 3), state=shared(), name="c")

    @agent.task
    def job() -> int:
        """Job."""

    for _ in range(3):
        assert job(session="s") == 1
    assert _claims(database) == 3  # kept while the replica keeps the runs
    replica.stop()  # graceful: SIGTERM, as a deploy stops it
    assert _claims(database) == 0


def test_a_replica_that_starts_drops_claims_older_than_a_day(make_replica, database) -> None:
    first = make_replica(database)  # makes the tables
    with psycopg.connect(database) as db:
        old, new = (
            b'{"replica": "gone", "at": 1000.0}',
            b'{"replica": "gone", "at": %f}' % (time.time()),
        )
        db.execute(
            "INSERT INTO agex_kv (store, key, value) VALUES "
            "('.agex/server', 'runs/old-run-id', %s), ('.agex/server', 'runs/new-run-id', %s)",
            (old, new),
        )
    first.stop()
    make_replica(database)
    assert _claims(database) == 1  # the old one went; the recent one stays


def test_a_run_held_by_a_replica_that_is_gone_says_to_start_again(make_replica, database) -> None:
    replica = make_replica(database)
    with psycopg.connect(database) as db:
        value = b'{"replica": "gone", "at": %f}' % time.time()
        db.execute(
            "INSERT INTO agex_kv (store, key, value) VALUES ('.agex/server', %s, %s)",
            ("runs/held-elsewhere", value),
        )
    answer = httpx.get(
        f"{replica.url}/v1/runs/held-elsewhere/events", headers=replica.headers, timeout=30
    )
    assert answer.status_code == 421
    assert "the run is lost and its session is at its last commit" in answer.text
