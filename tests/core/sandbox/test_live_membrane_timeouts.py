"""Closed attack: a live object's methods run in the agent's thread, so the time limit's
asynchronous interrupt (watchdog.PyThreadState_SetAsyncExc) lands inside them, between two
statements of the trusted object's own code. Agent code that calls a method in a loop until
its time runs out leaves the object half-updated (an invariant broken, a lock held) for every
later run and for the host program. The watchdog's own rule is that an interrupt "must never
arrive in the host's code"; a live object's methods are the host's code.

The watchdog holds the interrupt while a live method runs and raises it when the method
returns.
"""

from __future__ import annotations

import pytest

from agex import Agent, TaskTimeout, connect_llm


class Ledger:
    """Two accounts whose total stays 100: each move takes from one and gives to the other."""

    def __init__(self) -> None:
        self.a = 100
        self.b = 0

    def move(self, n: int) -> None:
        """Move ``n`` from a to b."""
        self.a -= n
        total = 0
        for i in range(2_000_000):  # the host's own work between the two writes
            total += i
        self.b += n


def test_a_timeout_does_not_stop_a_live_method_half_way() -> None:
    ledger = Ledger()
    agent = Agent(
        llm=connect_llm(
            provider="scripted", responses=["```python\nwhile True:\n    db.move(1)\n```"]
        ),
        timeout=1,
    )
    agent.module(ledger, name="db")

    @agent.task
    def drain() -> None:
        """Move everything."""

    with pytest.raises(TaskTimeout):
        drain()
    assert ledger.a + ledger.b == 100, f"the timeout left the ledger at {ledger.a}+{ledger.b}"
