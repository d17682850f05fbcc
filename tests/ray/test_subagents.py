"""Sub-agents of an agent on Ray: without a host, one runs inside its parent's runner (no
runner of its own); with its own ray host, it runs as its own Ray actor, scheduled with that
host's resources (here: on the second node). The session is inherited; each agent's state
is its own."""

from __future__ import annotations

import time

from agex import Agent, connect_host
from agex.testing.host import scripted

from .calls import (
    Call,
    pg_env,
    pg_state,
    runners_of,
)
from .conftest import OTHER


def _all_runners() -> int:
    from agex_host_ray import cluster

    with cluster._lock:
        return sum(len(rs) for rs in cluster._runners.values())


def test_a_sub_agent_without_a_host_runs_in_its_parents_runner(ray_host, postgres, state_path):
    host = ray_host(num_cpus=0.2, runtime_env=pg_env(postgres))
    parent = Agent(
        name="parent",
        host=host,
        state=pg_state(state_path),
        llm=scripted("mine = 'p'\ntask_success(shout('abc'))"),
    )
    child = Agent(
        name="child", state=pg_state(state_path), llm=scripted("theirs = 'c'\ntask_success(s * 2)")
    )

    @parent.fn
    @child.task
    def shout(s: str) -> str:
        """Shout."""

    @parent.task
    def run() -> str:
        """Delegate."""

    parent.warmup()  # the parent's runner, started before the call
    [runner] = runners_of(host)
    before = _all_runners()
    events: list = []
    assert run(session="shared", on_event=events.append) == "abcabc"
    assert runners_of(host) == [runner], "the parent's one runner ran both"
    assert _all_runners() == before, "no runner started for the sub-agent"
    children = [e for e in events if e.agent_name == "child"]
    assert type(children[-1]).__name__ == "SuccessEvent"
    assert {e.session for e in events} == {"shared"}

    assert parent.state("shared").values() == {"mine": "p"}
    assert child.state("shared").values() == {"s": "abc", "theirs": "c"}  # its argument too


def test_a_sub_agent_with_its_own_ray_host_runs_as_its_own_actor_where_it_asks(
    ray_cluster, ray_host, postgres, state_path
):
    import ray

    parent = Agent(
        name="boss",
        host=ray_host(num_cpus=0.1, runtime_env=pg_env(postgres)),
        state=pg_state(state_path),
        llm=scripted("mine = 'b'\ntask_success(crunch(3))"),
    )
    worker = Agent(
        name="cruncher",
        # Inside the parent's runner, None joins the cluster that runner is on.
        host=connect_host(
            provider="ray", resources={OTHER: 1}, scaledown_window=10, runtime_env=pg_env(postgres)
        ),
        state=pg_state(state_path),
        llm=scripted("theirs = n * n", "task_success(theirs)", delay=2.0),
    )

    @parent.fn
    @worker.task
    def crunch(n: int) -> int:
        """Crunch."""

    @parent.task
    def run() -> int:
        """Delegate."""

    total = ray.cluster_resources()[OTHER]
    assert ray.available_resources().get(OTHER) == total, "nothing holds it yet"
    held = []
    events: list = []
    call = Call(run, session="shared", on_event=events.append)
    while not call.done():
        held.append(total - ray.available_resources().get(OTHER, 0))
        time.sleep(0.2)
    assert call.result(within=1) == 9
    assert max(held) == 1, "the sub-agent's actor held the second node's resource"
    [parents] = [r for r in runners_of(parent.host)]
    assert "resources" not in parent.host.options.actor(), "the parent asked for none of it"
    assert parents.where is not None

    workers = [e for e in events if e.agent_name == "cruncher"]
    assert type(workers[-1]).__name__ == "SuccessEvent"
    assert {e.session for e in events} == {"shared"}
    assert parent.state("shared").values() == {"mine": "b"}
    assert worker.state("shared").values() == {"n": 3, "theirs": 9}
