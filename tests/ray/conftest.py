"""A real Ray cluster for this test session: a head node and a second node that alone has
the custom resource ``agex-other`` (a task that asks for it runs there), started by Ray's
own cluster helper in subprocesses, and stopped afterwards. The test process joins it as a
driver; ``RAY_ADDRESS`` names it, so that ``connect_host(provider="ray")`` (address None)
joins it too."""

from __future__ import annotations

import os

import pytest

#: The resource only the second node has.
OTHER = "agex-other"


@pytest.fixture(scope="session")
def ray_cluster():
    pytest.importorskip("agex_host_ray")
    import ray
    from ray.cluster_utils import Cluster

    # Nothing leaves the machine: Ray would otherwise report usage to its makers.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": False},
    )
    second = cluster.add_node(num_cpus=2, resources={OTHER: 4})
    cluster.wait_for_nodes()
    previous = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = cluster.address
    ray.init(address=cluster.address)
    cluster.second = second  # type: ignore[attr-defined]
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = previous


@pytest.fixture
def ray_host(ray_cluster):
    """``ray_host(**options)``: a ray host on the session's cluster."""
    from agex import connect_host

    def make(**options):
        return connect_host(provider="ray", address=ray_cluster.address, **options)

    return make
