"""Tasks of several processes on one session (disk storage), against the same processes
each on a session of its own: tasks per second, and whether every task completed.

Each of 8 processes runs 10 three-step tasks that add one to a counter at every step, with
the default ``on_conflict="wait"``: on one session they take turns, so the counter must end
at exactly 240.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time

from measure import report

PROCESSES, TASKS = 8, 10

SCRIPT = textwrap.dedent("""
    import json, sys
    from agex import Agent, connect_llm, connect_state

    path, session, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    step = "try:\\n    n += 1\\nexcept NameError:\\n    n = 1\\n"
    reply = "Count.\\n```python\\n{}\\n```"
    replies = [reply.format(step), reply.format(step), reply.format(step + "task_success(n)")]
    agent = Agent(
        name="counter",
        state=connect_state(type="versioned", storage="disk", path=path),
        llm=connect_llm(provider="scripted", responses=replies * tasks),
    )

    @agent.task
    def count() -> int:
        \"\"\"Count.\"\"\"

    count(session=session)  # imports and the store's first use, before the clock
    print("ready", flush=True)
    sys.stdin.readline()
    done = 0
    for _ in range(tasks - 1):
        count(session=session)
        done += 1
    print(json.dumps({"done": done + 1}), flush=True)
""")


def one_run(shared: bool) -> tuple[float, int, int]:
    """Seconds for every process's tasks after the first, tasks done, and the counter."""
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    from agex_state_disk.storage import DiskStorage

    with tempfile.TemporaryDirectory() as tmp:
        sessions = ["shared" if shared else f"own-{i}" for i in range(PROCESSES)]
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", SCRIPT, tmp, session, str(TASKS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for session in sessions
        ]
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit("a process did not start")
        start = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        done = 0
        for proc in procs:
            out, _ = proc.communicate(timeout=600)
            done += json.loads(out.strip().splitlines()[-1])["done"]
        elapsed = time.perf_counter() - start
        storage = DiskStorage(tmp)
        try:
            counted = sum(
                VersionedState(storage, CloudpickleSerializer(), "counter", s).values()["n"]
                for s in set(sessions)
            )
        finally:
            storage.close()
        return elapsed, done, counted


def main() -> None:
    timed = PROCESSES * (TASKS - 1)
    lines = []
    rates = {}
    for shared in (True, False):
        elapsed, done, counted = one_run(shared)
        rates[shared] = timed / elapsed
        where = "one session" if shared else f"{PROCESSES} sessions"
        lines.append(
            (
                f"{PROCESSES} processes, {where}",
                f"{rates[shared]:6.1f} tasks/s; {done} of {PROCESSES * TASKS} completed, "
                f"counter {counted} (exactly {3 * PROCESSES * TASKS} is right)",
            )
        )
    lines.append(("one session / own sessions", f"{rates[True] / rates[False]:.2f}x"))
    report(f"{PROCESSES} processes x {TASKS} three-step tasks, disk storage", lines)


if __name__ == "__main__":
    main()
