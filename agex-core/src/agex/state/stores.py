"""Transitional: the old names of :mod:`agex.stores`, until the agex server and the Modal host
pass a :class:`agex.stores.Stores` of their own; then this module goes."""

from __future__ import annotations

from pathlib import Path

from agex.protocols import StateConfig, Storage
from agex.stores import LOCAL
from agex.stores import confined as confined


def confine_to(root: str | Path | None) -> None:
    """Resolve every state path of this process's storages inside ``root`` from now on."""
    LOCAL.root = None if root is None else Path(root).resolve()


def storage_for(config: StateConfig) -> Storage:
    """The storage of this process for ``config``."""
    return LOCAL.storage(config)


def forget() -> None:
    """Drop the storage objects this process made so far."""
    LOCAL.forget()
