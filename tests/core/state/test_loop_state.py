"""Versioned state through the loop on the local host."""

import subprocess
import sys
import textwrap
import threading
from importlib.util import find_spec

import pytest

from agex import Agent, connect_llm, connect_state
from agex.events import ErrorEvent
from agex.state.pickling import AgentStateSerializer


def block(code: str) -> str:
    return f"Step.\n```python\n{code}\n```"


STORAGES = ["memory"] + (["postgres"] if find_spec("agex_state_postgres") else [])
#: The storage of this test's agents (see ``kept_in``).
_kept: dict[str, object] = {}


@pytest.fixture(autouse=True, params=STORAGES)
def kept_in(request, state_path):
    """Every test here runs on each storage (disk has tests of its own in tests/disk)."""
    _kept["storage"], _kept["path"] = request.param, state_path(request.param)
    yield request.param
    _kept.clear()


def agent_with(*codes: str, name: str) -> Agent:
    llm = connect_llm(provider="scripted", responses=[block(c) for c in codes])
    state = connect_state(type="versioned", storage=_kept["storage"], path=_kept["path"])
    return Agent(name=name, state=state, llm=llm)


def make_task(agent: Agent):
    @agent.task
    def job() -> object:
        """Job."""

    return job


def test_variables_functions_and_classes_persist_across_tasks(request) -> None:
    agent = agent_with(
        "data = [1, 2]\ndef total():\n    return sum(data)\n"
        "def sneaky():\n    return getattr(data, '__class__')\n"
        "class Box:\n    def __init__(self, v):\n        self._v = v\n"
        "    def get(self):\n        return self._v + total()\n"
        "task_success(1)",
        "data.append(3)\nb = Box(10)\ntask_success(b.get())",
        "task_success((total(), b.get(), isinstance(b, Box)))",
        name=request.node.name,
    )
    job = make_task(agent)
    assert job() == 1
    assert job() == 16
    assert job() == (6, 16, True)


def test_one_commit_per_step_and_events_carry_it(request) -> None:
    agent = agent_with("x = 1", "x = 2\ntask_success(x)", name=request.node.name)
    job = make_task(agent)
    seen = []
    job(on_event=seen.append)
    history = agent.state().history()
    assert len(history) == 2
    assert seen[-1].commit == history[0].id
    assert history[-1].events[0]["code"] == "x = 1"


def test_revert_then_continue(request) -> None:
    agent = agent_with(
        "x = 'first'\ntask_success(x)",
        "x = 'second'\ntask_success(x)",
        "task_success(x)",
        name=request.node.name,
    )
    job = make_task(agent)
    job()
    first = agent.state().head()
    job()
    agent.state().revert(first)
    assert job() == "first"
    assert agent.state().checkout(first)["x"] == "first"


def test_sessions_are_isolated(request) -> None:
    agent = agent_with(
        "x = 'a'\ntask_success(x)",
        "try:\n    x\nexcept NameError:\n    task_success('empty')",
        name=request.node.name,
    )
    job = make_task(agent)
    assert job(session="a") == "a"
    assert job(session="b") == "empty"


def test_unsavable_variables_are_named_and_dropped(request) -> None:
    agent = agent_with(
        "import json\nbad = json.JSONDecoder().scan_once\nok = 1\ntask_success(1)",
        "try:\n    bad\nexcept NameError:\n    task_success(ok)",
        name=request.node.name,
    )
    job = make_task(agent)
    seen = []
    assert job(on_event=seen.append) == 1
    notes = [e.error for e in seen if isinstance(e, ErrorEvent)]
    assert any("variable 'bad' could not be saved" in n for n in notes)
    assert job() == 1


def test_a_step_serializes_what_it_touched(request, monkeypatch) -> None:
    dumped = []
    real = AgentStateSerializer.traced

    def counting(self, value):
        dumped.append(type(value).__name__)
        return real(self, value)

    monkeypatch.setattr(AgentStateSerializer, "traced", counting)
    agent = agent_with(
        "big = list(range(100_000))\nsmall = 0",
        "small = 1\ntask_success(small)",
        name=request.node.name,
    )
    job = make_task(agent)
    job()
    assert dumped == ["list", "int", "int"]  # step 2 wrote only `small`


