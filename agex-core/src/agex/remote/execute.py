"""The far side of a remote run: load the shipped task, run its whole loop here, and write
what it says to an :class:`~agex.remote.messages.Outbox`, outcome last.

Every remote host runs tasks through :func:`execute` (or :func:`stream`, which wraps it for a
host that forwards messages as they come): there is one way a shipped task runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from agex import plugins
from agex.errors import ProviderError, TaskCancelled, TaskTimeout
from agex.isolation.settings import LOCAL as LOCAL_ISOLATION
from agex.isolation.settings import Isolation
from agex.isolation.supervisor import Run, registered
from agex.loop import ABANDONED, run_loop
from agex.protocols import Invocation
from agex.remote.envelope import MAX_NESTING, Envelope, Refused
from agex.remote.messages import Lost, Message, Outbox
from agex.remote.outcome import ABANDONED_OUTCOME, failure, seal, success, with_model
from agex.remote.shipping import unship
from agex.stores import LOCAL, Stores

if TYPE_CHECKING:
    from agex.protocols import Serializer

#: Payloads larger than this are loaded in a worker thread, not on the event loop.
INLINE_LOAD = 256 * 1024


class Shipped(NamedTuple):
    """A task loaded on the far side, ready to run."""

    envelope: Envelope
    task: Any  # an agex.task.Task (a layer above): its agent is what runs
    arguments: dict[str, Any]
    serializer: Serializer


async def unpack(envelope: Envelope, payload: bytes) -> Shipped:
    """Load the task ``payload`` carries, under the envelope's serializer and state;
    :class:`Refused` when it cannot be loaded here."""
    try:
        serializer = plugins.create("serializer", envelope.serializer)
    except ProviderError as exc:
        raise Refused(
            400, f"serializer {envelope.serializer!r} is not available here: {exc}"
        ) from None
    try:
        if len(payload) > INLINE_LOAD:
            task, arguments = await asyncio.to_thread(unship, payload, serializer)
        else:
            task, arguments = unship(payload, serializer)
    except Exception as exc:
        raise Refused(
            400,
            f"the task could not be loaded here: {type(exc).__name__}: {exc}. Whatever the "
            "agent uses must be importable where it runs: install it there",
        ) from None
    if task.agent.name != envelope.agent:
        raise Refused(422, "the envelope names another agent than the task's")
    # Where the state is kept is the envelope's (the host's) to say; the variables a new
    # session starts with are the agent's own, loaded with it.
    task.agent.state_config = replace(envelope.state, init=task.agent.state_config.init)
    return Shipped(envelope, task, arguments, serializer)


async def execute(
    envelope: Envelope,
    payload: bytes,
    outbox: Outbox,
    *,
    stores: Stores = LOCAL,
    key: str = "",
    isolation: Isolation = LOCAL_ISOLATION,
) -> None:
    """Run the shipped task's loop here, its events and model output into ``outbox``, and its
    outcome last, however it ends: with a value, an exception, the envelope's time limit,
    or cancelled (then the outcome is ``TaskCancelled`` and the cancellation goes on).

    ``stores`` makes the storages its state lives in (a server passes its own, confined to
    its state directory); ``key`` authenticates a serialized value (see ``settle``);
    ``isolation`` says where the agent code runs: in a confined worker process, which alone
    loads the payload, or (level ``"none"``) in this process.
    """
    model: Any = None
    try:
        spec = isolation.spec(envelope.isolation, envelope.memory_mb)
        isolation.models(envelope)
        if spec is None:
            shipped = await unpack(envelope, payload)
            if isolation.endpoints is not None:
                _hold_models(shipped.task.agent, isolation)
            model = shipped.task.agent.llm
            work = _in_process(shipped, outbox, stores)
        else:
            run = Run(envelope, payload, outbox, stores=stores, spec=spec, isolation=isolation)
            work = run()
        try:
            async with asyncio.timeout(envelope.timeout) as limit:
                outcome = await work
        except TimeoutError:
            if not limit.expired():
                raise
            raise TaskTimeout(
                f"the run ran past the host's {envelope.timeout:g}s timeout"
            ) from None
        finally:
            if spec is not None:
                model = run.model
        if outcome is ABANDONED:
            outcome = ABANDONED_OUTCOME
        elif spec is None:
            outcome = success(outcome, shipped.task.returns, key, model)
        else:
            outcome = seal(with_model(outcome, model), key)
    except asyncio.CancelledError:
        outbox.finish(failure(TaskCancelled("the run was cancelled"), model))
        raise
    except Refused as refused:
        outcome = failure(refused)
    except Exception as exc:
        outcome = failure(exc, model)
    outbox.finish(outcome)


def _hold_models(agent: Any, isolation: Isolation, depth: int = 0) -> None:
    """The models of a task loaded here, and of the sub-agents it runs here, held to where
    ``isolation`` lets this place's keys go (as the envelope said, checked before)."""
    config = getattr(agent.llm, "config", None)
    if callable(config):
        isolation.hold(agent.llm, isolation.model(config()))
    if depth < MAX_NESTING:
        for task in registered(agent).values():
            if task.agent.host.dump_config().get("provider") == "local":
                _hold_models(task.agent, isolation, depth + 1)


async def _in_process(shipped: Shipped, outbox: Outbox, stores: Stores) -> Any:
    task = shipped.task
    invocation = Invocation(task.agent, task, shipped.arguments, shipped.envelope.session)
    return await run_loop(invocation, outbox, stores)


async def stream(
    envelope: Envelope,
    payload: bytes,
    *,
    stores: Stores = LOCAL,
    key: str = "",
    isolation: Isolation = LOCAL_ISOLATION,
    stop: asyncio.Event | None = None,
) -> AsyncGenerator[Message, None]:
    """Run a shipped task here and yield its messages as they come, outcome last. A task that
    cannot be loaded yields only its error. Setting ``stop`` cancels the run, whose
    ``TaskCancelled`` outcome is still yielded; closing the iterator cancels it too."""
    found = batches(envelope, payload, stores=stores, key=key, isolation=isolation, stop=stop)
    try:
        async for batch in found:
            for message in batch:
                yield message
    finally:
        await found.aclose()


async def batches(
    envelope: Envelope,
    payload: bytes,
    *,
    stores: Stores = LOCAL,
    key: str = "",
    isolation: Isolation = LOCAL_ISOLATION,
    stop: asyncio.Event | None = None,
    keepalive: float | None = None,
) -> AsyncGenerator[list[Message], None]:
    """:func:`stream`, a batch at a time: the messages written since the last batch was
    taken, for a host whose every send costs the same, whatever it carries; and an empty
    batch after each ``keepalive`` seconds without one."""
    outbox = Outbox()
    running = asyncio.ensure_future(
        execute(envelope, payload, outbox, stores=stores, key=key, isolation=isolation)
    )
    stopping = asyncio.ensure_future(_stop(stop, running)) if stop is not None else None
    try:
        async for batch in outbox.follow(keepalive=keepalive):
            assert not isinstance(batch, Lost)  # an unbounded outbox drops nothing
            yield batch
    finally:
        running.cancel()
        if stopping is not None:
            stopping.cancel()


async def _stop(stop: asyncio.Event, running: asyncio.Future[None]) -> None:
    await stop.wait()
    running.cancel()
