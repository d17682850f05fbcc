"""Commit time of a step that changes one small variable while the session holds 1, 10 and
100 MB of other variables, on the memory and disk storages. Goals: the 100 MB figure at most
2x the 1 MB figure, and at most 5 ms on disk. kvgit (agex 0.12.4's store) on the same data,
in its own environment, where installed."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

from measure import PEER, report, run_peer

from agex import Agent, connect_state
from agex.loop import versioned
from agex.state.recorder import Recorder
from agex.stores import LOCAL

SIZES_MB = (1, 10, 100)
ROUNDS = 30
MB = 1024 * 1024

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


def ours(storage: str, size_mb: int, tmp: str) -> float:
    path = os.path.join(tmp, f"{storage}-{size_mb}") if storage == "disk" else f"bench-{size_mb}"
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
    changes, _ = recorder.changes(agent.sandbox.compile("pass").code, namespace)
    base = state.commit_serialized(changes, []).id
    step = agent.sandbox.compile("small = small + 1").code
    times = []
    for i in range(ROUNDS):
        namespace["small"] = i + 1
        start = time.perf_counter()
        changes, _ = recorder.changes(step, namespace)
        base = state.commit_serialized(changes, [{"step": i}], base).id
        times.append(time.perf_counter() - start)
    storage_object = state.storage
    getattr(storage_object, "close", lambda: None)()
    return statistics.median(times)


def kvgit() -> dict[str, float] | None:
    figures: dict[str, float] | None = run_peer(PEER, KVGIT, "kvgit")
    return figures


def main() -> None:
    peer = kvgit()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage in ("memory", "disk"):
            figures = {size: ours(storage, size, tmp) for size in SIZES_MB}
            for size, seconds in figures.items():
                theirs = f"   kvgit {peer[f'{storage}/{size}'] * 1000:7.2f} ms" if peer else ""
                lines.append((f"{storage}, {size:>3} MB held", f"{seconds * 1000:6.2f} ms{theirs}"))
            ratio = figures[100] / figures[1]
            lines.append((f"{storage}: 100 MB / 1 MB", f"{ratio:.2f}x"))
    if not peer:
        lines.append(("kvgit", "not installed"))
    lines.append(("goals", "100 MB <= 2x 1 MB; disk <= 5 ms"))
    report(f"commit of a one-small-variable step, median of {ROUNDS}", lines)


if __name__ == "__main__":
    main()
