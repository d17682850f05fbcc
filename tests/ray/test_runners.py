"""Runners: a Ray actor per host configuration in this process, shared by that
configuration's runs, ended when idle, and reachable by a cancel from any process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from agex import Agent, TaskCancelled
from agex.testing.host import scripted


def _runners(host):
    from agex_host_ray import cluster

    return [
        r
        for rs in cluster._runners.values()
        for r in rs
        if f'"num_cpus": {host.options.num_cpus}' in r.key
    ]


def test_an_idle_runner_ends_itself_and_the_next_task_starts_another(ray_cluster, ray_host):
    import ray

    host = ray_host(scaledown_window=2, num_cpus=0.25)
    agent = Agent(host=host, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    assert one() == 1
    [runner] = _runners(host)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # it ends itself after 2 idle seconds
        try:
            ray.get(runner.actor.ready.remote([]), timeout=10)
        except ray.exceptions.RayActorError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the idle runner did not end")
    agent.llm = scripted("task_success(2)")
    assert one() == 2  # a new runner
    assert runner not in _runners(host)


def test_runs_share_a_runner_up_to_its_concurrency(ray_cluster, ray_host):
    import asyncio

    from agex import connect_llm

    host = ray_host(concurrency=2, num_cpus=0.5)

    def agent_with_delay() -> Agent:
        replies = ["```python\ntask_success(1)\n```"]
        return Agent(host=host, llm=connect_llm("scripted", responses=replies, delay=1.0))

    tasks = []
    for _ in range(3):
        agent = agent_with_delay()

        @agent.task
        async def slow() -> int:
            """Slow."""

        tasks.append(slow)

    async def all_of_them() -> list[int]:
        return await asyncio.gather(*(task() for task in tasks))

    assert asyncio.run(all_of_them()) == [1, 1, 1]
    # Three runs at once, two per runner: two runners.
    assert len(_runners(host)) == 2


def test_a_cancel_from_another_process_reaches_a_full_runner(ray_cluster, ray_host):
    """The runner holds one run (concurrency=1), spinning; a cancel made by another
    process finds it by name and stops it: control calls do not wait behind runs."""
    host = ray_host(concurrency=1, num_cpus=0.75)
    name = f"spinner-{uuid.uuid4().hex[:8]}"
    agent = Agent(name=name, host=host, llm=scripted("while True:\n    pass"))
    acting = threading.Event()
    box: dict = {}

    @agent.task
    def spin() -> int:
        """Spin."""

    def work() -> None:
        try:
            box["value"] = spin(
                session="s",
                on_event=lambda e: acting.set() if type(e).__name__ == "ActionEvent" else None,
            )
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert acting.wait(120)
    code = (
        "from agex import Agent, connect_host\n"
        "from agex.testing.host import scripted\n"
        f"agent = Agent(name={name!r}, host=connect_host(provider='ray',"
        f" address={ray_cluster.address!r}), llm=scripted('x'))\n"
        "@agent.task\n"
        "def spin() -> int:\n"
        "    '''Spin.'''\n"
        "print('STOPPED', spin.cancel('s'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert "STOPPED 1" in done.stdout, done.stdout + done.stderr
    thread.join(60)
    assert isinstance(box.get("error"), TaskCancelled), box


def test_a_cancel_where_no_cluster_is_known_starts_none(tmp_path):
    """A process that never ran a task, with address None, no RAY_ADDRESS and no cluster
    started on the machine, has no cluster to ask: cancel stops nothing and starts no Ray."""
    code = (
        "import sys\n"
        "from agex import Agent, connect_host\n"
        "from agex.testing.host import scripted\n"
        "agent = Agent(host=connect_host(provider='ray'), llm=scripted('x'))\n"
        "@agent.task\n"
        "def spin() -> int:\n"
        "    '''Spin.'''\n"
        "print('STOPPED', spin.cancel('s'))\n"
        "import ray\n"
        "print('CONNECTED', ray.is_initialized())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path)  # where `ray start` would have left its address
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert "STOPPED 0" in done.stdout, done.stdout + done.stderr
    assert "CONNECTED False" in done.stdout, done.stdout + done.stderr
