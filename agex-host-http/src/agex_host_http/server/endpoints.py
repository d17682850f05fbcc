"""The two endpoints every run goes through, as plain ASGI ahead of FastAPI: start a run
(``POST /v1/runs/{run_id}``) and follow one (``GET /v1/runs/{run_id}/events``).

Many runs start at once, and each one's per-request cost delays the first model call of
the runs behind it: these two skip FastAPI's dependency solving and the task group it
gives each streamed response. FastAPI still declares both, so /openapi.json documents
them, and it answers what does not match them exactly (a malformed run id gets its 422).
:class:`~agex_host_http.server.guard.Guard` runs before either.

A run request's envelope (plain JSON) is checked first: versions, session name, state type
and path. Only then is the task loaded, and the run starts.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from agex import plugins
from agex.errors import ProviderError, StatePathRefused
from agex.hosts import Invocation, Sink, check_session
from agex.hosts.running import RUNS
from agex.hosts.shipping import unship
from agex.loop import run_loop
from agex.state.config import StateConfig
from agex.state.stores import confined
from agex_host_http import wire
from agex_host_http.server.guard import ASGIApp, Scope, respond
from agex_host_http.server.runs import Run, RunBoard

#: Run ids are chosen by the client, so that it can reconnect even if the first response
#: never reached it.
RUN_ID = r"^[A-Za-z0-9_-]{8,64}$"
#: Payloads larger than this are loaded in a worker thread, not on the event loop.
INLINE_LOAD = 256 * 1024

_RUN_ID = re.compile(RUN_ID.strip("^$"))
_RUNS = wire.API + "/runs/"
_EVENTS = "/events"
#: As FastAPI's StreamingResponse sent them.
_SSE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
_BAD_LAST_ID = "Last-Event-ID must be a message id (a number)"


class RunEndpoints:
    """ASGI middleware answering the run endpoints; everything else goes on to ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        board: RunBoard,
        server_versions: dict[str, str],
        state_dir: Path,
        token: str,
        detach_grace: float,
    ) -> None:
        self.app = app
        self.board = board
        self.server_versions = server_versions
        self.state_dir = state_dir
        self.token = token
        self.detach_grace = detach_grace

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(_RUNS):
            rest = scope["path"][len(_RUNS) :]
            method = scope["method"]
            if method == "POST" and _RUN_ID.fullmatch(rest):
                await self.start(rest, scope, receive, send)
                return
            if method == "GET" and rest.endswith(_EVENTS):
                run_id = rest[: -len(_EVENTS)]
                if _RUN_ID.fullmatch(run_id):
                    await self.follow(run_id, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def start(self, run_id: str, scope: Scope, receive: Any, send: Any) -> None:
        """Start a run and stream its messages. Sent again for a run that exists (its first
        answer was lost), it follows that run, as ``/events`` does, and its body is never
        read."""
        run = self.board.runs.get(run_id)
        if run is None:
            body = await _body(receive)
            if body is None:
                return  # the client left before it finished sending
            try:
                run = await self._open(run_id, body)
            except _Refused as refused:
                await respond(send, refused.status, str(refused))
                return
            if run is not None:
                await self._stream(run, 0, receive, send)
                return
            run = self.board.runs[run_id]  # the same request, twice at once
        after = _after(scope)
        if after is None:
            await respond(send, 400, _BAD_LAST_ID)
            return
        await self._stream(run, after, receive, send)

    async def follow(self, run_id: str, scope: Scope, receive: Any, send: Any) -> None:
        """Follow a run; with Last-Event-ID, only the messages after that one."""
        run = self.board.runs.get(run_id)
        if run is None:
            detail = f"this server has no run {run_id} (it ended long ago, or the server restarted)"
            await respond(send, 404, detail)
            return
        after = _after(scope)
        if after is None:
            await respond(send, 400, _BAD_LAST_ID)
            return
        await self._stream(run, after, receive, send)

    async def _open(self, run_id: str, body: bytes) -> Run | None:
        """The run this request starts, running; None when another request for the same id
        started it meanwhile."""
        try:
            envelope, payload = wire.split_request(body)
        except wire.BadRequest as exc:
            raise _Refused(400, str(exc)) from None
        session, state, timeout, serializer = _read_envelope(
            envelope, self.server_versions, self.state_dir
        )
        try:
            if len(payload) > INLINE_LOAD:
                task, arguments = await asyncio.to_thread(unship, payload, serializer)
            else:
                task, arguments = unship(payload, serializer)
        except Exception as exc:
            raise _Refused(
                400,
                f"the task could not be loaded on the server: {type(exc).__name__}: {exc}. "
                "Whatever the agent uses must be importable here: install it on the server",
            ) from None
        if run_id in self.board.runs:
            return None
        task.agent.state_config = state
        run = self.board.open(run_id, task.agent.name, session)
        invocation = Invocation(task.agent, task, arguments, session)
        work = _execute(run, invocation, serializer, timeout, self.token)
        self.board.watch(run, asyncio.create_task(work))
        return run

    async def _stream(self, run: Run, after: int, receive: Any, send: Any) -> None:
        """The run's messages as server-sent events, until the run ends or the client goes
        away: a client that leaves is noticed at once (the server sends nothing on a
        connection that closed), so that the run's detach grace starts."""
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        streaming = asyncio.current_task()
        assert streaming is not None
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            streaming.cancel()

        watcher = asyncio.ensure_future(watch())
        messages = run.follow(after, self.detach_grace)
        try:
            async for chunk in messages:
                if run.done:  # the chunk ends with the run's last message: so does the answer
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            else:
                chunk = b""
            watcher.cancel()  # ending the response wakes it
            await send({"type": "http.response.body", "body": chunk, "more_body": False})
        except asyncio.CancelledError:
            if not left or streaming.uncancel() > 0:
                raise  # cancelled by more than the client leaving: the server is stopping
        finally:
            watcher.cancel()
            await messages.aclose()


async def _body(receive: Any) -> bytes | None:
    """The whole request body (Guard has bounded its length), or None if the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _after(scope: Scope) -> int | None:
    """The id of the last message the client has (``Last-Event-ID``), 0 for none, None when
    it is not a message id."""
    for name, value in scope["headers"]:
        if name == b"last-event-id":
            if not value.isdigit() or len(value) > 18:  # bytes: ASCII digits only
                return None
            return int(value)
    return 0


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _read_envelope(
    envelope: dict[str, Any], server_versions: dict[str, str], state_dir: Path
) -> tuple[str, StateConfig, float | None, Any]:
    """Check a run's envelope; everything here is plain JSON, read before the task."""
    why = wire.mismatch(envelope.get("versions"), server_versions)
    if why is not None:
        raise _Refused(409, why)
    session = envelope.get("session")
    try:
        check_session(session)
    except ValueError as exc:
        raise _Refused(422, str(exc)) from None
    timeout = envelope.get("timeout")
    if timeout is not None and (type(timeout) not in (int, float) or not 0 < timeout < 10**7):
        raise _Refused(422, f"timeout must be a positive number of seconds, got {timeout!r}")
    name = envelope.get("serializer", "cloudpickle")
    try:
        if not isinstance(name, str):
            raise _Refused(422, "serializer must be a provider name")
        serializer = plugins.create("serializer", name)
    except ProviderError as exc:
        raise _Refused(400, f"serializer {name!r} is not available on the server: {exc}") from None
    assert isinstance(session, str)
    return session, _state(envelope.get("state"), state_dir), timeout, serializer


def _state(raw: Any, state_dir: Path) -> StateConfig:
    from agex.state.config import STATE_TYPES

    if not isinstance(raw, dict) or raw.get("type") not in STATE_TYPES:
        raise _Refused(422, f"state must say its type, one of {', '.join(STATE_TYPES)}")
    kind, storage, path = raw["type"], raw.get("storage"), raw.get("path")
    if kind == "ephemeral":
        return StateConfig("ephemeral", None, None)
    if kind == "live":
        raise _Refused(400, wire.LIVE_REFUSED)
    if not isinstance(storage, str) or storage == "memory" or not isinstance(path, str) or not path:
        raise _Refused(400, wire.MEMORY_REFUSED)
    try:
        plugins.resolve("storage", storage)
    except ProviderError as exc:
        raise _Refused(400, f"storage {storage!r} is not available on the server: {exc}") from None
    try:
        confined(path, state_dir)
    except StatePathRefused as exc:
        raise _Refused(403, str(exc)) from None
    return StateConfig(kind, storage, path)


async def _execute(
    run: Run,
    invocation: Invocation,
    serializer: Any,
    timeout: float | None,
    token: str,
) -> None:
    from agex.errors import TaskCancelled, TaskTimeout

    agent = invocation.agent
    sink = Sink(
        lambda event: run.publish("event", event.to_json()),
        run.token,
    )
    kind, message = "error", {}
    try:
        try:
            async with asyncio.timeout(timeout) as limit:
                value = await RUNS.run(agent.name, invocation.session, run_loop(invocation, sink))
        except TimeoutError:
            if not limit.expired():
                raise
            raise TaskTimeout(
                f"{invocation.task.name} ran past the host's {timeout:g}s timeout"
            ) from None
        kind, message = "result", wire.encode_value(value, token, serializer)
    except asyncio.CancelledError:
        if not run.cancel_requested:
            message = wire.encode_error(RuntimeError("the server is shutting down"))
            raise
        message = wire.encode_error(TaskCancelled(f"{invocation.task.name} was cancelled"))
    except Exception as exc:
        message = wire.encode_error(exc)
    finally:
        position = getattr(agent.llm, "position", None)
        if isinstance(position, int):
            message["position"] = position
        run.finish(kind, message)
