"""The host's concurrency machinery: event loops, futures, tasks, handles and transports.

Agent code never holds one. From a future it reaches the event loop that resolves it, and an
event loop runs whatever it is given (a shell, through ``subprocess_shell``) in the trusted
process, outside any time limit. Like modules, these are refused wherever a value reaches
agent code through the guards.
"""

from __future__ import annotations

import sys
from typing import Any

#: The machinery's classes, by the module that defines them, once that module is imported.
_KINDS: dict[str, list[tuple[type, str]]] = {}
_ALL: tuple[type, ...] = ()


def _loaded() -> tuple[type, ...]:
    """The machinery's classes among the modules imported so far (looked up until both
    are): importing asyncio here would make ``import agex`` pay for it, and an object of a
    module nobody imported cannot exist."""
    global _ALL
    if len(_KINDS) < 2:
        found = len(_KINDS)
        asyncio = sys.modules.get("asyncio")
        if asyncio is not None and "asyncio" not in _KINDS:
            _KINDS["asyncio"] = [
                (asyncio.AbstractEventLoop, "an event loop"),
                (asyncio.Future, "an asyncio future"),  # tasks too
                (asyncio.Handle, "an event loop's handle"),
                (asyncio.BaseTransport, "an asyncio transport"),
            ]
        futures = sys.modules.get("concurrent.futures")
        if futures is not None and "futures" not in _KINDS:
            _KINDS["futures"] = [
                (futures.Future, "a concurrent future"),
                (futures.Executor, "an executor"),
            ]
        if len(_KINDS) != found:  # rebuilt only when a module's classes were added
            _ALL = tuple(cls for kinds in _KINDS.values() for cls, _ in kinds)
    return _ALL


def machinery(value: Any) -> str | None:
    """What ``value`` is, if it is part of the host's concurrency machinery or the class of
    such a part (its methods, called unbound, do what the part's would), or None."""
    classes = _loaded()
    cls = value if isinstance(value, type) else type(value)
    if not classes or not issubclass(cls, classes):
        return None
    what = next(label for kinds in _KINDS.values() for k, label in kinds if issubclass(cls, k))
    return f"the class of {what}" if cls is value else what
