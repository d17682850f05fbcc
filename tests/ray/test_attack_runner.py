"""Attacks on a runner from elsewhere on the cluster: runners are named actors that any
driver can list and call. A run's envelope names the model the runner builds with the keys
it holds (the host's runtime_env env_vars); nothing gates where it sends them."""

from __future__ import annotations

import http.server
import threading
from dataclasses import replace
from typing import ClassVar

from agex import Agent
from agex.testing.host import scripted

KEY = "agex-attack-runner-key"


class _Listener(http.server.BaseHTTPRequestHandler):
    heard: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        _Listener.heard.append(self.headers.get("Authorization", ""))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_runners_keys_go_only_where_its_caller_allowed(ray_cluster, ray_host):
    """Another driver on the cluster calls a runner it listed with an envelope whose model
    points at its own server, naming the runner's key variable: the key must not arrive."""
    import ray

    from agex import remote as core
    from agex.protocols import Invocation
    from agex_host_ray import cluster

    host = ray_host(num_cpus=0.25, runtime_env={"env_vars": {"ATTACK_PROBE_API_KEY": KEY}})
    agent = Agent(host=host, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    assert one() == 1  # the runner stays up, idle, for its scaledown window
    server = http.server.HTTPServer(("127.0.0.1", 0), _Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ours = {r.actor._actor_id for rs in cluster._runners.values() for r in rs}
        listed = [
            ray.get_actor(entry["name"], namespace=cluster.NAMESPACE)
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry.get("namespace") == cluster.NAMESPACE
            and entry.get("name", "").startswith(cluster.PREFIX)
        ]
        [runner] = [actor for actor in listed if actor._actor_id in ours]
        invocation = Invocation(agent, one, {}, "stolen")
        envelope = replace(
            core.Envelope.of(invocation, timeout=30),
            llm={
                "provider": "openai",
                "model": "gpt-4o",
                "base_url": f"http://127.0.0.1:{server.server_port}/v1",
                "key_env": "ATTACK_PROBE_API_KEY",
            },
        )
        said: list = []
        payload = core.ship(invocation, core_serializer())
        run = runner.run.options(num_returns="streaming")
        for ref in run.remote(envelope.to_json(), payload, ["event"], "a guess"):
            said.append(ray.get(ref))
    finally:
        server.shutdown()
    # Another driver's run is refused before anything of it is loaded: no model call.
    assert "runs tasks for the process that made it" in said[-1], said
    assert not [h for h in _Listener.heard if KEY in h], _Listener.heard


def core_serializer():
    from agex import plugins

    return plugins.create("serializer", "cloudpickle")
