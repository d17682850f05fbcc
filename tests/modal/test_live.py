"""Against the real Modal, when this machine has credentials and AGEX_MODAL_LIVE=1 (it
deploys an app and runs a scripted task in it). Skipped otherwise."""

from __future__ import annotations

import os

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


def test_a_task_runs_on_modal_and_keeps_memory_state(live):
    host = connect_host(provider="modal", secrets=os.environ.get("AGEX_MODAL_SECRET", "llm-keys"))
    agent = Agent(
        host=host,
        state=connect_state(type="versioned", storage="memory"),
        llm=scripted("x = 41", "task_success(x + 1)"),
    )

    @agent.task
    def answer() -> int:
        """Answer."""

    events = []
    assert answer(session="agex-live-test", on_event=events.append) == 42
    assert type(events[0]).__name__ == "TaskStartEvent"
    assert agent.state("agex-live-test").history()
