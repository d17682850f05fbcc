"""agex: code agents whose loop runs here, on an agex server, or on Modal.

The public names below load on first use, so ``import agex`` stays cheap: it loads no
plugin and no SDK.
"""

from __future__ import annotations

import importlib

from agex.version import __version__ as __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing

_EXPORTS = {
    "Agent": "agex.agent",
    "pprint_events": "agex.display",
    "pprint_tokens": "agex.display",
    "view": "agex.inspection",
    "TaskFail": "agex.errors",
    "TaskClarify": "agex.errors",
    "TaskTimeout": "agex.errors",
    "TaskCancelled": "agex.errors",
    "RemoteExecutionError": "agex.errors",
    "TaskError": "agex.errors",
    "StateConflict": "agex.errors",
    "SessionInUse": "agex.errors",
    "LLMError": "agex.errors",
    "ProviderOptionError": "agex.errors",
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

    from agex.agent import Agent as Agent
    from agex.connect import connect_host as connect_host
    from agex.connect import connect_llm as connect_llm
    from agex.connect import connect_state as connect_state
    from agex.display import pprint_events as pprint_events
    from agex.display import pprint_tokens as pprint_tokens
    from agex.errors import AgexError as AgexError
    from agex.errors import DuplicateProviderError as DuplicateProviderError
    from agex.errors import LLMError as LLMError
    from agex.errors import PluginWarning as PluginWarning
    from agex.errors import ProviderError as ProviderError
    from agex.errors import ProviderNotInstalledError as ProviderNotInstalledError
    from agex.errors import ProviderOptionError as ProviderOptionError
    from agex.errors import RemoteExecutionError as RemoteExecutionError
    from agex.errors import SessionInUse as SessionInUse
    from agex.errors import StateConflict as StateConflict
    from agex.errors import TaskCancelled as TaskCancelled
    from agex.errors import TaskClarify as TaskClarify
    from agex.errors import TaskError as TaskError
    from agex.errors import TaskFail as TaskFail
    from agex.errors import TaskTimeout as TaskTimeout
    from agex.errors import UnknownProviderError as UnknownProviderError
    from agex.hookspecs import hookimpl as hookimpl
    from agex.inspection import view as view
    from agex.state.config import StateConfig as StateConfig


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
