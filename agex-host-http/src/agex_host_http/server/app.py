"""The agex server's HTTP API: one FastAPI router, whose routes generate the OpenAPI schema.

Every endpoint that acts needs the bearer token, checked by :class:`Guard` before the
request reaches the router, so nothing from an unauthenticated request is ever parsed, let
alone unpickled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from agex import __version__, plugins
from agex.hosts import check_session
from agex.isolation import strongest
from agex.isolation.settings import Isolation
from agex.remote.envelope import Refused
from agex.remote.shipping import versions
from agex.stores import DatabaseStores, Stores
from agex_host_http.server.guard import PUBLIC, Guard
from agex_host_http.server.replicas import Replicas
from agex_host_http.server.routes import RunRoutes, refusal
from agex_host_http.server.runs import KEEPALIVE, RUN_ID, RunBoard

__all__ = ["PUBLIC", "Settings", "create_app"]


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    token: str | None = dataclasses.field(default=None, repr=False)
    max_body: int = 32 * 1024 * 1024
    #: Seconds a client may take to send a request's body once its head has arrived.
    body_timeout: float = 30.0
    #: Messages each run keeps for clients that reconnect.
    replay: int = 10_000
    #: Seconds a run may go without any client following it before it is cancelled.
    detach_grace: float = 30.0
    #: Seconds a finished run stays available for a late reconnect.
    retention: float = 300.0
    keepalive: float = KEEPALIVE
    #: Threads that run agent code (sandbox steps, state commits).
    workers: int = 32
    #: How agent code is isolated; None: in confined workers, at the strongest level this
    #: machine has. The state directory is hidden from workers either way.
    isolation: Isolation | None = None
    #: The PostgreSQL database clients' state is kept in, shared with the server's other
    #: replicas (None: in ``state_dir``). It holds the password: never shown.
    state_url: str | None = dataclasses.field(default=None, repr=False)
    #: With ``state_url``: the most connections each state keeps open, and the seconds an
    #: operation may wait for the database.
    state_pool_size: int = 10
    state_timeout: float = 30.0


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


_SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the run's messages as server-sent events",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
#: The run endpoints declare the bearer scheme here rather than as a dependency: every run
#: goes through them, Guard has already checked the token, and a dependency costs each
#: request its resolution.
_SECURED: dict[str, Any] = {"security": [{"HTTPBearer": []}]}
_TASK_BODY = {
    **_SECURED,
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


def isolating(isolation: Isolation | None, state_dir: Path) -> Isolation:
    """The server's isolation (by default the strongest level here), its workers never
    reading the state directory, nor the directory it was started in (on ``sys.path`` when
    started with ``python -m``, and where a ``.env`` file lives); its clients' models only
    at their providers' default endpoints, and at those it was given."""
    if isolation is None:
        isolation = Isolation(level=strongest())
    hidden = (*isolation.hidden, str(state_dir), os.getcwd())
    return dataclasses.replace(isolation, hidden=hidden, endpoints=isolation.endpoints or ())


def create_app(settings: Settings) -> Any:
    state_dir = settings.state_dir.resolve()
    board = RunBoard(settings.replay, settings.retention, settings.keepalive)
    stores: Stores
    replicas: Replicas | None = None
    if settings.state_url is None:
        state_dir.mkdir(parents=True, exist_ok=True)
        stores = Stores(root=state_dir, kept=("disk",))
    else:
        stores = DatabaseStores(
            settings.state_url,
            pool_size=settings.state_pool_size,
            timeout=settings.state_timeout,
        )
        replicas = Replicas(stores, settings.state_url, board, settings.state_timeout)
        board.on_forget = replicas.release
        board.on_end = replicas.ended
    runs = RunRoutes(
        board,
        stores,
        settings.token or "",
        settings.detach_grace,
        isolating(settings.isolation, state_dir),
        replicas,
    )
    server_versions = versions()
    # Declares the bearer scheme in the OpenAPI schema; Guard enforces it.
    secured = [Depends(HTTPBearer(auto_error=False, description="the server's token"))]
    run_id_param = PathParam(pattern=RUN_ID, description="chosen by the client")

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        pool = concurrent.futures.ThreadPoolExecutor(settings.workers, "agex-run")
        loop.set_default_executor(pool)
        if replicas is not None:
            await replicas.start()
        yield
        for run in list(board.runs.values()):
            run.cancel()
        if replicas is not None:
            await replicas.stop()
        await asyncio.to_thread(stores.close)

    app = FastAPI(
        title="agex server",
        version=__version__,
        description="Runs agex tasks: the whole loop runs here, events stream back as SSE.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )

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
        response_class=StreamingResponse,  # for the schema: they answer with an EventStream
        responses=_SSE,
        openapi_extra=_TASK_BODY,
    )
    async def start_run(request: Request, run_id: str = run_id_param) -> Response:
        """Start a run: a JSON envelope line, a newline, the serialized task. Streams the
        run's messages. Sent again for a run that exists (its first answer was lost), it
        follows that run, as ``/events`` does."""
        return await runs.start(request, run_id)

    @app.get(
        "/v1/runs/{run_id}/events",
        response_class=StreamingResponse,  # for the schema: they answer with an EventStream
        responses=_SSE,
        openapi_extra=_SECURED,
    )
    async def follow_run(request: Request, run_id: str = run_id_param) -> Response:
        """Follow a run; with Last-Event-ID, only the messages after that one."""
        return await runs.follow(request, run_id)

    @app.post("/v1/runs/{run_id}/cancel", dependencies=secured, response_model=Cancelled)
    async def cancel_run(run_id: str = run_id_param) -> Any:
        """Cancel one run; it stops at once and its state stays at its last commit. A run
        another replica holds is stopped there."""
        run = board.runs.get(run_id)
        if run is not None:
            return Cancelled(cancelled=int(run.cancel()))
        if replicas is not None:
            try:
                elsewhere = await replicas.cancel_run(run_id)
            except Refused as refused:
                return refusal(refused.status, str(refused))
            if elsewhere is not None:
                return Cancelled(cancelled=elsewhere)
        raise HTTPException(404, f"this server has no run {run_id}")

    @app.post("/v1/cancel", dependencies=secured, response_model=Cancelled)
    async def cancel_session(which: CancelSession) -> Any:
        """Cancel every run of an agent in a session (what ``task.cancel(session)`` asks).
        With replicas, the others stop theirs too; the count is of this replica's runs."""
        try:
            check_session(which.session)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        cancelled = board.cancel_session(which.agent, which.session)
        if replicas is not None:
            try:
                await replicas.cancel_session(which.agent, which.session)
            except Refused as refused:
                return refusal(refused.status, f"{cancelled} run(s) stopped here; {refused}")
        return Cancelled(cancelled=cancelled)

    return Guard(app, settings.token, settings.max_body, settings.body_timeout)
