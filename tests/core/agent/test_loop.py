"""Agents, tasks and the loop on the local host, driven by the scripted LLM."""

import asyncio
import dataclasses

import pytest

from agex import (
    Agent,
    TaskClarify,
    TaskFail,
    TaskTimeout,
    connect_llm,
    connect_state,
    pprint_events,
)
from agex.events import (
    ActionEvent,
    ErrorEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
)
from agex.state.live import forget


def block(code: str, thinking: str = "Thinking.") -> str:
    return f"{thinking}\n```python\n{code}\n```"


def scripted(*codes: str, **options):
    return connect_llm(provider="scripted", responses=[block(c) for c in codes], **options)


def test_three_steps_to_success() -> None:
    agent = Agent(llm=scripted("x = 21", "y = x * 2\nprint(y)", "task_success(y)"))

    @agent.task
    def answer() -> int:
        """Find the answer."""

    seen = []
    assert answer(on_event=seen.append) == 42
    kinds = [type(e).__name__ for e in seen]
    assert kinds == [
        "TaskStartEvent",
        "ActionEvent",
        "ActionEvent",
        "OutputEvent",
        "ActionEvent",
        "SuccessEvent",
    ]
    assert [e.step for e in seen] == [0, 1, 2, 2, 3, 3]
    assert {(e.agent_name, e.session) for e in seen} == {("agent", "default")}
    assert seen[-1].result == 42


def test_arguments_are_variables_and_are_validated() -> None:
    agent = Agent(llm=scripted("task_success(a + b)"))

    @agent.task
    def add(a: int, b: int = 2) -> int:
        """Add."""

    assert add(1) == 3
    with pytest.raises(TypeError, match="argument 'a' of add should be int, got str"):
        add("1")
    with pytest.raises(TypeError, match="add\\(\\): missing a required argument"):
        add()


def test_fail_and_clarify_raise_their_errors() -> None:
    agent = Agent(llm=scripted("task_fail('no data')", "task_clarify('which year?')"))

    @agent.task
    def job() -> str:
        """Do the job."""

    with pytest.raises(TaskFail, match="no data"):
        job()
    with pytest.raises(TaskClarify, match="which year"):
        job()


def test_errors_go_back_to_the_model() -> None:
    llm = scripted("1 / 0", "task_success('recovered')")
    agent = Agent(llm=llm)
    seen = []

    @agent.task
    def job() -> str:
        """Do the job."""

    assert job(on_event=seen.append) == "recovered"
    errors = [e for e in seen if isinstance(e, ErrorEvent)]
    assert "ZeroDivisionError: division by zero" in errors[0].error


def test_wrong_return_type_is_the_models_problem() -> None:
    agent = Agent(llm=scripted("task_success('seven')", "task_success(7)"))

    @agent.task
    def count() -> int:
        """Count."""

    seen = []
    assert count(on_event=seen.append) == 7
    (error,) = [e for e in seen if isinstance(e, ErrorEvent)]
    assert "should be int, got str 'seven'" in error.error


def test_return_value_is_coerced() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    agent = Agent(llm=scripted("task_success({'x': 1, 'y': 2})"))

    @agent.task
    def locate() -> Point:
        """Locate."""

    assert locate() == Point(1, 2)


def test_reply_without_code_gets_a_nudge() -> None:
    llm = connect_llm(provider="scripted", responses=["I think...", block("task_success(1)")])
    agent = Agent(llm=llm)

    @agent.task
    def one() -> int:
        """One."""

    assert one() == 1


def test_max_iterations() -> None:
    agent = Agent(llm=scripted("x = 1", "x = 2"), max_iterations=2)

    @agent.task
    def never() -> int:
        """Never finishes."""

    with pytest.raises(TaskTimeout, match="2 steps"):
        never()


def test_timeout_stops_running_code() -> None:
    agent = Agent(llm=scripted("while True:\n    pass"), timeout=0.5)

    @agent.task
    def spin() -> int:
        """Spin."""

    with pytest.raises(TaskTimeout, match="timeout"):
        spin()


