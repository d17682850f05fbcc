"""Storage "modal-volume" (``path`` names a Volume and a Dict): every key in the Volume,
which keeps it until it is deleted, and the small ones in the Dict (a ``ModalDictStorage``,
its index), which answers reads first and moves heads atomically.

Inside a Modal container that mounts the Volume, files go through the mount: reloaded at the
start of a task, committed once per write. Elsewhere (on the client, inspecting history)
through the Volume's API. See ``layout`` for the files.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from agex.state.versioned import IMMUTABLE
from agex.storage import check_items, check_key, check_value
from agex_host_modal import names, sdk
from agex_host_modal.storage.dicts import LEASES, PIECE, ModalDictStorage
from agex_host_modal.storage.layout import _Files, _MountedFiles, _RemoteFiles
from agex_host_modal.storage.surfaced import _surfaced

#: Where a function mounts the Volume of a state path (``mount_point``).
MOUNT_ROOT = "/agex-volumes"
#: The Volume version: 1. Modal documents Volumes v2 as a beta that may still lose data and
#: is not for mission-critical data, and the disk tier is the one meant to last; agex keeps a
#: v1 Volume well under its guidance (at most 50,000 files) by packing what never changes (see
#: ``layout``). Existing Volumes are v1 too, and a Volume cannot change version.
VOLUME_VERSION = 1


def mount_point(name: str) -> str:
    return f"{MOUNT_ROOT}/{name}"


def volume(name: str) -> Any:
    """The Volume of a modal-volume storage (created if missing), at VOLUME_VERSION."""
    return sdk.modal().Volume.from_name(name, create_if_missing=True, version=VOLUME_VERSION)


class ModalVolumeStorage:
    provider = "modal-volume"

    def __init__(self, path: str | None = None) -> None:
        self.name = names.check(path, "the path of a modal-volume storage (the Volume's name)")
        self.index = ModalDictStorage(self.name, backed=True)
        self.index.on_look = self._repair
        self._volume = volume(self.name)
        self._views: dict[str, _Files] = {}
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """See what other containers committed (at the start of each task)."""
        self._files().reload()

    @_surfaced("read")
    def get(self, key: str) -> bytes | None:
        value = self.index.get(key)
        if value is not None or key.startswith(LEASES):
            return value
        found = self._files().read(check_key(key))
        if found is None:
            return None
        token, value = found
        return value if self.index.restore(key, token, value) else None

    @_surfaced("write")
    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        if not checked:
            return
        self._files().write_many({k: v for k, v in checked.items() if not k.startswith(LEASES)})
        # Large blobs are not mirrored: Modal advises small Dict objects, the mount serves
        # them from the container's disk, and they would cost the Dict request after request.
        # A key that may change is mirrored whatever its size (in pieces): the Dict decides
        # its moves.
        self.index.put_many(
            {k: v for k, v in checked.items() if len(v) <= PIECE or not k.startswith(IMMUTABLE)}
        )

    @_surfaced("write")
    def delete(self, key: str) -> None:
        self.index.delete(key)
        if not key.startswith(LEASES):
            self._files().remove(key)

    @_surfaced("write")
    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """The Dict decides the move; then the Volume gets the new value as a file named by
        its token, so that the newest move wins there whatever order containers commit in.
        If the Volume refuses it, the move is taken back and the write fails. A move whose
        file was never written (a container stopped between) is superseded by the key's
        next move, or written by the next day's look, long before the Dict forgets it
        unless the state goes unused for a week."""
        new = check_value(check_key(key), new)
        expected = None if expected is None else check_value(key, expected)
        if key.startswith(LEASES):
            return self.index.compare_and_set(key, expected, new)
        self.get(key)  # a value the Dict forgot comes back from the Volume first
        moved = self.index.move(key, expected, new)
        if moved is None:
            return False
        before, token = moved
        try:
            self._files().write_move(key, token, new, before)
        except Exception:  # (a container stopped here runs nothing: see above)
            if expected is not None:
                self.index.compare_and_set(key, new, expected)
            elif self.index.get(key) == new:
                self.index.delete(key)
            raise
        return True

    @_surfaced("read")
    def keys(self, prefix: str = "") -> list[str]:
        return sorted(set(self.index.keys(prefix)) | set(self._files().keys(prefix)))

    def _repair(self, tips: dict[str, tuple[str, bytes]]) -> None:
        """The daily look: every moving key's current value is in the Volume."""
        files = self._files()
        for key, (token, value) in tips.items():
            found = files.read(key)
            if found is None or found[1] != value:
                files.write_move(key, token, value, None)

    def _files(self) -> _Files:
        """The mount when this code runs in a container that has one, else the API."""
        root = sdk.mounted(mount_point(self.name))
        where = str(root) if root.is_dir() else ""
        with self._lock:
            files = self._views.get(where)
            if files is None:
                files = _MountedFiles(root, self._volume) if where else _RemoteFiles(self._volume)
                self._views[where] = files
        return files

    def __repr__(self) -> str:
        return f"ModalVolumeStorage({self.name!r})"
