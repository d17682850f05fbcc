"""Cancelling a run on Ray stops it on the cluster, not only the caller's wait: the run
makes no further steps, and hands the session's turn back, so that the next task in the
session runs at once and finds the session at its last commit (the cancelled run's steps
were never committed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from agex import Agent
from agex.errors import TaskCancelled
from agex.testing.host import scripted

from .calls import (
    Call,
    Watch,
    counting,
    pg_env,
    pg_state,
    runners_of,
    wait_until,
)

DELAY = 1.0


def _counter(host, state):
    """An agent whose session starts at n = 0 (a committed first task)."""
    agent = Agent(name="counter", host=host, llm=scripted("n = 0", "task_success(n)"), state=state)

    @agent.task
    def count() -> int:
        """Count."""

    assert count(session="s") == 0
    agent.llm = counting(8, delay=DELAY)
    return agent, count


def _stopped_on_the_cluster(agent, count) -> None:
    """The cancelled run takes no more steps, and the next task in its session runs and
    sees n = 0: had the run gone on, it would hold the session's turn until it committed
    n = 8, and the next task would wait for it and see that."""
    steps = len(agent.state("s").history(unfinished=True))
    time.sleep(3 * DELAY)
    assert len(agent.state("s").history(unfinished=True)) == steps, "it went on stepping"
    agent.llm = scripted("task_success(n)")
    assert Call(count, session="s").result(within=120) == 0


def test_cancel_from_another_thread_stops_the_run_on_the_cluster(ray_host, postgres, state_path):
    agent, count = _counter(
        ray_host(num_cpus=0.1, runtime_env=pg_env(postgres)), pg_state(state_path)
    )
    watch = Watch()
    call = Call(count, session="s", on_event=watch)
    watch.wait_actions(2)

    assert count.cancel("s") == 1
    with pytest.raises(TaskCancelled):
        call.result(within=60)
    _stopped_on_the_cluster(agent, count)


@pytest.mark.parametrize("how", ["wait_for", "task.cancel"])
def test_cancelling_the_asyncio_call_stops_the_run_on_the_cluster(
    ray_host, postgres, state_path, how
):
    agent, count = _counter(
        ray_host(num_cpus=0.1, runtime_env=pg_env(postgres)), pg_state(state_path)
    )

    async def cancelled() -> None:
        watch = Watch()
        running = asyncio.ensure_future(count.arun(session="s", on_event=watch))
        await asyncio.to_thread(watch.wait_actions, 2)
        if how == "wait_for":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(running, timeout=0.5)
        else:
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running

    asyncio.run(asyncio.wait_for(cancelled(), timeout=120))
    _stopped_on_the_cluster(agent, count)


def test_cancel_while_the_runner_starts(ray_host, postgres, state_path):
    """Cancelled before its runner answered, the run never starts there."""
    agent, count = _counter(
        ray_host(num_cpus=0.1, runtime_env=pg_env(postgres)), pg_state(state_path)
    )
    agent.host = host = ray_host(num_cpus=0.3, runtime_env=pg_env(postgres))  # no runner yet
    call = Call(count, session="s")
    wait_until(
        lambda: any(not r.started.is_set() for r in runners_of(host)),
        within=30,
        what="a runner starting",
    )
    assert count.cancel("s") == 1
    with pytest.raises(TaskCancelled):
        call.result(within=120)
    _stopped_on_the_cluster(agent, count)
    assert all(r.running == 0 for r in runners_of(host)), "the cancelled run was let go"
