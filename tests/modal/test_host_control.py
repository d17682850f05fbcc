"""What Modal does not tell a running function, agex does through its control Dict: a
cancelled call, a cancel from another process, a cancel sent while the container is still
starting, and a caller that went away without a word (its process died), whose heartbeat
stops."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from agex import Agent, TaskCancelled, connect_host
from agex.hosts.running import RUNS
from agex.testing.host import scripted
from agex_host_modal import host as modal_host_module
from agex_host_modal import remote
from agex_host_modal.app import app_name


def modal_host():
    return connect_host(provider="modal", secrets="llm-keys")


def spinning():
    agent = Agent(host=modal_host(), llm=scripted("while True:\n    pass"))

    @agent.task
    def spin() -> int:
        """Spin."""

    return agent, spin


async def call_then_cancel(spin):
    """Call ``spin`` and cancel the call once its first event arrives."""
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    call = asyncio.ensure_future(
        spin.arun(on_event=lambda e: loop.call_soon_threadsafe(started.set))
    )
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


def wait_until(condition, seconds=15.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def in_thread(call):
    box = {}

    def work():
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def test_a_cancel_sent_while_the_container_starts_is_not_missed(fake, monkeypatch):
    fake.startup = 1.0  # a cold start: the cancel comes before the function runs
    agent, spin = spinning()
    thread, box = in_thread(lambda: spin(session="s1"))
    wait_until(lambda: fake.calls == 1)
    # As from another process, which started none of the runs: only Modal can reach it.
    monkeypatch.setattr(RUNS, "cancel", lambda agent_name, session: 0)
    assert modal_host().cancel(agent, "s1") == 0
    thread.join(20)
    assert isinstance(box.get("error"), TaskCancelled), box
    assert "before it started" in str(box["error"])


def test_a_cancel_of_another_session_leaves_the_run_alone(fake, monkeypatch):
    fake.startup = 0.5
    agent = Agent(host=modal_host(), llm=scripted("task_success(5)"))

    @agent.task
    def five() -> int:
        """Five."""

    thread, box = in_thread(lambda: five(session="mine"))
    wait_until(lambda: fake.calls == 1)
    monkeypatch.setattr(RUNS, "cancel", lambda agent_name, session: 0)
    modal_host().cancel(agent, "theirs")
    thread.join(20)
    assert box == {"value": 5}


def test_a_run_whose_caller_died_stops_once_its_heartbeat_is_stale(fake, monkeypatch):
    monkeypatch.setattr(remote, "HEARTBEAT", 0.05)
    monkeypatch.setattr(remote, "STALE", 0.5)

    async def nothing(control, run):  # a process that died sends no cancel
        return None

    monkeypatch.setattr(modal_host_module, "_stop", nothing)
    agent, spin = spinning()
    asyncio.run(call_then_cancel(spin))  # the caller stops: no heartbeat, and no cancel sent
    deployed = fake.apps[app_name(agent, agent.host)]["run_task"]
    wait_until(lambda: len(deployed.idle) == 1)  # the run ended in the container


def test_a_caller_that_listens_keeps_a_long_run_going(fake, monkeypatch):
    monkeypatch.setattr(remote, "HEARTBEAT", 0.05)
    monkeypatch.setattr(remote, "STALE", 0.5)
    agent = Agent(host=modal_host(), llm=scripted("pause()\ntask_success(1)"))
    agent.fn(lambda: time.sleep(2.0), name="pause")  # four times as long as STALE

    @agent.task
    def slow() -> int:
        """Slow."""

    assert slow() == 1


def test_a_cancelled_call_stops_its_container(fake):
    agent, spin = spinning()
    asyncio.run(call_then_cancel(spin))
    deployed = fake.apps[app_name(agent, agent.host)]["run_task"]
    wait_until(lambda: len(deployed.idle) == 1)  # the run ended in the container


def test_cancel_from_another_process_reaches_the_run(fake, monkeypatch):
    agent, spin = spinning()
    box = {}

    def work():
        try:
            box["value"] = spin(session="s1", on_event=lambda e: box.setdefault("started", 1))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    wait_until(lambda: "started" in box)
    # As in another process, which started none of the runs: only Modal can reach it.
    monkeypatch.setattr(RUNS, "cancel", lambda agent_name, session: 0)
    assert modal_host().cancel(agent, "s1") == 0
    thread.join(15)
    assert isinstance(box.get("error"), TaskCancelled), box
