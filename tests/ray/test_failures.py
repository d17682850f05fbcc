"""A run whose node or runner dies ends with an error that says so, at once rather than
hanging, and never runs again by itself (it would repeat model calls and side effects);
the session stays at its last commit, and the next run starts a new runner."""

from __future__ import annotations

import sys
import types

import pytest

from agex import Agent
from agex.errors import RemoteExecutionError, TaskTimeout
from agex.testing.host import scripted

from .calls import (
    Call,
    Watch,
    counting,
    pg_env,
    pg_state,
    runners_of,
    unique,
)


def _lost(error: RemoteExecutionError) -> None:
    """Ray reports a dead node as the node's death or as its actor's (the connection to it
    broke first): either way, the message says which died and what agex did about it."""
    text = str(error)
    assert "Ray node running the task died" in text or "Ray worker running the task died" in text

    assert "does not run it again" in text, text
    assert "last commit" in text, text


def test_a_node_that_dies_mid_run_ends_it_with_a_clear_error(
    ray_cluster, ray_host, postgres, state_path
):
    doomed = unique("agex-doomed")
    node = ray_cluster.add_node(num_cpus=1, resources={doomed: 1})
    ray_cluster.wait_for_nodes()
    host = ray_host(num_cpus=0.5, resources={doomed: 1}, runtime_env=pg_env(postgres))
    agent = Agent(name="doomed", host=host, llm=counting(3, delay=0.0), state=pg_state(state_path))

    @agent.task
    def count() -> int:
        """Count."""

    assert count(session="s") == 3
    committed = agent.state("s").history()
    assert agent.state("s").values()["n"] == 3

    agent.llm = scripted(*[f"n = {i}" for i in range(100, 108)], "task_success(n)", delay=1.0)
    watch = Watch()
    call = Call(count, session="s", on_event=watch)
    watch.wait_actions(2)
    [runner] = runners_of(host)
    ray_cluster.remove_node(node, allow_graceful=False)

    with pytest.raises(RemoteExecutionError) as raised:
        call.result(within=120)
    _lost(raised.value)

    state = agent.state("s")
    assert state.values()["n"] == 3, "the dead run left the session at the last commit"
    assert [c.id for c in state.history()] == [c.id for c in committed]
    assert runner not in runners_of(host), "the dead runner was dropped"

    # A healthy node of that kind: the same host starts a new runner there and runs. (In
    # another session: the dead run's turn on "s" lapses only after its lease.)
    ray_cluster.add_node(num_cpus=1, resources={doomed: 1})
    agent.llm = scripted("n = 41", "task_success(n + 1)")
    assert Call(count, session="t").result(within=180) == 42
    assert runners_of(host)
    assert runner not in runners_of(host)


def test_a_runner_killed_mid_run_ends_it_with_a_clear_error(ray_host):
    host = ray_host(num_cpus=0.25, concurrency=3)  # a configuration of its own: its own runner
    agent = Agent(name="killed", host=host, llm=counting(8, delay=1.0))

    @agent.task
    def count() -> int:
        """Count."""

    watch = Watch()
    call = Call(count, on_event=watch)
    watch.wait_actions(1)
    [runner] = runners_of(host)
    import ray

    ray.kill(runner.actor, no_restart=True)
    with pytest.raises(RemoteExecutionError) as raised:
        call.result(within=60)
    _lost(raised.value)
    assert "Ray worker running the task died" in str(raised.value)
    assert runner not in runners_of(host)

    agent.llm = scripted("task_success(7)")
    assert Call(count).result(within=120) == 7, "a new runner took the dead one's place"


def test_the_hosts_timeout_ends_a_long_run(ray_host):
    host = ray_host(num_cpus=0.1, timeout=3)
    agent = Agent(name="slow", host=host, llm=counting(3, delay=20.0))

    @agent.task
    def count() -> int:
        """Count."""

    with pytest.raises(TaskTimeout):
        Call(count).result(within=90)


def test_a_payload_the_cluster_cannot_load_says_what_to_install(ray_host, monkeypatch):
    """A class from a module only this process has (made at run time, no file to ship):
    the cluster cannot load the task's arguments, and the caller is told so at once."""
    ghost = types.ModuleType("agex_ghost_module")
    exec("class Ghost:\n    size = 3\n", ghost.__dict__)
    ghost.Ghost.__module__ = ghost.__name__
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    agent = Agent(
        name="ghostly", host=ray_host(num_cpus=0.1), llm=scripted("task_success(thing.size)")
    )
    agent.cls(ghost.Ghost)

    @agent.task
    def size(thing: object) -> int:
        """The thing's size."""

    with pytest.raises(RemoteExecutionError) as raised:
        Call(size, ghost.Ghost()).result(within=120)
    text = str(raised.value)
    assert "No module named 'agex_ghost_module'" in text, text
    assert "install it there" in text, text
