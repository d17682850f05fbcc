"""Storages: the protocol (:class:`Storage`, defined in :mod:`agex.protocols`) and the checks
every storage makes of what it is given.

The protocol is small on purpose, so that a Redis, S3 or database storage is an afternoon's
work. Every storage passes ``agex.testing.StorageContract``.
"""

from __future__ import annotations

from collections.abc import Mapping

from agex.protocols import Storage as Storage


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
