"""The storage protocol: the few byte-store operations versioned state is built on.

It is small on purpose, so that a Redis, S3 or database storage is an afternoon's work.
Every storage passes ``agex.testing.StorageContract``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class Storage(Protocol):
    """Keys are non-empty strings, values are bytes."""

    def get(self, key: str) -> bytes | None:
        """The value at ``key``, or None when there is none."""
        ...

    def put_many(self, items: Mapping[str, bytes]) -> None:
        """Write every item, or none of them if the write fails."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """Atomically set ``key`` to ``new`` if it holds ``expected`` (None: if it is absent).

        Returns whether it did. This is what moves a session's head safely.
        """
        ...

    def keys(self, prefix: str = "") -> Iterable[str]:
        """Every key that starts with ``prefix``."""
        ...


def check_key(key: object) -> str:
    """Reject what is not a usable key, with a message that names it."""
    if not isinstance(key, str) or not key:
        raise TypeError(f"storage keys are non-empty strings, got {key!r}")
    return key


def check_value(key: str, value: object) -> bytes:
    """Accept any bytes-like value for ``key`` and return it as bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"storage values are bytes; {key!r} got {type(value).__name__}")


def check_items(items: Mapping[str, object]) -> dict[str, bytes]:
    """Check a whole batch before anything is written, so a bad item writes nothing."""
    return {check_key(k): check_value(k, v) for k, v in items.items()}
