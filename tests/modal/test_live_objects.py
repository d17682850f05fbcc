"""A live object (a connection, a client) stays in the process that registered it: an
agent whose loop runs in a Modal container refuses one, and nothing is deployed."""

from __future__ import annotations

import sqlite3

import pytest

from agex import Agent, connect_host
from agex.remote.shipping import NotSerializableError
from agex.testing.host import scripted


def modal_host():
    return connect_host(provider="modal", secrets="llm-keys")


def test_registering_a_live_object_on_a_modal_agent_is_refused(fake) -> None:
    agent = Agent(host=modal_host())
    with pytest.raises(ValueError, match="ModalHost ships the agent to another machine"):
        agent.module(sqlite3.connect(":memory:"), name="db")
    assert "db" not in agent.policy.names
    assert fake.deploys == []


def test_moving_an_agent_holding_a_live_object_to_modal_is_refused(fake) -> None:
    agent = Agent(name="keeper")
    agent.module(sqlite3.connect(":memory:"), name="db")
    with pytest.raises(ValueError, match=r"agent 'keeper' holds live objects \(db\)"):
        agent.host = modal_host()


def test_a_live_object_that_reaches_a_modal_run_anyway_fails_it_before_deploying(fake) -> None:
    keeper = Agent(name="keeper", llm=scripted("task_success(1)"))
    boss = Agent(name="boss", host=modal_host(), llm=scripted("task_success(record(1))"))

    @boss.fn
    @keeper.task
    def record(amount: int) -> int:
        """Record."""

    keeper.module(sqlite3.connect(":memory:"), name="db")

    @boss.task
    def run() -> int:
        """Run."""

    with pytest.raises(NotSerializableError, match=r"db is a live object .* cannot be copied"):
        run()
    assert fake.calls == 0
