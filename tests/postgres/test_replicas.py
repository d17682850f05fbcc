"""Several `agex serve` processes on one PostgreSQL database, as replicas behind a load
balancer: a session's tasks see the same variables on any replica, a cancel sent to one
stops the session's runs on all, and a run's requests that reach the wrong replica get a
clear error rather than a second start.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agex import Agent, TaskCancelled, connect_host, connect_state
from agex.testing.host import scripted
from agex_host_http import transport
from agex_host_http.transport import MisdirectedRun

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location(
    "agex_replicas_http_server", ROOT / "tests" / "http" / "conftest.py"
)
assert _spec is not None
assert _spec.loader is not None
_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_http)


class Replica(_http.Server):
    """`agex serve` keeping state in a database (its URL in AGEX_STATE_URL)."""

    def __init__(self, directory: Path, url: str, *extra: str) -> None:
        super().__init__(directory, secrets.token_urlsafe(24), *extra, env={"AGEX_STATE_URL": url})
        self.keeps_state_dir = False


@pytest.fixture
def make_replica(tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    """Start replicas on a database; one token for all, as behind one load balancer."""
    started: list[Replica] = []
    token = secrets.token_urlsafe(24)

    def make(url: str, *extra: str) -> Replica:
        directory = tmp_path / f"replica{len(started)}"
        directory.mkdir()
        replica = Replica(directory, url, *extra)
        replica.token = token
        started.append(replica)
        return replica.start()

    try:
        yield make
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
def pair(make_replica, database) -> tuple[Replica, Replica]:
    return make_replica(database), make_replica(database)


def shared() -> Any:
    """The seed's state configuration, unchanged."""
    return connect_state(type="versioned", storage="disk", path="/shared/state")


def remote(replica: Replica, llm: Any, **options: Any) -> Agent:
    host = connect_host(provider="http", url=replica.url, token=replica.token)
    return Agent(host=host, llm=llm, max_iterations=100, **options)


