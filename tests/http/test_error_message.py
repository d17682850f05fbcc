"""Through a real agex server, a task's end raises the same type as in this process, with
the same ``.message``: what agent code passed to task_fail or task_clarify, nothing added.
And the http host's options are refused before anything is sent, naming what to do."""

from __future__ import annotations

import pytest

from agex import Agent, TaskClarify, TaskFail, TaskTimeout, connect_host
from agex.testing.host import scripted

#: Quotes, braces, a percent sign, non-ASCII, several lines and surrounding blanks: what a
#: decorating or lossy path would change.
MESSAGE = "  no rows for 'Zürich' {city}\n100% sure: ask \"which year?\"  "


def test_fail_and_clarify_carry_what_agent_code_passed(server) -> None:
    host = connect_host(provider="http", url=server.url, token=server.token)
    agent = Agent(
        host=host,
        llm=scripted(f"task_fail({MESSAGE!r})", f"task_clarify({MESSAGE[::-1]!r})"),
        max_iterations=1,
    )

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(TaskFail) as failed:
        job()
    assert type(failed.value) is TaskFail
    assert failed.value.message == MESSAGE
    with pytest.raises(TaskClarify) as asked:
        job()
    assert type(asked.value) is TaskClarify
    assert asked.value.message == MESSAGE[::-1]


def test_a_timeout_on_the_server_keeps_its_message(server) -> None:
    host = connect_host(provider="http", url=server.url, token=server.token)
    agent = Agent(host=host, llm=scripted("x = 1"), max_iterations=1)

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(TaskTimeout) as caught:
        job()
    assert "max_iterations" in caught.value.message
    assert str(caught.value) == caught.value.message


def test_a_missing_url_says_it_is_required_with_an_example() -> None:
    with pytest.raises(ValueError, match="url") as caught:
        connect_host(provider="http")
    assert 'connect_host(provider="http", url=' in str(caught.value)


def test_an_option_the_http_host_does_not_take_is_named() -> None:
    with pytest.raises(TypeError, match="'ur'"):
        connect_host(provider="http", url="http://agent-server:8000", ur="x")
