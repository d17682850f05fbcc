"""Versioned state: every loop step a commit, content-addressed over any storage.

Layout in the storage:

- ``b/<sha256>``: one serialized value (a blob), shared by every variable, commit and session
  that holds the same bytes. With a key (``AGEX_STATE_KEY``) it is prefixed with an HMAC,
  checked before anything is unpickled.
- ``c/<id>``: a commit, as JSON: its parent, the variables it changed (name -> its
  :class:`Entry`, or removed), the step's events, and every ``SNAPSHOT_EVERY`` commits the
  whole index.
- ``h/<namespace>/<session>``: the session's head commit, moved only by compare-and-set, and
  only after the commit and its blobs are written, so a crash at any point leaves the head
  on a complete commit.

Blobs and commits never change once written (``IMMUTABLE``), so a storage may cache them;
heads must always be read through.

A commit writes only the values it is given (those the step touched), so its cost follows
what changed, not the size of the state. An entry also says what is known of its value
without loading it (its type, the names the agent's code inside it mentions), so a task
loads only the variables its code can reach (see ``state.recorder``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType, ModuleType
from typing import Any, SupportsIndex, overload
from urllib.parse import quote

from agex.errors import StateConflict, StateIntegrityError, StateLoadError
from agex.protocols import Serializer, Storage
from agex.state.names import reach
from agex.state.turn import Turn
from agex.storage import put_and_set

KEY_ENV = "AGEX_STATE_KEY"
#: ``base=HEAD``: commit on top of whatever the head is now.
HEAD = object()
_MAC = 32  # bytes of HMAC-SHA256
#: How a value a worker process serialized is named (``b/w/<sha256>``): apart from the
#: values this process wrote, so that it is never loaded outside a worker.
SHAPED = "w/"
#: Key prefixes whose values never change once written (blobs, commits).
IMMUTABLE = ("b/", "c/")


#: Every this many commits, one records the whole name -> blob index; the others record only
#: what changed, so a commit costs what the step touched.
SNAPSHOT_EVERY = 64


@dataclass(frozen=True)
class Facts:
    """What is known of a stored value without loading it."""

    #: Its type's name, for the model's prompt.
    type: str = ""
    #: Every global name the agent's functions and classes inside it mention: what calling
    #: them may read or rebind. None: not recorded (a value stored by an older agex, or by
    #: another serializer): reaching it means loading everything.
    reach: frozenset[str] | None = None
    #: The classes the agent defined that are stored with it, each with its state then
    #: (by cloudpickle's id for the class).
    classes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Entry:
    """One variable in a commit: its value's blob (by hash), and its facts."""

    blob: str
    facts: Facts = Facts()
    #: The depth of the commit that wrote it.
    depth: int = 0

    def record(self) -> Any:
        if self.facts.reach is None and not self.facts.type and not self.depth:
            return self.blob
        out: dict[str, Any] = {"blob": self.blob, "type": self.facts.type, "depth": self.depth}
        if self.facts.reach is not None:
            out["reach"] = sorted(self.facts.reach)
        if self.facts.classes:
            out["classes"] = sorted(self.facts.classes)
        return out

    @classmethod
    def parse(cls, record: Any) -> Entry:
        if isinstance(record, str):  # as written before entries had facts
            return cls(record)
        if not isinstance(record, dict) or not isinstance(record.get("blob"), str):
            raise StateIntegrityError(f"a commit holds a malformed entry: {str(record)[:80]}")
        reach, depth = record.get("reach"), record.get("depth", 0)
        classes = record.get("classes", [])
        if (
            type(depth) is not int
            or not _names(classes)
            or (reach is not None and not _names(reach))
        ):
            raise StateIntegrityError(f"a commit holds a malformed entry: {str(record)[:80]}")
        return cls(
            record["blob"],
            Facts(
                str(record.get("type", "")),
                None if reach is None else frozenset(reach),
                frozenset(classes),
            ),
            depth,
        )


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    changes: Mapping[str, Entry | None]  # variable -> its entry, or None when removed
    snapshot: Mapping[str, Entry] | None  # the whole index, on some commits
    depth: int
    events: tuple[Any, ...]
    time: float
    #: The task run it belongs to (None: written outside a task).
    task: str | None = None
    #: Whether that run finished (its last commit became the session's state). Known only
    #: from ``history()``.
    completed: bool = True


