"""Stores: one storage per (provider, path), paths confined inside a root, handed to the loop
(and to the sub-agents its code calls) rather than looked up."""

import asyncio

import pytest

from agex import Agent, connect_llm, connect_state
from agex.errors import StatePathRefused
from agex.hosts import Invocation, Sink
from agex.loop import run_loop
from agex.state.config import StateConfig
from agex.state.pickling import AgentStateSerializer
from agex.state.versioned import VersionedState
from agex.stores import LOCAL, Stores, confined


def block(code: str) -> str:
    return f"Step.\n```python\n{code}\n```"


def test_one_storage_per_provider_and_path() -> None:
    stores = Stores()
    a = stores.storage(StateConfig("versioned", "memory", "a"))
    assert stores.storage(StateConfig("versioned", "memory", "a")) is a
    assert stores.storage(StateConfig("live", "memory", "a")) is a  # the type does not count
    assert stores.storage(StateConfig("versioned", "memory", "b")) is not a
    assert stores.storage(StateConfig("versioned", "memory", None)) is not a
    assert Stores().storage(StateConfig("versioned", "memory", "a")) is not a  # its own
    stores.forget()
    assert stores.storage(StateConfig("versioned", "memory", "a")) is not a


def test_ephemeral_state_keeps_no_storage() -> None:
    with pytest.raises(ValueError, match="ephemeral state keeps no storage"):
        Stores().storage(StateConfig("ephemeral", None, None))


def test_paths_are_confined_inside_the_root(tmp_path) -> None:
    root = tmp_path.resolve()
    stores = Stores(tmp_path)
    assert stores.root == root
    assert confined("/shared/state", root) == str(root / "shared" / "state")
    assert confined("inside/../here", root) == str(root / "here")
    for escape in ("..", "../elsewhere", "a/../../b", "x\0y"):
        with pytest.raises(StatePathRefused):
            confined(escape, root)
    (tmp_path / "door").symlink_to(tmp_path.parent)
    with pytest.raises(StatePathRefused):
        stores.storage(StateConfig("versioned", "memory", "door/out"))
    inside = stores.storage(StateConfig("versioned", "memory", "/same"))
    assert stores.storage(StateConfig("versioned", "memory", "same")) is inside


def test_the_loop_keeps_state_and_its_sub_agents_state_in_the_stores_it_is_given(
    tmp_path,
) -> None:
    stores = Stores(tmp_path)
    specialist = Agent(
        name="specialist-stores",
        state=connect_state(type="versioned", storage="memory", path="/spec"),
        llm=connect_llm(provider="scripted", responses=[block("seen = 1\ntask_success(2)")]),
    )

    @specialist.task
    def helper() -> int:  # type: ignore[empty-body]
        """Help."""

    orchestrator = Agent(
        name="orchestrator-stores",
        state=connect_state(type="versioned", storage="memory", path="/orch"),
        llm=connect_llm(
            provider="scripted", responses=[block("got = helper()\ntask_success(got)")]
        ),
    )
    orchestrator.fn(helper)

    @orchestrator.task
    def main() -> int:  # type: ignore[empty-body]
        """Main."""

    invocation = Invocation(orchestrator, main, {}, "s")
    assert asyncio.run(run_loop(invocation, Sink(), stores)) == 2
    for agent, variable in ((orchestrator, "got"), (specialist, "seen")):
        config = agent.state_config
        there = VersionedState(stores.storage(config), AgentStateSerializer(), agent.name, "s")
        assert variable in there.values()
        here = VersionedState(LOCAL.storage(config), AgentStateSerializer(), agent.name, "s")
        assert here.head() is None  # nothing in this process's own stores
    confined_paths = {path for _, path in stores._made}
    assert confined_paths == {str(tmp_path.resolve() / "orch"), str(tmp_path.resolve() / "spec")}
