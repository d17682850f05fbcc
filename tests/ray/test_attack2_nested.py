"""A sub-agent with a ray host of its own, called from a runner, runs as its own runner,
started by the parent's runner from the sub-agent's host configuration as it travelled
(without its runtime_env's env_vars, which stay with the caller)."""

from __future__ import annotations

import os

from agex import Agent, connect_host
from agex.testing.host import scripted


def test_a_sub_agents_own_env_vars_reach_its_runner(ray_cluster, ray_host):
    """The sub-agent's host was given its own variable (its model's key, its database): its
    runner must have it, and must not get the parent's key it was not given."""
    import ray

    from agex_host_ray import cluster

    parent = Agent(
        name="a2-parent",
        host=ray_host(num_cpus=0.1, runtime_env={"env_vars": {"A2_PARENT_KEY": "parent"}}),
        llm=scripted("task_success(helper(2))"),
    )
    helper_agent = Agent(
        name="a2-helper",
        host=connect_host(
            provider="ray",
            num_cpus=0.1,
            resources={"agex-other": 0.1},
            scaledown_window=120,
            runtime_env={"env_vars": {"A2_SUB_KEY": "sub"}},
        ),
        llm=scripted("task_success(n + 1)"),
    )

    @parent.fn
    @helper_agent.task
    def helper(n: int) -> int:
        """Helps."""

    @parent.task
    def run() -> int:
        """Delegates."""

    assert run() == 3
    ours = {r.actor._actor_id for rs in cluster._runners.values() for r in rs}
    seen = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry.get("namespace") != cluster.NAMESPACE:
            continue
        actor = ray.get_actor(entry["name"], namespace=cluster.NAMESPACE)
        if actor._actor_id in ours:
            continue
        seen.append(
            ray.get(
                actor.__ray_call__.remote(
                    lambda _: [os.environ.get("A2_SUB_KEY"), os.environ.get("A2_PARENT_KEY")]
                ),
                timeout=60,
            )
        )
    assert seen, "no runner of the sub-agent"
    assert [s for s in seen if s[0] == "sub"], seen  # the parent's key came instead
