"""Versioned state while the session holds 1, 10 and 100 MB, on the memory, disk and
postgres storages (postgres: a throwaway local server this benchmark starts, fsync on as in a
real deployment, over loopback TCP).

1. Commit time of a step that changes one small variable while the session holds 1, 10 and
   100 MB of other variables. Goals: the 100 MB figure at most 2x the 1 MB figure, and at
   most 5 ms on disk. kvgit (agex 0.12.4's store) on the same data, in its own environment,
   where installed.
2. Task start: a one-step task (``task_success(1)``) on a session that holds one variable of
   1, 10 or 100 MB that the task never touches, each task on a fresh Agent over the same
   stored session, agent code in this process and in a worker (the strongest isolation
   here). Goal: the 100 MB figure at most 2x the 1 MB figure.
3. A task that touches the 100 MB variable (``task_success(len(big))``): what it adds to the
   one-step task, against reading the same bytes from the same storage and unpickling them
   (measured in the same run). Goal: at most 1.2x. In this process, where the time goes,
   piece by piece; in a worker the bytes also cross its socket.
4. Eight sessions committing at once, one process each (as eight servers, or eight clients
   of one), on one storage: commits per second, all of them together. Memory storage is
   per process, so its figure is eight independent stores: the ceiling, not sharing.

The variable is a bytes object (unpickling it is a copy). Disk figures read SQLite through
the operating system's page cache: the session was written just before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator

from measure import PEER, report, run_peer

from agex import Agent, connect_llm, connect_state
from agex.isolation import strongest
from agex.loop import versioned
from agex.state.recorder import Recorder
from agex.stores import LOCAL
from agex.task import Task

SIZES_MB = (1, 10, 100)
ROUNDS = 30
MB = 1024 * 1024
#: Task-start rounds (after the warm-up ones), and rounds of the task touching 100 MB.
START_ROUNDS, START_WARMUP, TOUCH_ROUNDS = 40, 3, 5
GOAL_START, GOAL_TOUCH = 2.0, 1.2
#: Seconds between tasks: a worker pool readies the next worker while the caller is
#: elsewhere, as between the tasks of a real program.
PAUSE = 0.005
LEVELS = ("none",) + ((strongest(),) if strongest() != "none" else ())
#: The storages compared (postgres only where a local server can be started).
STORAGES = ("memory", "disk", "postgres")
#: Sessions (processes) committing at once, and for how many seconds.
WRITERS, WRITE_SECONDS = 8, 3.0

KVGIT = """
import json, os, statistics, sys, tempfile, time
import kvgit
out = {}
for kind in ("memory", "disk"):
    for size in (1, 10, 100):
        with tempfile.TemporaryDirectory() as tmp:
            s = kvgit.store(kind=kind, path=tmp if kind == "disk" else None)
            for i in range(size):
                s[f"v{i}"] = os.urandom(1024 * 1024)
            s["small"] = 0
            s.commit()
            times = []
            for i in range(30):
                s["small"] = i + 1
                t = time.perf_counter()
                s.commit()
                times.append(time.perf_counter() - t)
            out[f"{kind}/{size}"] = statistics.median(times)
print(json.dumps(out))
"""


def where_kept(storage: str, name: str, tmp: str) -> str:
    """The state's path: a directory for disk, a name inside the store otherwise."""
    return os.path.join(tmp, name) if storage == "disk" else name


def settle(storage: str) -> None:
    """Have PostgreSQL write out what was just stored (untimed), so that a commit's figure is
    not the machine flushing the 100 MB written a moment before, which a deployment holding
    that much wrote long ago (without it, the 100 MB figure swings between 1x and 4x of the
    1 MB one with the disk's writeback)."""
    url = os.environ.get("AGEX_POSTGRES_URL")
    if storage == "postgres" and url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CHECKPOINT")


