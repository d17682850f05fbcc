"""One storage object per (provider, path) in this process, so that successive tasks (and
agents sharing a state configuration) see the same store."""

from __future__ import annotations

import threading
from typing import Any

from agex import plugins
from agex.state.config import StateConfig

_stores: dict[tuple[str, str | None], Any] = {}
_lock = threading.Lock()


def storage_for(config: StateConfig) -> Any:
    if config.storage is None:
        raise ValueError(f"{config.type} state keeps no storage")
    key = (config.storage, config.path)
    with _lock:
        store = _stores.get(key)
        if store is None:
            options = {} if config.path is None else {"path": config.path}
            store = _stores[key] = plugins.create("storage", config.storage, **options)
        return store
