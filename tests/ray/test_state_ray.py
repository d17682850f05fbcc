"""Versioned state on the ray host lives where every node reaches it (PostgreSQL, or a
shared disk at an absolute path): a task sees the variables an earlier task left, whichever
runner or node ran it; the caller reads the session's history; and two runs on one session
take turns rather than interleave."""

from __future__ import annotations

import pytest

from agex import Agent, connect_state
from agex.testing.host import scripted

from .calls import (
    Call,
    pg_env,
    pg_state,
    runners_of,
    unique,
)
from .conftest import OTHER


@pytest.fixture(scope="module")
def third(ray_cluster):
    """A node of this module's own, with a resource no other node has."""
    name = unique("agex-third")
    node = ray_cluster.add_node(num_cpus=1, resources={name: 1})
    ray_cluster.wait_for_nodes()
    yield name
    ray_cluster.remove_node(node)


def _two_runners(ray_host, third, env):
    """Two hosts of different resources, so different runners, on different nodes."""
    there = ray_host(num_cpus=0.1, resources={OTHER: 1}, runtime_env=env)
    here = ray_host(num_cpus=0.1, resources={third: 1}, runtime_env=env)
    return there, here


@pytest.mark.parametrize("storage", ["postgres", "disk"])
def test_a_task_sees_the_variables_an_earlier_task_left_on_another_node(
    ray_host, third, postgres, state_path, tmp_path, storage
):
    if storage == "postgres":
        state, env = pg_state(state_path), pg_env(postgres)
    else:
        state, env = connect_state(type="versioned", storage="disk", path=str(tmp_path)), {}
    there, here = _two_runners(ray_host, third, env)
    agent = Agent(
        name="keeper",
        host=there,
        state=state,
        llm=scripted("kept = [1, 2]", "task_success(len(kept))"),
    )

    @agent.task
    def remember() -> int:
        """Keep something."""

    assert remember(session="s") == 2
    # Taken now: the second runner, waiting for room, may end this one (idle by then).
    [first] = runners_of(there)
    agent.host = here
    agent.llm = scripted("kept.append(3)", "task_success(sum(kept))")
    assert remember(session="s") == 6

    [second] = runners_of(here)
    assert first is not second
    assert first.where["node"] != second.where["node"], "they ran on different nodes"

    history = agent.state("s").history()
    assert len(history) >= 2, "the caller reads each task's commits"
    assert agent.state("s").values() == {"kept": [1, 2, 3]}
    assert agent.state("s").values(history[-1].id) == {"kept": [1, 2]}


def test_two_runs_on_one_session_take_turns(ray_host, postgres, state_path):
    """The core's default (on_conflict="wait"): the second run waits for the first's
    commit and builds on it; neither's step is lost."""
    agent = Agent(
        name="turns",
        host=ray_host(num_cpus=0.1, runtime_env=pg_env(postgres)),
        state=pg_state(state_path),
        llm=scripted("n = 0", "task_success(n)"),
    )

    @agent.task
    def bump() -> int:
        """Bump n."""

    assert bump(session="s") == 0
    agent.llm = scripted("n = n + 1", "task_success(n)", delay=1.0)
    calls = [Call(bump, session="s"), Call(bump, session="s")]
    assert sorted(call.result(within=120) for call in calls) == [1, 2]
    assert agent.state("s").values() == {"n": 2}
