"""The ray host meets the host contract on a real Ray cluster: with ephemeral state, with
versioned state in PostgreSQL (which every node reaches through the URL in the runner's
environment), and with versioned disk state on an absolute path (the test cluster's nodes
are this machine, so a temporary folder is one every node shares)."""

from __future__ import annotations

import uuid

import pytest

from agex import connect_host, connect_state
from agex.testing import HostContract


class TestRayHost(HostContract):
    provider = "ray"

    @pytest.fixture
    def host(self, ray_cluster):
        return connect_host(provider="ray", address=ray_cluster.address)


@pytest.fixture(scope="class")
def _postgres_runners_stop(ray_cluster):
    """The class's runners (a runtime env of their own) hold CPUs later tests' runners need:
    they stop when the class ends, not minutes later."""
    import ray

    from agex_host_ray import cluster

    yield
    for key, runners in list(cluster._runners.items()):
        if "AGEX_POSTGRES_URL" in key:
            for runner in [r for r in runners if not r.running]:
                cluster.drop(ray, runner)


@pytest.mark.usefixtures("_postgres_runners_stop")
class TestRayHostWithPostgresState(TestRayHost):
    @pytest.fixture
    def host(self, ray_cluster, postgres, monkeypatch):
        """The runner reaches the database through the URL the host's runtime_env gives it;
        this process (which validates and reads state) through its own environment."""
        monkeypatch.setenv("AGEX_POSTGRES_URL", postgres.url)
        return connect_host(
            provider="ray",
            address=ray_cluster.address,
            runtime_env={"env_vars": {"AGEX_POSTGRES_URL": postgres.url}},
        )

    def state(self, tmp_path):
        return connect_state(
            type="versioned", storage="postgres", path=f"tests/ray-{uuid.uuid4().hex[:12]}"
        )


class TestRayHostWithDiskState(TestRayHost):
    def state(self, tmp_path):
        return connect_state(type="versioned", storage="disk", path=str(tmp_path / "state"))