def ours(storage: str, size_mb: int, tmp: str) -> float:
    path = where_kept(storage, f"{storage}-{size_mb}", tmp)
    agent = Agent(
        name=f"bench-{storage}-{size_mb}",
        state=connect_state(type="versioned", storage=storage, path=path),
    )
    # What a step's commit costs: serializing what it touched (the agent-code side) and
    # storing those bytes (the side that holds the storage), as the loop does.
    state = versioned(LOCAL, agent.state_config, agent.name, "s")
    recorder = Recorder(agent)
    namespace = agent.sandbox.namespace()
    namespace.update(recorder.load(state.raw(state.head()), namespace))
    for i in range(size_mb):
        namespace[f"v{i}"] = os.urandom(MB)
    namespace["small"] = 0
    changes, _, facts = recorder.changes(agent.sandbox.compile("pass").code, namespace)
    base = state.commit_serialized(changes, [], facts=facts).id
    settle(storage)
    step = agent.sandbox.compile("small = small + 1").code
    times = []
    for i in range(ROUNDS):
        namespace["small"] = i + 1
        start = time.perf_counter()
        changes, _, facts = recorder.changes(step, namespace)
        base = state.commit_serialized(changes, [{"step": i}], base, facts=facts).id
        times.append(time.perf_counter() - start)
    storage_object = state.storage
    getattr(storage_object, "close", lambda: None)()
    return statistics.median(times)


def kvgit() -> dict[str, float] | None:
    figures: dict[str, float] | None = run_peer(PEER, KVGIT, "kvgit")
    return figures


def reply(code: str) -> str:
    return f"Step.\n```python\n{code}\n```"


def where(isolation: str) -> str:
    return "in-process" if isolation == "none" else f"isolated ({isolation})"


class Session:
    """A stored session holding one variable, ``big``, of ``size_mb`` MB, written once by a
    task of the same isolation (untimed); every timed task runs on a fresh Agent over it."""

    def __init__(self, storage: str, isolation: str, size_mb: int, tmp: str) -> None:
        self.name = f"start-{storage}-{isolation}-{size_mb}"
        # A storage per session: a 1 MB session is not read out of a 111 MB database.
        path = where_kept(storage, self.name, tmp)
        self.config = connect_state(type="versioned", storage=storage, path=path)
        self.isolation = isolation
        self.size = size_mb * MB
        self.run(f"big = bytes(range(256)) * {self.size // 256}\ntask_success(0)", 0)
        self.state = versioned(LOCAL, self.config, self.name, "default")
        blob = self.state.tree(self.state.head())["big"].blob
        #: The storage key of big's value.
        self.key = "b/" + blob

    def task(self, code: str) -> Task:
        agent = Agent(
            name=self.name,
            isolation=self.isolation,
            state=self.config,
            llm=connect_llm(provider="scripted", responses=[reply(code)]),
        )

        @agent.task
        def job() -> int:
            """Answer."""

        return job

    def run(self, code: str, expected: int) -> float:
        """Seconds of one task running ``code``, on a fresh Agent made before the clock."""
        job = self.task(code)
        start = time.perf_counter()
        value = job()
        elapsed = time.perf_counter() - start
        if value != expected:
            raise SystemExit(f"wrong answer: {value!r}")
        time.sleep(PAUSE)
        return elapsed

    def one_step(self) -> float:
        return self.run("task_success(1)", 1)

    def touching(self) -> float:
        return self.run("task_success(len(big))", self.size)

    def raw(self) -> float:
        """Reading big's bytes from the storage and unpickling them, nothing else."""
        start = time.perf_counter()
        payload = self.state.storage.get(self.key)
        assert payload is not None
        pickle.loads(payload)
        return time.perf_counter() - start

    def pieces(self) -> dict[str, float]:
        """What a task touching big does with it in this process, one piece at a time."""
        storage, out = self.state.storage, {}

        def timed(name: str, work: Callable[[], object]) -> object:
            start = time.perf_counter()
            result = work()
            out[name] = time.perf_counter() - start
            return result

        payload = timed("read (storage get)", lambda: storage.get(self.key))
        assert isinstance(payload, bytes)
        timed("hash check (sha256)", lambda: hashlib.sha256(payload).hexdigest())
        timed("unpickle", lambda: pickle.loads(payload))
        return out

    def close(self) -> None:
        getattr(self.state.storage, "close", lambda: None)()


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def task_start(storage: str, isolation: str, tmp: str) -> list[tuple[str, str]]:
    """Per-task time of the one-step task at each size, the sizes taking turns."""
    sessions = {size: Session(storage, isolation, size, tmp) for size in SIZES_MB}
    samples: dict[int, list[float]] = {size: [] for size in SIZES_MB}
    for i in range(START_WARMUP + START_ROUNDS):
        for size, session in sessions.items():
            seconds = session.one_step()
            if i >= START_WARMUP:
                samples[size].append(seconds)
    for session in sessions.values():
        session.close()
    figures = {size: statistics.median(values) for size, values in samples.items()}
    label = f"{storage}, {where(isolation)}"
    lines = [(f"{label}, {size:>3} MB held", f"{s * 1000:7.2f} ms") for size, s in figures.items()]
    ratio = figures[100] / figures[1]
    verdict = "meets" if ratio <= GOAL_START else "MISSES"
    lines.append(
        (f"{label}: 100 MB / 1 MB", f"{ratio:.2f}x; {verdict} the goal of {GOAL_START:g}x")
    )
    return lines


