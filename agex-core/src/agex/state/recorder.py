"""Versioned state for one task: load the session's variables at the start, and after every
step commit the variables the step could have touched.

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
from collections.abc import Iterable
from types import CodeType
from typing import Any

from agex.protocols import AgentLike, Storage
from agex.sandbox.ownership import agent_class, agent_function
from agex.state.pickling import AgentStateSerializer, loading_into
from agex.state.versioned import Committed, VersionedState


class StepRecorder:
    """The versioned state of ``agent`` in ``session``, kept in ``storage`` (the caller
    chooses it: see ``agex.stores``)."""

    def __init__(self, agent: AgentLike, session: str, storage: Storage) -> None:
        self.agent = agent
        self.state = VersionedState(storage, AgentStateSerializer(), agent.name, session)
        self.base = self.state.head()
        self._saved: set[str] = set()  # the variables the last commit holds
        # Names some agent function rebinds (``global x``): it may be called from anywhere,
        # through a list, an attribute or a partial, so these are always checked.
        self._rebound: set[str] = set()

    def load_into(self, namespace: dict[str, Any]) -> None:
        """The session's variables, put into ``namespace`` (agent functions bound to it)."""
        with loading_into(namespace):
            values = self.state.values(self.base)
        namespace.update(values)
        self._saved = set(values)
        self._rebound = _rebinds(values.values())

    def commit(self, code: CodeType, namespace: dict[str, Any], events: list[Any]) -> Committed:
        """Commit what this step could have touched, on top of the last commit."""
        touched = _reachable(_mentioned(code), namespace) | self._rebound
        registered = self.agent.policy.names
        changed = {
            name: namespace[name]
            for name in sorted(touched)
            if name in namespace
            and not name.startswith(("__", "_agex"))
            and registered.get(name) is not namespace[name]
        }
        removed = sorted(name for name in touched & self._saved if name not in namespace)
        committed = self.state.commit(changed, removed, events, base=self.base)
        self.base = committed.id
        self._rebound |= _rebinds(changed.values())
        self._saved |= changed.keys() - committed.skipped.keys()
        self._saved -= set(removed) | committed.skipped.keys()
        return committed


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
