"""Versioned state: every loop step a commit, content-addressed over any storage.

Layout in the storage:

- ``b/<sha256>``: one serialized value (a blob), shared by every variable, commit and session
  that holds the same bytes. With a key (``AGEX_STATE_KEY``) it is prefixed with an HMAC,
  checked before anything is unpickled.
- ``c/<id>``: a commit, as JSON: its parent, the name -> blob index, the step's events.
- ``h/<namespace>/<session>``: the session's head commit, moved only by compare-and-set, and
  only after the commit and its blobs are written, so a crash at any point leaves the head
  on a complete commit.

A commit writes only the values it is given (those the step touched), so its cost follows
what changed, not the size of the state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from agex.errors import StateConflict, StateIntegrityError
from agex.serializers import Serializer
from agex.storage import Storage

KEY_ENV = "AGEX_STATE_KEY"
#: ``base=HEAD``: commit on top of whatever the head is now.
HEAD = object()
_MAC = 32  # bytes of HMAC-SHA256


@dataclass(frozen=True)
class Commit:
    id: str
    parent: str | None
    tree: Mapping[str, str]  # variable -> blob hash
    events: tuple[Any, ...]
    time: float


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
    ) -> None:
        if not namespace or not session:
            raise ValueError("a namespace and a session are needed")
        self.storage = storage
        self.serializer = serializer
        self.namespace = namespace
        self.session = session
        env_key = os.environ.get(KEY_ENV)
        self.key = key if key is not None else (env_key.encode() if env_key else None)
        self._head_key = f"h/{quote(namespace, safe='')}/{quote(session, safe='')}"
        self._commits: dict[str, Commit] = {}

    # -- reading -----------------------------------------------------------------------

    def head(self) -> str | None:
        raw = self.storage.get(self._head_key)
        return None if raw is None else raw.decode()

    def commit_of(self, commit_id: str) -> Commit:
        found = self._commits.get(commit_id)
        if found is None:
            raw = self.storage.get(f"c/{commit_id}")
            if raw is None:
                raise KeyError(f"no commit {commit_id!r} in this state")
            if hashlib.sha256(raw).hexdigest() != commit_id:
                raise StateIntegrityError(f"commit {commit_id} does not match its id")
            data = json.loads(raw)
            found = Commit(
                commit_id,
                data["parent"],
                MappingProxyType(data["tree"]),
                tuple(data["events"]),
                data["time"],
            )
            self._commits[commit_id] = found
        return found

    def values(self, commit_id: str | None = None) -> dict[str, Any]:
        """The variables at a commit (default: the head), loaded."""
        commit_id = commit_id or self.head()
        if commit_id is None:
            return {}
        tree = self.commit_of(commit_id).tree
        return {name: self._load(digest) for name, digest in tree.items()}

    def checkout(self, commit_id: str) -> Mapping[str, Any]:
        """A read-only view of the variables at ``commit_id``."""
        return MappingProxyType(self.values(commit_id))

    def history(self) -> list[Commit]:
        """Every commit from the head back to the first, newest first."""
        out, at = [], self.head()
        while at is not None:
            commit = self.commit_of(at)
            out.append(commit)
            at = commit.parent
        return out

    def diff(self, older: str | None, newer: str | None) -> dict[str, list[str]]:
        """Variables added, removed and changed between two commits."""
        a = dict(self.commit_of(older).tree) if older else {}
        b = dict(self.commit_of(newer).tree) if newer else {}
        return {
            "added": sorted(b.keys() - a.keys()),
            "removed": sorted(a.keys() - b.keys()),
            "changed": sorted(k for k in a.keys() & b.keys() if a[k] != b[k]),
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
        parent = self.head() if base is HEAD else base
        if parent is not None and not isinstance(parent, str):
            raise TypeError(f"base must be a commit id or None, got {parent!r}")
        tree = dict(self.commit_of(parent).tree) if parent else {}
        writes: dict[str, bytes] = {}
        skipped: dict[str, str] = {}
        for name, value in changed.items():
            try:
                payload = self.serializer.dumps(value)
            except Exception as exc:
                skipped[name] = f"{type(exc).__name__}: {exc}"
                continue
            digest = hashlib.sha256(payload).hexdigest()
            tree[name] = digest
            writes[f"b/{digest}"] = self._sign(payload)
        for name in removed:
            tree.pop(name, None)
        record = json.dumps(
            {"parent": parent, "tree": tree, "events": list(events), "time": time.time()},
            sort_keys=True,
        ).encode()
        commit_id = hashlib.sha256(record).hexdigest()
        writes[f"c/{commit_id}"] = record
        self.storage.put_many(writes)  # first the data; only then may the head point at it
        old = None if parent is None else parent.encode()
        if not self.storage.compare_and_set(self._head_key, old, commit_id.encode()):
            raise StateConflict(
                f"session {self.session!r} of {self.namespace!r} moved on while this step ran "
                f"(it was at {parent}); reload its state and try again"
            )
        return Committed(commit_id, skipped)

    def revert(self, commit_id: str) -> Committed:
        """A new commit on top of the head whose variables are those of ``commit_id``."""
        target = self.commit_of(commit_id).tree
        head = self.head()
        record = json.dumps(
            {
                "parent": head,
                "tree": dict(target),
                "events": [{"reverted_to": commit_id}],
                "time": time.time(),
            },
            sort_keys=True,
        ).encode()
        new_id = hashlib.sha256(record).hexdigest()
        self.storage.put_many({f"c/{new_id}": record})
        old = None if head is None else head.encode()
        if not self.storage.compare_and_set(self._head_key, old, new_id.encode()):
            raise StateConflict(f"session {self.session!r} moved on during the revert")
        return Committed(new_id)

    # -- blobs -------------------------------------------------------------------------

    def _sign(self, payload: bytes) -> bytes:
        if self.key is None:
            return payload
        return hmac.new(self.key, payload, hashlib.sha256).digest() + payload

    def _load(self, digest: str) -> Any:
        raw = self.storage.get(f"b/{digest}")
        if raw is None:
            raise StateIntegrityError(f"value {digest} is missing from the storage")
        payload = raw
        if self.key is not None:
            mac, payload = raw[:_MAC], raw[_MAC:]
            expected = hmac.new(self.key, payload, hashlib.sha256).digest()
            if not hmac.compare_digest(mac, expected):
                raise StateIntegrityError(
                    f"value {digest} failed its integrity check under {KEY_ENV}: it was "
                    "written without that key, or changed since; it was not loaded"
                )
        if hashlib.sha256(payload).hexdigest() != digest:
            raise StateIntegrityError(f"value {digest} does not match its hash; not loaded")
        return self.serializer.loads(payload)
