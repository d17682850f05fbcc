"""Tasks meeting on one session: turns that are handed on, leases that lapse by what a
waiter sees (not by clocks), racing tasks that give up or retry, and tasks calling tasks."""

from __future__ import annotations

import threading
import time

import pytest

from agex import Agent, connect_llm, connect_state
from agex.events import ConflictEvent
from agex.isolation import strongest
from agex.state import turn as turns
from agex.storage.memory import MemoryStorage

LEVELS = ["none"] + ([strongest()] if strongest() != "none" else [])


@pytest.fixture(autouse=True)
def _send_test_modules_by_value(ship_test_module: None) -> None:
    """Test modules are not importable in a worker process."""


def block(code: str) -> str:
    return f"Step.\n```python\n{code}\n```"


def test_a_renewal_in_flight_never_outlives_the_hand_over() -> None:
    class Slow(MemoryStorage):
        def compare_and_set(self, key, expected, new):
            time.sleep(0.05)
            return super().compare_and_set(key, expected, new)

    storage = Slow()
    held = turns.Turn(storage, "t/a/s")
    assert held.take()
    renewing = threading.Thread(target=held.renew)
    renewing.start()
    time.sleep(0.01)
    held.give()
    renewing.join()
    assert turns.Turn(storage, "t/a/s").take()  # free at once, not after a lease


def test_a_claim_lapses_after_a_lease_seen_unchanged_whatever_the_clocks(monkeypatch) -> None:
    storage = MemoryStorage()
    dead = turns.Turn(storage, "t/a/s")
    assert dead.take()  # its holder dies without handing it on
    clock = [1000.0]
    monkeypatch.setattr(turns.time, "monotonic", lambda: clock[0])
    waiter = turns.Turn(storage, "t/a/s")
    assert not waiter.take()
    clock[0] += turns.LEASE - 1
    assert not waiter.take()
    live = turns.Turn(storage, "t/a/t")
    assert live.take()
    watcher = turns.Turn(storage, "t/a/t")
    assert not watcher.take()
    clock[0] += 2
    assert waiter.take()  # a whole lease unchanged: lapsed
    assert live.renew()  # a renewed claim is a new one ...
    assert not watcher.take()  # ... so its lease starts again for whoever watches


@pytest.mark.parametrize("level", LEVELS)
def test_a_task_that_loses_its_session_may_give_up_quietly(request, level) -> None:
    agent = Agent(
        name=request.node.name,
        isolation=level,
        state=connect_state(type="versioned", storage="memory"),
        llm=connect_llm(
            provider="scripted",
            responses=[block("n = 1"), block("task_success(n)")],
            delay=0.3,
        ),
    )

    @agent.task(on_conflict="abandon")
    def job() -> int:
        """Job."""

    def on_event(event) -> None:
        if type(event).__name__ == "ActionEvent" and event.step == 1:
            agent.state().commit({"other": 1})  # another writer finishes first

    seen: list = []
    assert job(on_event=lambda e: (seen.append(e), on_event(e))) is None
    (conflict,) = [e for e in seen if isinstance(e, ConflictEvent)]
    assert conflict.action == "abandon"
    assert agent.state().values() == {"other": 1}  # nothing of the abandoned task


def test_tasks_calling_each_others_tasks_do_not_wait_on_each_other(request) -> None:
    name = request.node.name
    state = connect_state(type="versioned", storage="memory")
    a = Agent(name=name + "-a", state=state)
    b = Agent(name=name + "-b", state=state)

    @a.task
    def ask_a(nested: bool) -> int:
        """A."""

    @b.task
    def ask_b(nested: bool) -> int:
        """B."""

    a.fn(ask_b)
    b.fn(ask_a)
    # Each agent's reply serves its task called by the user and by the other agent's code.
    a.llm = connect_llm(
        provider="scripted",
        responses=[block("task_success(1 if nested else ask_b(nested=True))")] * 10,
        delay=0.2,
    )
    b.llm = connect_llm(
        provider="scripted",
        responses=[block("task_success(2 if nested else ask_a(nested=True))")] * 10,
        delay=0.2,
    )
    results: dict = {}
    threads = [
        threading.Thread(target=lambda: results.__setitem__("a", ask_a(nested=False))),
        threading.Thread(target=lambda: results.__setitem__("b", ask_b(nested=False))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)  # no task waits on a turn its caller holds
    assert results == {"a": 2, "b": 1}


def test_a_renewal_the_storage_failed_is_tried_again(monkeypatch) -> None:
    import asyncio

    from agex import loop
    from agex.errors import StateWriteError

    tries = []

    class Flaky:
        def renew(self) -> bool:
            tries.append(1)
            if len(tries) == 1:
                raise StateWriteError("the store is busy")
            return len(tries) < 3  # held once more, then lost

    real_sleep = asyncio.sleep
    monkeypatch.setattr(loop.asyncio, "sleep", lambda seconds: real_sleep(0))
    asyncio.run(loop._keep(Flaky()))  # type: ignore[arg-type]
    assert len(tries) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"on_conflict": "sometimes"}, "on_conflict must be one of 'wait', 'retry'"),
        ({"max_conflict_retries": 11}, "max_conflict_retries must be a whole number from 0 to 10"),
        ({"max_conflict_retries": 1.5}, "max_conflict_retries must be a whole number"),
    ],
)
def test_what_a_task_does_on_conflict_is_checked_where_it_is_said(options, message) -> None:
    agent = Agent()
    with pytest.raises(ValueError, match=message):

        @agent.task(**options)
        def job() -> int:
            """Job."""