def touch(storage: str, isolation: str, tmp: str) -> list[tuple[str, str]]:
    """The task touching the 100 MB variable, beside the one-step task and the raw read and
    unpickle of the same bytes, taking turns (one warm-up round)."""
    session = Session(storage, isolation, 100, tmp)
    in_process = isolation == "none"
    cases: dict[str, Callable[[], float]] = {
        "touching": session.touching,
        "one-step": session.one_step,
        "raw": session.raw,
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    parts: dict[str, list[float]] = {}
    for i in range(1 + TOUCH_ROUNDS):
        for name, case in cases.items():
            seconds = case()
            if i:
                samples[name].append(seconds)
        if in_process:
            for name, seconds in session.pieces().items():
                if i:
                    parts.setdefault(name, []).append(seconds)
    session.close()
    got = medians(samples)
    added = got["touching"] - got["one-step"]
    ratio = added / got["raw"]
    verdict = "meets" if ratio <= GOAL_TOUCH else "MISSES"
    label = f"{storage}, {where(isolation)}"
    lines = [
        (f"{label}: task touching big", f"{got['touching'] * 1000:8.1f} ms"),
        ("  one-step task, not touching it", f"{got['one-step'] * 1000:8.1f} ms"),
        ("  what touching adds (the difference)", f"{added * 1000:8.1f} ms"),
        ("  read + unpickle of the same bytes", f"{got['raw'] * 1000:8.1f} ms"),
        (
            "  what touching adds / read + unpickle",
            f"{ratio:8.2f}x; {verdict} the goal of {GOAL_TOUCH:g}x"
            + ("" if in_process else " (the bytes cross the worker's socket too)"),
        ),
        ("  whole task / read + unpickle", f"{got['touching'] / got['raw']:8.2f}x"),
    ]
    if parts:
        pieces = medians(parts)
        lines += [(f"    {name}", f"{s * 1000:8.1f} ms") for name, s in pieces.items()]
        lines.append(("    sum of the pieces", f"{sum(pieces.values()) * 1000:8.1f} ms"))
    return lines


WRITER = textwrap.dedent("""
    import sys, time
    from agex import plugins
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    storage = plugins.create("storage", sys.argv[1], path=sys.argv[2])
    state = VersionedState(storage, CloudpickleSerializer(), "bench", sys.argv[3])
    state.commit({"small": 0, "other": list(range(100))})
    print("ready", flush=True)
    sys.stdin.readline()
    end, n = time.perf_counter() + float(sys.argv[4]), 0
    while time.perf_counter() < end:
        n += 1
        state.commit({"small": n})
    print(n, flush=True)
""")


def concurrent(storage: str, tmp: str) -> float:
    """Commits per second of WRITERS processes, each on a session of its own, at once."""
    path = where_kept(storage, f"concurrent-{storage}", tmp)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, storage, path, f"s{n}", str(WRITE_SECONDS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(WRITERS)
    ]
    for proc in procs:  # every one imported, connected and committed once
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"a writer on {storage} did not start")
    for proc in procs:
        if proc.stdin is not None:
            proc.stdin.write("go\n")
            proc.stdin.flush()
    total = sum(int(proc.communicate(timeout=120)[0].strip()) for proc in procs)
    if any(proc.returncode for proc in procs):
        raise SystemExit(f"a writer on {storage} failed")
    return total / WRITE_SECONDS


