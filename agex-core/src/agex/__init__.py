"""agex: code agents whose loop runs here, on an agex server, or on Modal.

The public names below load on first use, so ``import agex`` stays cheap: it loads no
plugin and no SDK.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

__version__ = "0.1.0"

_EXPORTS = {
    "connect_host": "agex.connect",
    "connect_state": "agex.connect",
    "connect_llm": "agex.connect",
    "StateConfig": "agex.state.config",
    "hookimpl": "agex.hookspecs",
    "AgexError": "agex.errors",
    "ProviderError": "agex.errors",
    "UnknownProviderError": "agex.errors",
    "ProviderNotInstalledError": "agex.errors",
    "DuplicateProviderError": "agex.errors",
    "PluginWarning": "agex.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from typing import Any

    from agex.connect import connect_host, connect_llm, connect_state
    from agex.errors import (
        AgexError,
        DuplicateProviderError,
        PluginWarning,
        ProviderError,
        ProviderNotInstalledError,
        UnknownProviderError,
    )
    from agex.hookspecs import hookimpl
    from agex.state.config import StateConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
