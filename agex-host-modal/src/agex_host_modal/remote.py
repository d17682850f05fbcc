"""What runs in the Modal container: one task, from the shipped bytes to its outcome, yielded
message by message while it runs.

Messages are ``(kind, data)`` pairs, as ``agex.remote.messages`` writes them: events, model
output, and the outcome last (``agex.remote.outcome``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

#: The deployed function's name.
FUNCTION = "run_task"
#: The Dict through which callers ask running tasks to stop (Modal does not tell a function
#: that its caller stopped listening), and how often a running task looks at it.
CONTROL = "agex-control"
POLL = 1.0


def run_key(run: str) -> str:
    """Set when the caller of one run cancels it."""
    return f"run/{run}"


def session_key(agent: str, session: str) -> str:
    """Changes each time ``task.cancel(session)`` asks the agent's runs in a session to stop."""
    return f"session/{quote(agent, safe='')}/{quote(session, safe='')}"


async def run_task(envelope: dict[str, Any], payload: bytes) -> AsyncIterator[tuple[str, Any]]:
    """The deployed function: the shipped task run by ``agex.remote``, its messages yielded
    as ``(kind, data)`` while it runs, until its outcome."""
    from agex.remote import Envelope, Refused, stream
    from agex.remote.outcome import failure

    try:
        checked = Envelope.from_json(envelope)
    except Refused as refused:
        yield "error", failure(RuntimeError(f"the Modal image does not match: {refused}"))
        return
    if checked.state.storage is not None:
        await asyncio.to_thread(_reload, checked)
    stop = asyncio.Event()
    messages = stream(checked, payload, stop=stop)
    watching = asyncio.ensure_future(_watch(checked, stop))
    try:
        async for message in messages:
            yield message.kind, message.data
    finally:
        watching.cancel()
        await messages.aclose()


def _reload(envelope: Any) -> None:
    """See what other containers committed to the state since this one last looked."""
    from agex.stores import LOCAL

    reload = getattr(LOCAL.storage(envelope.state), "reload", None)
    if reload is not None:
        reload()


async def _watch(envelope: Any, stop: asyncio.Event) -> None:
    """Stop the run when its caller, or ``task.cancel(session)``, asks through CONTROL."""
    from agex_host_modal import sdk

    control = sdk.modal().Dict.from_name(CONTROL, create_if_missing=True)
    mine = run_key(envelope.run)
    theirs = session_key(envelope.agent, envelope.session)
    before = await asyncio.to_thread(control.get, theirs)
    while True:
        await asyncio.sleep(POLL)
        asked = await asyncio.to_thread(control.get, mine)
        if asked is not None or await asyncio.to_thread(control.get, theirs) != before:
            stop.set()
            return
