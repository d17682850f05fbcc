"""A live object (a connection, a client) stays in the process that registered it: an
agent whose host ships it to a server refuses one, before anything is sent."""

from __future__ import annotations

import sqlite3

import pytest

from agex import Agent, connect_host
from agex.remote.shipping import NotSerializableError
from agex.testing.host import scripted


def open_database() -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.execute("create table t (x integer)")
    return connection


def test_registering_a_live_object_on_an_http_agent_is_refused(server) -> None:
    agent = Agent(host=connect_host(provider="http", url=server.url, token=server.token))
    with pytest.raises(ValueError, match="HttpHost ships the agent to another machine"):
        agent.module(open_database(), name="db")
    assert "db" not in agent.policy.names


def test_moving_an_agent_holding_a_live_object_to_a_server_is_refused(server) -> None:
    agent = Agent(name="keeper", llm=scripted("task_success(1)"))
    agent.module(open_database(), name="db", include=["execute"])
    remote = connect_host(provider="http", url=server.url, token=server.token)
    with pytest.raises(ValueError, match=r"agent 'keeper' holds live objects \(db\)"):
        agent.host = remote
    assert agent.host is not remote


def test_a_sub_agent_holding_a_live_object_cannot_join_a_remote_agent(server) -> None:
    """A sub-agent without a host of its own runs where its parent runs: on the server."""
    keeper = Agent(name="keeper", llm=scripted("task_success(1)"))
    keeper.module(open_database(), name="db")
    boss = Agent(
        name="boss", host=connect_host(provider="http", url=server.url, token=server.token)
    )

    @keeper.task
    def record(amount: int) -> int:
        """Record."""

    with pytest.raises(ValueError, match=r"sub-agent 'keeper' holds live objects \(db\)"):
        boss.fn(record)
    assert "record" not in boss.policy.names


def test_a_live_object_that_reaches_a_remote_run_anyway_fails_it_before_sending(server) -> None:
    """Registered on a sub-agent after the sub-agent joined a remote agent: the run stops in
    this process, where the task is serialized to be sent, saying why."""
    keeper = Agent(name="keeper", llm=scripted("task_success(db.execute('select 1'))"))
    boss = Agent(
        name="boss",
        host=connect_host(provider="http", url=server.url, token=server.token),
        llm=scripted("task_success(record(1))"),
    )

    @boss.fn
    @keeper.task
    def record(amount: int) -> int:
        """Record."""

    keeper.module(open_database(), name="db")

    @boss.task
    def run() -> int:
        """Run."""

    with pytest.raises(NotSerializableError, match=r"db is a live object .* cannot be copied"):
        run()
