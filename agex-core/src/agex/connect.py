"""The three factories users call: where the loop runs, what it remembers, which model."""

from __future__ import annotations

import os
from typing import Any

from agex import llm, plugins
from agex.protocols import LLM, Host, StateConfig
from agex.state.config import STATE_TYPES, Init, checked_init


def connect_host(provider: str = "local", **kwargs: Any) -> Host:
    """A host: where an agent's loop runs ("local", "http", "modal", or any installed).

    ``kwargs`` go to the provider, e.g. ``url=`` for http or ``gpu=`` for modal.
    """
    host: Host = plugins.create("host", _name("provider", provider), **kwargs)
    return host


def connect_state(
    type: str = "versioned",
    storage: str = "memory",
    path: str | None = None,
    init: Init | None = None,
) -> StateConfig:
    """What an agent remembers: ``type`` is one of versioned, live, ephemeral; ``storage``
    names a storage provider (memory, disk, or any installed); ``path`` is where it keeps
    its data (required by disk). ``init`` (a dict, or a function returning one) holds the
    variables a session starts with: given to a versioned or live session the first time
    it is used, and to every ephemeral task."""
    if type not in STATE_TYPES:
        raise ValueError(f"state type must be one of {', '.join(STATE_TYPES)}; got {type!r}")
    init = checked_init(init)
    if type == "ephemeral":
        return StateConfig(type, None, None, init)
    plugins.resolve("storage", _name("storage", storage))
    if storage == "disk" and not path:
        raise ValueError(
            'storage="disk" needs a path: connect_state(type="versioned", storage="disk", '
            'path="my-agent")'
        )
    if path is not None and not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a string, got {path!r}")
    return StateConfig(type, storage, None if path is None else os.fspath(path), init)


def connect_llm(provider: str | None = None, model: str | None = None, **kwargs: Any) -> LLM:
    """An LLM client config. ``provider`` and ``model`` default to the environment variables
    AGEX_LLM_PROVIDER and AGEX_LLM_MODEL; ``kwargs`` go to the provider."""
    return llm.create(provider, model, **kwargs)


def _name(parameter: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{parameter} must be a provider name (a string), got {value!r}")
    return value
