"""Storages: the protocol (:class:`Storage`, defined in :mod:`agex.protocols`) and the checks
every storage makes of what it is given.

The protocol is small on purpose, so that a Redis, S3 or database storage is an afternoon's
work. Every storage passes ``agex.testing.StorageContract``.
"""

from __future__ import annotations

from collections.abc import Mapping

from agex.protocols import Storage as Storage


def put_and_set(
    storage: Storage, items: Mapping[str, bytes], key: str, expected: bytes | None, new: bytes
) -> bool:
    """Write ``items``, then set ``key`` from ``expected`` to ``new``; whether it was set.

    A storage that can do both in one transaction says so with a ``put_and_set`` method of
    this signature (writing nothing when the set fails); any other writes the items first,
    so that a crash between the two leaves them unreferenced, never ``key`` pointing at
    what is missing."""
    together = getattr(storage, "put_and_set", None)
    if together is not None:
        return bool(together(items, key, expected, new))
    if items:
        storage.put_many(items)
    return storage.compare_and_set(key, expected, new)


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
