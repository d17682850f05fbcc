"""task.cancel(session) on the local host: the run stops at once with TaskCancelled, only
that agent's runs in that session stop, and versioned state stays at its last commit."""

from __future__ import annotations

import threading
import time

import pytest

from agex import Agent, TaskCancelled, connect_state
from agex.testing.host import scripted


def in_thread(call, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = call(**kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def test_cancel_stops_a_spinning_run_and_leaves_the_session_as_it_was() -> None:
    agent = Agent(
        name="cancel-me",
        state=connect_state(type="versioned", storage="memory", path="cancel-test"),
        llm=scripted("a = 1", "while True:\n    pass", "task_success(a)"),
    )
    spinning = threading.Event()

    @agent.task
    def job() -> int:
        """Job."""

    def on_event(event) -> None:
        if type(event).__name__ == "ActionEvent" and event.step == 2:
            spinning.set()

    thread, box = in_thread(job, session="x", on_event=on_event)
    assert spinning.wait(10)
    time.sleep(0.1)
    assert job.cancel("y") == 0  # another session: nothing to stop
    assert job.cancel("x") == 1
    thread.join(5)
    assert isinstance(box.get("error"), TaskCancelled), box
    state = agent.state("x")
    assert state.values() == {}  # a task that did not finish leaves nothing behind ...
    assert [c.completed for c in state.history(unfinished=True)] == [
        False
    ]  # ... but its step is recorded
    assert job.cancel("x") == 0


def test_cancel_while_waiting_for_the_model() -> None:
    agent = Agent(llm=scripted("task_success(1)", delay=30))

    @agent.task
    def job() -> int:
        """Job."""

    thread, box = in_thread(job, session="slow")
    deadline = time.monotonic() + 5
    while job.cancel("slow") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.join(5)
    assert isinstance(box.get("error"), TaskCancelled), box


def test_cancel_checks_the_session_name() -> None:
    agent = Agent(llm=scripted())

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(ValueError, match="printable"):
        job.cancel("bad\nname")
