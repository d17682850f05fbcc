"""Against the real Modal, when this machine has credentials and AGEX_MODAL_LIVE=1; skipped
otherwise. It deploys apps and runs scripted tasks in them (no model is called): the memory
tier, the disk tier, and a sub-agent without a host, which runs in the container.

    AGEX_MODAL_LIVE=1 pytest tests/modal/test_live.py -m modal_live

The secret it names (AGEX_MODAL_SECRET, default ``llm-keys``) must exist in the workspace.
"""

from __future__ import annotations

import os
import platform
from secrets import token_hex

import pytest

from agex import Agent, connect_host, connect_state
from agex.testing.host import scripted

pytestmark = pytest.mark.modal_live


@pytest.fixture
def live():
    import modal

    config = modal.config.config
    if os.environ.get("AGEX_MODAL_LIVE") != "1" or not config.get("token_id"):
        pytest.skip("set AGEX_MODAL_LIVE=1 on a machine with Modal credentials")


@pytest.fixture
def session():
    return f"agex-live-{token_hex(4)}"


def host():
    return connect_host(provider="modal", secrets=os.environ.get("AGEX_MODAL_SECRET", "llm-keys"))


def test_the_memory_tier_keeps_state_between_tasks(live, session):
    agent = Agent(
        name="agex-live-memory",
        host=host(),
        state=connect_state(type="versioned", storage="memory"),
        llm=scripted("x = 41", "task_success(x + 1)", "task_success(x * 2)"),
    )

    @agent.task
    def answer() -> int:
        """Answer."""

    events = []
    assert answer(session=session, on_event=events.append) == 42
    assert type(events[0]).__name__ == "TaskStartEvent"
    assert answer(session=session) == 82  # x is still 41, read back from the Dict
    assert agent.state(session).values() == {"x": 41}  # read here, through Modal's API


def test_the_disk_tier_keeps_state_in_a_volume(live, session):
    agent = Agent(
        name="agex-live-disk",
        host=host(),
        state=connect_state(type="versioned", storage="disk", path="agex-live-test"),
        llm=scripted("notes = ['one']\ntask_success(1)", "notes.append('two')\ntask_success(2)"),
    )

    @agent.task
    def note() -> int:
        """Note."""

    assert note(session=session) == 1
    assert note(session=session) == 2
    assert agent.state(session).values()["notes"] == ["one", "two"]


def test_a_sub_agent_without_a_host_runs_in_the_container(live):
    specialist = Agent(
        name="agex-live-specialist", llm=scripted("task_success(data.upper() + node())")
    )
    # Agent code runs in a confined worker, whose environment is empty: the machine's name
    # says where it ran.
    specialist.fn(platform.node, name="node")

    @specialist.task
    def shout(data: str) -> str:
        """Shout."""

    orchestrator = Agent(
        name="agex-live-orchestrator", host=host(), llm=scripted("task_success(shout('x'))")
    )
    orchestrator.fn(shout)

    @orchestrator.task
    def run() -> str:
        """Run."""

    # The specialist ran where the orchestrator did: in the container, not on this machine.
    result = run()
    assert result.startswith("X")
    assert result != "X" + platform.node()
