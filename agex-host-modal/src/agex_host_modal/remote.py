"""What runs in the Modal container: one task, from the shipped bytes to its outcome, yielded
message by message while it runs.

Messages are ``(kind, data)`` pairs:

- ``("event", json)``: one agex event (``Event.to_json``);
- ``("tokens", [text, ...])``: model tokens (those that arrived together travel together);
- ``("result", {"value": bytes})``: the task's value, serialized with the host's serializer;
- ``("error", {...})``: how the task ended without a value (``agex.hosts.outcomes``).

The last two also carry a scripted model's ``position``, so the caller's model continues
where this run stopped.
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
    from agex import plugins
    from agex.hosts.outcomes import encode_error
    from agex.hosts.shipping import mismatch, versions

    serializer = plugins.create("serializer", envelope.get("serializer", "cloudpickle"))
    why = mismatch(envelope.get("versions"), versions())
    if why is not None:
        yield "error", encode_error(RuntimeError(f"the Modal image does not match: {why}"))
        return
    pending: list[tuple[str, Any]] = []
    changed = asyncio.Event()

    def publish(kind: str, data: Any) -> None:
        if kind == "tokens" and pending and pending[-1][0] == "tokens":
            pending[-1][1].extend(data)
        else:
            pending.append((kind, data))
        changed.set()

    running = asyncio.ensure_future(_execute(envelope, payload, serializer, publish))
    watching = asyncio.ensure_future(_watch(envelope, running))
    try:
        while True:
            await changed.wait()
            changed.clear()
            batch = pending[:]
            pending.clear()
            for message in batch:
                yield message
                if message[0] in ("result", "error"):
                    return
    finally:
        running.cancel()
        watching.cancel()


async def _watch(envelope: dict[str, Any], running: asyncio.Future[None]) -> None:
    """Cancel the run when its caller, or ``task.cancel(session)``, asks through CONTROL."""
    from agex_host_modal import sdk

    control = sdk.modal().Dict.from_name(CONTROL, create_if_missing=True)
    mine = run_key(envelope["run"])
    theirs = session_key(envelope["agent"], envelope["session"])
    before = await asyncio.to_thread(control.get, theirs)
    while not running.done():
        await asyncio.sleep(POLL)
        asked = await asyncio.to_thread(control.get, mine)
        if asked is not None or await asyncio.to_thread(control.get, theirs) != before:
            running.cancel()
            return


async def _execute(envelope: dict[str, Any], payload: bytes, serializer: Any, publish: Any) -> None:
    from agex.errors import TaskCancelled, TaskTimeout
    from agex.hosts import Invocation, Sink
    from agex.hosts.outcomes import encode_error
    from agex.hosts.shipping import unship
    from agex.loop import run_loop
    from agex.state.config import StateConfig
    from agex.state.stores import storage_for

    kind, message, agent = "error", {}, None
    try:
        task, arguments = unship(payload, serializer)
        agent = task.agent
        state = envelope["state"]
        agent.state_config = StateConfig(state["type"], state["storage"], state["path"])
        if agent.state_config.storage is not None:
            reload = getattr(storage_for(agent.state_config), "reload", None)
            if reload is not None:
                await asyncio.to_thread(reload)  # see what other containers committed
        sink = Sink(
            lambda event: publish("event", event.to_json()),
            lambda text: publish("tokens", [text]),
        )
        invocation = Invocation(agent, task, arguments, envelope["session"])
        timeout = envelope["timeout"]
        try:
            async with asyncio.timeout(timeout) as limit:
                value = await run_loop(invocation, sink)
        except TimeoutError:
            if not limit.expired():
                raise
            raise TaskTimeout(f"{task.name} ran past the host's {timeout:g}s timeout") from None
        kind, message = "result", {"value": serializer.dumps(value)}
    except asyncio.CancelledError:
        message = encode_error(TaskCancelled("the task was cancelled"))
        raise
    except Exception as exc:
        message = encode_error(exc)
    finally:
        position = getattr(getattr(agent, "llm", None), "position", None)
        if isinstance(position, int):
            message["position"] = position
        publish(kind, message)
