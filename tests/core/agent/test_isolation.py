"""What an agent's code cannot do to its caller, its sub-agents, other sessions or the
terminal; found by review, pinned here."""

import asyncio
import contextlib
import functools
import threading
import time

import pytest

from agex import Agent, TaskTimeout, connect_llm, connect_state
from agex.errors import AgexError
from agex.state.live import forget


def block(code: str) -> str:
    return f"Thinking.\n```python\n{code}\n```"


def scripted(*codes: str, **options):
    return connect_llm(provider="scripted", responses=[block(c) for c in codes], **options)


def test_sub_agent_runs_in_each_callers_own_session() -> None:
    spec = Agent(
        name="spec-iso",
        state=connect_state(type="live"),
        llm=scripted(
            "notes = 'alice private notes'\ntask_success('saved')",
            "try:\n    task_success(notes)\nexcept NameError:\n    task_success('nothing')",
        ),
    )

    @spec.task
    def helper() -> str:
        """Help."""

    orch = Agent(name="orch-iso", llm=scripted("task_success(helper())", "task_success(helper())"))
    orch.fn(helper)

    @orch.task
    def main() -> str:
        """Main."""

    seen = {"alice": [], "bob": []}
    try:
        assert main(session="alice", on_event=seen["alice"].append) == "saved"
        assert main(session="bob", on_event=seen["bob"].append) == "nothing"
    finally:
        forget("spec-iso")
    assert {e.session for e in seen["bob"]} == {"bob"}
    assert {e.session for e in seen["alice"]} == {"alice"}


@pytest.mark.parametrize("keyword", ["session", "on_event", "on_token"])
def test_agent_code_cannot_choose_a_sub_agents_session_or_callbacks(keyword) -> None:
    spec = Agent(name="spec", llm=scripted("task_success(1)"))

    @spec.task
    def helper() -> int:
        """Help."""

    orch = Agent(
        name="orch",
        llm=scripted(
            f"try:\n    helper({keyword}=None)\nexcept TypeError as e:\n    task_success(str(e))"
        ),
    )
    orch.fn(helper)

    @orch.task
    def main() -> str:
        """Main."""

    assert main() == f"helper() takes no {keyword} from agent code"


def test_task_parameters_cannot_shadow_call_options() -> None:
    agent = Agent()
    with pytest.raises(TypeError, match="cannot have parameters named session"):

        @agent.task
        def greet(session: str) -> str:
            """Greet."""


def test_callers_timeout_stops_a_spinning_sub_agent() -> None:
    spec = Agent(name="spec", llm=scripted("while True:\n    pass"))

    @spec.task
    def helper() -> str:
        """Help."""

    orch = Agent(name="orch", timeout=0.5, llm=scripted("task_success(helper())"))
    orch.fn(helper)

    @orch.task
    def main() -> str:
        """Main."""

    start = time.monotonic()
    with pytest.raises(TaskTimeout):
        main()
    assert time.monotonic() - start < 2.0
    time.sleep(0.3)
    busy = [t.name for t in threading.enumerate() if t.is_alive() and "asyncio" in t.name]
    # The sub-agent's code was stopped too: a second run finishes promptly.
    quick = Agent(llm=scripted("task_success(1)"))

    @quick.task
    def one() -> int:
        """One."""

    start = time.monotonic()
    assert one() == 1
    assert time.monotonic() - start < 1.0, busy


@pytest.mark.parametrize(
    "value",
    [
        "Sneaky()",  # its __repr__ tries to end the task with its own value
        "[Sneaky()]",
    ],
)
def test_a_values_methods_cannot_end_the_task(value) -> None:
    agent = Agent(
        llm=scripted(
            "class Sneaky:\n    def __repr__(self):\n        task_success('chosen by the value')\n"
            f"task_success({value})",
            "task_success('fixed')",
        )
    )

    @agent.task
    def job() -> object:
        """Job."""

    seen = []
    assert job(on_event=seen.append) == "fixed"
    assert any("tried to end the task" in getattr(e, "error", "") for e in seen)


@pytest.mark.parametrize(
    "code",
    [
        "import itertools\ntask_success(itertools.count())",  # an endless iterable
        "class Loop:\n    def __eq__(self, other):\n        while True:\n            pass\n"
        "    __hash__ = None\ntask_success([Loop()])",
    ],
)
def test_checking_the_value_is_under_the_time_limit(code) -> None:
    agent = Agent(timeout=1.0, llm=scripted(code, "task_success([1])"))

    @agent.task
    def job() -> list[int]:
        """Job."""

    start = time.monotonic()
    with contextlib.suppress(TaskTimeout):
        job()
    assert time.monotonic() - start < 2.5


