"""The ray host's options: each one checked when the host is made, with an error that says
what to give; the host's configuration is plain JSON that makes the same host again; and
each option reaches Ray as Ray takes it (a custom resource places the run, memory in bytes).
"""

from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
import sys
import textwrap
import threading

import pytest

from agex import Agent, ProviderOptionError, connect_host, plugins
from agex.errors import RemoteExecutionError
from agex.testing.host import scripted

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"address": "no-port"}, "address must be"),
        ({"address": "host:99999"}, "address must be"),
        ({"address": "http://host:6379"}, "address must be"),
        ({"address": 6379}, "address must be"),
        ({"num_cpus": -1}, "num_cpus must be a number of CPUs at least 0"),
        ({"num_cpus": math.nan}, "num_cpus must be"),
        ({"num_cpus": math.inf}, "num_cpus must be"),
        ({"num_cpus": True}, "num_cpus must be"),
        ({"num_cpus": "2"}, "num_cpus must be"),
        ({"num_gpus": -0.5}, "num_gpus must be a number of GPUs"),
        ({"num_gpus": False}, "num_gpus must be"),
        ({"memory": 0}, "memory must be a whole number of MiB"),
        ({"memory": -4096}, "memory must be"),
        ({"memory": 1.5}, "memory must be"),
        ({"memory": True}, "memory must be"),
        ({"memory": "4096"}, "memory must be"),
        ({"resources": ["tpu"]}, "resources must be a dict"),
        ({"resources": {"CPU": 1}}, "with num_cpus="),
        ({"resources": {"GPU": 1}}, "with num_gpus="),
        ({"resources": {"memory": 1}}, "with memory="),
        ({"resources": {"object_store_memory": 1}}, "Ray's own"),
        ({"resources": {"": 1}}, "non-empty string"),
        ({"resources": {"tpu": -1}}, "resources['tpu'] must be"),
        ({"resources": {"tpu": math.nan}}, "resources['tpu'] must be"),
        ({"runtime_env": ["pip"]}, "runtime_env must be a dict"),
        ({"runtime_env": {1: "x"}}, "runtime_env must be a dict"),
        ({"runtime_env": {"pip": "numpy"}}, 'runtime_env["pip"] must be a list'),
        ({"runtime_env": {"pip": [1]}}, 'runtime_env["pip"] must be a list'),
        ({"runtime_env": {"pip": {"pip_check": False}}}, 'runtime_env["pip"] must be a list'),
        ({"runtime_env": {"env_vars": {"A": 1}}}, 'runtime_env["env_vars"] must map'),
        ({"runtime_env": {"env_vars": ["A=1"]}}, 'runtime_env["env_vars"] must map'),
        ({"runtime_env": {"py_modules": "mod"}}, 'runtime_env["py_modules"] must be a list'),
        ({"address": "ray://head:10001"}, "Ray Client does not stream from actors"),
        ({"timeout": 0}, "timeout must be a number of seconds above 0"),
        ({"timeout": -1.0}, "timeout must be"),
        ({"timeout": math.nan}, "timeout must be"),
        ({"timeout": 10**8}, "timeout must be"),
        ({"timeout": True}, "timeout must be"),
        ({"concurrency": 0}, "concurrency must be a whole number from 1 to 1000"),
        ({"concurrency": 1001}, "concurrency must be"),
        ({"concurrency": 2.0}, "concurrency must be"),
        ({"concurrency": True}, "concurrency must be"),
        ({"scaledown_window": 0}, "scaledown_window must be a number of seconds"),
        ({"scaledown_window": 2 * 24 * 3600}, "scaledown_window must be"),
        ({"scaledown_window": math.inf}, "scaledown_window must be"),
    ],
)
def test_a_bad_option_is_named_at_connect_host(options, said):
    with pytest.raises(ValueError, match=re.escape(said)) as caught:
        connect_host(provider="ray", **options)
    assert next(iter(options)) in str(caught.value)  # the option is named


def test_an_unknown_option_is_a_provider_option_error():
    with pytest.raises(ProviderOptionError) as caught:
        connect_host(provider="ray", num_cpu=2)
    assert list(caught.value.unknown) == ["num_cpu"]
    assert "Did you mean 'num_cpus'?" in str(caught.value)


@pytest.mark.parametrize("address", [None, "auto", "10.0.0.5:6379", "head:6379", "[::1]:6379"])
def test_good_addresses_are_kept(address):
    assert connect_host(provider="ray", address=address).dump_config()["address"] == address


FULL = {
    "address": "10.0.0.5:6379",
    "num_cpus": 0.5,
    "num_gpus": 1,
    "memory": 4096,
    "resources": {"tpu": 2, "agex-other": 0.5},
    "runtime_env": {"env_vars": {"A": "1"}, "pip": ["requests==2.32.3"]},
    "timeout": 60,
    "concurrency": 3,
    "scaledown_window": 30,
}


