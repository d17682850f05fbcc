"""A task's instructions given to the decorator (its primer), and its setup code: run before
the agent's first step, in the sandbox, its output the model's first observation."""

from __future__ import annotations

import os
from typing import Any

import pytest

from agex import Agent, TaskTimeout, connect_state
from agex.events import ErrorEvent, OutputEvent
from agex.isolation import strongest
from agex.prompt import system_message
from tests.core.agent.seeing import Seeing

# -- the primer ------------------------------------------------------------------------


def test_the_string_is_the_agents_instructions_and_the_docstring_the_callers() -> None:
    llm = Seeing("task_success(len(text))")
    agent = Agent(llm=llm)

    @agent.task("Count the characters of text, spaces included.")
    def measure(text: str) -> int:
        """Return the length of ``text`` (for the people who call this)."""

    assert measure.primer == "Count the characters of text, spaces included."
    assert measure.__doc__ == "Return the length of ``text`` (for the people who call this)."
    assert measure("a b") == 3
    system = llm.asked[0][0]["content"]
    task_part = system.split("Your task:\n", 1)[1]
    assert task_part.startswith("def measure(text: str) -> int\n    Count the characters")
    assert "for the people who call this" not in system


def test_with_a_primer_a_docstring_is_not_needed() -> None:
    agent = Agent(llm=Seeing("task_success(2)"))

    @agent.task("Answer two.")
    def two() -> int: ...

    assert two() == 2
    assert two.primer == "Answer two."
    assert "Answer two." in system_message(agent, two)


def test_without_a_primer_the_docstring_is_the_instructions() -> None:
    agent = Agent(llm=Seeing("task_success(1)", "task_success(2)", "task_success(3)"))

    @agent.task
    def plain() -> int:
        """Say one."""

    @agent.task()
    def called() -> int:
        """Say two."""

    @agent.task(on_conflict="fail")
    def options() -> int:
        """Say three."""

    assert (plain(), called(), options()) == (1, 2, 3)
    assert (plain.primer, called.primer, options.primer) == ("Say one.", "Say two.", "Say three.")
    assert options.on_conflict == "fail"
    with pytest.raises(TypeError, match="needs a docstring"):

        @agent.task
        def bare() -> int: ...


@pytest.mark.parametrize("given", [42, None.__class__, ["instructions"]])
def test_the_first_argument_is_instructions_or_the_function(given: object) -> None:
    agent = Agent(llm=Seeing())
    with pytest.raises(TypeError, match=r"takes the task's instructions \(a string\)|def"):
        agent.task(given)  # type: ignore[arg-type]


def test_blank_instructions_are_refused() -> None:
    with pytest.raises(ValueError, match="empty instructions"):
        Agent(llm=Seeing()).task("  \n ")


def test_a_sub_agents_primer_describes_it_to_its_caller() -> None:
    helper = Agent(name="helper", llm=Seeing("task_success(x * 2)"))

    @helper.task("Double x.")
    def double(x: int) -> int: ...

    boss_llm = Seeing("task_success(double(4))")
    boss = Agent(name="boss", llm=boss_llm)
    boss.fn(double)
    assert boss_main(boss) == 8
    assert "Double x." in boss_llm.asked[0][0]["content"].split("Your task:")[0]


def boss_main(boss: Agent) -> int:
    @boss.task("Use double.")
    def run() -> int: ...

    result: int = run()
    return result


# -- setup -----------------------------------------------------------------------------


def test_setup_runs_before_the_first_step_and_the_model_sees_its_output() -> None:
    llm = Seeing("task_success(f'{table}:{columns}')")
    agent = Agent(llm=llm, max_iterations=1)
    agent.fn(schema_of)

    @agent.task(
        "Describe the table.",
        setup="columns = schema_of(table)\nprint('columns:', columns)",
    )
    def describe(table: str) -> str: ...

    events: list[Any] = []
    # Setup used none of the one step allowed, and its variables stayed for the agent.
    assert describe("users", on_event=events.append) == "users:['id', 'name']"
    first = llm.asked[0]
    assert [m["role"] for m in first] == ["system", "user"]  # before the first reply
    assert "columns = schema_of(table)" in first[1]["content"]
    assert "It printed:\ncolumns: ['id', 'name']" in first[1]["content"]
    kinds = [(type(e).__name__, e.step) for e in events]
    assert kinds[:3] == [("TaskStartEvent", 0), ("OutputEvent", 0), ("ActionEvent", 1)]
    assert events[1].text == "columns: ['id', 'name']\n"


