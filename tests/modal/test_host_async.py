"""No Modal call blocks an event loop, the caller's or the container's: the fake refuses a
blocking call made on a running loop (``BlockingCall``), and such a refusal surfaces as the
task's error, never swallowed by the heartbeat or the watch on the control Dict."""

from __future__ import annotations

import asyncio

import pytest

from agex import Agent, connect_host, connect_state
from agex.errors import RemoteExecutionError
from agex.testing.host import scripted
from agex_host_modal import remote


def agent_with(state=None, steps=("task_success(1)",)):
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"), state=state, llm=scripted(*steps)
    )

    @agent.task
    def one() -> int:
        """One."""

    return agent, one


@pytest.mark.parametrize(
    "state",
    [
        None,
        connect_state(type="versioned", storage="memory"),
        connect_state(type="versioned", storage="disk", path="async-disk"),
    ],
    ids=["ephemeral", "memory", "disk"],
)
def test_every_path_awaits_modal_from_async_code(fake, state):
    agent, one = agent_with(state, ["task_success(1)", "task_success(2)"])

    async def from_async_code():
        agent.warmup()  # a synchronous method called on a running loop
        assert await one.arun() == 1
        assert await one.arun() == 2  # a warm container: the Volume is reloaded
        assert agent.host.cancel(agent, "default") == 0

    asyncio.run(from_async_code())
    assert len(fake.deploys) == 1


def test_a_blocking_call_in_the_containers_watch_fails_the_task(fake_threads, monkeypatch):
    # It patches code that runs in the container: containers as threads.
    real = remote._Watch.asked

    async def blocking_from_the_second_look(self):
        self.looks = getattr(self, "looks", 0) + 1
        if self.looks > 1:
            self.control.get(self.mine)  # the blocking form, on the container's loop
        return await real(self)

    monkeypatch.setattr(remote._Watch, "asked", blocking_from_the_second_look)
    _agent, spin = agent_with(steps=["while True:\n    pass"])
    with pytest.raises(RemoteExecutionError, match="blocks the running event loop") as raised:
        spin()
    assert raised.value.remote_type == "BlockingCall"


def test_a_blocking_call_when_the_container_starts_fails_the_task(fake_threads, monkeypatch):
    fake = fake_threads  # it patches code that runs in the container

    async def blocking(state):
        fake.Volume.from_name(state.path).reload()

    monkeypatch.setattr(remote, "_reload", blocking)
    _agent, one = agent_with(connect_state(type="versioned", storage="disk", path="blocked"))
    with pytest.raises(RemoteExecutionError, match=r"Volume\.reload.*blocks the running"):
        one()


def test_calls_that_start_together_deploy_the_app_once(fake):
    _agent, one = agent_with(steps=["task_success(1)"] * 3)

    async def together():
        return await asyncio.gather(one.arun(), one.arun(), one.arun())

    assert asyncio.run(together()) == [1, 1, 1]
    assert len(fake.deploys) == 1
