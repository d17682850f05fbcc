"""Storages "modal-dict" and "modal-volume": versioned state kept in Modal.

- ``modal-dict`` (``path`` is the Dict's name): every key in a Modal Dict. Modal drops a
  Dict entry nobody has read or written for 7 days; reading an entry keeps it.
- ``modal-volume`` (``path`` names a Volume and a Dict): every key in the Volume, which keeps
  it until it is deleted, and in the Dict, which answers reads first and moves heads
  atomically. Inside a Modal container that mounts the Volume, files go through the mount:
  reloaded at the start of a task, committed after each write. Elsewhere (on the client,
  inspecting history) through the Volume's API.

A Dict has no compare-and-set, only "put unless present", so a key that may move (a
session's head) holds a token with its value; whoever claims the successor of the token it
read (``put(skip_if_exists=True)`` on a claim key) wins the move. Readers follow claims, so
a winner that dies between its claim and its write loses nothing.

Blobs and commits never change once written: inside a container a copy stays on local disk,
refreshed from the Dict once a day so that the Dict keeps them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

from agex.errors import AgexError, StateLoadError, StateWriteError
from agex.state.versioned import IMMUTABLE
from agex.storage import check_items, check_key, check_value
from agex_host_modal import names, sdk

#: Where a function mounts the Volume of a state path (``mount_point``).
MOUNT_ROOT = "/agex-volumes"
#: A local copy older than this is read from the Dict again, which keeps its TTL fresh.
REFRESH = 24 * 3600.0

_DATA, _CLAIM, _GONE = "k:", "c:", "g:"


def mount_point(name: str) -> str:
    return f"{MOUNT_ROOT}/{name}"


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _surfaced(doing: str) -> Callable[[_Method], _Method]:
    """A storage method whose failures in Modal or in the Volume's files (a request too
    large, Modal unreachable, a full or read-only mount) raise agex errors naming the
    store and the cause. A failed write leaves the session on its last commit."""

    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def surfaced(self: Any, *args: Any, **kwargs: Any) -> Any:
            from modal.exception import Error as ModalError

            try:
                return method(self, *args, **kwargs)
            except AgexError:
                raise
            except (OSError, ModalError) as exc:
                what = f"storage {self.provider} {self.name!r}"
                cause = f"{type(exc).__name__}: {exc}"
                if doing == "write":
                    raise StateWriteError(
                        f"{what} could not take a write ({cause}); the session stays on its "
                        "last commit: run the task again once the cause is gone"
                    ) from exc
                raise StateLoadError(f"{what} could not be read ({cause})") from exc

        return cast(_Method, surfaced)

    return wrap


class ModalDictStorage:
    provider = "modal-dict"

    def __init__(self, path: str | None = None) -> None:
        self.name = names.check(path, "the path of a modal-dict storage (the Dict's name)")
        sdk.check_credentials()
        self._dict = sdk.modal().Dict.from_name(self.name, create_if_missing=True)
        self._cache = _LocalCopies(self.name) if sdk.in_container() else None

    @_surfaced("read")
    def get(self, key: str) -> bytes | None:
        check_key(key)
        if key.startswith(IMMUTABLE):
            copy = None if self._cache is None else self._cache.get(key)
            if copy is not None:
                return copy
            value = self._dict.get(_DATA + key)
            if isinstance(value, bytes) and self._cache is not None:
                self._cache.put(key, value)
            return value if isinstance(value, bytes) else None
        return self._current(key)[1]

    @_surfaced("write")
    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        if not checked:
            return
        self._dict.update({_DATA + k: self._stored(k, v) for k, v in checked.items()})
        if self._cache is not None:
            for key, value in checked.items():
                if key.startswith(IMMUTABLE):
                    self._cache.put(key, value)

    @_surfaced("write")
    def delete(self, key: str) -> None:
        check_key(key)
        if not key.startswith(IMMUTABLE):
            # A fresh token for the absent key, so no claim made before can revive it.
            self._dict.put(_GONE + key, secrets.token_hex(8))
        self._dict.pop(_DATA + key, None)
        if self._cache is not None:
            self._cache.delete(key)

    @_surfaced("write")
    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        check_key(key)
        new = check_value(key, new)
        expected = None if expected is None else check_value(key, expected)
        token, value = self._current(key)
        if value != expected:
            return False
        successor = (secrets.token_hex(8), new)
        if not self._dict.put(_claim(key, token), successor, skip_if_exists=True):
            return False  # another writer moved it first
        self._dict.put(_DATA + key, successor)
        return True

    @_surfaced("read")
    def keys(self, prefix: str = "") -> list[str]:
        start = _DATA + prefix
        listed = self._dict.keys()  # a Modal Dict lists its keys with keys(), not iter()
        return sorted(k[len(_DATA) :] for k in listed if k.startswith(start))

    def _stored(self, key: str, value: bytes) -> Any:
        return value if key.startswith(IMMUTABLE) else (secrets.token_hex(8), value)

    def _current(self, key: str) -> tuple[str, bytes | None]:
        """The key's token and value, following any claims made on top of what is stored."""
        stored = self._dict.get(_DATA + key)
        if stored is None:
            token, value = self._dict.get(_GONE + key) or "0", None
        elif isinstance(stored, bytes):  # written as immutable; its bytes are its identity
            token, value = "=" + hashlib.sha256(stored).hexdigest(), stored
        else:
            token, value = stored
        moved = False
        while (successor := self._dict.get(_claim(key, token))) is not None:
            (token, value), moved = successor, True
        if moved:  # save later readers the walk
            self._dict.put(_DATA + key, (token, value))
        return token, value

    def __repr__(self) -> str:
        return f"ModalDictStorage({self.name!r})"