def test_returned_scalars_are_plain_builtins() -> None:
    agent = Agent(
        llm=scripted(
            "class I(int):\n    def __eq__(self, other):\n        return True\ntask_success(I(3))"
        )
    )

    @agent.task
    def job() -> int:
        """Job."""

    result = job()
    assert type(result) is int
    assert result == 3
    assert result != 4


def test_fail_messages_are_plain_strings() -> None:
    from agex import TaskFail

    agent = Agent(
        llm=scripted(
            "class S(str):\n    def __format__(self, spec):\n        return 'hijacked'\n"
            "task_fail(S('real reason'))"
        )
    )

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(TaskFail) as info:
        job()
    assert type(info.value.args[0]) is str
    assert f"{info.value.args[0]}" == "real reason"


def test_terminal_control_sequences_are_shown_not_obeyed(capsys) -> None:
    from agex import pprint_events, pprint_tokens
    from agex.events import OutputEvent

    pprint_events(
        OutputEvent(agent_name="a", session="s", step=1, text="\x1b]52;c;cHduZWQ=\x07\x1b[2Jclean")
    )
    pprint_tokens("\x1b[8mhidden")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\\x1b]52;c;cHduZWQ=\\x07\\x1b[2Jclean" in out


def test_live_state_needs_a_name_and_keeps_only_variables() -> None:
    with pytest.raises(ValueError, match="live state needs a name"):
        Agent(state=connect_state(type="live"))
    admin = Agent(
        name="shared", state=connect_state(type="live"), llm=scripted("kept = 1\ntask_success(1)")
    )
    admin.fn(lambda: "deleted", name="delete_account")

    @admin.task
    def administrate() -> int:
        """Administrate."""

    guest = Agent(
        name="shared",
        state=connect_state(type="live"),
        llm=scripted(
            "try:\n    delete_account\nexcept NameError:\n    task_success(kept)\ntask_success(-1)"
        ),
    )

    @guest.task
    def visit() -> int:
        """Visit."""

    try:
        assert administrate(session="s") == 1
        assert visit(session="s") == 1  # the variable carried over; the function did not
    finally:
        forget("shared")


def test_a_live_session_runs_one_task_at_a_time() -> None:
    agent = Agent(
        name="busy",
        state=connect_state(type="live"),
        llm=scripted("task_success(1)", "task_success(2)", delay=0.3),
    )

    @agent.task
    async def job() -> int:
        """Job."""

    async def both():
        return await asyncio.gather(job(session="s"), job(session="s"), return_exceptions=True)

    try:
        results = asyncio.run(both())
    finally:
        forget("busy")
    assert sorted(type(r).__name__ for r in results) == ["SessionBusy", "int"]
    assert any(isinstance(r, AgexError) and "already running" in str(r) for r in results)


def test_prompt_leaves_out_what_a_partial_binds() -> None:
    from agex.prompt import system_message

    def search(query: str, api_key: str) -> list[str]:
        """Search the web."""
        return []

    agent = Agent(llm=scripted())
    agent.fn(functools.partial(search, api_key="sk-live-SECRET"), name="search")

    @agent.task
    def job() -> int:
        """Job."""

    message = system_message(agent, job)
    assert "SECRET" not in message
    assert "def search(query: str) -> list[str]  Search the web." in message


def test_prompt_describes_classes_that_cannot_be_constructed() -> None:
    from agex.prompt import system_message

    class Base:
        def balance(self) -> int:
            """The balance."""
            return 1

    class Account(Base):
        """An account."""

        def __init__(self, owner):
            self.owner = owner

        @classmethod
        def open_for(cls, owner):
            """Open one."""
            return cls(owner)

        def close(self):
            """Close it."""

    agent = Agent(llm=scripted())
    agent.cls(Account, constructable=False, exclude=["_*", "close"])

    @agent.task
    def job() -> int:
        """Job."""

    message = system_message(agent, job)
    assert "class Account(owner) (not constructable)" in message
    assert ".balance() -> int  The balance." in message
    assert ".open_for(owner)" in message
    assert ".close" not in message


def test_keys_cannot_be_passed_as_options() -> None:
    pytest.importorskip("openai")
    with pytest.raises(ValueError, match="do not pass api_key"):
        connect_llm(provider="openai", api_key="sk-x")


def test_tasks_are_def_functions() -> None:
    agent = Agent()
    with pytest.raises(TypeError, match="function defined with def"):
        agent.task(lambda: 1)
    with pytest.raises(TypeError, match="function defined with def"):
        agent.task(functools.partial(len))
