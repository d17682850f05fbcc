"""Agent functions survive serialization as agent functions, whatever the serializer does
to code objects' file names."""

from agex.sandbox import Policy, Sandbox
from agex.sandbox.ownership import AGENT_FILENAME, agent_function
from agex.state.pickling import AgentStateSerializer, loading_into


def test_a_loaded_agent_function_is_still_the_agents_and_bound_to_its_namespace() -> None:
    sandbox = Sandbox(Policy())
    namespace = sandbox.namespace()
    sandbox.run("def outer(n):\n    inner = lambda: n * 2\n    return inner\n", namespace)
    serializer = AgentStateSerializer()
    data = serializer.dumps(namespace["outer"])

    fresh = sandbox.namespace()
    with loading_into(fresh):
        loaded = serializer.loads(data)
    assert loaded.__code__.co_filename == AGENT_FILENAME
    assert agent_function(loaded)
    assert loaded.__globals__ is fresh
    inner = loaded(21)
    assert agent_function(inner)  # code made by loaded code is the agent's too
    assert inner() == 42
    # Saved again after loading, it is still rebuilt into the namespace it loads into.
    again = serializer.dumps(loaded)
    other = sandbox.namespace()
    with loading_into(other):
        assert serializer.loads(again).__globals__ is other
