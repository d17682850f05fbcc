"""init seeds a *new* session only, and a live session is new until a run has used it: agents
of one name share a live session's namespace, so one with init must not overwrite the
variables another's run left there. A versioned session is new until it has a commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from agex import Agent, TaskTimeout, connect_state
from agex.errors import StateLoadError
from agex.state.live import SessionBusy, forget
from agex.testing.host import scripted

NAMES = ["live-shared", "live-seeded-first", "live-init-fails", "live-init-slow", "live-race"]


@pytest.fixture(autouse=True)
def _fresh_live_sessions() -> Iterator[None]:
    for name in NAMES:
        forget(name)
    yield
    for name in NAMES:
        forget(name)


def reader(name: str, init: Any = None, **options: Any) -> Any:
    """A task of an agent called ``name`` (live state, ``init`` if given) returning balance."""
    agent = Agent(
        name=name,
        state=connect_state(type="live", init=init),
        llm=scripted("task_success(balance)", **options),
    )

    @agent.task("Read the balance.")
    def read_balance() -> int: ...

    return read_balance


def opener(name: str, amount: int) -> Any:
    """A task of an agent called ``name`` (live state, no init) that sets balance."""
    agent = Agent(
        name=name,
        state=connect_state(type="live"),
        llm=scripted(f"balance = {amount}\ntask_success(balance)"),
    )

    @agent.task("Open the account.")
    def open_account() -> int: ...

    return open_account


def test_init_never_overwrites_a_live_session_already_in_use() -> None:
    assert opener("live-shared", 100)(session="acct") == 100
    # The session was in use (it holds balance=100): init is for a new session only, as a
    # versioned session that has commits is never seeded.
    assert reader("live-shared", {"balance": 0})(session="acct") == 100
    assert reader("live-shared", {"balance": 0})(session="other") == 0  # a new one is seeded


def test_versioned_does_not_overwrite_a_session_in_use() -> None:
    """The same sequence on versioned state, for comparison."""
    name = "versioned-shared"
    plain = Agent(
        name=name,
        state=connect_state(type="versioned"),
        llm=scripted("balance = 100\ntask_success(balance)"),
    )

    @plain.task("Open the account.")
    def open_account() -> int: ...

    assert open_account(session="acct") == 100
    seeded = Agent(
        name=name,
        state=connect_state(type="versioned", init={"balance": 0}),
        llm=scripted("task_success(balance)"),
    )

    @seeded.task("Read the balance.")
    def read_balance() -> int: ...

    assert read_balance(session="acct") == 100


def test_a_live_session_seeded_first_is_not_seeded_again_after_another_agents_run() -> None:
    calls: list[int] = []

    def init() -> dict[str, int]:
        calls.append(1)
        return {"balance": 0}

    assert reader("live-seeded-first", init)(session="acct") == 0
    assert opener("live-seeded-first", 70)(session="acct") == 70
    assert reader("live-seeded-first", init)(session="acct") == 70
    assert len(calls) == 1
    forget("live-seeded-first", "acct")  # a forgotten session is new again
    assert reader("live-seeded-first", init)(session="acct") == 0
    assert len(calls) == 2


def test_a_live_session_whose_init_failed_is_still_new() -> None:
    failures = [ZeroDivisionError("no balance yet")]

    def init() -> dict[str, int]:
        if failures:
            raise failures.pop()
        return {"balance": 5}

    with pytest.raises(StateLoadError, match="no balance yet"):
        reader("live-init-fails", init)(session="acct")
    assert reader("live-init-fails", init)(session="acct") == 5  # seeded by the next run


def test_a_live_session_whose_init_timed_out_is_still_new() -> None:
    slow = Agent(
        name="live-init-slow",
        state=connect_state(type="live", init=lambda: time.sleep(5) or {"balance": 1}),
        llm=scripted("task_success(balance)"),
        timeout=0.3,
    )

    @slow.task("Read the balance.")
    def read_balance() -> int: ...

    with pytest.raises(TaskTimeout, match="running the state's init"):
        read_balance(session="acct")
    assert reader("live-init-slow", {"balance": 2})(session="acct") == 2


def test_two_first_runs_on_one_live_session_seed_it_once() -> None:
    """A live session holds one run at a time: the second first run is refused while the
    first seeds, and neither the refusal nor a later run seeds it again."""
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def init() -> dict[str, int]:
        calls.append(1)
        entered.set()
        release.wait(10)
        return {"balance": 10}

    first = reader("live-race", init)
    results: list[Any] = []
    running = threading.Thread(target=lambda: results.append(first(session="acct")))
    running.start()
    try:
        assert entered.wait(10)
        with pytest.raises(SessionBusy, match="already running a task in session 'acct'"):
            reader("live-race", {"balance": 99})(session="acct")
    finally:
        release.set()
        running.join(10)
    assert results == [10]
    assert reader("live-race", {"balance": 99})(session="acct") == 10
    assert len(calls) == 1
