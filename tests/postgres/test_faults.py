"""Versioned state in PostgreSQL under contention, process death and a database that goes
away: no commit is lost or half kept, every failure is an agex error that says what
happened, and the same storage object goes on once the database is back."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from agex import plugins
from agex.errors import StateConflict, StateLoadError, StateWriteError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex_state_postgres.storage import PostgresStorage


def versioned(storage, session: str = "s") -> VersionedState:
    return VersionedState(storage, CloudpickleSerializer(), "ns", session)


def consistent(state: VersionedState) -> list:
    """The session's history, after checking that it is whole: every commit readable, its
    values loadable, and the parents chaining to the root."""
    history = state.history()
    assert history, "the session has no commits"
    assert [c.parent for c in history[:-1]] == [c.id for c in history[1:]]
    assert history[-1].parent is None
    assert [c.depth for c in history] == list(range(len(history) - 1, -1, -1))
    for commit in history:
        state.values(commit.id)  # its blobs are there and load
    return history


# -- many writers --------------------------------------------------------------------------

BUMP = textwrap.dedent("""
    import json, sys
    from agex import plugins
    from agex.errors import StateConflict
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    storage = plugins.create("storage", "postgres", path=sys.argv[1])
    state = VersionedState(storage, CloudpickleSerializer(), "ns", "s")
    landed, conflicts = [], 0
    for _ in range(int(sys.argv[2])):
        head = state.head()
        n = state.values(head)["n"]
        try:
            landed.append(state.commit({"n": n + 1}, base=head).id)
        except StateConflict:
            conflicts += 1
    print(json.dumps({"landed": landed, "conflicts": conflicts}))
""")


def test_eight_writers_on_one_session_lose_no_update(pg_env) -> None:
    storage = plugins.create("storage", "postgres", path="race")
    state = versioned(storage)
    root = state.commit({"n": 0}).id
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", BUMP, "race", "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    landed: list[str] = []
    conflicts = 0
    for writer in writers:
        out, err = writer.communicate(timeout=200)
        assert writer.returncode == 0, err[-3000:]  # nothing but StateConflict was raised
        result = json.loads(out.strip().splitlines()[-1])
        landed += result["landed"]
        conflicts += result["conflicts"]
    assert len(landed) + conflicts == 8 * 15  # every attempt landed or was refused
    assert len(set(landed)) == len(landed)
    history = consistent(state)
    assert {c.id for c in history} == {root, *landed}  # each landed commit is in it
    assert state.values()["n"] == len(landed)  # no increment was lost
    for commit in history:
        assert state.values(commit.id)["n"] == commit.depth  # each built on the one before
    storage.close()


AGENT = textwrap.dedent("""
    import json, sys
    from agex import Agent, connect_llm, connect_state
    from agex.errors import StateConflict

    path, tasks = sys.argv[1], int(sys.argv[2])
    step = "try:\\n    n += 1\\nexcept NameError:\\n    n = 1\\n"
    reply = "Count.\\n```python\\n{}\\n```"
    replies = [reply.format(step), reply.format(step + "task_success(n)")]
    agent = Agent(
        name="counter",
        state=connect_state(type="versioned", storage="postgres", path=path),
        llm=connect_llm(provider="scripted", responses=replies * tasks * 20),
    )

    @agent.task(on_conflict="fail")
    def count() -> int:
        \"\"\"Count.\"\"\"

    done = conflicts = 0
    for _ in range(tasks):
        try:
            count(session="shared")
            done += 1
        except StateConflict:
            conflicts += 1
            agent.llm = connect_llm(provider="scripted", responses=replies * tasks * 20)
    print(json.dumps({"done": done, "conflicts": conflicts}))
""")


def test_eight_agent_processes_keep_only_whole_tasks(pg_env) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AGENT, "team/counter", "4"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    done = conflicts = 0
    for proc in procs:
        out, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        done, conflicts = done + result["done"], conflicts + result["conflicts"]
    assert done + conflicts == 8 * 4
    assert done >= 1
    storage = plugins.create("storage", "postgres", path="team/counter")
    state = VersionedState(storage, CloudpickleSerializer(), "counter", "shared")
    assert state.values()["n"] == 2 * done  # both steps of every task that won; none of a loser
    consistent(state)
    storage.close()


# -- a writer killed -----------------------------------------------------------------------

COMMIT_FOREVER = textwrap.dedent("""
    import os, sys
    from agex import plugins
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    storage = plugins.create("storage", "postgres", path=sys.argv[1])
    state = VersionedState(storage, CloudpickleSerializer(), "ns", "s")
    n = state.values().get("n", 0) if state.head() else 0
    print("ready", flush=True)
    while True:
        n += 1
        state.commit({"n": n, "payload": os.urandom(20000), "copy": n})
