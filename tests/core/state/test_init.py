"""connect_state(init=...): the variables a session starts with, given once, by the state
itself, on every state type; the init function runs where agent code runs."""

from __future__ import annotations

import asyncio
import os
import pickle
from typing import Any

import pytest

from agex import Agent, TaskTimeout, connect_llm, connect_state
from agex.errors import StateLoadError
from agex.isolation import strongest
from agex.protocols import StateConfig
from agex.state.live import forget
from tests.core.agent.seeing import Seeing

ISOLATED = strongest()
needs_workers = pytest.mark.skipif(ISOLATED == "none", reason="no worker processes here")


def scripted(*codes: str, **options: Any):
    replies = [f"Step.\n```python\n{code}\n```" for code in codes]
    return connect_llm(provider="scripted", responses=replies, **options)


APPEND = "seen.append(len(seen))\ntask_success(list(seen))"


def appending(state: StateConfig, name: str, runs: int = 3, **options: Any):
    """An agent whose task appends to ``seen`` and returns it."""
    agent = Agent(name=name, state=state, llm=scripted(*[APPEND] * runs), **options)

    @agent.task("Append.")
    def append() -> list: ...

    return agent, append


# -- the configuration -----------------------------------------------------------------


def test_init_is_checked_when_the_state_is_configured() -> None:
    with pytest.raises(TypeError, match=r"init must be a dict .* or a function"):
        connect_state(init=[("a", 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Python identifiers; got 'not a name'"):
        connect_state(init={"not a name": 1})
    with pytest.raises(TypeError, match="Python identifiers; got 1"):
        connect_state(init={1: 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="reserved for agex"):
        connect_state(init={"__x": 1})


def test_init_does_not_change_where_state_is_or_how_configs_compare() -> None:
    plain = connect_state(type="versioned", storage="memory", path="p")
    seeded = connect_state(type="versioned", storage="memory", path="p", init={"a": [1]})
    assert seeded == plain
    assert hash(seeded) == hash(plain)
    assert (seeded.type, seeded.storage, seeded.path) == ("versioned", "memory", "p")
    assert pickle.loads(pickle.dumps(seeded)).init == {"a": [1]}
    given = {"a": 1}
    config = connect_state(init=given)
    given["a"] = 2
    assert config.init == {"a": 1}  # the state keeps what it was given


# -- versioned -------------------------------------------------------------------------


def test_a_new_versioned_session_is_seeded_once() -> None:
    init = {"seen": ["start"]}
    agent, append = appending(connect_state(init=init), "init-versioned")
    assert append(session="a") == ["start", 1]
    assert append(session="a") == ["start", 1, 2]  # not seeded again
    assert append(session="b") == ["start", 1]  # another session: seeded too
    assert init == {"seen": ["start"]}  # agent code changed its copy, not the caller's
    first = agent.state("a").history()[-1]
    assert first.events == ({"step": 0, "init": ["seen"]},)


def test_the_init_function_is_called_for_new_sessions_only() -> None:
    calls: list[int] = []

    def init() -> dict[str, Any]:
        calls.append(1)
        return {"seen": [], "limit": 5}

    _agent, append = appending(connect_state(init=init), "init-called")
    append()
    append()
    assert len(calls) == 1
    append(session="other")
    assert len(calls) == 2


def test_the_model_is_told_what_a_new_session_starts_with() -> None:
    llm = Seeing("task_success(limit)", "task_success(limit)")
    agent = Agent(name="init-told", llm=llm, state=connect_state(init={"limit": 5, "tags": []}))

    @agent.task("Limit.")
    def limit() -> int: ...

    assert limit() == 5
    assert limit() == 5
    assert (
        "Variables this session starts with (use them by name): limit (int), tags (list)"
        in (llm.asked[0][1]["content"])
    )
    assert "Variables kept from earlier tasks" in llm.asked[1][1]["content"]


def test_an_argument_of_the_same_name_wins() -> None:
    state = connect_state(init={"n": 1})
    agent = Agent(name="init-arg", llm=scripted("task_success(n)"), state=state)

    @agent.task("N.")
    def echo(n: int) -> int: ...

    assert echo(7) == 7


@pytest.mark.parametrize(
    ("init", "message"),
    [
        (lambda: [1], "returned list; it must return a dict"),
        (lambda: {"a b": 1}, "Python identifiers; got 'a b'"),
        (lambda: 1 / 0, "ZeroDivisionError"),
        (lambda: {"task_success": 1}, "names task_success, which the agent's code already has"),
    ],
)
def test_an_init_that_fails_fails_the_task_clearly(init: Any, message: str) -> None:
    agent = Agent(name="init-bad", llm=scripted("task_success(1)"), state=connect_state(init=init))

    @agent.task("One.")
    def one() -> int: ...

    with pytest.raises(StateLoadError, match=message) as caught:
        one(session="bad")
    assert "session 'bad'" in str(caught.value)
    assert agent.llm.position == 0  # the model was never asked
    assert agent.state("bad").head() is None  # and the session is still new


def test_init_runs_under_the_time_limit() -> None:
    import time

    agent = Agent(
        name="init-slow",
        llm=scripted("task_success(1)"),
        state=connect_state(init=lambda: time.sleep(5) or {}),
        timeout=0.5,
    )

    @agent.task("One.")
    def one() -> int: ...

    with pytest.raises(TaskTimeout, match="running the state's init"):
        one()


def test_two_first_runs_on_one_session_seed_it_once() -> None:
    """Both runs find the session new and seed it; the first to finish moves the head, the
    other loses the compare-and-set, and runs again from that state, which it does not seed."""
    calls: list[int] = []

    def init() -> dict[str, Any]:
        calls.append(1)
        return {"seen": []}

    agent = Agent(
        name="init-race",
        state=connect_state(init=init),
        llm=scripted(*[APPEND] * 3, delay=0.2),
    )

    @agent.task("Append.", on_conflict="retry")
    async def append() -> list: ...

    events: list[Any] = []

    async def both() -> list[Any]:
        runs = [append(session="r", on_event=events.append) for _ in range(2)]
        return await asyncio.gather(*runs)

    results = asyncio.run(both())
    assert [type(e).__name__ for e in events].count("ConflictEvent") == 1  # they did race
    assert sorted(map(len, results)) == [1, 2]
    assert len(calls) == 2  # each run seeded its own first commit ...
    state = agent.state("r")
    assert state.values()["seen"] == [0, 1]  # ... and one of them is the session's
    seeded = [c for c in state.history() if any("init" in e for e in c.events)]
    assert len(seeded) == 1


# -- ephemeral and live ------------------------------------------------------------------


def test_every_ephemeral_task_starts_from_init() -> None:
    _agent, append = appending(connect_state(type="ephemeral", init={"seen": ["s"]}), "init-eph")
    assert append() == ["s", 1]
    assert append() == ["s", 1]


def test_a_live_session_is_seeded_when_first_used() -> None:
    forget("init-live")
    calls: list[int] = []

    def init() -> dict[str, Any]:
        calls.append(1)
        return {"seen": []}

    _agent, append = appending(connect_state(type="live", init=init), "init-live", runs=3)
    try:
        assert append() == [0]
        assert append() == [0, 1]
        assert append(session="b") == [0]
        assert len(calls) == 2
    finally:
        forget("init-live")


# -- isolated: the init runs in the worker ---------------------------------------------


def where_init() -> dict[str, Any]:
    return {"seen": [], "pid": os.getpid()}


@needs_workers
def test_an_isolated_agents_init_runs_in_its_worker(ship_test_module: None) -> None:
    agent = Agent(
        name="init-isolated",
        state=connect_state(init=where_init),
        isolation=ISOLATED,
        llm=scripted(*["seen.append(pid)\ntask_success(list(seen))"] * 2),
    )

    @agent.task("Where.")
    def where() -> list: ...

    first = where()
    assert first[0] != os.getpid()
    assert where() == [first[0], first[0]]  # seeded once: the second run kept the first pid


@needs_workers
def test_an_isolated_ephemeral_agent_is_seeded_each_task(ship_test_module: None) -> None:
    agent = Agent(
        name="init-isolated-eph",
        state=connect_state(type="ephemeral", init={"seen": ["s"]}),
        isolation=ISOLATED,
        llm=scripted(APPEND, APPEND),
    )

    @agent.task("Append.")
    def append() -> list: ...

    assert append() == ["s", 1]
    assert append() == ["s", 1]