def _claim(key: str, token: str) -> str:
    return f"{_CLAIM}{token}:{key}"


class ModalVolumeStorage:
    provider = "modal-volume"

    def __init__(self, path: str | None = None) -> None:
        self.name = names.check(path, "the path of a modal-volume storage (the Volume's name)")
        self.index = ModalDictStorage(self.name)
        self._volume = sdk.modal().Volume.from_name(self.name, create_if_missing=True)
        self.reload()

    def reload(self) -> None:
        """See what other containers committed (at the start of each task)."""
        files = self._files()
        if isinstance(files, _MountedFiles):
            files.reload()

    @_surfaced("read")
    def get(self, key: str) -> bytes | None:
        value = self.index.get(key)
        if value is None:
            value = self._files().read(check_key(key))
            if value is not None:  # the Dict forgot it: put it back
                self._restore(key, value)
        return value

    @_surfaced("write")
    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        self._files().write_many(checked)
        self.index.put_many(checked)

    @_surfaced("write")
    def delete(self, key: str) -> None:
        self.index.delete(key)
        self._files().remove(key)

    @_surfaced("write")
    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        new = check_value(check_key(key), new)
        self.get(key)  # a head the Dict forgot comes back from the Volume first
        if not self.index.compare_and_set(key, expected, new):
            return False
        self._files().write_many({key: new})
        return True

    @_surfaced("read")
    def keys(self, prefix: str = "") -> list[str]:
        return sorted(set(self.index.keys(prefix)) | set(self._files().keys(prefix)))

    def _restore(self, key: str, value: bytes) -> None:
        if key.startswith(IMMUTABLE):
            self.index.put_many({key: value})
        else:
            self.index.compare_and_set(key, None, value)

    def _files(self) -> _MountedFiles | _RemoteFiles:
        """The mount when this code runs in a container that has one, else the API."""
        root = sdk.mounted(mount_point(self.name))
        if root.is_dir():
            return _MountedFiles(root, self._volume)
        return _RemoteFiles(self._volume)

    def __repr__(self) -> str:
        return f"ModalVolumeStorage({self.name!r})"


# -- files in a Volume -----------------------------------------------------------------

#: Longest file name the encoding makes; longer encoded keys are split into folders.
_SEGMENT = 200


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


class _MountedFiles:
    def __init__(self, root: Path, volume: Any) -> None:
        self.root, self.volume = root, volume

    def reload(self) -> None:
        self.volume.reload()

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / _file_of(key)).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write_many(self, items: Mapping[str, bytes]) -> None:
        for key, value in items.items():
            target = self.root / _file_of(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
            temporary.write_bytes(value)
            os.replace(temporary, target)
        self.volume.commit()

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (self.root / _file_of(key)).unlink()
            self.volume.commit()

    def keys(self, prefix: str) -> Iterator[str]:
        for folder, _, files in os.walk(self.root):
            relative = Path(folder).relative_to(self.root)
            for file in files:
                if not file.startswith("."):
                    key = _key_of(str(relative / file) if relative.parts else file)
                    if key.startswith(prefix):
                        yield key


class _RemoteFiles:
    def __init__(self, volume: Any) -> None:
        self.volume = volume

    def read(self, key: str) -> bytes | None:
        try:
            return b"".join(self.volume.read_file(_file_of(key)))
        except FileNotFoundError:
            return None

    def write_many(self, items: Mapping[str, bytes]) -> None:
        if not items:
            return
        with self.volume.batch_upload(force=True) as batch:
            for key, value in items.items():
                batch.put_file(io.BytesIO(value), "/" + _file_of(key))

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, sdk.modal().exception.NotFoundError):
            self.volume.remove_file(_file_of(key))

    def keys(self, prefix: str) -> Iterator[str]:
        for entry in self.volume.listdir("/", recursive=True):
            if entry.type == sdk.modal().volume.FileEntryType.FILE:
                key = _key_of(entry.path.lstrip("/"))
                if key.startswith(prefix):
                    yield key


# -- local copies of what never changes ----------------------------------------------


class _LocalCopies:
    """Blobs and commits on the container's disk. A copy older than REFRESH is fetched
    again, so the Dict sees the read and keeps the entry."""

    def __init__(self, name: str) -> None:
        self.folder = Path(tempfile.gettempdir()) / "agex-modal-cache" / name
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.folder / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            if time.time() - path.stat().st_mtime > REFRESH:
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        temporary.write_bytes(value)
        os.replace(temporary, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
