"""Versioned state for one task, on the side that runs agent code: load the session's
variables as the task's code comes to need them, and after every step serialize the
variables the step could have touched, for the other side to commit.

What a step could need: the names its code reads and, transitively, the names mentioned by
the agent's functions and classes inside those values (calling them may read or rebind
those). Each stored entry records that reach (``Facts.reach``), so the whole set is known
before anything is loaded; a variable no step can reach is never read, checked or unpickled.
The loaded variables are always closed under reach, so code can only ever find a name it
may use already in the namespace: agent code has no way to list the namespace itself.

What a step could have touched: the names its code mentions and, transitively, the names
mentioned by the agent's functions, classes and objects among those (the step may call
them), plus every name a loaded agent function rebinds with ``global`` (such a function can
be called through a list, an attribute or a partial the step does not name). Only those are
serialized: a commit costs what the step touched, not the size of the state. (A value held
by two variables and changed through only one of them is stored separately and only where
the step named it; see docs/state.md.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from types import CodeType
from typing import Any

from agex.errors import StateLoadError
from agex.protocols import AgentLike
from agex.sandbox.ownership import agent_class, agent_function
from agex.state.names import mentioned, reach, reads, rebinds
from agex.state.pickling import AgentStateSerializer, loading_into
from agex.state.versioned import SHAPED, Entry, Facts, type_name

#: Types whose values never change in place: one still bound to the object last stored is
#: unchanged, and is not serialized again.
_IMMUTABLE = frozenset({bytes, str, int, float, complex, bool, type(None), range})


class Recorder:
    """The agent-code side of versioned state for one run: which stored variables a step
    needs, and which variables it could have touched, serialized. Whoever holds the storage
    commits the bytes without loading them."""

    def __init__(self, agent: AgentLike) -> None:
        self.agent = agent
        self.serializer = AgentStateSerializer()
        self._saved: set[str] = set()  # the variables the last commit holds
        #: What the commit the run started from says of each stored variable.
        self._index: Mapping[str, Entry] = {}
        #: Stored variables not loaded (yet).
        self._pending: set[str] = set()
        #: The global names each variable loaded or stored in this run may reach.
        self._reach: dict[str, frozenset[str]] = {}
        #: For each class stored by value, the variable whose copy of it is the newest.
        self._newest: dict[str, str] = {}
        #: The classes whose stored state this run applied (see ``loading_into``).
        self._classes: set[type] = set()
        #: Loaded variables whose entry did not record their reach: stored again, with it.
        self._unrecorded: set[str] = set()
        #: For each variable loaded or stored: its value, the size of its bytes and their
        #: hash, so that what a step only read is not stored again.
        self._kept: dict[str, tuple[Any, int, str]] = {}
        # Names some loaded agent function rebinds (``global x``): it may be called from
        # anywhere, through a list, an attribute or a partial, so these are always checked.
        self._rebound: set[str] = set()

    def begin(self, index: Mapping[str, Entry], arguments: Iterable[str]) -> None:
        """The session's variables as the commit the run starts from lists them. A task
        argument of the same name as one replaces it."""
        for name in index:
            if name.startswith(("__", "_agex")):
                raise StateLoadError(f"the state binds the reserved name {name!r}")
        self._index = index
        self._saved = set(index)
        self._pending = set(index) - set(arguments)
        for name in sorted(index, key=lambda n: index[n].depth):
            for cls in index[name].facts.classes:
                self._newest[cls] = name

    def needed(self, code: CodeType) -> list[str]:
        """The stored variables ``code`` could reach that are not loaded yet, and for each
        class stored with them the variable holding its newest copy; newest first (see
        ``loading_into``). Reaching one whose reach is not recorded loads all."""
        pending, index = self._pending, self._index
        found: set[str] = set()
        todo = [n for n in reads(code) if n in pending]
        while todo:
            name = todo.pop()
            if name in found:
                continue
            found.add(name)
            facts = index[name].facts
            if facts.reach is None:
                found = set(pending)
                break
            todo.extend(n for n in facts.reach if n in pending)
            todo.extend(self._newest[c] for c in facts.classes if self._newest[c] in pending)
        return sorted(found, key=lambda n: (-index[n].depth, n))

    def load(
        self, blobs: Mapping[str, bytes | memoryview], namespace: dict[str, Any]
    ) -> dict[str, Any]:
        """Stored variables (checked blobs, by name), loaded for ``namespace``: agent
        functions bound to it."""
        values = {}
        for name, blob in blobs.items():  # names of the index, checked by begin()
            codes: list[CodeType] = []
            try:
                with loading_into(namespace, codes, self._classes):
                    values[name] = self.serializer.loads(blob)
            except Exception as exc:
                raise StateLoadError(
                    f"variable {name!r} could not be loaded ({type(exc).__name__}: {exc})"
                ) from exc
            entry = self._index[name]
            self._rebound |= rebinds(codes)
            self._reach[name] = reach(codes)
            if entry.facts.reach is None:
                self._unrecorded.add(name)
            self._kept[name] = (values[name], len(blob), entry.blob.removeprefix(SHAPED))
        self._pending -= set(values)
        return values

    def changes(
        self, code: CodeType, namespace: dict[str, Any]
    ) -> tuple[dict[str, bytes | None], dict[str, str], dict[str, Facts]]:
        """What this step could have touched, serialized (None: removed), the variables
        that could not be serialized, with why (they are removed too), and what is known of
        each value serialized."""
        touched = _reachable(mentioned(code), namespace) | self._rebound | self._unrecorded
        todo = list(touched)
        while todo:  # what the agent code inside them may have changed, too
            for name in self._reach.get(todo.pop(), ()):
                if name not in touched:
                    touched.add(name)
                    todo.append(name)
        return self.save(touched, namespace)

    def save(
        self, touched: set[str], namespace: dict[str, Any]
    ) -> tuple[dict[str, bytes | None], dict[str, str], dict[str, Facts]]:
        """The variables ``touched`` serialized, as :meth:`changes` returns them (also how a
        new session's ``init`` is first stored)."""
        registered = self.agent.policy.names
        changes: dict[str, bytes | None] = {}
        skipped: dict[str, str] = {}
        facts: dict[str, Facts] = {}
        for name in sorted(touched):
            if name not in namespace:
                if name in self._saved and name not in self._pending:
                    changes[name] = None
                    self._kept.pop(name, None)
                continue
            value = namespace[name]
            if name.startswith(("__", "_agex")) or registered.get(name) is value:
                continue
            self._pending.discard(name)  # bound by the step itself, never loaded
            last = None if name in self._unrecorded else self._kept.get(name)
            if last is not None and last[0] is value and type(value) in _IMMUTABLE:
                continue
            try:
                payload, codes, classes = self.serializer.traced(value)
            except Exception as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}"
                changes[name] = None  # gone, not its older value
                self._kept.pop(name, None)
                continue
            digest = hashlib.sha256(payload).hexdigest()
            self._unrecorded.discard(name)
            if last is not None and last[1:] == (len(payload), digest):
                self._kept[name] = (value, *last[1:])
                continue
            changes[name] = payload
            self._kept[name] = (value, len(payload), digest)
            self._reach[name] = uses = reach(codes)
            facts[name] = Facts(type_name(value), uses, frozenset(classes))
            self._rebound |= rebinds(codes)
        self._saved |= {n for n, v in changes.items() if v is not None}
        self._saved -= {n for n, v in changes.items() if v is None}
        return changes, skipped, facts


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
            for name in mentioned(code) - found:
                found.add(name)
                todo.append(name)
    return found
