"""The agex server's HTTP API (FastAPI).

Every endpoint that acts needs the bearer token, checked by :class:`Guard` before the
request reaches FastAPI, so nothing from an unauthenticated request is ever parsed, let
alone unpickled. A run request's envelope (plain JSON) is checked next: versions, session
name, state type and path. Only then is the task loaded, and the run starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

import agex
from agex import plugins
from agex.errors import ProviderError, StatePathRefused
from agex.hosts import Invocation, Sink, check_session
from agex.hosts.running import RUNS
from agex.hosts.shipping import unship
from agex.loop import run_loop
from agex.state.config import StateConfig
from agex.state.stores import confine_to, confined
from agex_host_http import wire
from agex_host_http.server.runs import KEEPALIVE, Run, RunBoard

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Run ids are chosen by the client, so that it can reconnect even if the first response
#: never reached it.
RUN_ID = r"^[A-Za-z0-9_-]{8,64}$"
#: Reachable without the token: nothing here acts or reveals anything.
PUBLIC = frozenset({"/v1/health", "/openapi.json"})
#: Payloads larger than this are loaded in a worker thread, not on the event loop.
INLINE_LOAD = 256 * 1024


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    token: str | None = None
    max_body: int = 32 * 1024 * 1024
    #: Messages each run keeps for clients that reconnect.
    replay: int = 10_000
    #: Seconds a run may go without any client following it before it is cancelled.
    detach_grace: float = 30.0
    #: Seconds a finished run stays available for a late reconnect.
    retention: float = 300.0
    keepalive: float = KEEPALIVE
    #: Threads that run agent code (sandbox steps, state commits).
    workers: int = 32


class Guard:
    """ASGI middleware: the token, then the body size, before anything else runs."""

    def __init__(self, app: ASGIApp, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refused = self._refuse(scope, headers)
        if refused is not None:
            status, detail, extra = refused
            await _respond(send, status, detail, extra)
            return
        await self.app(scope, receive, send)

    def _refuse(
        self, scope: Scope, headers: dict[bytes, bytes]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        if self.token is not None and scope["path"] not in PUBLIC:
            given = headers.get(b"authorization")
            challenge = [(b"www-authenticate", b'Bearer realm="agex"')]
            if given is None:
                return 401, "this server needs a token: Authorization: Bearer <token>", challenge
            scheme, _, credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                credential.strip(), self.token
            ):
                return 403, "the token is wrong", []
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get(b"content-length")
            if length is None:
                if b"transfer-encoding" in headers:
                    return 411, "send a Content-Length with the request body", []
            elif not length.isdigit():
                return 400, "Content-Length is not a number", []
            elif int(length) > self.max_body:
                return 413, f"the request body is larger than {self.max_body} bytes", []
        return None


async def _respond(
    send: Any, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Versions(BaseModel):
    python: str
    agex: str
    cloudpickle: str
    serializers: list[str]


class CancelSession(BaseModel):
    agent: str = Field(min_length=1, max_length=200)
    session: str = Field(min_length=1, max_length=200)


class Cancelled(BaseModel):
    cancelled: int


def create_app(settings: Settings) -> Any:
    state_dir = settings.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    confine_to(state_dir)
    board = RunBoard(settings.replay, settings.retention, settings.keepalive)
    server_versions = wire.versions()
    token = settings.token or ""
    # Declares the bearer scheme in the OpenAPI schema; Guard enforces it.
    bearer = HTTPBearer(auto_error=False, description="the server's token")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(settings.workers, "agex-run")
        loop.set_default_executor(pool)
        yield
        for run in list(board.runs.values()):
            run.cancel()

    app = FastAPI(
        title="agex server",
        version=agex.__version__,
        description="Runs agex tasks: the whole loop runs here, events stream back as SSE.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    secured = [Depends(bearer)]

    sse: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "the run's messages as server-sent events",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }
    run_id_param = PathParam(pattern=RUN_ID, description="chosen by the client")

    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        """Liveness: answers without the token."""
        return {"status": "ok"}

    @app.get("/v1/version", dependencies=secured)
    async def version() -> Versions:
        """What the client's serialized tasks must match to load here."""
        return Versions(**server_versions, serializers=sorted(plugins.providers("serializer")))

    @app.post(
        "/v1/runs/{run_id}",
        dependencies=secured,
        response_class=StreamingResponse,
        responses=sse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def start_run(request: Request, run_id: str = run_id_param) -> Any:
        """Start a run: a JSON envelope line, a newline, the serialized task. Streams the
        run's messages. Sent again for a run that exists (its first answer was lost), it
        follows that run, as ``/events`` does."""
        if run_id in board.runs:
            return _stream(board.runs[run_id], _after(request), settings.detach_grace)
        body = await request.body()
        try:
            envelope, payload = wire.split_request(body)
            session, state, timeout, serializer = _read_envelope(
                envelope, server_versions, state_dir
            )
        except _Refused as refused:
            raise HTTPException(refused.status, str(refused)) from None
        except wire.BadRequest as exc:
            raise HTTPException(400, str(exc)) from None
        try:
            if len(payload) > INLINE_LOAD:
                task, arguments = await asyncio.to_thread(unship, payload, serializer)
            else:
                task, arguments = unship(payload, serializer)
        except Exception as exc:
            raise HTTPException(
                400,
                f"the task could not be loaded on the server: {type(exc).__name__}: {exc}. "
                "Whatever the agent uses must be importable here: install it on the server",
            ) from None
        if run_id in board.runs:  # the same request, twice at once
            return _stream(board.runs[run_id], _after(request), settings.detach_grace)
        task.agent.state_config = state
        run = board.open(run_id, task.agent.name, session)
        board.watch(
            run,
            asyncio.create_task(
                _execute(
                    run,
                    Invocation(task.agent, task, arguments, session),
                    serializer,
                    timeout,
                    token,
                )
            ),
        )
        return _stream(run, 0, settings.detach_grace)

    @app.get(
        "/v1/runs/{run_id}/events",
        dependencies=secured,
        response_class=StreamingResponse,
        responses=sse,
    )
    async def follow_run(request: Request, run_id: str = run_id_param) -> Any:
        """Follow a run; with Last-Event-ID, only the messages after that one."""
        run = board.runs.get(run_id)
        if run is None:
            raise HTTPException(
                404, f"this server has no run {run_id} (it ended long ago, or the server restarted)"
            )
        return _stream(run, _after(request), settings.detach_grace)

    @app.post("/v1/runs/{run_id}/cancel", dependencies=secured)
    async def cancel_run(run_id: str = run_id_param) -> Cancelled:
        """Cancel one run; it stops at once and its state stays at its last commit."""
        run = board.runs.get(run_id)
        if run is None:
            raise HTTPException(404, f"this server has no run {run_id}")
        return Cancelled(cancelled=int(run.cancel()))

    @app.post("/v1/cancel", dependencies=secured)
    async def cancel_session(which: CancelSession) -> Cancelled:
        """Cancel every run of an agent in a session (what ``task.cancel(session)`` asks)."""
        try:
            check_session(which.session)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return Cancelled(cancelled=RUNS.cancel(which.agent, which.session))

    return Guard(app, settings.token, settings.max_body)


def _after(request: Request) -> int:
    """The id of the last message the client has (``Last-Event-ID``), 0 for none."""
    last = request.headers.get("last-event-id", "0")
    if not (last.isascii() and last.isdigit()) or len(last) > 18:
        raise HTTPException(400, "Last-Event-ID must be a message id (a number)")
    return int(last)


def _stream(run: Run, after: int, detach_grace: float) -> Any:
    return StreamingResponse(
        run.follow(after, detach_grace),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


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