class History(list[Commit]):
    """A session's commits, newest first, as :meth:`VersionedState.history` returns them: a
    list, which a notebook shows as a table (see ``agex.notebook``), and so is a slice of it
    (``history()[:5]``, the newest five)."""

    @overload
    def __getitem__(self, index: SupportsIndex) -> Commit: ...
    @overload
    def __getitem__(self, index: slice) -> History: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Commit | History:
        if isinstance(index, slice):
            return History(super().__getitem__(index))
        return super().__getitem__(index)

    def _repr_html_(self) -> str:
        from agex.notebook import history_html

        return history_html(self)

    def _repr_markdown_(self) -> str:
        from agex.notebook import history_markdown

        return history_markdown(self)


@dataclass(frozen=True)
class Shown:
    """A stored value that cannot be brought back here, as what it is: its type and how it
    prints (an isolated run's function, say, which only a worker may load)."""

    type: str
    text: str

    def __repr__(self) -> str:
        return f"<{self.type}: {self.text}>"


@dataclass(frozen=True)
class Committed:
    """What a commit did: its id, and the variables it had to leave out, with why."""

    id: str
    skipped: Mapping[str, str] = field(default_factory=dict)


class VersionedState:
    """The variables of one agent namespace in one session."""

    def __init__(
        self,
        storage: Storage,
        serializer: Serializer,
        namespace: str,
        session: str,
        key: bytes | None = None,
        load_shaped: Callable[[dict[str, bytes]], dict[str, Any]] | None = None,
        sandbox_namespace: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if not namespace or not session:
            raise ValueError("a namespace and a session are needed")
        self.storage = storage
        self.serializer = serializer
        #: Loads values a worker process wrote, in a worker (see :meth:`values`).
        self.load_shaped = load_shaped
        #: A fresh sandbox namespace to load values into, so that the agent's functions and
        #: classes among them come back bound to it (see :meth:`values`).
        self.sandbox_namespace = sandbox_namespace
        self.namespace = namespace
        self.session = session
        env_key = os.environ.get(KEY_ENV)
        if key is None and env_key is not None:
            if not env_key:
                raise ValueError(f"{KEY_ENV} is set but empty; unset it or give it a secret")
            key = env_key.encode()
        self.key = key
        # Blobs signed under a key live apart from unsigned ones (and other keys'), so one
        # writer can never overwrite another's copy of the same value.
        self._blobs = "b/" if key is None else f"b/{hashlib.sha256(key).hexdigest()[:16]}/"
        #: Where the session's head is kept.
        self.head_key = f"h/{quote(namespace, safe='')}/{quote(session, safe='')}"
        # Set once the session has had a head: a head gone missing is then damage, not a
        # new session.
        self._had = "s/" + self.head_key.removeprefix("h/")
        self._commits: dict[str, Commit] = {}
        self._index: tuple[str | None, dict[str, Entry]] = (None, {})  # the newest one built

    # -- reading -----------------------------------------------------------------------

    def head(self) -> str | None:
        """The session's head commit; None for a session that never had one."""
        raw = self.storage.get(self.head_key)
        if raw is None:
            if self.storage.get(self._had) is not None:
                raise StateIntegrityError(
                    f"the head of session {self.session!r} of {self.namespace!r} is missing, "
                    "though the session has commits (the store lost or hid it); check the "
                    "store with `agex state check`, and move the session back with "
                    "agent.state(session).revert(<a commit from history>)"
                )
            return None
        try:
            commit_id = raw.decode("ascii").partition(":")[0]
        except UnicodeDecodeError:
            commit_id = ""
        if not _COMMIT_ID.fullmatch(commit_id):
            raise StateIntegrityError(
                f"the head of session {self.session!r} of {self.namespace!r} is damaged (it "
                f"holds {raw[:80]!r}); check the store with `agex state check`"
            )
        if raw != self._head_value(commit_id):
            raise StateIntegrityError(
                f"the head of session {self.session!r} failed its integrity check under "
                f"{KEY_ENV}: it was moved by a writer without the key"
            )
        self._linked(commit_id, f"the head of session {self.session!r}")
        return commit_id

    def _head_value(self, commit_id: str) -> bytes:
        """What the head holds: the commit id, and with a key an HMAC binding it to this
        namespace and session, so it cannot be pointed at another session's commits."""
        if self.key is None:
            return commit_id.encode()
        bound = f"{self.namespace}\0{self.session}\0{commit_id}".encode()
        return f"{commit_id}:{hmac.new(self.key, bound, hashlib.sha256).hexdigest()}".encode()

    def commit_of(self, commit_id: str) -> Commit:
        """The commit ``commit_id``; KeyError if the store has none of that id."""
        found = self._commits.get(commit_id)
        if found is None:
            raw = self.storage.get(f"c/{commit_id}")
            if raw is None:
                raise KeyError(f"no commit {commit_id!r} in this state")
            raw = self._verified(raw, f"commit {commit_id}")
            if hashlib.sha256(raw).hexdigest() != commit_id:
                raise StateIntegrityError(f"commit {commit_id} does not match its id")
            try:
                found = _commit(commit_id, json.loads(raw))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise StateIntegrityError(
                    f"commit {commit_id} is malformed ({type(exc).__name__}: {exc})"
                ) from None
            self._commits[commit_id] = found
        return found

    def _linked(self, commit_id: str, by: str) -> Commit:
        """A commit the store itself points at (from ``by``): missing, it is damage."""
        try:
            return self.commit_of(commit_id)
        except KeyError:
            raise StateIntegrityError(
                f"commit {commit_id[:12]}, which {by} points to, is missing from the store; "
                "check it with `agex state check`"
            ) from None

    def tree(self, commit_id: str | None) -> dict[str, Entry]:
        """The name -> entry index at a commit: its nearest snapshot plus the changes since."""
        if commit_id is None:
            return {}
        if self._index[0] == commit_id:
            return dict(self._index[1])
        chain, commit = [], self.commit_of(commit_id)
        while True:
            if commit.snapshot is not None:
                index = dict(commit.snapshot)
                break
            chain.append(commit)
            if commit.parent is None:
                index = {}
                break
            commit = self._linked(commit.parent, f"commit {commit.id[:12]}")
        for commit in reversed(chain):
            _apply(index, commit.changes)
        self._index = (commit_id, index)
        return dict(index)

    def raw(self, commit_id: str | None = None, *, shaped: bool = False) -> dict[str, bytes]:
        """The variables at a commit (default: the head) as their checked bytes, not loaded:
        for the side that loads them (see :meth:`fetch`)."""
        commit_id = commit_id or self.head()
        index = self.tree(commit_id)
        return self.fetch(index, list(index), commit_id, shaped=shaped)

    def fetch(
        self,
        index: Mapping[str, Entry],
        names: Iterable[str],
        commit_id: str | None,
        *,
        shaped: bool = False,
    ) -> dict[str, bytes]:
        """The checked bytes of the variables ``names`` of ``index`` (the index at
        ``commit_id``); names it does not hold are left out. Values a worker process
        serialized (:data:`SHAPED`) are handed out only for one (``shaped``): loading them
        anywhere else would run what agent code put in them."""
        out = {}
        for name in names:
            entry = index.get(name)
            if entry is None:
                continue
            if entry.blob.startswith(SHAPED) and not shaped:
                raise _worker_only(name, commit_id)
            out[name] = self._checked(name, entry.blob, commit_id)
        return out

    def values(self, commit_id: str | None = None) -> dict[str, Any]:
        """The variables at a commit (default: the head), loaded. The agent's functions and
        classes come back bound to a sandbox namespace of their own, holding these values
        (called, they run under the sandbox's rules). Those a worker process wrote are loaded
        in a worker and cross back as results do (plain data and standard value types;
        anything else as a :class:`Shown`), when this state was given a way to do so."""
        from agex.state.pickling import loading_into  # the sandbox: only when loading

        commit_id = commit_id or self.head()
        out: dict[str, Any] = {}
        shaped = {}
        into = None if self.sandbox_namespace is None else self.sandbox_namespace()
        for name, entry in self.tree(commit_id).items():
            if entry.blob.startswith(SHAPED) and self.load_shaped is None:
                raise _worker_only(name, commit_id)
            payload = self._checked(name, entry.blob, commit_id)
            if entry.blob.startswith(SHAPED):
                shaped[name] = payload
                continue
            try:
                with contextlib.nullcontext() if into is None else loading_into(into):
                    out[name] = self.serializer.loads(payload)
            except Exception as exc:
                raise StateLoadError(
                    f"variable {name!r} at commit {str(commit_id)[:12]} could not be loaded "
                    f"({type(exc).__name__}: {exc}); move the session back with "
                    "agent.state(session).revert(<an earlier commit>)"
                ) from exc
        if shaped:
            assert self.load_shaped is not None
            out.update(self.load_shaped(shaped))
        if into is not None:
            into.update(out)
        return out

    def _checked(self, name: str, digest: str, commit_id: str | None) -> bytes:
        """The checked bytes of variable ``name``'s value."""
        if name.startswith(("__", "_agex")):
            raise StateIntegrityError(f"commit {commit_id} binds the reserved name {name!r}")
        try:
            return self._blob(digest)
        except StateIntegrityError as exc:
            raise StateIntegrityError(
                f"variable {name!r} at commit {str(commit_id)[:12]}: {exc}; if the storage "
                "was damaged rather than "
                "tampered with, agent.state(session).revert(<an earlier commit>) moves "
                "the session back"
            ) from None

    def checkout(self, commit_id: str) -> Mapping[str, Any]:
        """A read-only view of the variables at ``commit_id``."""
        return MappingProxyType(self.values(commit_id))

    def history(self, unfinished: bool = False) -> History:
        """Every commit from the head back to the first, newest first; with
        ``unfinished``, then the steps of tasks that did not finish (``completed`` False),
        newest first."""
        out, at, by = History(), self.head(), "the head"
        while at is not None:
            commit = self._linked(at, by)
            out.append(commit)
            at, by = commit.parent, f"commit {commit.id[:12]}"
        if not unfinished:
            return out
        kept, steps = {c.id for c in out}, []
        for key in self.storage.keys("r/" + self.head_key.removeprefix("h/") + "/"):
            raw = self.storage.get(key) or b""
            at = raw.decode("ascii", "replace").partition(":")[0]
            if raw != self._head_value(at):
                continue  # not a record this session's writers made (or it was damaged)
            while at not in kept and _COMMIT_ID.fullmatch(at):
                try:
                    commit = replace(self.commit_of(at), completed=False)
                except (KeyError, StateIntegrityError):
                    break  # a run's steps half written (its process died): as far as they go
                steps.append(commit)
                kept.add(at)
                at = commit.parent or ""
        out += sorted(steps, key=lambda c: (c.time, c.depth), reverse=True)
        return out

    def diff(self, older: str | None, newer: str | None) -> dict[str, list[str]]:
        """Variables added, removed and changed between two commits."""
        a, b = self.tree(older), self.tree(newer)
        return {
            "added": sorted(b.keys() - a.keys()),
            "removed": sorted(a.keys() - b.keys()),
            "changed": sorted(k for k in a.keys() & b.keys() if a[k].blob != b[k].blob),
        }

    # -- writing -----------------------------------------------------------------------

    def commit(
        self,
        changed: Mapping[str, Any],
        removed: Iterable[str] = (),
        events: Iterable[Any] = (),
        base: str | object | None = HEAD,
    ) -> Committed:
        """Record ``changed`` (serialized now) and ``removed`` on top of ``base``: the head
        the caller last saw (default: the head now). If another run has moved the head
        since, nothing moves and StateConflict says so."""
        payloads: dict[str, bytes | None] = {name: None for name in removed}
        facts: dict[str, Facts] = {}
        skipped: dict[str, str] = {}
        traced = getattr(self.serializer, "traced", None)  # what a task's recorder uses
        for name, value in changed.items():
            try:
                if traced is None:
                    payloads[name] = self.serializer.dumps(value)
                    facts[name] = Facts(type_name(value))
                else:
                    payloads[name], codes, classes = traced(value)
                    facts[name] = Facts(type_name(value), reach(codes), frozenset(classes))
            except Exception as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}"
                payloads[name] = None  # gone, not its older value
        return Committed(self.commit_serialized(payloads, events, base, facts=facts).id, skipped)

    def commit_serialized(
        self,
        payloads: Mapping[str, bytes | None],
        events: Iterable[Any] = (),
        base: str | object | None = HEAD,
        *,
        shaped: bool = False,
        facts: Mapping[str, Facts] | None = None,
        task: str | None = None,
    ) -> Committed:
        """:meth:`commit` for values serialized elsewhere (by name; None: removed), with
        what is known of them (``facts``): the bytes are stored, never loaded here.
        ``shaped``: by a worker process, whose values only a worker loads again (see
        :meth:`fetch`). With ``task`` (a run's id) the commit is one step of that run: it is
        recorded, but the session moves to it only when the run finishes (:meth:`finish`)."""
        parent = self.head() if base is HEAD else base
        if parent is not None and not isinstance(parent, str):
            raise TypeError(f"base must be a commit id or None, got {parent!r}")
        current = self._index[1] if self._index[0] == parent else self.tree(parent)
        depth = self.commit_of(parent).depth + 1 if parent else 0
        changes: dict[str, Entry | None] = {}
        writes: dict[str, bytes] = {}
        for name, payload in payloads.items():
            if payload is None:
                changes[name] = None
                continue
            digest = (SHAPED if shaped else "") + hashlib.sha256(payload).hexdigest()
            known = (facts or {}).get(name, Facts())
            stored = name in current and current[name].blob == digest
            if stored and current[name].facts == known:
                continue  # unchanged: not stored again
            changes[name] = Entry(digest, known, depth)
            if not stored:  # (stored, and only now known better: its facts change)
                writes[self._blobs + digest] = self._sign(payload)
        return Committed(self._write(parent, changes, events, writes, task))

    def finish(self, start: str | None, last: str, task: str) -> None:
        """The run ``task`` finished: the session moves from ``start`` (where the run began)
        to its ``last`` commit, unless another run moved it first (StateConflict)."""
        old = None if start is None else self._head_value(start)
        if not self.storage.compare_and_set(self.head_key, old, self._head_value(last)):
            raise StateConflict(
                f"session {self.session!r} of {self.namespace!r} moved on while this task ran "
                f"(it began at {str(start)[:12]}); its steps are recorded, not kept"
            )
        with contextlib.suppress(Exception):  # the run is done; its record is only a note
            self.storage.delete(self._run_key(task))
        self._mark()

    def turn(self) -> Turn:
        """A claim on the session's turn (see :mod:`agex.state.turn`): one for every agent's
        state in the session, as the tasks an agent's code calls share its session."""
        return Turn(self.storage, "t/" + quote(self.session, safe=""))

    def _run_key(self, task: str) -> str:
        return "r/" + self.head_key.removeprefix("h/") + "/" + quote(task, safe="")

    def revert(self, commit_id: str) -> Committed:
        """A new commit on top of the head whose variables are those of ``commit_id``."""
        target = self.tree(commit_id)
        head = self.head()
        current = self.tree(head)
        changes: dict[str, Entry | None] = {k: v for k, v in target.items() if current.get(k) != v}
        changes.update({k: None for k in current.keys() - target.keys()})
        return Committed(self._write(head, changes, [{"reverted_to": commit_id}], {}))

    def _write(
        self,
        parent: str | None,
        changes: dict[str, Entry | None],
        events: Iterable[Any],
        writes: dict[str, bytes],
        task: str | None = None,
    ) -> str:
        """Write the blobs and the commit, then move the head to it by compare-and-set (for
        a run's step: record it as the run's newest, and leave the head)."""
        if self._index[0] == parent:  # build on the cached index in place: no full copy
            index, self._index = self._index[1], (None, {})
        else:
            index = self.tree(parent)
        _apply(index, changes)
        depth = self.commit_of(parent).depth + 1 if parent else 0
        data: dict[str, Any] = {
            "parent": parent,
            "changes": {k: None if v is None else v.record() for k, v in changes.items()},
            "depth": depth,
            "events": list(events),
            "time": time.time(),
        }
        if task is not None:
            data["task"] = task
        if depth % SNAPSHOT_EVERY == 0:
            data["snapshot"] = {k: v.record() for k, v in index.items()}
        record = json.dumps(data, sort_keys=True).encode()
        commit_id = hashlib.sha256(record).hexdigest()
        writes[f"c/{commit_id}"] = self._sign(record)
        if parent is not None and task is None:  # (a run's step may follow its own first)
            writes[self._had] = b"1"
        if task is not None:  # bound, with a key, to this session like a head
            writes[self._run_key(task)] = self._head_value(commit_id)
            self.storage.put_many(writes)
            self._index = (commit_id, index)
            return commit_id
        # The data, and the head moved to it: together, or the data first.
        old = None if parent is None else self._head_value(parent)
        if not put_and_set(self.storage, writes, self.head_key, old, self._head_value(commit_id)):
            raise StateConflict(
                f"session {self.session!r} of {self.namespace!r} moved on while this step ran "
                f"(it was at {parent}); reload its state and try again"
            )
        if parent is None:
            self._mark()
        self._index = (commit_id, index)
        return commit_id

    def _mark(self) -> None:
        """Note that the session has a head (each later commit notes it again)."""
        with contextlib.suppress(Exception):  # a note: without it, only a check is lost
            self.storage.put_many({self._had: b"1"})

    # -- blobs -------------------------------------------------------------------------

    def _sign(self, payload: bytes) -> bytes:
        if self.key is None:
            return payload
        return hmac.new(self.key, payload, hashlib.sha256).digest() + payload

    def _verified(self, raw: bytes, what: str) -> bytes:
        """``raw`` without its HMAC, after checking it (with a key)."""
        if self.key is None:
            return raw
        mac, payload = raw[:_MAC], raw[_MAC:]
        expected = hmac.new(self.key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise StateIntegrityError(
                f"{what} failed its integrity check under {KEY_ENV}: it was written without "
                "that key, or changed since; it was not loaded"
            )
        return payload

    def _blob(self, digest: str) -> bytes:
        """The checked bytes of one value."""
        raw = self.storage.get(self._blobs + digest)
        if raw is None:
            raise StateIntegrityError(
                f"value {digest} is missing from the storage (written without {KEY_ENV}, or "
                "under another key?)"
                if self.key
                else f"value {digest} is missing"
            )
        payload = self._verified(raw, f"value {digest}")
        if hashlib.sha256(payload).hexdigest() != digest.removeprefix(SHAPED):
            raise StateIntegrityError(f"value {digest} does not match its hash; not loaded")
        return payload


def _apply(index: dict[str, Entry], changes: Mapping[str, Entry | None]) -> None:
    for name, entry in changes.items():
        if entry is None:
            index.pop(name, None)
        else:
            index[name] = entry


_COMMIT_ID = re.compile(r"[0-9a-f]{64}")


def _worker_only(name: str, commit_id: str | None) -> StateLoadError:
    return StateLoadError(
        f"variable {name!r} at commit {str(commit_id)[:12]} was written by agent code in an "
        "isolated worker process, and is loaded only in one: run the agent with isolation "
        "to use it"
    )


def _commit(commit_id: str, data: dict[str, Any]) -> Commit:
    snapshot = data.get("snapshot")
    changes = {
        name: None if record is None else Entry.parse(record)
        for name, record in data["changes"].items()
    }
    parent = data["parent"]
    if not (parent is None or _COMMIT_ID.fullmatch(parent)) or type(data["depth"]) is not int:
        raise ValueError("its parent or depth is not one")
    return Commit(
        commit_id,
        parent,
        MappingProxyType(changes),
        None if snapshot is None else MappingProxyType(_parsed(snapshot)),
        data["depth"],
        tuple(data["events"]),
        data["time"],
        data.get("task"),
    )


def _names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(n, str) for n in value)


def _parsed(records: Mapping[str, Any]) -> dict[str, Entry]:
    return {name: Entry.parse(record) for name, record in records.items()}


def type_name(value: Any) -> str:
    """How the model's prompt names a value's type: ``int``, ``pandas.DataFrame``."""
    if isinstance(value, ModuleType):
        return "module"
    cls = type(value)
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", "") or "object"
    if module in ("builtins", "__agent__", "") or module.startswith("agex."):
        return name
    return f"{module.partition('.')[0]}.{name}"