def test_timeout_while_waiting_for_the_model() -> None:
    agent = Agent(llm=scripted("task_success(1)", delay=5), timeout=0.3)

    @agent.task
    def slow() -> int:
        """Slow."""

    with pytest.raises(TaskTimeout, match="waiting for the model"):
        slow()


def test_tokens_stream_to_on_token() -> None:
    agent = Agent(llm=scripted("task_success(1)", chunk_size=4))

    @agent.task
    def one() -> int:
        """One."""

    pieces = []
    one(on_token=pieces.append)
    assert "".join(pieces) == block("task_success(1)")
    assert len(pieces) > 3


def test_async_tasks() -> None:
    agent = Agent(llm=scripted("task_success(n + 1)", "task_success(n + 1)"))

    @agent.task
    async def inc(n: int) -> int:
        """Increment."""

    async def main():
        return await inc(1), await inc(5)

    assert asyncio.run(main()) == (2, 6)


def test_live_state_persists_per_session() -> None:
    agent = Agent(
        name="counter",
        state=connect_state(type="live"),
        llm=scripted(
            "count = 1\ntask_success(count)",
            "count += 1\ntask_success(count)",
            "try:\n    count\nexcept NameError:\n    task_success(False)\ntask_success(True)",
        ),
    )

    @agent.task
    def tick() -> object:
        """Tick."""

    try:
        assert tick() == 1
        assert tick() == 2
        assert tick(session="other") is False  # another session starts empty
    finally:
        forget("counter")


def test_ephemeral_state_forgets() -> None:
    agent = Agent(
        llm=scripted("kept = 1\ntask_success(1)", "task_success(kept)", "task_success(2)")
    )

    @agent.task
    def job() -> int:
        """Job."""

    seen = []
    assert job() == 1
    assert job(on_event=seen.append) == 2  # the second reply raised NameError
    assert any("NameError" in e.error for e in seen if isinstance(e, ErrorEvent))


def test_registrations_are_usable_and_described() -> None:
    agent = Agent(primer="You are precise.", llm=scripted("task_success(double(4))"))

    @agent.fn
    def double(v: int) -> int:
        """Double a number."""
        return v * 2

    agent.fn(len, name="length")

    @agent.task
    def job() -> int:
        """Job."""

    assert job() == 8
    from agex.prompt import system_message

    message = system_message(agent, job)
    assert message.startswith("You are precise.")
    assert "def double(v: int) -> int  Double a number." in message
    assert "def job() -> int" in message
    assert "task_success" in message


def test_task_needs_a_docstring_and_an_empty_body() -> None:
    agent = Agent(llm=scripted())
    with pytest.raises(TypeError, match="needs a docstring"):

        @agent.task
        def no_doc() -> int:
            pass

    with pytest.raises(TypeError, match="has a body"):

        @agent.task
        def busy() -> int:
            """Busy."""
            return 1


def test_bad_agent_settings() -> None:
    with pytest.raises(ValueError, match="max_iterations"):
        Agent(max_iterations=0)
    with pytest.raises(ValueError, match="timeout"):
        Agent(timeout=-1)
    with pytest.raises(TypeError, match="connect_state"):
        Agent(state="live")


# -- sub-agents ------------------------------------------------------------------------


def test_sub_agent_inherits_session_and_reports_events() -> None:
    specialist = Agent(name="specialist", llm=scripted("task_success(data.upper())"))
    orchestrator = Agent(
        name="orchestrator",
        llm=scripted("r = process_data('abc')", "task_success(r + '!')"),
    )

    @orchestrator.fn
    @specialist.task
    def process_data(data: str) -> str:
        """Specialist task."""

    @orchestrator.task
    def run_all() -> str:
        """Run everything."""

    seen = []
    assert run_all(session="s1", on_event=seen.append) == "ABC!"
    names = [(e.agent_name, type(e).__name__) for e in seen]
    assert ("specialist", "SuccessEvent") in names
    assert {e.session for e in seen} == {"s1"}
    assert names.index(("specialist", "SuccessEvent")) < names.index(
        ("orchestrator", "SuccessEvent")
    )


