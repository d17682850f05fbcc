"""Registrations as the model reads them (docstring, visibility) and live objects through a
whole run: what the prompt says, what agent code can call, and where a live object may go."""

from __future__ import annotations

import math
import sqlite3

import pytest

from agex import Agent, connect_llm
from agex.isolation import strongest
from agex.prompt import capabilities, system_message


def scripted(*codes: str):
    return connect_llm(provider="scripted", responses=[f"```python\n{c}\n```" for c in codes])


def area(radius: float) -> float:
    """The area of a circle of this radius."""
    return math.pi * radius * radius


class Point:
    """A point on the plane."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def norm(self) -> float:
        """Its distance from the origin."""
        return math.hypot(self.x, self.y)


class Ledger:
    """A ledger kept in this process."""

    def __init__(self) -> None:
        self.entries: list[int] = []

    def add(self, amount: int) -> int:
        """Record ``amount``; returns the balance."""
        self.entries.append(amount)
        return sum(self.entries)


def described(visibility: str) -> list[str]:
    agent = Agent()
    agent.fn(area, visibility=visibility)
    agent.cls(Point, visibility=visibility)
    agent.module(math, include=["sqrt", "pi"], visibility=visibility)
    agent.module(Ledger(), name="ledger", visibility=visibility)
    return capabilities(agent)


def test_high_visibility_shows_signatures_and_docstrings() -> None:
    assert described("high") == [
        "- def area(radius: float) -> float  The area of a circle of this radius.",
        "- class Point(x: int, y: int): A point on the plane.",
        "    .norm() -> float  Its distance from the origin.",
        f"- ledger: a live {__name__}.Ledger object; call its methods:",
        "    ledger.add(amount: int) -> int  Record ``amount``; returns the balance.",
        "- module math (import math): This module provides access to the mathematical functions",
        "    math.pi: float",
        "    math.sqrt(x, /)  Return the square root of x.",
    ]


def test_medium_visibility_shows_signatures_only() -> None:
    assert described("medium") == [
        "- def area(radius: float) -> float",
        "- class Point(x: int, y: int)",
        "    .norm() -> float",
        f"- ledger: a live {__name__}.Ledger object; call its methods:",
        "    ledger.add(amount: int) -> int",
        "- module math (import math)",
        "    math.pi: float",
        "    math.sqrt(x, /)",
    ]


def test_low_visibility_lists_names_only() -> None:
    assert described("low") == [
        "- area(...)",
        "- class Point",
        f"- ledger: a live {__name__}.Ledger object",
        "- module math (import math)",
    ]


def test_visibility_changes_the_description_not_what_code_may_call() -> None:
    agent = Agent(llm=scripted("task_success([area(1.0), Point(3, 4).norm(), ledger.add(5)])"))
    agent.fn(area, visibility="low")
    agent.cls(Point, visibility="low")
    agent.module(Ledger(), name="ledger", visibility="low")

    @agent.task
    def compute() -> list[float]:
        """Compute."""

    assert compute() == [math.pi, 5.0, 5]


@pytest.mark.parametrize("register", ["fn", "cls", "module", "live"])
def test_a_bad_visibility_is_refused_before_anything_is_registered(register: str) -> None:
    agent = Agent()
    calls = {
        "fn": lambda: agent.fn(area, visibility="full"),
        "cls": lambda: agent.cls(Point, visibility="full"),
        "module": lambda: agent.module(math, visibility="full"),
        "live": lambda: agent.module(Ledger(), name="ledger", visibility="full"),
    }
    with pytest.raises(ValueError, match="visibility must be one of 'high', 'medium', 'low'"):
        calls[register]()
    assert agent.policy.names == {}
    assert agent.policy.modules == {}


def test_the_decorator_form_refuses_a_bad_visibility_at_once() -> None:
    agent = Agent()
    with pytest.raises(ValueError, match="visibility must be one of"):
        agent.fn(visibility="hi")


def test_a_docstring_replaces_the_functions_own_in_the_prompt_only() -> None:
    agent = Agent(llm=scripted("task_success(circle(2.0))"))
    agent.fn(area, name="circle", docstring="Square units covered by a disc.")

    @agent.fn(docstring="Twice the value.")
    def double(x: int) -> int:
        """Original words."""
        return 2 * x

    lines = capabilities(agent)
    assert "- def circle(radius: float) -> float  Square units covered by a disc." in lines
    assert "- def double(x: int) -> int  Twice the value." in lines
    assert area.__doc__ == "The area of a circle of this radius."
    assert double.__doc__ == "Original words."

    @agent.task
    def measure() -> float:
        """Measure."""

    assert "Square units covered by a disc." in system_message(agent, measure)
    assert measure() == pytest.approx(4 * math.pi)


def test_a_sub_agents_task_takes_a_docstring_too() -> None:
    specialist = Agent(name="specialist", llm=scripted("task_success(text.upper())"))
    orchestrator = Agent(name="orchestrator", llm=scripted("task_success(shout('hi'))"))

    @orchestrator.fn(docstring="Make text loud.")
    @specialist.task
    def shout(text: str) -> str:
        """Uppercase the text."""

    @orchestrator.task
    def run() -> str:
        """Delegate."""

    assert "- def shout(text: str) -> str  Make text loud." in capabilities(orchestrator)
    assert shout.func.__doc__ == "Uppercase the text."  # the specialist's own instructions
    assert run() == "HI"


def test_a_docstring_must_be_text() -> None:
    with pytest.raises(TypeError, match="docstring must be a string, got int"):
        Agent().fn(area, docstring=3)


def test_the_fingerprint_follows_what_the_prompt_says() -> None:
    def fingerprint(**options) -> str:
        agent = Agent(name="fp")
        agent.fn(area, **options)
        return agent.fingerprint

    plain = fingerprint()
    assert fingerprint(visibility="high") == plain  # the default changes nothing
    assert fingerprint(visibility="low") != plain
    assert fingerprint(docstring="Other words.") != plain
    assert fingerprint(docstring="Other words.") != fingerprint(docstring="More words.")

    with_module = Agent(name="fp")
    with_module.module(math)
    low_module = Agent(name="fp")
    low_module.module(math, visibility="low")
    assert with_module.fingerprint == low_module.fingerprint  # a module's default is "low"
    high_module = Agent(name="fp")
    high_module.module(math, visibility="high")
    assert with_module.fingerprint != high_module.fingerprint


def test_a_live_object_is_called_from_agent_code_in_this_process() -> None:
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.execute("create table sales (amount integer)")
    connection.executemany("insert into sales values (?)", [(3,), (4,)])
    agent = Agent(
        llm=scripted(
            "rows = db.execute('select sum(amount) from sales').fetchall()\n"
            "db.execute('insert into sales values (10)')\n"
            "task_success(rows[0][0])"
        )
    )
    agent.module(connection, name="db", include=["execute"])

    @agent.task
    def total() -> int:
        """Total the sales."""

    assert total() == 7
    assert connection.execute("select count(*) from sales").fetchone() == (3,)
    assert "    db.execute" in "\n".join(capabilities(agent))


def test_a_live_object_needs_a_name_and_a_module_takes_none() -> None:
    agent = Agent()
    with pytest.raises(ValueError, match=r'agent\.module\(obj, name="db"\)'):
        agent.module(Ledger())
    with pytest.raises(ValueError, match="agent code imports a module by its own name"):
        agent.module(math, name="m")


def test_isolation_refuses_a_live_object_at_registration() -> None:
    level = strongest()
    if level == "none":
        pytest.skip("this machine offers no isolation")
    agent = Agent(isolation=level)
    with pytest.raises(ValueError, match=f"isolation={level!r} sends the agent, its sub-agents"):
        agent.module(Ledger(), name="ledger")
    assert "ledger" not in agent.policy.names


def test_isolation_chosen_after_registering_is_refused() -> None:
    agent = Agent(llm=scripted("task_success(ledger.add(1))"))
    agent.module(Ledger(), name="ledger")
    with pytest.raises(ValueError, match=r"holds live objects \(ledger\), and isolation="):
        agent.isolation = "kernel"
    assert agent.isolation is None
    agent.isolation = "none"  # stays in this process: allowed

    @agent.task
    def add() -> int:
        """Add."""

    assert add() == 1


def test_a_sub_agent_holding_a_live_object_runs_where_it_was_registered() -> None:
    """Without isolation the sub-agent runs in this process, live object and all."""
    ledger = Ledger()
    keeper = Agent(name="keeper", llm=scripted("task_success(ledger.add(amount))"))
    keeper.module(ledger, name="ledger")
    boss = Agent(name="boss", llm=scripted("task_success(record(7))"))

    @boss.fn
    @keeper.task
    def record(amount: int) -> int:
        """Record an amount."""

    @boss.task
    def run() -> int:
        """Record seven."""

    assert run() == 7
    assert ledger.entries == [7]


def test_an_isolated_agent_refuses_a_sub_agent_holding_a_live_object() -> None:
    """The isolated agent goes to a worker with its sub-agents' tasks, live objects and all."""
    level = strongest()
    if level == "none":
        pytest.skip("this machine offers no isolation")
    keeper = Agent(name="keeper")
    keeper.module(Ledger(), name="ledger")
    boss = Agent(name="boss", isolation=level)

    @keeper.task
    def record(amount: int) -> int:
        """Record an amount."""

    with pytest.raises(ValueError, match=r"sub-agent 'keeper' holds live objects \(ledger\)"):
        boss.fn(record)
    assert "record" not in boss.policy.names


def test_a_sub_agents_own_sub_agents_live_objects_count_too() -> None:
    level = strongest()
    if level == "none":
        pytest.skip("this machine offers no isolation")
    clerk = Agent(name="clerk")
    clerk.module(Ledger(), name="ledger")
    keeper = Agent(name="keeper")

    @keeper.fn
    @clerk.task
    def note(amount: int) -> int:
        """Note an amount."""

    @keeper.task
    def record(amount: int) -> int:
        """Record an amount."""

    with pytest.raises(ValueError, match=r"holds live objects \(clerk\.ledger\)"):
        Agent(name="boss", isolation=level).fn(record)