""")


def test_a_writer_killed_mid_commit_fifty_times_leaves_a_whole_history(pg_env) -> None:
    rng = random.Random(19)
    storage = plugins.create("storage", "postgres", path="killed")
    last = 0
    for _ in range(50):
        child = subprocess.Popen(
            [sys.executable, "-c", COMMIT_FOREVER, "killed"], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.08))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        state = versioned(storage)
        if state.head() is None:
            continue  # killed before its first commit
        values = state.values()
        assert values["n"] == values["copy"]  # one commit's values, never a mix
        assert values["n"] >= last  # nothing committed was lost
        last = values["n"]
        history = state.history()
        assert [c.parent for c in history[:-1]] == [c.id for c in history[1:]]
        assert history[-1].parent is None
        state.values(history[-1].id)
    assert last > 0
    consistent(versioned(storage))
    storage.close()


# -- the database goes away ----------------------------------------------------------------


def test_operations_across_a_restart_retry_or_fail_clearly_and_lose_nothing(
    own,
) -> None:
    storage = PostgresStorage("restart", url=own.url, timeout=10, pool_size=4)
    state = versioned(storage)
    state.commit({"n": 0})
    landed: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        own = versioned(storage)
        while not stop.is_set():
            try:
                head = own.head()
                landed.append(own.commit({"n": own.values(head)["n"] + 1}, base=head).id)
            except StateConflict:
                pass
            except (StateWriteError, StateLoadError) as exc:
                errors.append(exc)
            except BaseException as exc:  # anything else is a failure of the test
                errors.append(exc)
                raise

    writers = [threading.Thread(target=write) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        for mode in ("fast", "immediate"):
            time.sleep(0.5)
            own.stop(mode)  # immediate: as a crash, no goodbye to the clients
            time.sleep(0.5)
            own.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=60)
    strange = [e for e in errors if not isinstance(e, StateWriteError | StateLoadError)]
    assert not strange, strange
    for error in errors:
        assert "PostgreSQL database" in str(error)  # it says where
        assert own.password not in str(error)
    before = len(landed)
    # After it is back, the same storage object goes on.
    for _ in range(3):
        head = state.head()
        landed.append(state.commit({"n": state.values(head)["n"] + 1}, base=head).id)
    history = consistent(state)
    assert set(landed) <= {c.id for c in history}  # nothing that was committed is lost
    assert state.values()["n"] == len(landed) == len(history) - 1
    assert before > 0
    storage.close()


def test_the_database_down_longer_than_the_timeout_is_a_clear_error(own) -> None:
    storage = PostgresStorage("down", url=own.url, timeout=2)
    state = versioned(storage)
    state.commit({"n": 1})
    own.stop()
    try:
        began = time.monotonic()
        with pytest.raises(StateLoadError) as read:
            state.head()
        with pytest.raises(StateWriteError) as wrote:
            storage.put_many({"x": b"1"})
        waited = time.monotonic() - began
    finally:
        own.start()
    # Not an exact time (the machine is shared): only that it gave up, rather than hang on
    # for the pool's default of minutes.
    assert waited < 60
    for error in (read.value, wrote.value):
        text = str(error)
        assert "PostgreSQL database" in text
        assert "check that the server runs" in text
        assert own.password not in text
    assert "Nothing was written" in str(wrote.value)
    time.sleep(3)  # longer than the pool's own reconnect attempts
    assert state.values() == {"n": 1}  # back at once, on the same object
    storage.close()


def test_a_storage_used_before_the_database_started_works_once_it_has(own) -> None:
    own.stop()
    storage = PostgresStorage("late", url=own.url, timeout=2)
    with pytest.raises(StateLoadError, match="check that the server runs"):
        storage.get("k")
    own.start()
    storage.put_many({"k": b"v"})
    assert storage.get("k") == b"v"
    storage.close()
