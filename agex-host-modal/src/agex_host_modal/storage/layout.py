"""The Volume's files as agex lays them out, reached through the mount or through Modal's API.

- What never changes (blobs, commits) goes in packs: one file per write holding every
  value of it, ``+packs/0/<id>``. Once a level holds FAN packs they are merged into one a
  level up, so a session of n steps keeps under FAN files per level, log_FAN(n) levels.
  A value larger than PIECE gets a pack of its own, never merged: ``+packs/big/<id>``.
- A key written by put_many: one file named by the quoted key, ``h%2Fns%2Fsession``
  (cut into folders past _SEGMENT characters), as every key was laid out before packs.
- A key moved by compare-and-set: a folder of its values named by their tokens,
  ``h%2Fns%2Fsession+/<seq>.<random>``; the newest sequence is the value. A move removes
  the values before the one it follows, so the folder holds two or three.

Quoting never leaves ``+`` or ``@`` in a name, so these never collide with a quoted key.
Files written before packs (one per key) are still read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from agex.state.versioned import IMMUTABLE
from agex_host_modal import sdk
from agex_host_modal.storage.claims import _seq
from agex_host_modal.storage.clock import _now
from agex_host_modal.storage.dicts import PIECE

#: Longest file name the encoding makes; longer encoded keys are split into folders.
_SEGMENT = 200
_PACKS = "+packs"
_MOVES = "+"
#: Packs per level before they are merged into one.
FAN = 16
_MAGIC = b"agex-pack 1\n"


def _file_of(key: str) -> str:
    """The key's file, relative to the Volume's root.

    Quoted, so any key is a flat name; long names are cut into folders whose names end in
    ``@`` (which quoting never leaves in a name), so a file and a folder never collide.
    """
    quoted = quote(key, safe="")
    parts = [quoted[i : i + _SEGMENT] for i in range(0, len(quoted), _SEGMENT)]
    return "/".join([*(p + "@" for p in parts[:-1]), parts[-1]])


def _key_of(file: str) -> str:
    return unquote("".join(part.removesuffix("@") for part in file.split("/")))


def _moves(key: str) -> str:
    return _file_of(key) + _MOVES


def _order(token: str) -> tuple[int, str]:
    return _seq(token), token


def _pack(values: Mapping[str, bytes]) -> bytes:
    """Values in one file: a header naming where each is, then the values."""
    where: dict[str, list[int]] = {}
    at = 0
    for key, value in values.items():
        where[key] = [at, len(value)]
        at += len(value)
    header = json.dumps(where, separators=(",", ":")).encode()
    return b"".join([_MAGIC, len(header).to_bytes(8, "big"), header, *values.values()])


def _header(start: bytes) -> tuple[int, int] | None:
    """Where a pack's header ends and how long it is, from the pack's first bytes."""
    fixed = len(_MAGIC) + 8
    if len(start) < fixed or not start.startswith(_MAGIC):
        return None
    size = int.from_bytes(start[len(_MAGIC) : fixed], "big")
    return fixed + size, size


def _unpack(data: bytes) -> dict[str, bytes]:
    head = _header(data)
    if head is None:
        return {}
    end, size = head
    where = json.loads(data[end - size : end])
    return {key: data[end + at : end + at + length] for key, (at, length) in where.items()}


def _pack_id() -> str:
    return f"{int(_now() * 1000)}-{secrets.token_hex(6)}"


class _Files:
    """A Volume's files as agex lays them out, seen through the mount or through the API."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._where: dict[str, tuple[str, int, int]] = {}  # key -> (pack, offset, length)
        self._packs: set[str] = set()

    # what a way of reaching the files provides

    def _list(self, folder: str) -> list[str]:
        """Paths of the files under ``folder`` ("": all), relative to the root."""
        raise NotImplementedError

    def _read(self, path: str) -> bytes | None:
        raise NotImplementedError

    def _read_range(self, path: str, start: int, length: int) -> bytes | None:
        raise NotImplementedError

    def _apply(self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool) -> None:
        """Write and remove files; ``publish``: make it visible to others now."""
        raise NotImplementedError

    def reload(self) -> None:
        with self._lock:
            self._where.clear()
            self._packs.clear()

    # the layout

    def read(self, key: str) -> tuple[str | None, bytes] | None:
        """A key's value, and for a moved key the token it was moved to."""
        if key.startswith(IMMUTABLE):
            value = self._packed(key)
            return None if value is None else (None, value)
        tokens = self._tokens(key)
        for token in sorted(tokens, key=_order, reverse=True):
            value = self._read(f"{_moves(key)}/{token}")
            if value is not None:
                return token, value
        value = self._read(_file_of(key))
        return None if value is None else (None, value)

    def write_many(self, items: Mapping[str, bytes]) -> None:
        writes: dict[str, bytes] = {}
        removes: list[str] = []
        small: dict[str, bytes] = {}
        for key, value in items.items():
            if not key.startswith(IMMUTABLE):
                moved = [f"{_moves(key)}/{token}" for token in self._tokens(key)]
                if moved or self._read(_file_of(key)) != value:  # unchanged: no commit
                    writes[_file_of(key)] = value
                    removes += moved
            elif len(value) > PIECE:
                writes[f"{_PACKS}/big/{_pack_id()}"] = _pack({key: value})
            else:
                small[key] = value
        if small:
            self._add_pack(small, writes, removes)
        self._change(writes, removes)

    def write_move(self, key: str, token: str, value: bytes, before: str | None) -> None:
        """A moving key's new value, in a file named by its token. The value it moved from
        (``before``) is kept too, in case the newest file cannot be read; older ones go."""
        folder = _moves(key)
        keep = _seq(token if before is None else before)
        removes = [f"{folder}/{t}" for t in self._tokens(key) if _seq(t) < keep and t != token]
        if self._read(_file_of(key)) is not None:
            removes.append(_file_of(key))  # as written by put_many, or before this layout
        self._change({f"{folder}/{token}": value}, removes)

    def remove(self, key: str) -> None:
        """Published with the next write (or reload): a removal need not cost a commit."""
        removes = [_file_of(key), *(f"{_moves(key)}/{t}" for t in self._tokens(key))]
        writes: dict[str, bytes] = {}
        where = self._locate(key) if key.startswith(IMMUTABLE) else None
        if where is not None:
            pack = where[0]
            rest = {k: v for k, v in _unpack(self._read(pack) or b"").items() if k != key}
            removes.append(pack)
            if rest:
                writes[f"{pack.rpartition('/')[0]}/{_pack_id()}"] = _pack(rest)
        self._change(writes, removes, publish=False)

    def keys(self, prefix: str) -> set[str]:
        self._scan()
        with self._lock:
            found = {k for k in self._where if k.startswith(prefix)}
        for path in self._list(""):
            if path.startswith(_PACKS + "/"):
                continue
            folder, _, _ = path.rpartition("/")
            key = _key_of(folder.removesuffix(_MOVES)) if folder.endswith(_MOVES) else _key_of(path)
            if key.startswith(prefix):
                found.add(key)
        return found

    # inside

    def _tokens(self, key: str) -> list[str]:
        folder = _moves(key) + "/"
        return [p[len(folder) :] for p in self._list(_moves(key)) if p.startswith(folder)]

    def _change(
        self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool = True
    ) -> None:
        removes = list(removes)
        if not writes and not removes:
            return
        self._apply(writes, removes, publish)
        with self._lock:
            for path in removes:
                self._forget(path)
            for path, data in writes.items():
                if path.startswith(_PACKS + "/"):
                    self._record(path, data)

    def _add_pack(
        self, values: dict[str, bytes], writes: dict[str, bytes], removes: list[str]
    ) -> None:
        """A pack at level 0; a level that reaches FAN packs is merged into one a level up."""
        level = 0
        while True:
            held = self._list(f"{_PACKS}/{level}")
            if len(held) + 1 < FAN:
                writes[f"{_PACKS}/{level}/{_pack_id()}"] = _pack(values)
                return
            merged: dict[str, bytes] = {}
            for path in held:
                data = self._read(path)
                if data is not None and _header(data) is None:
                    continue  # not a pack agex wrote: left as it is
                merged.update(_unpack(data or b""))  # (None: merged away meanwhile)
                removes.append(path)
            merged.update(values)
            level, values = level + 1, merged

    def _packed(self, key: str) -> bytes | None:
        """A value that never changes: from its pack, or its own file (as laid out before
        packs)."""
        where = self._locate(key, scan=False)
        if where is not None:
            value = self._read_range(*where)
            if value is not None:
                return value
        value = self._read(_file_of(key))
        if value is not None:
            return value
        for _ in range(2):  # a pack written since, or merged away since: look again
            with self._lock:
                self._where.pop(key, None)
            where = self._locate(key)
            if where is None:
                return None
            value = self._read_range(*where)
            if value is not None:
                return value
            with self._lock:
                self._forget(where[0])
        return None

    def _locate(self, key: str, scan: bool = True) -> tuple[str, int, int] | None:
        with self._lock:
            where = self._where.get(key)
        if where is None and scan:
            self._scan()
            with self._lock:
                where = self._where.get(key)
        return where

    def _scan(self) -> None:
        """Learn where the values are in packs not seen yet; forget packs that went."""
        listed = set(self._list(_PACKS))
        with self._lock:
            for path in self._packs - listed:
                self._forget(path)
            unseen = listed - self._packs
        for path in unseen:
            start = self._read_range(path, 0, len(_MAGIC) + 8)
            head = None if start is None else _header(start)
            if head is None:
                continue
            end, size = head
            header = self._read_range(path, end - size, size)
            with contextlib.suppress(ValueError, TypeError):  # not a pack agex wrote
                where = {} if header is None else json.loads(header)
                with self._lock:
                    self._packs.add(path)
                    for key, (at, length) in where.items():
                        self._where[key] = (path, end + at, length)

    def _record(self, path: str, data: bytes) -> None:
        head = _header(data)
        if head is None:
            return
        end, size = head
        self._packs.add(path)
        for key, (at, length) in json.loads(data[end - size : end]).items():
            self._where[key] = (path, end + at, length)

    def _forget(self, path: str) -> None:
        if path in self._packs:
            self._packs.discard(path)
            for key in [k for k, w in self._where.items() if w[0] == path]:
                del self._where[key]


