"""``agex state check PATH``: is a disk state store whole?

It runs the database's own check, then follows every session from its head to its first
commit, checking each commit against its id and each value a commit holds against its hash
(and, with ``AGEX_STATE_KEY`` set, every HMAC). Nothing stored is loaded. One line per
problem, then a summary; exit status 0 when healthy, 1 when damage is found, 2 when PATH is
not a store.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import click

from agex import plugins
from agex.errors import StateIntegrityError
from agex.protocols import Storage
from agex.state.versioned import KEY_ENV, Commit, Entry, VersionedState

_MAC = 32  # bytes of the HMAC-SHA256 before a value written under a key


class _NoLoads:
    """The check's serializer: it never loads a stored value (that could run its code)."""

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError


class _Unkeyed:
    """A store written under a key, read without it: the HMACs are dropped (unchecked), and
    a value is looked for under every key's prefix. Hashes are still checked."""

    def __init__(self, storage: Storage, prefixes: list[str]) -> None:
        self.storage, self.prefixes = storage, prefixes

    def get(self, key: str) -> bytes | None:
        if key.startswith("h/"):
            raw = self.storage.get(key)
            return None if raw is None else raw.partition(b":")[0]
        keys = [p + key[2:] for p in self.prefixes] if key.startswith("b/") else [key]
        for each in keys:
            raw = self.storage.get(each)
            if raw is not None:
                return raw[_MAC:]
        return None


class Check:
    """The findings about one store: ``problems`` (damage) and ``notes`` (what could not be
    checked)."""

    def __init__(self, storage: Storage, key: bytes | None) -> None:
        self.storage, self.key = storage, key
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.sessions = self.commits = self.blobs = 0
        self._seen_commits: set[str] = set()
        self._seen_blobs: set[str] = set()

    def run(self) -> None:
        database = getattr(self.storage, "integrity_check", None)
        if database is not None:
            self.problems += [f"database: {line}" for line in database()]
        try:
            heads = sorted(self.storage.keys("h/"))
            prefixes = sorted(
                {k[: k.index("/", 2) + 1] for k in self.storage.keys("b/") if _keyed_blob(k)}
            )
        except Exception as exc:
            self.problems.append(f"database: its keys cannot be listed: {_said(exc)}")
            return
        unverified = 0
        for head_key in heads:
            parts = head_key.split("/")
            if len(parts) != 3 or not parts[1] or not parts[2]:
                self.problems.append(f"head {head_key}: not h/<namespace>/<session>")
                continue
            self.sessions += 1
            namespace, session = unquote(parts[1]), unquote(parts[2])
            where = f"session {namespace}/{session}"
            try:
                keyed = b":" in (self.storage.get(head_key) or b"")
            except Exception as exc:
                self.problems.append(f"{where}: its head cannot be read: {_said(exc)}")
                continue
            if keyed and self.key is None:
                unverified += 1
                storage: Any = _Unkeyed(self.storage, prefixes)
                blobs = prefixes[0] if len(prefixes) == 1 else "b/<key>/"
            else:
                storage = self.storage
                blobs = "b/" if self.key is None else _prefix(self.key)
            state = VersionedState(storage, _NoLoads(), namespace, session, key=self.key)
            self._session(state, where, blobs)
        self._lost(heads)
        if unverified:
            self.notes.append(
                f"{unverified} session(s) were written under {KEY_ENV}: their hashes were "
                f"checked, their HMACs not (set {KEY_ENV} to verify them)"
            )

    def _lost(self, heads: list[str]) -> None:
        """Sessions noted as having a head that is gone, and records of unfinished runs
        that lead nowhere."""
        try:
            noted = self.storage.keys("s/")
            runs = self.storage.keys("r/")
        except Exception as exc:
            self.problems.append(f"database: its keys cannot be listed: {_said(exc)}")
            return
        kept = set(heads)
        for key in noted:
            if "h/" + key.removeprefix("s/") not in kept:
                self.problems.append(f"session {key.removeprefix('s/')}: its head is missing")
        for key in runs:
            try:
                raw = self.storage.get(key) or b""
                commit = raw.decode("ascii", "replace").partition(":")[0]
                missing = self.storage.get(f"c/{commit}") is None
            except Exception as exc:  # a store may say why it is missing
                self.problems.append(f"run {key}: it cannot be followed: {_said(exc)}")
                continue
            if missing:
                self.problems.append(f"run {key}: its last step, commit {commit[:12]}, is missing")

    def _session(self, state: VersionedState, where: str, blobs: str) -> None:
        try:
            at = state.head()
        except Exception as exc:
            self.problems.append(f"{where}: its head is damaged: {_said(exc)}")
            return
        while at is not None and at not in self._seen_commits:
            self._seen_commits.add(at)
            try:
                commit = state.commit_of(at)
            except KeyError:
                self.problems.append(f"{where}: commit {at} is missing (key c/{at})")
                return
            except Exception as exc:
                self.problems.append(f"{where}: commit {at} is damaged: {_said(exc)}")
                return
            self.commits += 1
            self._values(state, commit, where, blobs)
            at = commit.parent

    def _values(self, state: VersionedState, commit: Commit, where: str, blobs: str) -> None:
        entries: Iterable[tuple[str, Entry | None]] = commit.changes.items()
        if commit.snapshot is not None:
            entries = [*entries, *commit.snapshot.items()]
        for name, entry in entries:
            if entry is None or entry.blob in self._seen_blobs:
                continue
            self._seen_blobs.add(entry.blob)
            self.blobs += 1
            try:
                state.fetch({name: entry}, [name], commit.id, shaped=True)
            except Exception as exc:
                self.problems.append(
                    f"{where}: commit {commit.id[:12]}, variable {name!r}, value "
                    f"{blobs}{entry.blob}: {_said(exc)}"
                )


