"""What runs in the Modal container: one task, from the shipped bytes to its outcome, yielded
message by message while it runs.

Messages are ``(kind, data)`` pairs, as ``agex.remote.messages`` writes them: events, model
output, and the outcome last (``agex.remote.outcome``).

Modal tells a running function neither that its caller stopped listening nor that it runs
an input for the second time, so caller and container say it to each other in the Dict
``CONTROL``, under keys named by the run (the envelope's ``run``):

- ``start/<run>`` is put, unless present, when the input starts. Modal may stop a container
  and start the same input again from the beginning in another (it preempts containers);
  the second start finds the key and ends the run with :data:`RESTARTED` at once, instead of
  calling the model and running the agent's code a second time.
- ``run/<run>`` is set when the run's caller cancels it. ``task.cancel(session)`` puts
  ``session/<agent>/<session>/<second>`` (:func:`cancel_key`), and a run stops for any such
  key from the second of its call on (the caller sends its clock), so a cancel sent while
  the container was still starting is not missed. Runs look for these keys and never read
  a value a container could have written: reading a Modal Dict value unpickles it.
- ``alive/<run>`` is renewed by the caller every :data:`HEARTBEAT` seconds while it listens;
  a run whose caller has not renewed it for the ``stale`` seconds the caller asked for
  (:data:`STALE`) is stopped: its caller went away without a word (its process died).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from agex_host_modal import sdk

#: The deployed function's name.
FUNCTION = "run_task"
#: The Dict through which callers and containers speak (see the module's docstring), and
#: how often, at most, a running task looks at it.
CONTROL = "agex-control"
POLL = 1.0
#: Seconds by which the clocks of the canceller and the container may differ.
SKEW = 2
#: How often a caller renews its heartbeat, and how long a run goes on without one.
HEARTBEAT = 5.0
STALE = 30.0

RESTARTED = (
    "Modal started this task's input a second time, after it had already started in "
    "another container (Modal does so when it preempts a container, or when the machine "
    "under it fails). agex did not run it again, which would repeat its model calls and "
    "the side effects of its code. The session's state is unchanged: a task commits to its "
    "session only when it finishes. Run the task again"
)


class Restarted(Exception):
    """The outcome of an input Modal started a second time (see :data:`RESTARTED`)."""


def run_key(run: str) -> str:
    """Set when the caller of one run cancels it."""
    return f"run/{run}"


def start_key(run: str) -> str:
    """Put, unless present, when the run's input starts in a container."""
    return f"start/{run}"


def restart_key(run: str) -> str:
    """The outcome of a restarted input, for a caller whose stream never shows it (Modal's
    client skips as many of the new container's messages as it had from the first)."""
    return f"restarted/{run}"


def alive_key(run: str) -> str:
    """Renewed by the run's caller while it listens."""
    return f"alive/{run}"


def session_key(agent: str, session: str) -> str:
    """Where ``task.cancel(session)`` asks the agent's runs in a session to stop."""
    return f"session/{quote(agent, safe='')}/{quote(session, safe='')}"


def cancel_key(agent: str, session: str, when: float) -> str:
    """Put by ``task.cancel(session)``: one key per second of the canceller's clock. Runs
    look for the keys, never read their values: reading a Modal Dict value unpickles it,
    and any container of the workspace can write this Dict."""
    return f"{session_key(agent, session)}/{int(when)}"


def control() -> Any:
    return sdk.modal().Dict.from_name(CONTROL, create_if_missing=True)


async def run_task(
    envelope: dict[str, Any], payload: bytes, watch: dict[str, Any] | None = None
) -> AsyncIterator[tuple[str, Any]]:
    """The deployed function: the shipped task run by ``agex.remote``, its messages yielded
    as ``(kind, data)`` while it runs, until its outcome.

    ``watch`` is what the caller says about stopping: ``since``, the caller's clock at the
    call (a cancel of the session made later stops the run), and ``stale``, the seconds
    without its heartbeat after which the run stops (None: no heartbeat is watched).
    """
    from agex.errors import TaskCancelled
    from agex.remote import Envelope, Refused, stream
    from agex.remote.messages import ENDS
    from agex.remote.outcome import failure
    from agex.stores import LOCAL

    try:
        checked = Envelope.from_json(envelope)
    except Refused as refused:
        yield "error", failure(RuntimeError(f"the Modal image does not match: {refused}"))
        return
    control_dict = control()
    try:
        if await _started_before(control_dict, start_key(checked.run)):
            outcome = restarted_outcome()
            await control_dict.put.aio(restart_key(checked.run), True)
            yield "error", outcome
            return
        watcher = _Watch(control_dict, checked, watch or {})
        if await watcher.asked():
            yield "error", failure(TaskCancelled("the run was cancelled before it started"))
            return
        if checked.state.storage is not None:
            await _reload(checked.state)
            # Made here, off the loop, for the loop to find: making one may call Modal.
            await asyncio.to_thread(LOCAL.storage, checked.state)
    except Exception as exc:
        yield "error", failure(_starting(exc))
        return
    stop = asyncio.Event()
    watching = asyncio.ensure_future(watcher.follow(stop))
    messages = stream(checked, payload, stop=stop, isolation=_isolation())
    try:
        async for message in messages:
            if message.kind in ENDS and _failed(watching):
                # The run stopped because watching it failed: that failure is the outcome.
                yield "error", failure(watching.exception() or RuntimeError())
                return
            yield message.kind, message.data
    finally:
        watching.cancel()
        await messages.aclose()


