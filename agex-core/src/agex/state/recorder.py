"""Versioned state for one task: load the session's variables at the start, and after every
step commit the variables the step could have touched.

What a step could have touched: the names its code mentions, the global names of the
agent's functions and methods (a step may call them), and any name it rebound or deleted.
Only those are serialized, so a commit costs what the step touched, not the size of the
state. (A value held by two variables and changed through only one of them is stored
separately and only where the step named it; see docs/state.md.)
"""

from __future__ import annotations

import functools
from types import CodeType
from typing import TYPE_CHECKING, Any

from agex.sandbox.ownership import agent_class, agent_function
from agex.state.pickling import AgentStateSerializer, loading_into
from agex.state.stores import storage_for
from agex.state.versioned import Committed, VersionedState

if TYPE_CHECKING:
    from agex.agent import Agent


class StepRecorder:
    def __init__(self, agent: Agent, session: str) -> None:
        self.agent = agent
        self.state = VersionedState(
            storage_for(agent.state_config), AgentStateSerializer(), agent.name, session
        )
        self.base = self.state.head()
        self._seen: dict[str, int] = {}

    def load_into(self, namespace: dict[str, Any]) -> None:
        """The session's variables, put into ``namespace`` (agent functions bound to it)."""
        with loading_into(namespace):
            namespace.update(self.state.values(self.base))
        self._seen = self._identities(namespace)

    def commit(self, code: CodeType, namespace: dict[str, Any], events: list[Any]) -> Committed:
        """Commit what this step could have touched, on top of the last commit."""
        now = self._identities(namespace)
        names = _mentioned(code) | self._functions_mention(namespace)
        changed = {name for name in now if name in names or self._seen.get(name) != now[name]}
        removed = [name for name in self._seen if name not in now]
        committed = self.state.commit(
            {name: namespace[name] for name in sorted(changed)}, removed, events, base=self.base
        )
        self.base = committed.id
        self._seen = now
        return committed

    def _identities(self, namespace: dict[str, Any]) -> dict[str, int]:
        registered = self.agent.policy.names
        return {
            name: id(value)
            for name, value in namespace.items()
            if not name.startswith(("__", "_agex")) and registered.get(name) is not value
        }

    def _functions_mention(self, namespace: dict[str, Any]) -> set[str]:
        names: set[str] = set()
        for value in namespace.values():
            if agent_function(value):
                names |= _mentioned(value.__code__)
            elif agent_class(value):
                for member in vars(value).values():
                    if agent_function(member):
                        names |= _mentioned(member.__code__)
        return names


@functools.lru_cache(maxsize=1024)
def _mentioned(code: CodeType) -> frozenset[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _mentioned(const)
    return frozenset(names)
