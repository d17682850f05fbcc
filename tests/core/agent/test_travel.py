"""An agent travels (to a server, a Modal container, a worker) with its host's and model's
configuration, not the objects: the providers build them again where it lands."""

import asyncio
from types import SimpleNamespace
from typing import Any

import cloudpickle
import pytest

from agex import Agent, connect_host, connect_llm, connect_state, hookimpl, plugins
from agex.errors import RebuildError
from agex.hosts import Host
from agex.hosts.local import LocalHost
from agex.llm.scripted import ScriptedLLM
from agex.stores import LOCAL


def block(code: str) -> str:
    return f"Step.\n```python\n{code}\n```"


def scripted(*codes: str) -> Any:
    return connect_llm(provider="scripted", responses=[block(c) for c in codes], chunk_size=3)


def travel(value: Any) -> Any:
    return cloudpickle.loads(cloudpickle.dumps(value))


class FarHost(Host):
    """A host with options, and a secret that stays out of its configuration."""

    provider = "far"

    def __init__(self, place: str = "nowhere", secret: str | None = None) -> None:
        self.place, self.secret = place, secret

    def validate(self, agent: Any) -> None:
        pass

    async def arun(self, invocation: Any, sink: Any) -> Any:
        return f"ran at {self.place}"

    def cancel(self, agent: Any, session: str) -> int:
        return 0

    def dump_config(self) -> dict[str, Any]:
        return {"provider": self.provider, "place": self.place}


class Picky:
    """A model whose configuration does not rebuild it: its factory refuses it."""

    provider = "picky"
    model = None

    async def stream(self, messages: Any) -> Any:
        yield block("task_success(0)")

    def config(self) -> dict[str, Any]:
        return {"provider": self.provider, "colour": "blue"}


def picky(**options: Any) -> Picky:
    if options.get("colour") != "red":
        raise ValueError("picky models only come in red")
    return Picky()


@pytest.fixture
def far(register_plugin) -> None:
    plugin = SimpleNamespace(
        agex_register_hosts=hookimpl(lambda registry: registry.register("far", FarHost)),
        agex_register_llms=hookimpl(lambda registry: registry.register("picky", picky)),
    )
    register_plugin(plugin, "far-plugin")


def test_an_agent_round_trips_with_its_host_and_model_rebuilt() -> None:
    agent = Agent(name="traveller", llm=scripted("task_success(1)"), max_iterations=3)
    copy = travel(agent)
    assert isinstance(copy.host, LocalHost)
    assert copy.host is not agent.host
    assert isinstance(copy.llm, ScriptedLLM)
    assert copy.llm is not agent.llm
    assert copy.llm.config() == agent.llm.config()
    assert (copy.name, copy.max_iterations) == ("traveller", 3)
    assert copy.state_config == agent.state_config


def test_an_agent_without_a_model_stays_without_one() -> None:
    assert travel(Agent()).llm is None


def test_the_pickle_holds_configurations_not_objects(far) -> None:
    agent = Agent(host=FarHost("moon", secret="hunter2"), llm=scripted("task_success(1)"))
    state = agent.__getstate__()
    assert state["_configs"]["host"] == {"provider": "far", "place": "moon"}
    assert state["_configs"]["llm"]["provider"] == "scripted"
    assert "_host" not in state
    assert "_llm" not in state
    assert b"hunter2" not in cloudpickle.dumps(agent)


def test_a_sub_agents_host_is_rebuilt_from_its_configuration(far) -> None:
    specialist = Agent(name="specialist", host=connect_host("far", place="gpu-box"))

    @specialist.task
    def crunch(n: int) -> str:  # type: ignore[empty-body]
        """Crunch."""

    orchestrator = Agent(name="orchestrator", llm=scripted("task_success(crunch(1))"))
    orchestrator.fn(crunch)

    @orchestrator.task
    def main() -> str:  # type: ignore[empty-body]
        """Main."""

    landed = travel(main)
    registered = landed.agent.policy.names["crunch"]
    (sub,) = [
        c.cell_contents.agent for c in registered.__closure__ if hasattr(c.cell_contents, "agent")
    ]
    assert sub.name == "specialist"
    assert isinstance(sub.host, FarHost)
    assert sub.host is not specialist.host
    assert sub.host.place == "gpu-box"
    assert landed() == "ran at gpu-box"  # the sub-agent's own host ran it


def test_a_scripted_model_continues_from_its_position() -> None:
    agent = Agent(llm=scripted("task_success(1)", "task_success(2)", "task_success(3)"))

    @agent.task
    def step() -> int:  # type: ignore[empty-body]
        """Step."""

    assert step() == 1
    landed = travel(step)
    assert landed.agent.llm.position == 1
    assert landed() == 2
    assert landed() == 3
    assert step() == 2  # the original model went on from where it was


def test_no_api_key_travels(monkeypatch) -> None:
    from agex.llm.openai import OpenAILLM

    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key")
    llm = OpenAILLM(model="gpt-test", base_url="http://localhost:1/v1", temperature=0.5)
    agent = Agent(llm=llm)
    data = cloudpickle.dumps(agent)
    assert b"sk-very-secret-key" not in data
    assert agent.__getstate__()["_configs"]["llm"] == {
        "provider": "openai",
        "model": "gpt-test",
        "base_url": "http://localhost:1/v1",
        "timeout": 120.0,
        "max_retries": 3,
        "temperature": 0.5,
    }


def test_a_model_its_configuration_cannot_rebuild_fails_naming_the_provider(far) -> None:
    data = cloudpickle.dumps(Agent(name="fussy", llm=Picky()))
    landed = cloudpickle.loads(data)  # built where it is first used, not where it lands
    with pytest.raises(RebuildError, match=r"llm of agent 'fussy' \(provider 'picky'\).*red"):
        landed.llm  # noqa: B018


def test_a_provider_missing_where_the_agent_lands_is_named(register_plugin) -> None:
    plugin = SimpleNamespace(
        agex_register_hosts=hookimpl(lambda registry: registry.register("far", FarHost))
    )
    name = register_plugin(plugin, "far-only-here")
    data = cloudpickle.dumps(Agent(name="lost", host=FarHost("x")))
    plugins.unregister(name)
    try:
        landed = cloudpickle.loads(data)
        with pytest.raises(RebuildError, match=r"host of agent 'lost' \(provider 'far'\)"):
            landed.host  # noqa: B018
    finally:
        plugins.register(plugin, name)  # the fixture unregisters it


def test_a_model_without_a_configuration_cannot_travel() -> None:
    class Bare:
        provider, model = "bare", None

        async def stream(self, messages: Any) -> Any:
            yield block("task_success(0)")

    agent = Agent(name="plain", llm=Bare())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"llm of agent 'plain' \(Bare\) cannot travel"):
        cloudpickle.dumps(agent)


def test_the_host_default_methods() -> None:
    host = FarHost()
    agent = Agent(host=host)
    assert host.warmup(agent) is None
    assert host.validate_subagent(agent, agent) is None
    assert host.state_storage(agent, "s") is None  # kept by this process
    assert asyncio.run(host.arun(None, None)) == "ran at nowhere"  # type: ignore[arg-type]


def test_state_of_a_host_that_keeps_none_is_this_process(tmp_path) -> None:
    agent = Agent(
        name="kept-here",
        host=FarHost(),
        state=connect_state(type="versioned", storage="memory", path=str(tmp_path)),
    )
    assert agent.state("s").storage is LOCAL.storage(agent.state_config)
