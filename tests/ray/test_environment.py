"""The runtime environment a ray host infers for an agent: distributions from an index as
pins of this process's versions, agex's own distributions and local modules as py_modules
(with the dist-info folders plugins are found by), never Ray itself; the user's runtime_env
merged in, not replaced; and a pin no node has ending in a clear error, not a hang."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from pathlib import Path

import pytest

from agex import Agent, connect_host, connect_state
from agex.errors import RemoteExecutionError
from agex.testing.host import scripted

HERE = Path(__file__).parent


@pytest.fixture
def tools(monkeypatch):
    """The local helper module, imported as a project imports its own code."""
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("local_tools")


def _agent(host, tools, code="task_success(sections('[b]\\n[a]\\n'))"):
    agent = Agent(host=host, llm=scripted(code))
    agent.fn(tools.sections)

    @agent.task
    def listed() -> list:
        """The sections."""

    return agent, listed


def _pinned(pins) -> dict[str, str]:
    return dict(pin.split("==", 1) for pin in pins)


def test_index_distributions_are_pinned_at_this_process_versions(tools):
    import ray

    agent, _ = _agent(connect_host(provider="ray"), tools)
    agent.fn(ray.util.get_node_ip_address, name="node_ip")
    env = connect_host(provider="ray").runtime_env(agent)
    pinned = _pinned(env.full["pip"])
    assert pinned["iniconfig"] == importlib.metadata.version("iniconfig")  # the helper's
    assert pinned["cloudpickle"] == importlib.metadata.version("cloudpickle")  # always
    for name, version in pinned.items():
        assert importlib.metadata.version(name) == version
    assert "ray" not in pinned  # every node has its own Ray
    assert not any(name.startswith("agex") for name in pinned)  # ours travel as source
    assert env.pins == tuple(env.full["pip"])
    assert "pip" not in env.base  # a node that has them installs nothing


def test_our_distributions_and_local_modules_travel_as_py_modules(tools):
    import agex
    import agex_host_ray

    agent, _ = _agent(connect_host(provider="ray"), tools)
    modules = connect_host(provider="ray").runtime_env(agent).full["py_modules"]
    assert tools.__file__ in modules
    assert str(Path(agex.__file__).parent) in modules
    assert str(Path(agex_host_ray.__file__).parent) in modules
    dist_infos = {Path(m).name.split("-")[0] for m in modules if m.endswith(".dist-info")}
    assert {"agex_core", "agex_host_ray"} <= dist_infos
    assert not any(Path(m).name == "ray" for m in modules)  # the node's own


def test_a_registered_function_from_a_local_module_runs_on_the_cluster(ray_host, tools):
    from agex_host_ray import cluster

    host = ray_host()
    _, listed = _agent(host, tools)
    assert listed() == ["a", "b"]
    where = [r.where for rs in cluster._runners.values() for r in rs if r.where]
    assert where
    assert {w["isolation"] for w in where} != {"none"}  # and in a confined worker


def test_the_users_runtime_env_is_merged_not_replaced(tools, tmp_path):
    extra = tmp_path / "extra_module.py"
    extra.write_text("VALUE = 1\n")
    given = {
        "env_vars": {"AGEX_TEST_VAR": "yes"},
        "py_modules": [str(extra)],
        "config": {"setup_timeout_seconds": 120},
    }
    host = connect_host(provider="ray", runtime_env=given)
    agent, _ = _agent(host, tools)
    env = host.runtime_env(agent)
    for full in (env.full, env.base):
        assert full["env_vars"] == given["env_vars"]
        assert full["config"] == given["config"]
        assert str(extra) in full["py_modules"]
        assert tools.__file__ in full["py_modules"]
    assert "iniconfig" in _pinned(env.full["pip"])


@pytest.mark.parametrize("form", ["list", "dict"])
def test_the_users_pins_win_over_ours_for_the_same_name(tools, form):
    theirs = ["cloudpickle==3.0.0", "requests==2.32.3"]
    pip = theirs if form == "list" else {"packages": theirs, "pip_check": False}
    host = connect_host(provider="ray", runtime_env={"pip": pip})
    agent, _ = _agent(host, tools)
    env = host.runtime_env(agent)
    packages = env.full["pip"] if form == "list" else env.full["pip"]["packages"]
    pinned = _pinned(packages)
    assert pinned["cloudpickle"] == "3.0.0"
    assert sum(p.startswith("cloudpickle==") for p in packages) == 1
    assert pinned["requests"] == "2.32.3"
    assert pinned["iniconfig"] == importlib.metadata.version("iniconfig")  # ours stay
    if form == "dict":
        assert env.full["pip"]["pip_check"] is False
    assert env.pins == ()  # theirs makes a virtualenv anyway: ours go in it


def test_env_vars_given_reach_the_runner(ray_cluster, postgres, monkeypatch, tools):
    """Agent code's environment is empty; the runner (which keeps state) gets the host's
    env_vars: the database URL given only there lets postgres state work on the cluster."""
    monkeypatch.setenv("AGEX_POSTGRES_URL", postgres.url)
    host = connect_host(
        provider="ray",
        address=ray_cluster.address,
        runtime_env={"env_vars": {"AGEX_POSTGRES_URL": postgres.url}},
    )
    state = connect_state(type="versioned", storage="postgres", path="tests/ray-env-vars")
    agent = Agent(host=host, state=state, llm=scripted("kept = 5", "task_success(kept)"))
    agent.fn(tools.sections)

    @agent.task
    def keep() -> int:
        """Keep."""

    assert keep(session="env-vars") == 5
    remembered = agent.state("env-vars")
    assert "kept" in remembered.tree(remembered.head())  # written on the cluster


def test_a_pin_the_nodes_lack_is_a_clear_error_not_a_hang(ray_host, tools, monkeypatch):
    from agex.remote import dependencies

    real = dependencies.needs

    def needs_more(agent, tasks=()):
        found = real(agent, tasks)
        pins = tuple(sorted({*found.pins, "agex-no-such-dist==1.0"}))
        return dataclasses.replace(found, pins=pins)

    monkeypatch.setattr(dependencies, "needs", needs_more)
    # Ray tries to set an environment up three times: a short bound on each keeps it quick.
    host = ray_host(runtime_env={"config": {"setup_timeout_seconds": 10}})
    _, listed = _agent(host, tools)
    with pytest.raises(RemoteExecutionError) as caught:
        listed()
    said = str(caught.value)
    assert "could not set up the runtime environment" in said
    assert "install the pinned packages" in said