def _isolation() -> Any:
    """As on an agex server: agent code runs in a confined worker, at the strongest level
    the container offers. The container holds the secrets' keys and Modal's credentials,
    which reach every Dict and Volume of the workspace; agent code must reach neither."""
    from agex.isolation import strongest
    from agex.isolation.settings import Isolation

    return Isolation(level=strongest())


def restarted_outcome() -> dict[str, Any]:
    """The outcome of an input Modal started a second time: made where it is needed, so the
    caller never reads one a container could have shaped."""
    from agex.remote.outcome import failure

    return failure(Restarted(RESTARTED))


async def _started_before(control: Any, key: str) -> bool:
    """Mark the run as started; True if it was already. The mark is this container's own
    token: Modal's client retries a put whose answer was lost, and the retry then finds
    the mark that its first attempt made, which is not a start before."""
    mine = f"{os.environ.get('MODAL_TASK_ID', '')}:{secrets.token_hex(8)}"
    if await control.put.aio(key, mine, skip_if_exists=True):
        return False
    return bool(await control.get.aio(key) != mine)


def _starting(exc: Exception) -> Exception:
    error = RuntimeError(
        f"the Modal container could not start the task: {type(exc).__name__}: {exc}. Run "
        "the task again"
    )
    error.__cause__ = exc
    return error


def _failed(task: asyncio.Future[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


async def _reload(state: Any) -> None:
    """See what other containers committed to the state's Volume since this one last looked
    (the disk tier; a Dict needs no reloading)."""
    from agex_host_modal.storage.volumes import mount_point

    if state.storage != "modal-volume" or not state.path:
        return
    if sdk.mounted(mount_point(state.path)).is_dir():
        await sdk.modal().Volume.from_name(state.path).reload.aio()


class _Watch:
    """Whether the run should stop, from what its caller and ``task.cancel`` put in CONTROL.

    Modal's errors reading the Dict are a look missed, tried again at the next one; any
    other error stops the run and is raised (it is a bug, and must be seen).
    """

    def __init__(self, control: Any, envelope: Any, watch: dict[str, Any]) -> None:
        self.control = control
        self.mine = run_key(envelope.run)
        self.agent, self.session = envelope.agent, envelope.session
        self.alive = alive_key(envelope.run)
        since = watch.get("since")
        #: Cancels of the session made after this (the caller's clock at the call) stop it.
        self.since = float(since) if isinstance(since, int | float) else None
        self.looked = 0  #: the last second of cancels looked for
        stale = watch.get("stale")
        self.stale = float(stale) if isinstance(stale, int | float) and stale > 0 else None
        self.poll = POLL if self.stale is None else min(POLL, self.stale / 4)
        self.clock = asyncio.get_running_loop().time
        self.beat: Any = None
        self.seen = self.clock()  # when the heartbeat last changed

    async def asked(self) -> bool:
        """One look: True when the run should stop."""
        get = self.control.get.aio
        try:
            if self.since is None:  # a caller that said nothing: from now on
                self.since = time.time()
            if await self.control.contains.aio(self.mine):
                return True
            if await self._session_cancelled():
                return True
            if self.stale is None:
                return False
            beat = await get(self.alive)
        except sdk.modal().exception.Error:
            return False
        if beat != self.beat:
            self.beat, self.seen = beat, self.clock()
            return False
        return self.clock() - self.seen > self.stale

    async def _session_cancelled(self) -> bool:
        """Whether a cancel of the session was made since the call: its keys for every
        second from then to a little past now (clocks of machines differ a little)."""
        assert self.since is not None
        now = int(time.time()) + SKEW
        seconds = range(max(int(self.since), self.looked - SKEW), now + 1)
        self.looked = now
        for second in seconds:
            if await self.control.contains.aio(cancel_key(self.agent, self.session, second)):
                return True
        return False

    async def follow(self, stop: asyncio.Event) -> None:
        """Look every ``poll`` seconds, and set ``stop`` when the run should stop."""
        try:
            while not await self.asked():
                await asyncio.sleep(self.poll)
        finally:
            stop.set()
