"""The HTTP examples of docs/hosts.md, run as written against a real `agex serve`.

The examples are copied here verbatim, and the first test checks that docs/hosts.md still
shows them. The examples give their agents no model; the code that follows each one gives
them a scripted model, calls a task, and reports what it saw.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agex import Agent, connect_host, connect_state

DOC = Path(__file__).parents[2] / "docs" / "hosts.md"

HTTP_EXAMPLE = """\
from agex import Agent, connect_host, connect_state

host = connect_host(provider="http", url="http://agent-server:8000")
state = connect_state(type="versioned", storage="disk", path="/shared/state")

agent = Agent(
    primer="You are helpful.",
    host=host,
    state=state,  # Must use disk storage for remote
)
"""

STATE_REQUIREMENTS = """\
# ✅ Works: Disk storage with explicit path
state = connect_state(type="versioned", storage="disk", path="/shared/state")

# ❌ Fails: Memory storage has no shared path
state = connect_state(type="versioned", storage="memory")
"""

ORCHESTRATOR_EXAMPLE = '''\
# Orchestrator runs remotely
orchestrator = Agent(
    name="orchestrator",
    host=connect_host(provider="http", url="http://server:8000"),
    state=connect_state(type="versioned", storage="disk", path="/state"),
)

# Sub-agent has no explicit host → defaults to Local
# When orchestrator calls sub-agent, it runs locally ON THE SERVER
specialist = Agent(name="specialist")

@orchestrator.fn
@specialist.task
def process_data(data: str) -> str:
    """Specialist task."""
    pass
'''

CALLBACKS_EXAMPLE = '''\
from agex import pprint_events, pprint_tokens

@agent.task
def my_task(query: str) -> str:
    """Process query."""
    pass

# Callbacks receive events as they stream from the server
result = my_task("hello", on_event=pprint_events, on_token=pprint_tokens)
'''

#: The two halves of the state-requirements example.
WORKS, FAILS = STATE_REQUIREMENTS.split("\n\n")

IMPORTS = "from agex import Agent, connect_host, connect_state\n"
MEMORY_REFUSED = "Remote execution requires disk-based state with a shared path"


def read_back(server, name: str, path: str, session: str = "default") -> dict:
    """A remote agent's variables, read on the server's machine the way docs/hosts.md
    says: a local agent of the same name, on the server's copy of the path."""
    local = str(server.state_dir / path.lstrip("/"))
    state = connect_state(type="versioned", storage="disk", path=local)
    return Agent(name=name, state=state).state(session).values()


