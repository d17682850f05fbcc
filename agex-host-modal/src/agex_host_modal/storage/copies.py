"""Local copies of what never changes (blobs and commits) on a container's disk, read
before the Dict."""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
import time
from pathlib import Path

from agex_host_modal.storage.clock import DAY


class _LocalCopies:
    """Blobs and commits on the container's disk. A copy older than a day is fetched again,
    so that the Dict sees the read."""

    def __init__(self, name: str) -> None:
        self.folder = Path(tempfile.gettempdir()) / "agex-modal-cache" / name
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.folder / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            if time.time() - path.stat().st_mtime > DAY:
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
