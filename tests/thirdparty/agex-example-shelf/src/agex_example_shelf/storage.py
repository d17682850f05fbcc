"""Every key in one JSON file, replaced atomically on each write: for small state, one process."""

import base64
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from agex.storage import check_items, check_key, check_value


class ShelfStorage:
    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, bytes]:
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        return {k: base64.b64decode(v) for k, v in raw.items()}

    def _write(self, data: dict[str, bytes]) -> None:
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(json.dumps({k: base64.b64encode(v).decode() for k, v in data.items()}))
        os.replace(tmp, self._path)

    def get(self, key: str) -> bytes | None:
        check_key(key)
        with self._lock:
            return self._read().get(key)

    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        with self._lock:
            self._write({**self._read(), **checked})

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            data = self._read()
            if data.pop(key, None) is not None:
                self._write(data)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        check_key(key)
        new = check_value(key, new)
        with self._lock:
            data = self._read()
            if data.get(key) != expected:
                return False
            data[key] = new
            self._write(data)
            return True

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._read() if k.startswith(prefix))