def schema_of(table: str) -> list[str]:
    return ["id", "name"] if table == "users" else []


def test_a_failing_setup_is_shown_to_the_model_and_the_task_goes_on() -> None:
    llm = Seeing("task_success('recovered')")
    agent = Agent(llm=llm)

    @agent.task("Go.", setup="print('looking')\n1 / 0")
    def go() -> str: ...

    events: list[Any] = []
    assert go(on_event=events.append) == "recovered"
    seen = llm.asked[0][1]["content"]
    assert "It printed:\nlooking" in seen
    assert "It failed:" in seen
    assert "ZeroDivisionError" in seen
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    assert errors[0].step == 0
    assert "ZeroDivisionError" in errors[0].error


def test_setup_runs_under_the_sandbox_guards() -> None:
    llm = Seeing("task_success('ok')")
    agent = Agent(llm=llm)

    @agent.task("Go.", setup="import os\nprint(os.getcwd())")
    def go() -> str: ...

    assert go() == "ok"
    seen = llm.asked[0][1]["content"]
    assert "It failed:" in seen
    assert "ImportDenied" in seen
    assert os.getcwd() not in seen


def test_setup_is_under_the_tasks_time_limit() -> None:
    agent = Agent(llm=Seeing("task_success(1)"), timeout=0.5)

    @agent.task("Go.", setup="while True:\n    pass")
    def go() -> int: ...

    with pytest.raises(TaskTimeout, match="in setup"):
        go()
    assert agent.llm.position == 0  # the model was never asked


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        ("x = (", ValueError, r"setup of task bad is not valid Python: .*line 1"),
        ("task_success(1)", ValueError, "only the agent's code ends it"),
        ("   \n", ValueError, "setup of task bad is empty"),
        (b"x = 1", TypeError, "must be Python code in a string"),
    ],
)
def test_setup_is_checked_when_the_task_is_defined(setup: Any, error: type, message: str) -> None:
    agent = Agent(llm=Seeing())
    with pytest.raises(error, match=message):

        @agent.task("Go.", setup=setup)
        def bad() -> int: ...


def test_setup_is_a_commit_of_the_run_in_versioned_state() -> None:
    agent = Agent(
        name="setup-versioned",
        llm=Seeing("task_success(base + 1)", "task_success(base)"),
        state=connect_state(),
    )

    @agent.task("Go.", setup="base = 41")
    def go() -> int: ...

    @agent.task("Again.")
    def again() -> int: ...

    assert go(session="s") == 42
    assert again(session="s") == 41  # setup's variables are kept like a step's
    history = agent.state("s").history()
    setup_commit = history[-1]
    assert setup_commit.events[0]["setup"] is True
    assert setup_commit.events[0]["code"] == "base = 41"
    assert set(setup_commit.changes) == {"base"}


@pytest.mark.skipif(strongest() == "none", reason="no worker processes here")
def test_setup_runs_in_the_worker_of_an_isolated_agent(ship_test_module: None) -> None:
    import os as real_os

    llm = Seeing("task_success(pid)")
    agent = Agent(llm=llm, isolation=strongest())
    agent.module(real_os, include=["getpid"])

    @agent.task("Say where.", setup="import os\npid = os.getpid()\nprint('in', pid)")
    def where() -> int: ...

    events: list[Any] = []
    pid = where(on_event=events.append)
    assert pid != real_os.getpid()
    output = [e for e in events if isinstance(e, OutputEvent)]
    assert output[0].step == 0
    assert output[0].text == f"in {pid}\n"
    assert f"It printed:\nin {pid}" in llm.asked[0][1]["content"]


@pytest.mark.skipif(strongest() == "none", reason="no worker processes here")
def test_an_isolated_setups_variables_are_kept_in_versioned_state(ship_test_module: None) -> None:
    agent = Agent(
        name="setup-isolated-versioned",
        llm=Seeing("task_success(base + 1)", "task_success(base)"),
        state=connect_state(),
        isolation=strongest(),
    )

    @agent.task("Go.", setup="base = 41")
    def go() -> int: ...

    @agent.task("Again.")
    def again() -> int: ...

    assert go(session="s") == 42
    assert again(session="s") == 41  # stored by the worker, loaded by the next one
    assert agent.state("s").values() == {"base": 41}