def test_state_survives_a_restart_on_disk(tmp_path) -> None:
    script = textwrap.dedent("""
        import sys
        from agex import Agent, connect_llm, connect_state
        code = sys.argv[2]
        agent = Agent(name="restart", llm=connect_llm(provider="scripted", responses=[
            "Go.\\n```python\\n" + code + "\\n```"]),
            state=connect_state(type="versioned", storage="disk", path=sys.argv[1]))
        @agent.task
        def job() -> object:
            \"\"\"Job.\"\"\"
        print(job())
    """)
    pytest.importorskip("agex_state_disk")
    run = [sys.executable, "-c", script, str(tmp_path / "state")]
    first = subprocess.run(
        [*run, "def f():\n    return 41\ntask_success(f())"],
        capture_output=True,
        text=True,
        check=True,
    )
    second = subprocess.run(
        [*run, "task_success(f() + 1)"], capture_output=True, text=True, check=True
    )
    assert (first.stdout.strip(), second.stdout.strip()) == ("41", "42")


def test_state_of_other_types_has_no_history() -> None:
    agent = Agent(name="plain")
    with pytest.raises(ValueError, match="only versioned state keeps a history"):
        agent.state()


@pytest.mark.parametrize("on_conflict", ["wait", "fail"])
def test_concurrent_tasks_on_one_session_do_not_lose_updates(request, on_conflict) -> None:
    from agex.errors import StateConflict

    name = request.node.name
    outcomes = []

    def worker(i):
        agent = Agent(
            name=name,
            state=connect_state(type="versioned"),
            llm=connect_llm(
                provider="scripted", responses=[block(f"mine = {i}\ntask_success({i})")], delay=0.2
            ),
        )

        @agent.task(on_conflict=on_conflict)
        def job() -> int:
            """Job."""

        try:
            outcomes.append(job(session="shared"))
        except StateConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [o for o in outcomes if isinstance(o, StateConflict)]
    wins = [o for o in outcomes if not isinstance(o, StateConflict)]
    if on_conflict == "wait":  # one waited for the other's turn
        assert sorted(wins) == [0, 1]
        return
    assert len(wins) == 1
    assert len(conflicts) == 1
    assert "moved on" in str(conflicts[0])


# -- found by review ------------------------------------------------------------------------


def test_loading_state_runs_under_the_time_limit(request) -> None:
    import time

    from agex import TaskTimeout

    agent = agent_with(
        "class K:\n    def __init__(self):\n        self.armed = False\n"
        "    def __hash__(self):\n        if self.armed:\n            while True:\n"
        "                pass\n        return 1\n"
        "k = K()\ns = {k}\nk.armed = True\ntask_success(0)",
        "task_success(1)",
        "task_success(len(s))",
        name=request.node.name,
    )
    agent.timeout = 1.0
    job = make_task(agent)
    assert job() == 0
    assert job() == 1  # a task that never names `s` never loads it
    start = time.monotonic()
    with pytest.raises(TaskTimeout, match="loading state"):
        job()
    assert time.monotonic() - start < 3.0


def test_loading_state_cannot_end_the_task(request) -> None:
    from agex.errors import StateLoadError

    agent = agent_with(
        "class D(dict):\n    def __setitem__(self, k, v):\n        if k == 'go':\n"
        "            task_success('hijacked')\n        super().__setitem__(k, v)\n"
        "d = D({'go': 1})\ntask_success(0)",
        "task_success(d)",
        name=request.node.name,
    )
    job = make_task(agent)
    assert job() == 0
    # Unpickling the dict subclass calls its __setitem__, which tries to end the task.
    with pytest.raises(StateLoadError, match="tried to end the task"):
        job()


def test_rebinding_through_an_unnamed_function_is_saved(request) -> None:
    agent = agent_with(
        "counter = 0\ndef bump():\n    global counter\n    counter += 1\nfs = [bump]\n"
        "task_success(0)",
        "fs[0]()\ntask_success(counter)",
        "task_success(counter)",
        name=request.node.name,
    )
    job = make_task(agent)
    assert job() == 0
    assert job() == 1
    assert job() == 1  # the bump made through the list was committed