@contextlib.contextmanager
def postgres_server() -> Iterator[str | None]:
    """A local PostgreSQL server for the run, found through AGEX_POSTGRES_URL as a user
    configures it; None (postgres left out) where none can be started."""
    try:
        from agex_state_postgres.local import LocalServer

        server = LocalServer(fsync=True)
    except (ImportError, RuntimeError) as exc:
        yield f"postgres left out: {exc}"
        return
    server.start()
    before = os.environ.get("AGEX_POSTGRES_URL")
    os.environ["AGEX_POSTGRES_URL"] = server.url
    try:
        yield None
    finally:
        if before is None:
            os.environ.pop("AGEX_POSTGRES_URL", None)
        else:
            os.environ["AGEX_POSTGRES_URL"] = before
        server.remove()


def main() -> None:
    with postgres_server() as missing:
        if missing:
            print(missing)
        measure(tuple(s for s in STORAGES if not (missing and s == "postgres")))


def measure(storages: tuple[str, ...]) -> None:
    peer = kvgit()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage in storages:
            figures = {size: ours(storage, size, tmp) for size in SIZES_MB}
            for size, seconds in figures.items():
                known = peer and f"{storage}/{size}" in peer
                theirs = f"   kvgit {peer[f'{storage}/{size}'] * 1000:7.2f} ms" if known else ""
                lines.append((f"{storage}, {size:>3} MB held", f"{seconds * 1000:6.2f} ms{theirs}"))
            ratio = figures[100] / figures[1]
            lines.append((f"{storage}: 100 MB / 1 MB", f"{ratio:.2f}x"))
    if not peer:
        lines.append(("kvgit", "not installed"))
    lines.append(("goals", "100 MB <= 2x 1 MB; disk and postgres (loopback) <= 5 ms"))
    report(f"commit of a one-small-variable step, median of {ROUNDS}", lines)
    with tempfile.TemporaryDirectory() as tmp:
        start = [line for s in storages for i in LEVELS for line in task_start(s, i, tmp)]
        start.append(("goal", f"100 MB <= {GOAL_START:g}x 1 MB"))
        report(
            f"task start: a one-step task, one untouched variable held, median of {START_ROUNDS}",
            start,
        )
        touched = [line for s in storages for i in LEVELS for line in touch(s, i, tmp)]
        touched.append(
            ("goal", f"what touching adds <= {GOAL_TOUCH:g}x read + unpickle of the same bytes")
        )
        report(
            f"a task touching the 100 MB variable (task_success(len(big))), median of "
            f"{TOUCH_ROUNDS}; pieces in-process",
            touched,
        )
        rates = [(storage, f"{concurrent(storage, tmp):7.0f} commits/s") for storage in storages]
        report(
            f"{WRITERS} sessions committing at once, one process each, for "
            f"{WRITE_SECONDS:g} s (memory: a store per process)",
            rates,
        )


if __name__ == "__main__":
    main()
