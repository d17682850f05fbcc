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

import dis
import functools
import hashlib
from collections.abc import Iterable, Mapping
from types import CodeType
from typing import Any

from agex.errors import StateLoadError
from agex.protocols import AgentLike
from agex.sandbox.ownership import agent_class, agent_function
from agex.state.pickling import AgentStateSerializer, loading_into
from agex.state.versioned import SHAPED, Entry, Facts, type_name

#: Instructions that read a name from the namespace (or need it there, to delete it) ...
_READS = frozenset(
    {"LOAD_NAME", "LOAD_GLOBAL", "DELETE_NAME", "DELETE_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"}
)
#: ... and those that use it at all (not an attribute's name, nor a module's).
_USES = _READS | {"STORE_NAME", "STORE_GLOBAL"}
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
        #: Stored variables not loaded (yet), with their reach (None: not recorded).
        self._pending: dict[str, frozenset[str] | None] = {}
        #: When each stored variable was written (a commit's depth): newest loads first.
        self._depths: dict[str, int] = {}
        #: The classes whose stored state this run applied (see ``loading_into``).
        self._classes: set[type] = set()
        #: The hash of each stored variable's bytes (as the commit the run started from has
        #: them), and for each variable loaded or stored since: its value, the size of its
        #: bytes, and their hash when known. What a step only read is not stored again.
        self._digests: dict[str, str] = {}
        self._kept: dict[str, tuple[Any, int, str | None]] = {}
        # Names some loaded agent function rebinds (``global x``): it may be called from
        # anywhere, through a list, an attribute or a partial, so these are always checked.
        self._rebound: set[str] = set()

    def begin(self, index: Mapping[str, Entry], arguments: Iterable[str]) -> None:
        """The session's variables as the commit the run starts from lists them. A task
        argument of the same name as one replaces it."""
        for name in index:
            if name.startswith(("__", "_agex")):
                raise StateLoadError(f"the state binds the reserved name {name!r}")
        self._saved = set(index)
        self._digests = {n: e.blob.removeprefix(SHAPED) for n, e in index.items()}
        self._depths = {n: e.depth for n, e in index.items()}
        self._pending = {n: e.facts.reach for n, e in index.items()}
        for name in arguments:
            self._pending.pop(name, None)

    def needed(self, code: CodeType) -> list[str]:
        """The stored variables ``code`` could reach that are not loaded yet, newest
        first (see ``loading_into``). Reaching one whose reach is not recorded loads all."""
        pending = self._pending
        found: set[str] = set()
        todo = [n for n in _reads(code) if n in pending]
        while todo:
            name = todo.pop()
            if name in found:
                continue
            found.add(name)
            reach = pending[name]
            if reach is None:
                found = set(pending)
                break
            todo.extend(n for n in reach if n in pending and n not in found)
        return sorted(found, key=lambda n: (-self._depths.get(n, 0), n))

    def load(
        self, blobs: Mapping[str, bytes | memoryview], namespace: dict[str, Any]
    ) -> dict[str, Any]:
        """Stored variables (checked blobs, by name), loaded for ``namespace``: agent
        functions bound to it."""
        values = {}
        for name, blob in blobs.items():
            if name.startswith(("__", "_agex")):
                raise StateLoadError(f"the state binds the reserved name {name!r}")
            codes: list[CodeType] = []
            try:
                with loading_into(namespace, codes, self._classes):
                    values[name] = self.serializer.loads(blob)
            except Exception as exc:
                raise StateLoadError(
                    f"variable {name!r} could not be loaded ({type(exc).__name__}: {exc})"
                ) from exc
            self._rebound |= _rebinds(codes)
            self._kept[name] = (values[name], len(blob), self._digests.get(name))
        for name in values:
            self._pending.pop(name, None)
        return values

    def changes(
        self, code: CodeType, namespace: dict[str, Any]
    ) -> tuple[dict[str, bytes | None], dict[str, str], dict[str, Facts]]:
        """What this step could have touched, serialized (None: removed), the variables
        that could not be serialized, with why (they are removed too), and what is known of
        each value serialized."""
        touched = _reachable(_mentioned(code), namespace) | self._rebound
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
            self._pending.pop(name, None)  # bound by the step itself, never loaded
            last = self._kept.get(name)
            if last is not None and last[0] is value and type(value) in _IMMUTABLE:
                continue
            try:
                payload, codes = self.serializer.traced(value)
            except Exception as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}"
                changes[name] = None  # gone, not its older value
                self._kept.pop(name, None)
                continue
            if last is not None and _same(payload, last):
                self._kept[name] = (value, last[1], last[2])
                continue
            changes[name] = payload
            self._kept[name] = (value, len(payload), None)
            facts[name] = Facts(type_name(value), _reach(codes))
            self._rebound |= _rebinds(codes)
        self._saved |= {n for n, v in changes.items() if v is not None}
        self._saved -= {n for n, v in changes.items() if v is None}
        return changes, skipped, facts


def _same(payload: bytes, stored: tuple[Any, int, str | None]) -> bool:
    """Whether ``payload`` holds the bytes last stored (compared by their hash, when the
    sizes match and the hash is known)."""
    _, size, digest = stored
    return (
        digest is not None
        and len(payload) == size
        and (hashlib.sha256(payload).hexdigest() == digest)
    )


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


def _rebinds(codes: Iterable[CodeType]) -> set[str]:
    """The global names the agent code ``codes`` rebinds."""
    names: set[str] = set()
    for code in codes:
        names |= _stored(code)
    return names


def _reach(codes: Iterable[CodeType]) -> frozenset[str]:
    """The global names the agent code ``codes`` uses."""
    names: set[str] = set()
    for code in codes:
        names |= _uses(code)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def _reads(code: CodeType) -> frozenset[str]:
    """The names a step's code reads (one it only binds need not be loaded first), and
    every global name its functions and classes use."""
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _READS}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _uses(const)
    return frozenset(names)


@functools.lru_cache(maxsize=1024)
def _uses(code: CodeType) -> frozenset[str]:
    names = {i.argval for i in dis.get_instructions(code) if i.opname in _USES}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _uses(const)
    return frozenset(names)


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
