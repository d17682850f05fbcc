"""Tasks of several processes on one session, on disk: each task's steps are kept whole or
not at all, and by default every task gets its turn."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys
    from agex import Agent, connect_llm, connect_state
    from agex.errors import StateConflict

    path, on_conflict, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    step = "try:\\n    n += 1\\nexcept NameError:\\n    n = 1\\n"
    reply = "Count.\\n```python\\n{}\\n```"
    replies = [reply.format(step), reply.format(step), reply.format(step + "task_success(n)")]
    agent = Agent(
        name="counter",
        state=connect_state(type="versioned", storage="disk", path=path),
        llm=connect_llm(provider="scripted", responses=replies * tasks * 20),
    )

    @agent.task(on_conflict=on_conflict)
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


def run(tmp_path, on_conflict: str, processes: int = 8, tasks: int = 10) -> list[dict]:
    path = str(tmp_path / "state")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, path, on_conflict, str(tasks)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def counter(tmp_path) -> int:
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    from agex_state_disk.storage import DiskStorage

    storage = DiskStorage(tmp_path / "state")
    try:
        return VersionedState(storage, CloudpickleSerializer(), "counter", "shared").values()["n"]
    finally:
        storage.close()


def test_by_default_every_task_gets_its_turn(tmp_path) -> None:
    results = run(tmp_path, "wait")
    assert sum(r["done"] for r in results) == 80
    assert counter(tmp_path) == 240


@pytest.mark.parametrize("on_conflict", ["fail", "retry"])
def test_racing_tasks_keep_only_whole_tasks(tmp_path, on_conflict) -> None:
    results = run(tmp_path, on_conflict, processes=4, tasks=5)
    done = sum(r["done"] for r in results)
    assert done >= 1
    assert counter(tmp_path) == 3 * done  # no step of a task that lost is kept
