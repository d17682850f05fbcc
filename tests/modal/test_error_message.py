"""Through the modal host (a container of the fake Modal, a process of its own), a task's end
raises the same type as in this process, with the same ``.message``; and the host's
options are refused before anything is deployed, naming what to do."""

from __future__ import annotations

import pytest

from agex import Agent, TaskClarify, TaskFail, TaskTimeout, connect_host
from agex.testing.host import scripted

MESSAGE = "  no rows for 'Zürich' {city}\n100% sure: ask \"which year?\"  "


def test_fail_clarify_and_timeout_keep_their_message(fake) -> None:
    host = connect_host(provider="modal", secrets="llm-keys")
    agent = Agent(
        host=host,
        llm=scripted(f"task_fail({MESSAGE!r})", f"task_clarify({MESSAGE[::-1]!r})", "x = 1"),
        max_iterations=1,
    )

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(TaskFail) as failed:
        job()
    assert failed.value.message == MESSAGE
    with pytest.raises(TaskClarify) as asked:
        job()
    assert asked.value.message == MESSAGE[::-1]
    with pytest.raises(TaskTimeout) as timed_out:
        job()
    assert "max_iterations" in timed_out.value.message
    assert fake.calls == 3, "each outcome came from a container"


def test_missing_secrets_say_they_are_required_with_an_example() -> None:
    with pytest.raises(ValueError, match="secrets") as caught:
        connect_host(provider="modal")
    assert 'connect_host(provider="modal", secrets=' in str(caught.value)


def test_an_option_the_modal_host_does_not_take_is_named() -> None:
    with pytest.raises(TypeError, match="'gpus'"):
        connect_host(provider="modal", secrets="llm-keys", gpus="A10G")
