"""What counts as the agent's own: classes built by agent code, functions compiled from it.

The agent may do as it likes with its own objects (private attributes, writes, decorators
that change them); everything else is the host's and goes through the policy.
"""

from __future__ import annotations

from typing import Any

#: The file name every piece of agent code is compiled under.
AGENT_FILENAME = "<agent>"


def agent_class(cls: Any) -> bool:
    """Built by a class statement in agent code (the sandbox marks each one)."""
    return isinstance(cls, type) and bool(cls.__dict__.get("__agex_agent__"))


def agent_function(obj: Any) -> bool:
    code = getattr(obj, "__code__", None)
    return code is not None and getattr(code, "co_filename", None) == AGENT_FILENAME


def agent_owned(obj: Any) -> bool:
    """An agent class, an instance of one, or an agent function."""
    return agent_class(obj if isinstance(obj, type) else type(obj)) or agent_function(obj)
