"""The host's concurrency machinery: event loops, futures, tasks, handles and transports.

Agent code never holds one. From a future it reaches the event loop that resolves it, and an
event loop runs whatever it is given (a shell, through ``subprocess_shell``) in the trusted
process, outside any time limit. Like modules, these are refused wherever a value reaches
agent code through the guards.
"""

from __future__ import annotations

import sys
from typing import Any


def machinery(value: Any) -> str | None:
    """What ``value`` is, if it is part of the host's concurrency machinery, or None.

    Only the modules already imported are asked: an object of a module nobody imported
    cannot exist, and importing asyncio here would make ``import agex`` pay for it."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        if isinstance(value, asyncio.AbstractEventLoop):
            return "an event loop"
        if isinstance(value, asyncio.Future):  # tasks too
            return "an asyncio future"
        if isinstance(value, asyncio.Handle):
            return "an event loop's handle"
        if isinstance(value, asyncio.BaseTransport):
            return "an asyncio transport"
    futures = sys.modules.get("concurrent.futures")
    if futures is not None and isinstance(value, futures.Future | futures.Executor):
        return "a concurrent future"
    return None
