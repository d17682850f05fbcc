"""A caller whose callback holds its event loop for longer than the heartbeat's stale time
(a prompt for a person, a slow sink, a breakpoint) is still alive: its run goes on. The
times are scaled down (2 s stale, 0.5 s beats) to keep the test short."""

from __future__ import annotations

import time

from agex import Agent, connect_host, connect_state
from agex.testing.host import scripted
from agex_host_modal import remote


def test_a_slow_callback_does_not_stop_a_live_run(fake, monkeypatch) -> None:
    monkeypatch.setattr(remote, "STALE", 2.0)
    monkeypatch.setattr(remote, "HEARTBEAT", 0.5)
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        state=connect_state(type="ephemeral"),
        llm=scripted("x = 1", "x += 1", "x += 1", "task_success(x)", delay=1.0),
    )

    @agent.task
    def count() -> int:
        """Count."""

    seen = []

    def on_event(event) -> None:
        seen.append(type(event).__name__)
        if len(seen) == 1:
            time.sleep(4)  # the user looks at the first event for a while

    assert count(on_event=on_event) == 3
