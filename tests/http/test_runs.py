"""Tasks on a real agex server: results, events, tokens, state, remote failures. The host
contract (test_contract.py) covers outcomes by type and None."""

from __future__ import annotations

import dataclasses

import pytest

from agex import (
    Agent,
    RemoteExecutionError,
    connect_host,
    connect_state,
)
from agex.testing.host import scripted


def remote(server, llm, state=None, **agent_options) -> Agent:
    host = connect_host(provider="http", url=server.url, token=server.token)
    return Agent(host=host, llm=llm, state=state, **agent_options)


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_result_events_and_tokens_stream_back(server) -> None:
    agent = remote(server, scripted("n = 20\nprint(n)", "task_success(n + 1)", chunk_size=3))
    events, tokens = [], []

    @agent.task
    def count() -> int:
        """Count."""

    assert count(on_event=events.append, on_token=tokens.append) == 21
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["TaskStartEvent", "ActionEvent", "OutputEvent", "ActionEvent", "SuccessEvent"]
    assert events[2].text == "20\n"
    assert "".join(tokens) == "".join(agent.llm.responses)
    assert agent.llm.position == 2  # the client's script continues where the server stopped


def test_values_json_cannot_carry_come_back_typed(server) -> None:
    agent = remote(server, scripted("task_success(Point(1, 2))", "task_success((1, 'a'))"))
    agent.cls(Point)

    @agent.task
    def point() -> Point:
        """A point."""

    @agent.task
    def pair() -> tuple[int, str]:
        """A pair."""

    assert point() == Point(1, 2)
    assert type(point.func).__name__ == "function"
    assert pair() == (1, "a")


def test_other_failures_are_remote_execution_errors_with_the_traceback(server) -> None:
    agent = remote(server, scripted())  # no replies: the model runs out

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError) as caught:
        job()
    assert caught.value.remote_type == "ScriptExhausted"
    assert "Traceback" in caught.value.remote_traceback
    assert "scripted.py" in caught.value.remote_traceback


def test_versioned_disk_state_lives_on_the_server(server) -> None:
    state = connect_state(type="versioned", storage="disk", path="/shared/state")
    agent = remote(
        server,
        scripted("total = 5", "task_success(total)", "task_success(total * 2)"),
        state=state,
        name="keeper",
    )

    @agent.task
    def first() -> int:
        """First."""

    assert first(session="s1") == 5
    assert first(session="s1") == 10
    assert (server.state_dir / "shared" / "state").is_dir()
    with pytest.raises(ValueError, match="runs on the server"):
        agent.state("s1")
