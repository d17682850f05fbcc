"""A task's setup and its state's init on a real agex server: both travel with the task and
run where its agent code runs (the server's confined worker), never in the server process."""

from __future__ import annotations

import os
from typing import Any

import pytest

from agex import Agent, connect_host, connect_state
from agex.events import OutputEvent
from agex.testing.host import scripted


def where_init() -> dict[str, Any]:
    return {"seen": [], "pid": os.getpid()}


def remote(server, state, *codes: str, **options: Any) -> Agent:
    host = connect_host(provider="http", url=server.url, token=server.token)
    return Agent(name="seeded", host=host, state=state, llm=scripted(*codes), **options)


@pytest.mark.parametrize("isolation", ["worker", "none"])
def test_init_seeds_a_server_session_once_where_agent_code_runs(make_server, isolation) -> None:
    server = make_server() if isolation == "worker" else make_server("--isolation", "none")
    state = connect_state(type="versioned", storage="disk", path="seeded", init=where_init)
    step = "import os\nseen.append(pid)\ntask_success([os.getpid(), list(seen)])"
    agent = remote(server, state, step, step, step)
    agent.module(os, include=["getpid"])

    @agent.task("Where.")
    def where() -> list: ...

    ran, first = where()
    assert first == [first[0]]
    assert first[0] != os.getpid()
    if isolation == "worker":  # in a worker the server forked, not the server itself
        assert first[0] == ran != server.process.pid
    else:  # the operator asked for agent code in the server process: the init ran there too
        assert first[0] == ran == server.process.pid
    assert where()[1] == [first[0], first[0]]  # seeded once: the session kept the first
    assert where(session="other")[1] != [first[0], first[0]]  # a new session: seeded anew


def test_setup_runs_on_the_server_before_the_first_step(server) -> None:
    agent = remote(
        server,
        connect_state(type="ephemeral", init={"rows": [1, 2, 3]}),
        "task_success(total)",
        "task_success(total)",
        max_iterations=1,
    )

    @agent.task("Sum the rows.", setup="total = sum(rows)\nprint('rows:', len(rows))")
    def total() -> int: ...

    events: list[Any] = []
    assert total(on_event=events.append) == 6
    output = [e for e in events if isinstance(e, OutputEvent)]
    assert [(e.step, e.text) for e in output] == [(0, "rows: 3\n")]
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["TaskStartEvent", "OutputEvent", "ActionEvent"]
    assert total() == 6  # ephemeral: every task seeded from init again


def broken_init() -> list:
    return ["not", "a", "dict"]


def test_an_init_that_fails_on_the_server_says_so(server) -> None:
    from agex import RemoteExecutionError

    state = connect_state(type="versioned", storage="disk", path="broken", init=broken_init)
    agent = remote(server, state, "task_success(1)")

    @agent.task("One.")
    def one() -> int: ...

    with pytest.raises(RemoteExecutionError, match="returned list; it must return a dict") as e:
        one()
    assert e.value.remote_type == "StateLoadError"
