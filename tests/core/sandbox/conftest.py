import pytest

from agex.sandbox import Policy, Sandbox


@pytest.fixture
def policy() -> Policy:
    return Policy()


@pytest.fixture
def run(policy):
    """Run agent code and return the namespace; fail with the agent's traceback on error."""

    def run(code: str, **variables):
        sandbox = Sandbox(policy)
        namespace = sandbox.namespace(variables)
        result = sandbox.run(code, namespace)
        assert result.error is None, result.error
        namespace["_output"] = result.output
        return namespace

    return run