def _keyed_blob(key: str) -> bool:
    """``b/<16 hex>/...``: a value written under a key."""
    head = key[2:].partition("/")[0]
    return len(head) == 16 and all(c in "0123456789abcdef" for c in head)


def _prefix(key: bytes) -> str:
    return f"b/{hashlib.sha256(key).hexdigest()[:16]}/"


def _said(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, StateIntegrityError) else f"{type(exc).__name__}: {text}"


def _open(path: str) -> tuple[Storage | None, str]:
    """The store at ``path`` (a store's directory or its database file), never made anew;
    else None and why not."""
    where = Path(path)
    if where.is_file():
        where = where.parent
    if not where.is_dir():
        return None, f"{path} is not an agex state store: no such directory"
    try:
        storage: Storage = plugins.create("storage", "disk", path=str(where), create=False)
    except StateIntegrityError:
        raise
    except Exception as exc:
        return None, str(exc)
    return storage, ""


@click.group()
def state() -> None:
    """Look after stored state."""


@state.command()
@click.argument("path", type=click.Path())
def check(path: str) -> None:
    """Check the disk state store at PATH for damage.

    Checks its database, every session's commits from its head back to its first, and
    every value they hold (with AGEX_STATE_KEY set, their HMACs too); nothing is loaded.
    Exit status 0: healthy; 1: damaged; 2: PATH is not a store."""
    env = os.environ.get(KEY_ENV)
    if env == "":
        click.echo(f"{KEY_ENV} is set but empty; unset it or give it the store's key", err=True)
        raise SystemExit(2)
    try:
        storage, why = _open(path)
    except StateIntegrityError as exc:
        click.echo(f"database: {exc}")
        click.echo(f"{path}: damaged: its database cannot be read")
        raise SystemExit(1) from None
    if storage is None:
        click.echo(why, err=True)
        raise SystemExit(2)
    found = Check(storage, env.encode() if env else None)
    try:
        found.run()
    finally:
        close = getattr(storage, "close", None)
        if close is not None:
            close()
    for line in found.problems + [f"note: {n}" for n in found.notes]:
        click.echo(line)
    counts = f"{found.sessions} sessions, {found.commits} commits, {found.blobs} values checked"
    if found.problems:
        click.echo(f"{path}: damaged: {len(found.problems)} problem(s); {counts}")
        raise SystemExit(1)
    click.echo(f"{path}: healthy; {counts}")
