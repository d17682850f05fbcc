"""Storage "memory": a dict guarded by a lock. Fast; gone when the process ends."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from agex.storage import check_items, check_key, check_value


class MemoryStorage:
    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        return self._data.get(check_key(key))

    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        with self._lock:
            self._data.update(checked)

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(check_key(key), None)

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        check_key(key)
        new = check_value(key, new)
        expected = None if expected is None else check_value(key, expected)
        with self._lock:
            if self._data.get(key) != expected:
                return False
            self._data[key] = new
            return True

    def keys(self, prefix: str = "") -> list[str]:
        with self._lock:
            return sorted(k for k in self._data if k.startswith(prefix))
