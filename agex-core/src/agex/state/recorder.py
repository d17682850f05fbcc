"""Versioned state for one task, on the side that runs agent code: load the session's
variables at the start, and after every step serialize the variables the step could have
touched, for the other side to commit.

What a step could have touched: the names its code mentions and, transitively, the names
mentioned by the agent's functions, classes and objects among those (the step may call
them), plus every name any agent function rebinds with ``global`` (such a function can be
called through a list, an attribute or a partial the step does not name). Only those are
serialized: a commit costs what the step touched, not the size of the state. (A value held
by two variables and changed through only one of them is stored separately and only where
the step named it; see docs/state.md.)
"""

from __future__ import annotations

import dis
import functools
from collections.abc import Iterable, Mapping
from types import CodeType
from typing import Any

from agex.errors import StateLoadError
from agex.protocols import AgentLike
from agex.sandbox.ownership import agent_class, agent_function
from agex.state.pickling import AgentStateSerializer, loading_into


class Recorder:
    """The agent-code side of versioned state for one run: which variables a step could
    have touched, serialized. Whoever holds the storage commits the bytes without loading
    them."""

    def __init__(self, agent: AgentLike) -> None:
        self.agent = agent
        self.serializer = AgentStateSerializer()
        self._saved: set[str] = set()  # the variables the last commit holds
        # Names some agent function rebinds (``global x``): it may be called from anywhere,
        # through a list, an attribute or a partial, so these are always checked.
        self._rebound: set[str] = set()

    def load(self, blobs: Mapping[str, bytes], namespace: dict[str, Any]) -> dict[str, Any]:
        """The session's variables (checked blobs, by name), loaded for ``namespace``: agent
        functions bound to it."""
        values = {}
        with loading_into(namespace):
            for name, blob in blobs.items():
                if name.startswith(("__", "_agex")):
                    raise StateLoadError(f"the state binds the reserved name {name!r}")
                try:
                    values[name] = self.serializer.loads(blob)
                except Exception as exc:
                    raise StateLoadError(
                        f"variable {name!r} could not be loaded ({type(exc).__name__}: {exc})"
                    ) from exc
        self._saved = set(values)
        self._rebound = _rebinds(values.values())
        return values

    def changes(
        self, code: CodeType, namespace: dict[str, Any]
    ) -> tuple[dict[str, bytes | None], dict[str, str]]:
        """What this step could have touched, serialized (None: removed), and the variables
        that could not be serialized, with why (they are removed too)."""
        touched = _reachable(_mentioned(code), namespace) | self._rebound
        registered = self.agent.policy.names
        changes: dict[str, bytes | None] = {}
        skipped: dict[str, str] = {}
        for name in sorted(touched):
            if name not in namespace:
                if name in self._saved:
                    changes[name] = None
                continue
            value = namespace[name]
            if name.startswith(("__", "_agex")) or registered.get(name) is value:
                continue
            try:
                changes[name] = self.serializer.dumps(value)
            except Exception as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}"
                changes[name] = None  # gone, not its older value
                continue
            self._rebound |= _rebinds([value])
        self._saved |= {n for n, v in changes.items() if v is not None}
        self._saved -= {n for n, v in changes.items() if v is None}
        return changes, skipped


def _reachable(names: frozenset[str], namespace: dict[str, Any]) -> set[str]:
    """The names a step's code mentions, and those mentioned by the agent's functions,
    classes and objects it mentions, which it may call in turn."""
    found, todo = set(names), list(names)
    while todo:
        value = namespace.get(todo.pop())
        if value is None:
            continue
        codes = []
        if agent_function(value):
            codes.append(value.__code__)
        else:
            cls = value if isinstance(value, type) else type(value)
            if agent_class(cls):
                for klass in cls.__mro__:
                    codes += [m.__code__ for m in vars(klass).values() if agent_function(m)]
        for code in codes:
            for name in _mentioned(code) - found:
                found.add(name)
                todo.append(name)
    return found


def _rebinds(values: Iterable[Any]) -> set[str]:
    """The global names the agent functions and classes among ``values`` rebind."""
    names: set[str] = set()
    for value in values:
        if agent_function(value):
            names |= _stored(value.__code__)
        elif agent_class(value):
            for member in vars(value).values():
                if agent_function(member):
                    names |= _stored(member.__code__)
    return names


@functools.lru_cache(maxsize=1024)
def _stored(code: CodeType) -> frozenset[str]:
    names = {
        i.argval
        for i in dis.get_instructions(code)
        if i.opname in ("STORE_GLOBAL", "DELETE_GLOBAL")
    }
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _stored(const)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def _mentioned(code: CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _mentioned(const)
    return frozenset(names)