@pytest.mark.parametrize("options", [{}, FULL], ids=["defaults", "every-option"])
def test_dump_config_is_plain_json_that_rebuilds_the_same_host(options):
    host = connect_host(provider="ray", **options)
    config = host.dump_config()
    assert json.loads(json.dumps(config)) == config
    assert config["provider"] == "ray"
    again = json.loads(json.dumps(config))
    by_connect = connect_host(**again)
    provider = again.pop("provider")
    by_plugins = plugins.create("host", provider, **again)
    for rebuilt in (by_connect, by_plugins):
        assert type(rebuilt) is type(host)
        assert rebuilt.dump_config() == config


def test_dump_config_says_what_was_given_but_the_variables():
    config = connect_host(provider="ray", **FULL).dump_config()
    assert config["memory"] == 4096  # MiB, as given: bytes only for Ray
    assert config["resources"] == {"agex-other": 0.5, "tpu": 2.0}
    # The variables may hold keys, and the configuration travels with the agent to where
    # agent code runs: they stay here.
    assert config["runtime_env"] == {"pip": ["requests==2.32.3"]}
    assert (config["num_cpus"], config["num_gpus"]) == (0.5, 1.0)


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_making_a_host_does_not_import_ray():
    said = _python(
        """
        import sys
        from agex import Agent, connect_host
        host = connect_host(provider="ray", num_cpus=1, resources={"tpu": 1})
        host.dump_config()
        Agent(host=host)
        print("ray" in sys.modules)
        """
    )
    assert said == "False"


@pytest.fixture(scope="module")
def ran(ray_cluster):
    """A host that has run a task, and the agent it ran."""
    host = connect_host(provider="ray", address=ray_cluster.address)
    agent = Agent(host=host, llm=scripted("task_success(7)"))

    @agent.task
    def seven() -> int:
        """Seven."""

    assert seven() == 7
    return host, agent


def test_a_host_that_has_run_pickles_without_ray_handles(ran):
    host, _ = ran
    data = pickle.dumps(host)
    said = _python(
        f"""
        import pickle, sys
        host = pickle.loads({data!r})
        print(type(host).__name__, "ray" in sys.modules, host.dump_config()["address"])
        """
    )
    assert said == f"RayHost False {host.options.address}"
    assert pickle.loads(data).options == host.options


def test_a_host_naming_another_cluster_is_refused(ran):
    """This process is connected to the session's cluster: a host at another address gets
    an error that says one process reaches one cluster, not a hang or Ray's own error."""
    elsewhere = connect_host(provider="ray", address="127.0.0.1:1")
    agent = Agent(host=elsewhere, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    with pytest.raises(RemoteExecutionError) as caught:
        one()
    said = str(caught.value)
    assert "connected to the Ray cluster at" in said
    assert "'127.0.0.1:1'" in said
    assert "address=None" in said


def test_a_custom_resource_places_the_run_on_the_node_that_has_it(ray_cluster):
    import ray

    from agex_host_ray import cluster

    host = connect_host(provider="ray", address=ray_cluster.address, resources={"agex-other": 1})
    seen: dict[str, float] = {}
    agent = Agent(host=host, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    def on_event(event):
        # The run holds its runner, which holds the resource.
        seen.setdefault("available", ray.available_resources().get("agex-other", 0.0))

    assert one(on_event=on_event) == 1
    assert seen["available"] <= 3.0  # of the second node's 4
    placed = [
        runner.where["node"]
        for key, runners in cluster._runners.items()
        if '"agex-other": 1.0' in key
        for runner in runners
        if runner.where
    ]
    assert placed, cluster._runners.keys()
    assert set(placed) == {ray_cluster.second.node_id}


def test_memory_reaches_ray_in_bytes(ray_cluster):
    """memory= is MiB, as for the modal host; Ray's actor option is bytes: the cluster's
    free memory drops by exactly that while the run's runner lives."""
    import ray

    host = connect_host(provider="ray", address=ray_cluster.address, memory=77)
    agent = Agent(host=host, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    before = ray.available_resources()["memory"]
    during: list[float] = []
    assert one(on_event=lambda _: during.append(ray.available_resources()["memory"])) == 1
    assert before - during[0] == 77 * MiB


def test_resources_no_node_has_end_in_an_error_not_a_wait(ray_cluster):
    import ray

    from agex_host_ray import cluster

    host = connect_host(
        provider="ray", address=ray_cluster.address, resources={"agex-nowhere": 1}, timeout=5
    )
    agent = Agent(host=host, llm=scripted("task_success(1)"))

    @agent.task
    def one() -> int:
        """One."""

    box: dict[str, BaseException] = {}

    def call():
        try:
            one()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(30)  # generous: the host's timeout is 5 s
    try:
        assert not thread.is_alive(), "the task still waits for a node with agex-nowhere"
        assert isinstance(box.get("error"), RemoteExecutionError)
        assert "did not start within the host's 5s timeout" in str(box["error"])
    finally:
        for key, runners in list(cluster._runners.items()):
            if "agex-nowhere" in key:
                for runner in runners:
                    cluster.drop(ray, runner)
        thread.join(30)
