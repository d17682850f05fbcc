"""The state configuration an agent carries: which kind of memory, kept where, and the
variables a session starts with (``init``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from agex.protocols import StateConfig as StateConfig

#: ephemeral: fresh per task; live: objects kept in this process; versioned: every step a commit.
STATE_TYPES = ("versioned", "live", "ephemeral")

#: What ``init`` may be: the variables themselves, or a function that makes them.
Init = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


def checked_init(init: object) -> Any:
    """``init`` as ``connect_state`` keeps it: a dict (copied, its names checked now) or a
    function (called, and its answer checked, only where the agent's code runs)."""
    if init is None or (callable(init) and not isinstance(init, type)):
        return init
    if isinstance(init, Mapping):
        return dict(_named(init, "init"))
    raise TypeError(
        f"init must be a dict of the variables a session starts with, or a function "
        f"returning one; got {type(init).__name__}"
    )


def seed_values(init: Any) -> dict[str, Any]:
    """The variables ``init`` gives a new session: a copy of the dict (so agent code never
    changes the caller's), or what the function returns, checked. Runs where the agent's
    code runs: the function is the caller's code, and the values are the caller's objects."""
    if init is None:
        return {}
    if isinstance(init, Mapping):
        return copy.deepcopy(dict(init))
    made = init()
    if not isinstance(made, Mapping):
        raise TypeError(
            f"the init function of connect_state returned {type(made).__name__}; it must "
            "return a dict of variable names to values"
        )
    return dict(_named(made, "the dict the init function returned"))


def _named(variables: Mapping[Any, Any], what: str) -> Mapping[str, Any]:
    """``variables`` if every name is one agent code can use as a variable."""
    for name in variables:
        if not isinstance(name, str) or not name.isidentifier():
            raise TypeError(
                f"{what} names its variables with strings that are Python identifiers; got {name!r}"
            )
        if name.startswith(("__", "_agex")):
            raise ValueError(f"{what} names {name!r}, a name reserved for agex; rename it")
    return variables
