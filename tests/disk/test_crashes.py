"""Versioned state on disk under process death and contention."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

from agex import plugins
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState

COMMIT_FOREVER = textwrap.dedent("""
    import os, sys
    from agex import plugins
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    storage = plugins.create("storage", "disk", path=sys.argv[1])
    state = VersionedState(storage, CloudpickleSerializer(), "crash", "s")
    n = state.values().get("n", 0)
    print("ready", flush=True)
    while True:
        n += 1
        state.commit({"n": n, "payload": os.urandom(2000), "copy": n})
""")


def open_state(path: str) -> VersionedState:
    return VersionedState(
        plugins.create("storage", "disk", path=path), CloudpickleSerializer(), "crash", "s"
    )


def test_killed_mid_commit_fifty_times_the_head_is_always_complete(tmp_path) -> None:
    path = str(tmp_path / "state")
    rng = random.Random(7)
    last = 0
    for _ in range(50):
        child = subprocess.Popen(
            [sys.executable, "-c", COMMIT_FOREVER, path], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        state = open_state(path)
        values = state.values()  # the head's commit and all its blobs load
        assert values["n"] == values["copy"]  # one commit's values, never a mix
        assert values["n"] >= last  # nothing committed was lost
        last = values["n"]
        history = state.history()
        assert [c.parent for c in history[:-1]] == [c.id for c in history[1:]]
        state.storage.close()
    assert last > 0


BUMP = textwrap.dedent("""
    import sys
    from agex import plugins
    from agex.errors import StateConflict
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    storage = plugins.create("storage", "disk", path=sys.argv[1])
    state = VersionedState(storage, CloudpickleSerializer(), "shared", "s")
    conflicts = 0
    for _ in range(int(sys.argv[2])):
        while True:
            head = state.head()
            n = state.values(head).get("n", 0) if head else 0
            try:
                state.commit({"n": n + 1}, base=head)
                break
            except StateConflict:
                conflicts += 1
    print(conflicts)
""")


def test_two_processes_on_one_session_lose_no_update(tmp_path) -> None:
    path = str(tmp_path / "state")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", BUMP, path, "40"], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    conflicts = [int(w.communicate(timeout=120)[0]) for w in workers]
    state = VersionedState(
        plugins.create("storage", "disk", path=path), CloudpickleSerializer(), "shared", "s"
    )
    assert state.values()["n"] == 80
    assert len(state.history()) == 80  # every increment is its own commit, none lost
    assert all(c >= 0 for c in conflicts)  # each worker reported how often it retried