@pytest.mark.parametrize(
    "example", [HTTP_EXAMPLE, STATE_REQUIREMENTS, ORCHESTRATOR_EXAMPLE, CALLBACKS_EXAMPLE]
)
def test_the_examples_here_are_the_ones_in_the_docs(example: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    # The formatter may put two blank lines where the seed has one.
    assert _blank_lines_folded(example) in [_blank_lines_folded(b) for b in blocks]


def _blank_lines_folded(code: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", code)


def test_http_example(server, run_example) -> None:
    outcome = run_example(
        HTTP_EXAMPLE,
        """
        import os
        from agex import connect_llm

        agent.fn(os.getppid, name="where")
        agent.llm = connect_llm(
            "scripted",
            responses=[
                reply("word = topic.upper()\\ntask_success(f'{word} {where()}')"),
                reply("task_success(word)"),
            ],
        )

        @agent.task
        def note(topic: str) -> str:
            \"\"\"Note the topic, and say which process you run in.\"\"\"

        @agent.task
        def recall() -> str:
            \"\"\"Say the word you noted.\"\"\"

        report(first=note("budget"), again=recall(), client=os.getpid())
        """,
    )
    word, pid = outcome.report["first"].split()
    assert word == "BUDGET"
    assert server.forked(int(pid))  # it ran in one of the server's worker processes
    assert outcome.report["again"] == "BUDGET"  # the session's state, kept by the server
    assert (server.state_dir / "shared" / "state").is_dir()
    assert read_back(server, "agent", "/shared/state")["word"] == "BUDGET"


def test_disk_state_with_a_path_works(server, run_example) -> None:
    outcome = run_example(
        IMPORTS,
        WORKS,
        """
        from agex import connect_llm

        agent = Agent(
            name="keeper",
            host=connect_host(provider="http", url="http://agent-server:8000"),
            state=state,
            llm=connect_llm("scripted", responses=[reply("kept = 41 + 1\\ntask_success(kept)")]),
        )

        @agent.task
        def keep() -> int:
            \"\"\"Keep a number.\"\"\"

        fresh = Agent(
            host=connect_host(provider="http", url="http://agent-server:8000"),
            state=connect_state(type="ephemeral"),
            llm=connect_llm("scripted", responses=[reply("task_success(7)")]),
        )

        @fresh.task
        def seven() -> int:
            \"\"\"Seven.\"\"\"

        report(kept=keep(), seven=seven())
        """,
    )
    assert outcome.report == {"kept": 42, "seven": 7}
    assert read_back(server, "keeper", "/shared/state")["kept"] == 42


def test_memory_state_fails_at_agent_creation() -> None:
    namespace: dict = {}
    exec(IMPORTS + FAILS, namespace)
    host = connect_host(provider="http", url="http://agent-server:8000")
    with pytest.raises(ValueError, match=MEMORY_REFUSED):
        Agent(primer="You are helpful.", host=host, state=namespace["state"])


def test_live_state_is_refused_on_the_http_host() -> None:
    host = connect_host(provider="http", url="http://agent-server:8000")
    live = connect_state(type="live", storage="memory")
    with pytest.raises(ValueError, match="live state"):
        Agent(name="here", host=host, state=live)


def test_remote_orchestrator_with_local_sub_agents(server, run_example) -> None:
    outcome = run_example(
        IMPORTS,
        ORCHESTRATOR_EXAMPLE,
        """
        import json
        import os
        from agex import connect_llm

        specialist.fn(os.getppid, name="where")
        specialist.llm = connect_llm(
            "scripted", responses=[reply("print(where())\\ntask_success(data.upper())")]
        )
        orchestrator.llm = connect_llm(
            "scripted",
            responses=[reply("summary = process_data(data)\\ntask_success(summary)")],
        )

        @orchestrator.task
        def delegate(data: str) -> str:
            \"\"\"Have the specialist process the data.\"\"\"

        events = []
        result = delegate("sales figures", session="alice", on_event=events.append)
        report(result=result, events=[json.loads(e.to_json()) for e in events])
        """,
    )
    assert outcome.report["result"] == "SALES FIGURES"
    events = outcome.report["events"]
    mine = [e for e in events if e["agent_name"] == "orchestrator"]
    theirs = [e for e in events if e["agent_name"] == "specialist"]
    assert [e["type"] for e in mine] == ["TaskStartEvent", "ActionEvent", "SuccessEvent"]
    assert [e["type"] for e in theirs] == [
        "TaskStartEvent",
        "ActionEvent",
        "OutputEvent",
        "SuccessEvent",
    ]
    # The specialist ran on the server (in a worker process), in the orchestrator's session.
    (printed,) = [e["text"] for e in theirs if e["type"] == "OutputEvent"]
    assert server.forked(int(printed))
    assert {e["session"] for e in theirs} == {e["session"] for e in mine} == {"alice"}
    assert (server.state_dir / "state").is_dir()
    assert read_back(server, "orchestrator", "/state", "alice")["summary"] == "SALES FIGURES"


def test_callbacks_with_remote_execution(server, run_example) -> None:
    answer = "I will do it in one step.\n```python\ntask_success(query.title())\n```"
    outcome = run_example(
        HTTP_EXAMPLE,
        """
        from agex import connect_llm

        agent.llm = connect_llm(
            "scripted", responses=[reply("task_success(query.title())")], chunk_size=4
        )
        """,
        CALLBACKS_EXAMPLE,
        "report(result=result)\n",
    )
    assert outcome.report["result"] == "Hello"
    printed = outcome.stdout
    assert answer in printed  # pprint_tokens wrote the model's reply as it streamed
    titles = re.findall(r"-- agent \. step (\d+) \. (\w+) -", printed)
    assert titles == [("0", "taskstart"), ("1", "action"), ("1", "success")]
    assert "Hello" in printed.split(" . success ")[1]  # pprint_events showed the result