def in_thread(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def test_a_sessions_next_task_on_another_replica_sees_its_variables(pair) -> None:
    a, b = pair
    first = remote(a, scripted("total = 40", "task_success(total)"), state=shared(), name="keeper")
    second = remote(b, scripted("task_success(total + 2)"), state=shared(), name="keeper")

    @first.task
    def start() -> int:
        """Start."""

    @second.task
    def go_on() -> int:
        """Go on."""

    assert start(session="s") == 40
    assert go_on(session="s") == 42


def test_another_session_on_another_replica_starts_empty(pair) -> None:
    a, b = pair
    first = remote(a, scripted("kept = 1", "task_success(kept)"), state=shared(), name="keeper")
    look_up = "try:\n    kept\nexcept NameError:\n    task_success(False)\ntask_success(True)"
    second = remote(b, scripted(look_up), state=shared(), name="keeper")

    @first.task
    def start() -> int:
        """Start."""

    @second.task
    def look() -> bool:
        """Look."""

    assert start(session="one") == 1
    assert look(session="two") is False


def test_a_cancel_through_one_replica_stops_the_run_on_another(pair) -> None:
    a, b = pair
    agent = remote(
        a,
        scripted("a = 1", "n = 0", *["n += 1"] * 40, "task_success(a)", delay=0.2),
        state=shared(),
        name="spinner",
    )
    running = threading.Event()

    @agent.task
    def job() -> int:
        """Job."""

    def on_event(event: Any) -> None:
        if type(event).__name__ == "ActionEvent" and event.step >= 2:
            running.set()

    thread, box = in_thread(job, session="c", on_event=on_event)
    assert running.wait(60)
    through_b = remote(b, scripted(), state=shared(), name="spinner")

    @through_b.task
    def job_b() -> int:
        """Job."""

    # The same agent name and session, sent to the other replica.
    assert job_b.cancel("c") == 0  # none of the runs is B's own: A stops its run
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(box.get("error"), TaskCancelled), box


def test_cancelling_a_run_by_id_reaches_the_replica_that_holds_it(pair, monkeypatch) -> None:
    a, b = pair
    started = sent_start(monkeypatch)
    agent = remote(a, scripted(*["n = 1"] * 40, delay=0.2), state=shared(), name="slow")

    @agent.task
    def job() -> int:
        """Job."""

    running = threading.Event()
    thread, box = in_thread(job, session="r", on_event=lambda event: running.set())
    run_id = started.wait()
    assert running.wait(60)  # A holds the run
    answer = httpx.post(f"{b.url}/v1/runs/{run_id}/cancel", headers=b.headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"cancelled": 1}
    thread.join(60)
    assert isinstance(box.get("error"), TaskCancelled), box
    unknown = httpx.post(f"{b.url}/v1/runs/{'x' * 12}/cancel", headers=b.headers, timeout=30)
    assert unknown.status_code == 404


class SentStart:
    """The run id and body of the next run the http client starts."""

    def __init__(self) -> None:
        self.run_id = ""
        self.body = b""
        self.event = threading.Event()

    def wait(self) -> str:
        assert self.event.wait(60)
        return self.run_id


def sent_start(monkeypatch: pytest.MonkeyPatch) -> SentStart:
    seen = SentStart()
    original = transport.Server.run

    async def run(self: Any, run_id: str, body: bytes, on_message: Any) -> Any:
        if not seen.event.is_set():
            seen.run_id, seen.body = run_id, body
            seen.event.set()
        return await original(self, run_id, body, on_message)

    monkeypatch.setattr(transport.Server, "run", run)
    return seen


def test_a_run_is_never_started_twice_and_the_wrong_replica_says_which_rule_holds(
    pair, monkeypatch
) -> None:
    a, b = pair
    started = sent_start(monkeypatch)
    agent = remote(
        a,
        scripted("hits = 1", *["hits += 1"] * 6, "task_success(hits)", delay=0.1),
        state=shared(),
        name="counter",
    )

    @agent.task
    def count() -> int:
        """Count."""

    running = threading.Event()
    thread, box = in_thread(count, session="once", on_event=lambda event: running.set())
    run_id = started.wait()
    assert running.wait(60)  # A holds the run (before that, B could have won the claim)

    # The start re-sent to the other replica (its first answer lost): refused, not run.
    again = httpx.post(
        f"{b.url}/v1/runs/{run_id}",
        content=started.body,
        headers={**b.headers, "content-type": "application/octet-stream"},
        timeout=30,
    )
    assert again.status_code == 421, again.text
    assert "route by run id" in again.json()["detail"]
    # A client reconnecting there: the same.
    follow = httpx.get(
        f"{b.url}/v1/runs/{run_id}/events",
        headers={**b.headers, "last-event-id": "1"},
        timeout=30,
    )
    assert follow.status_code == 421
    assert "docs/hosts.md" in follow.json()["detail"]

    # The http client turns it into an exception of its own.
    async def resend() -> Any:
        server = transport.Server(b.url, lambda: b.token)

        async def on_message(kind: str, data: str) -> None:
            raise AssertionError("no message may come from a replica without the run")

        return await server.run(run_id, started.body, on_message)

    with pytest.raises(MisdirectedRun, match="route by run id"):
        asyncio.run(resend())

    thread.join(60)
    assert box.get("value") == 7, box  # the run on A ran once, to its end
    # After it ended, B still refuses it.
    late = httpx.post(
        f"{b.url}/v1/runs/{run_id}",
        content=started.body,
        headers={**b.headers, "content-type": "application/octet-stream"},
        timeout=30,
    )
    assert late.status_code == 421
    # Its next task sees one run's steps: seven increments, not fourteen.
    check = remote(b, scripted("task_success(hits)"), state=shared(), name="counter")

    @check.task
    def look() -> int:
        """Look."""

    assert look(session="once") == 7

    # The same start sent to both replicas at once: one runs it, the other refuses.
    fresh = f"both-{secrets.token_hex(8)}"
    statuses: list[int] = []

    def start_on(replica: Replica) -> None:
        headers = {**replica.headers, "content-type": "application/octet-stream"}
        url = f"{replica.url}/v1/runs/{fresh}"
        with httpx.stream("POST", url, content=started.body, headers=headers, timeout=30) as r:
            statuses.append(r.status_code)

    racers = [threading.Thread(target=start_on, args=(replica,)) for replica in (a, b)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    assert sorted(statuses) == [200, 421]
    stop = httpx.post(f"{b.url}/v1/runs/{fresh}/cancel", headers=b.headers, timeout=30)
    assert stop.status_code == 200  # whichever replica holds it


def test_replicas_go_on_when_the_database_restarts_under_them(make_replica, tmp_path) -> None:
    local = pytest.importorskip("agex_state_postgres.local")
    own = local.LocalServer(fsync=False)  # the session's server is left alone
    try:
        own.start()
        a, b = make_replica(own.url), make_replica(own.url)
        keeper = remote(a, scripted("kept = 'yes'", "task_success(kept)"), state=shared(), name="k")

        @keeper.task
        def keep() -> str:
            """Keep."""

        assert keep(session="s") == "yes"

        slow = remote(
            a,
            scripted("x = 1", *["x += 1"] * 6, "task_success(x)", delay=0.3),
            state=shared(),
            name="slow",
        )
        running = threading.Event()

        @slow.task
        def climb() -> int:
            """Climb."""

        def on_event(event: Any) -> None:
            if type(event).__name__ == "ActionEvent":
                running.set()

        thread, box = in_thread(climb, session="r", on_event=on_event)
        assert running.wait(60)
        own.restart()
        thread.join(120)
        # In progress: it either went on (the storage connects again) or failed, clearly.
        if "error" in box:
            error = box["error"]
            assert "could not" in str(error) or "State" in type(error).__name__, repr(error)
            assert own.password not in str(error)
            assert own.password not in (getattr(error, "remote_traceback", "") or "")
        else:
            assert box["value"] == 7

        # New runs succeed, on both replicas, and what was committed is there.
        reader = remote(b, scripted("task_success(kept)"), state=shared(), name="k")

        @reader.task
        def read() -> str:
            """Read."""

        assert read(session="s") == "yes"
        again = remote(a, scripted("kept = 'new'", "task_success(kept)"), state=shared(), name="k")

        @again.task
        def keep_again() -> str:
            """Keep."""

        assert keep_again(session="s2") == "new"

        # The replicas listen again: a cancel through B still stops a run on A.
        spinner = remote(a, scripted(*["n = 1"] * 60, delay=0.2), state=shared(), name="spin")
        turning = threading.Event()

        @spinner.task
        def spin() -> int:
            """Spin."""

        def on_step(event: Any) -> None:
            if type(event).__name__ == "ActionEvent":
                turning.set()

        spun, spun_box = in_thread(spin, session="z", on_event=on_step)
        assert turning.wait(60)
        deadline = time.monotonic() + 60
        while spun.is_alive() and time.monotonic() < deadline:
            # The listener may still be connecting again: the signal is sent until it lands.
            httpx.post(
                f"{b.url}/v1/cancel",
                json={"agent": "spin", "session": "z"},
                headers=b.headers,
                timeout=30,
            )
            spun.join(2)
        assert isinstance(spun_box.get("error"), TaskCancelled), spun_box
        for replica in (a, b):
            assert own.password not in replica.log.read_text()
    finally:
        own.remove()


def test_a_signal_that_is_not_one_of_ours_is_ignored(pair, database) -> None:
    """Anyone who may connect to the database may NOTIFY: the replicas check what arrives."""
    import psycopg

    a, b = pair
    agent = remote(
        a,
        scripted("a = 1", *["n = 1"] * 20, "task_success(a)", delay=0.1),
        state=shared(),
        name="steady",
    )

    @agent.task
    def job() -> int:
        """Job."""

    thread, box = in_thread(job, session="q")
    with psycopg.connect(database, autocommit=True) as db:
        for payload in (
            "not json",
            json.dumps(["cancel-session", "steady", "q"]),
            json.dumps({"v": 1, "kind": "cancel-session", "agent": "steady", "session": 5}),
            json.dumps({"v": 1, "kind": "cancel-run", "run": "../../x"}),
            json.dumps({"v": 2, "kind": "cancel-session", "agent": "steady", "session": "q"}),
            json.dumps({"v": 1, "kind": "delete-everything"}),
        ):
            db.execute("SELECT pg_notify('agex_replicas', %s)", (payload,))
    thread.join(60)
    assert box.get("value") == 1, box
    for replica in (a, b):
        assert replica.process is not None
        assert replica.process.poll() is None  # still serving


SHORT_RETENTION = """
import os, sys
from pathlib import Path
import uvicorn
from agex_host_http.server.app import Settings, create_app
settings = Settings(
    state_dir=Path(sys.argv[2]),
    token=os.environ["TEST_TOKEN"],
    state_url=os.environ["AGEX_STATE_URL"],
    retention=0.5,
)
uvicorn.run(create_app(settings), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_a_claim_on_a_run_id_goes_when_the_replica_forgets_the_run(tmp_path, database) -> None:
    import subprocess
    import sys

    import psycopg

    def claims() -> int:
        with psycopg.connect(database) as db:
            query = "SELECT count(*) FROM agex_kv WHERE store = '.agex/server'"
            return int(db.execute(query).fetchall()[0][0])

    directory = tmp_path / "short"
    directory.mkdir()
    replica = Replica(directory, database)
    log = directory / "server.log"
    with log.open("wb") as out:
        replica.process = subprocess.Popen(
            [sys.executable, "-c", SHORT_RETENTION, str(replica.port), str(directory / "s")],
            env={**replica.env, "TEST_TOKEN": replica.token or ""},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert replica.process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{replica.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        seen: list[int] = []
        agent = remote(replica, scripted("x = 1", "task_success(x)"), state=shared(), name="c")

        @agent.task
        def job() -> int:
            """Job."""

        def on_event(event: Any) -> None:
            if type(event).__name__ == "ActionEvent" and not seen:
                seen.append(claims())

        assert job(on_event=on_event) == 1
        assert seen == [1]  # claimed while it ran
        deadline = time.monotonic() + 60
        while claims() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert claims() == 0  # and no longer once the replica forgot it
    finally:
        replica.stop()