def test_a_value_that_fails_to_save_is_gone_not_stale(request) -> None:
    agent = agent_with(
        "x = 1\ntask_success(0)",
        "x = (i for i in range(3))\ntask_success(0)",
        "try:\n    x\nexcept NameError:\n    task_success('gone')\ntask_success('stale')",
        name=request.node.name,
    )
    job = make_task(agent)
    job()
    job()
    assert job() == "gone"


def test_a_value_that_cannot_load_names_itself_and_the_way_back(request, monkeypatch) -> None:
    from agex.errors import StateLoadError

    agent = agent_with(
        "x = 1\ny = 2\ntask_success(0)",
        "task_success(x)",
        "task_success(y)",
        name=request.node.name,
    )
    job = make_task(agent)
    job()
    state = agent.state()
    (blob,) = [
        k for k in state.storage.keys("b/") if k == "b/" + state.tree(state.head())["y"].blob
    ]
    state.storage.put_many({blob: b"not a pickle"})
    assert job() == 1  # a task that never names `y` never reads it
    with pytest.raises(StateLoadError, match=r"variable 'y'.*revert"):
        job()


def test_a_value_is_checked_after_its_step_is_committed(request) -> None:
    """With versioned state the value is checked after the commit, in a trip to a worker
    thread of its own; a value that cannot be taken is fed back as without state."""
    agent = agent_with(
        "class Sneaky:\n    def __repr__(self):\n        task_success('chosen by the value')\n"
        "task_success(Sneaky())",
        "task_success('fixed')",
        name=request.node.name,
    )
    seen = []
    assert make_task(agent)(on_event=seen.append) == "fixed"
    assert any("tried to end the task" in getattr(e, "error", "") for e in seen)
    assert len(agent.state().history()) == 2


def test_history_of_a_session_holding_functions_and_classes_can_be_read(request) -> None:
    from agex.errors import AccessDenied

    agent = agent_with(
        "data = [1, 2]\ndef total():\n    return sum(data)\n"
        "def sneaky():\n    return getattr(data, '__class__')\n"
        "class Box:\n    def __init__(self, v):\n        self.v = v\nb = Box(3)\ntask_success(0)",
        "data.append(3)\ntask_success(total())",
        name=request.node.name,
    )
    job = make_task(agent)
    job()
    first = agent.state().head()
    assert job() == 6
    state = agent.state()
    now = state.values()
    assert now["data"] == [1, 2, 3]
    assert type(now["b"]) is now["Box"]
    assert now["b"].v == 3
    assert now["total"]() == 6  # called, the agent's code runs under the sandbox's rules
    with pytest.raises(AccessDenied):
        now["sneaky"]()
    assert state.checkout(first)["data"] == [1, 2]
    assert state.diff(first, state.head())["changed"] == ["data"]


def test_a_task_waiting_for_its_sessions_turn_can_be_cancelled(request) -> None:
    import asyncio

    from agex.loop import versioned
    from agex.stores import LOCAL

    agent = agent_with("task_success(1)", "task_success(2)", name=request.node.name)
    job = make_task(agent)
    state = versioned(LOCAL, agent.state_config, agent.name, "busy")
    holder = state.turn()
    assert holder.take()  # another task holds the session's turn

    async def main():
        waiting = asyncio.ensure_future(job.arun(session="busy"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # it waits its turn
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        holder.give()
        return await job.arun(session="busy")  # nothing of the cancelled one lingers

    assert asyncio.run(main()) == 1


def test_a_task_may_not_run_on_its_callers_own_session(request) -> None:
    name = request.node.name
    inner = agent_with("task_success(1)", name=name)

    @inner.task
    def again() -> int:
        """Again."""

    outer = agent_with(
        "try:\n    again()\nexcept Exception as e:\n    task_success(str(e))", name=name
    )
    outer.fn(again)
    assert "which the task calling it is running on" in make_task(outer)()