def test_sub_agent_is_a_plain_function_to_agent_code() -> None:
    specialist = Agent(name="specialist", llm=scripted())
    orchestrator = Agent(
        name="orchestrator", llm=scripted("task_success(hasattr(helper, 'agent'))")
    )

    @orchestrator.fn
    @specialist.task
    def helper(x: int) -> int:
        """Help."""

    @orchestrator.task
    def peek() -> bool:
        """Peek."""

    assert peek() is False


def test_reverse_stacking_is_refused() -> None:
    specialist = Agent(name="specialist")
    orchestrator = Agent(name="orchestrator")
    with pytest.raises(TypeError, match=r"stack @orchestrator\.fn above"):

        @specialist.task
        @orchestrator.fn
        def wrong(x: int) -> int:
            """Wrong order."""


def test_pprint_events_renders_every_step(capsys) -> None:
    agent = Agent(name="demo", llm=scripted("print('hi')", "task_success(1)"))

    @agent.task
    def job() -> int:
        """Job."""

    job(on_event=pprint_events)
    out = capsys.readouterr().out
    assert "-- demo . step 0 . taskstart" in out
    assert "  | print('hi')" in out
    assert "result: 1" in out
    assert "\x1b[" not in out  # no colour when not a terminal


def test_events_are_the_declared_types() -> None:
    agent = Agent(llm=scripted("print(1)", "task_success(1)"))

    @agent.task
    def job() -> int:
        """Job."""

    seen = []
    job(on_event=seen.append)
    assert isinstance(seen[0], TaskStartEvent)
    assert isinstance(seen[1], ActionEvent)
    assert isinstance(seen[2], OutputEvent)
    assert isinstance(seen[-1], SuccessEvent)


def test_cancelling_an_async_task_stops_its_code() -> None:
    import time

    agent = Agent(llm=scripted("while True:\n    pass", "task_success(1)"))
    seen = []

    @agent.task
    async def spin() -> int:
        """Spin."""

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(spin(on_event=seen.append), 0.3)
        start = time.monotonic()
        assert await spin() == 1  # the worker thread is free again, and quickly
        return time.monotonic() - start

    assert asyncio.run(main()) < 1.0
    assert type(seen[-1]).__name__ == "CancelledEvent"


def test_seed_callbacks_snippet(capsys) -> None:
    """The seed page's callback example, as written, on the local host."""
    agent = Agent(
        primer="You are helpful.",
        llm=scripted("print(query)", "task_success(query.upper())", chunk_size=5),
    )
    namespace = {"agent": agent}
    exec(
        "from agex import pprint_events, pprint_tokens\n"
        "\n"
        "@agent.task\n"
        "def my_task(query: str) -> str:\n"
        '    """Process query."""\n'
        "    pass\n"
        "\n"
        "# Callbacks receive events as they stream from the server\n"
        'result = my_task("hello", on_event=pprint_events, on_token=pprint_tokens)\n',
        namespace,
    )
    assert namespace["result"] == "HELLO"
    out = capsys.readouterr().out
    assert "-- agent . step 2 . success" in out
    # Each event starts a line of its own, after the streamed reply.
    assert all(line.startswith("-- ") for line in out.splitlines() if "-- agent . step" in line)
    assert "task_success(query.upper())" in out


def test_fingerprint_is_stable_and_follows_what_defines_the_agent() -> None:
    def make(primer: str = "You are helpful.") -> Agent:
        agent = Agent(name="fp", primer=primer, llm=scripted())
        agent.fn(len, name="length")
        return agent

    assert make().fingerprint == make().fingerprint
    assert make("Be terse.").fingerprint != make().fingerprint
    changed = make()
    changed.fn(sorted)
    assert changed.fingerprint != make().fingerprint