class _MountedFiles(_Files):
    """The Volume mounted in this container: reloaded at the start of a task, committed
    after each write."""

    def __init__(self, root: Path, volume: Any) -> None:
        super().__init__()
        self.root, self.volume = root, volume
        self._unpublished = False

    def reload(self) -> None:
        if self._unpublished:  # removals waiting for a commit would be lost
            self.volume.commit()
            self._unpublished = False
        self.volume.reload()
        super().reload()

    def _list(self, folder: str) -> list[str]:
        out = []
        for at, _, files in os.walk(self.root / folder):
            relative = Path(at).relative_to(self.root)
            out += [(relative / f).as_posix() for f in files if not f.startswith(".")]
        return out

    def _read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _read_range(self, path: str, start: int, length: int) -> bytes | None:
        try:
            with (self.root / path).open("rb") as file:
                file.seek(start)
                data = file.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return data if len(data) == length else None

    def _apply(self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool) -> None:
        for path, data in writes.items():
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
            temporary.write_bytes(data)
            os.replace(temporary, target)
        for path in removes:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                (self.root / path).unlink()
        if publish:
            self.volume.commit()
            self._unpublished = False
        else:
            self._unpublished = True


class _RemoteFiles(_Files):
    """The Volume through Modal's API (outside a container): every change is visible at
    once."""

    def __init__(self, volume: Any) -> None:
        super().__init__()
        self.volume = volume

    def _list(self, folder: str) -> list[str]:
        file = sdk.modal().volume.FileEntryType.FILE
        try:
            listed = self.volume.listdir("/" + folder, recursive=True)
        except (FileNotFoundError, sdk.modal().exception.NotFoundError):
            return []
        paths = [e.path.lstrip("/") for e in listed if e.type == file]
        return [p for p in paths if not p.rpartition("/")[2].startswith(".")]

    def _read(self, path: str) -> bytes | None:
        try:
            return b"".join(self.volume.read_file(path))
        except (FileNotFoundError, sdk.modal().exception.NotFoundError):
            return None

    def _read_range(self, path: str, start: int, length: int) -> bytes | None:
        """Streams the file only as far as the range (a pack's header is at its start)."""
        data = b""
        chunks = self.volume.read_file(path)
        try:
            for chunk in chunks:
                data += chunk
                if len(data) >= start + length:
                    break
        except (FileNotFoundError, sdk.modal().exception.NotFoundError):
            return None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return data[start : start + length] if len(data) >= start + length else None

    def _apply(self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool) -> None:
        if writes:
            with self.volume.batch_upload(force=True) as batch:
                for path, data in writes.items():
                    batch.put_file(io.BytesIO(data), "/" + path)
        for path in removes:
            with contextlib.suppress(FileNotFoundError, sdk.modal().exception.NotFoundError):
                self.volume.remove_file(path)
