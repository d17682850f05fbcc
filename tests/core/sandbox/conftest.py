import textwrap

import pytest

from agex.sandbox import Policy, Sandbox

from . import tools


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


@pytest.fixture
def attempt(policy, tmp_path):
    """Run agent code that tries a way out; assert that it failed with ``expect`` and that
    nothing got out: no file written at ``PATH``, nothing stored in ``reached``. ``TOOLS`` in
    the code names the registered test module. The policy is the ``policy`` fixture unless
    the test gives one."""
    marker = tmp_path / "escaped"

    def attempt(code: str, given: Policy | None = None, expect=Exception):
        source = textwrap.dedent(code).replace("PATH", repr(str(marker)))
        source = source.replace("TOOLS", tools.__name__)
        sandbox = Sandbox(policy if given is None else given)
        namespace = sandbox.namespace()
        result = sandbox.run(source, namespace)
        assert not marker.exists(), "the escape wrote its file"
        assert "reached" not in namespace, f"the escape reached {namespace['reached']!r}"
        assert result.error is not None, "the attempt raised no error"
        assert isinstance(result.exception, expect), result.error
        return result

    return attempt
