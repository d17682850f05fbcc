"""A task's setup and its state's init on the modal host (the fake Modal, whose containers
are processes): both travel with the task and run in the container's confined worker, on
both state tiers."""

from __future__ import annotations

import os
from typing import Any

import pytest

from agex import Agent, connect_host, connect_state
from agex.events import OutputEvent
from agex.testing.host import scripted


def where_init() -> dict[str, Any]:
    return {"seen": [], "pid": os.getpid()}


STEP = "import os\nseen.append(pid)\ntask_success([os.getpid(), list(seen)])"


@pytest.mark.parametrize(
    "state",
    [
        connect_state(type="versioned", storage="memory", init=where_init),
        connect_state(type="versioned", storage="disk", path="seeded", init=where_init),
    ],
    ids=["dict", "volume"],
)
def test_init_seeds_a_modal_session_once_in_the_container(fake, state, ship_test_module) -> None:
    host = connect_host(provider="modal", secrets="llm-keys")
    agent = Agent(name="seeded", host=host, state=state, llm=scripted(STEP, STEP, STEP))
    agent.module(os, include=["getpid"])

    @agent.task("Where.")
    def where() -> list: ...

    ran, first = where()
    assert first == [first[0]]
    assert first[0] == ran
    assert first[0] != os.getpid()  # ... not here
    assert where()[1] == [first[0], first[0]]  # seeded once: the session kept the first
    assert len(where(session="other")[1]) == 1  # a new session: seeded anew


def test_setup_runs_in_the_container_before_the_first_step(fake) -> None:
    host = connect_host(provider="modal", secrets="llm-keys")
    agent = Agent(
        name="setup",
        host=host,
        state=connect_state(type="ephemeral", init={"rows": [1, 2, 3]}),
        llm=scripted("task_success(total)", "task_success(total)"),
        max_iterations=1,
    )

    @agent.task("Sum the rows.", setup="total = sum(rows)\nprint('rows:', len(rows))")
    def total() -> int: ...

    events: list[Any] = []
    assert total(on_event=events.append) == 6
    output = [e for e in events if isinstance(e, OutputEvent)]
    assert [(e.step, e.text) for e in output] == [(0, "rows: 3\n")]
    assert total() == 6
