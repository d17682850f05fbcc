"""The run endpoints: start a run (``POST /v1/runs/{run_id}``), follow one (``GET
/v1/runs/{run_id}/events``), cancel one, or cancel an agent's runs in a session.

A run request's envelope (plain JSON, ``agex.remote.Envelope``) is checked first: versions,
session name, state type and path, isolation. The run starts on ``agex.remote.execute``,
as on every remote host, which loads the task only where its code runs: in a confined
worker process, unless the server runs at isolation "none".
:class:`~agex_host_http.server.guard.Guard` has checked the token and the declared body
size before any of this runs.

On a server whose replicas share a database, a run id is claimed there before the run
starts (:mod:`agex_host_http.server.replicas`), and a request for a run another replica
holds is answered 421.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from agex import plugins
from agex.errors import ProviderError, StatePathRefused, TaskCancelled
from agex.isolation.settings import Isolation
from agex.protocols import StateConfig
from agex.remote.envelope import Envelope, Refused
from agex.remote.execute import execute
from agex.remote.outcome import failure
from agex.stores import StorageRefused, Stores
from agex_host_http import wire
from agex_host_http.server.replicas import Replicas, misdirected
from agex_host_http.server.runs import Run, RunBoard

_SSE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]
_BAD_LAST_ID = "Last-Event-ID must be a message id (a number)"


def refusal(status: int, detail: str) -> Response:
    return JSONResponse({"detail": detail}, status)


class RunRoutes:
    """What the run endpoints share: the runs, the storages, the key values are signed with."""

    def __init__(
        self,
        board: RunBoard,
        stores: Stores,
        key: str,
        detach_grace: float,
        isolation: Isolation,
        replicas: Replicas | None = None,
    ) -> None:
        self.board = board
        self.stores = stores
        self.key = key
        self.detach_grace = detach_grace
        self.isolation = isolation
        self.replicas = replicas
        # Run ids being claimed in the database now, so that the same start sent twice at
        # once waits for the first rather than racing it.
        self._claiming: set[str] = set()

    async def start(self, request: Request, run_id: str) -> Response:
        """Start a run and stream its messages. Sent again for a run that exists (its first
        answer was lost), it follows that run, as ``/events`` does, and its body is never
        read."""
        arrived = time.monotonic()
        run = self.board.runs.get(run_id)
        if run is None:
            try:
                body = await request.body()
            except ClientDisconnect:
                return Response(status_code=499)  # nobody is left to read it
            try:
                run = await self._open(run_id, body, arrived)
            except Refused as refused:
                return refusal(refused.status, str(refused))
            if run is not None:
                return EventStream(run, 0, self.detach_grace)
            run = self.board.runs[run_id]  # the same request, twice at once
        return self.follow_run(request, run)

    async def follow(self, request: Request, run_id: str) -> Response:
        """Follow a run; with Last-Event-ID, only the messages after that one."""
        run = self.board.runs.get(run_id)
        if run is None:
            if self.replicas is not None:
                try:
                    holder = await self.replicas.holder(run_id)
                except Refused as refused:
                    return refusal(refused.status, str(refused))
                if holder is not None and holder != self.replicas.id:
                    elsewhere = misdirected(run_id, holder)
                    return refusal(elsewhere.status, str(elsewhere))
            return refusal(
                404,
                f"this server has no run {run_id} (it ended long ago, or the server restarted)",
            )
        return self.follow_run(request, run)

    def follow_run(self, request: Request, run: Run) -> Response:
        raw = request.headers.get("last-event-id", "0")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
            return refusal(400, _BAD_LAST_ID)
        after = int(raw)
        if after > run.outbox.last:
            return refusal(
                400,
                f"Last-Event-ID {after} is past run {run.id}'s last message ({run.outbox.last})",
            )
        return EventStream(run, after, self.detach_grace)

    async def _open(self, run_id: str, body: bytes, arrived: float) -> Run | None:
        """The run this request starts, running; None when another request for the same id
        started it meanwhile. A cancel of its session that came after the request arrived
        (while its body was read, or its id claimed) ends it at once: TaskCancelled."""
        try:
            raw, payload = wire.split_request(body)
        except wire.BadRequest as exc:
            raise Refused(400, str(exc)) from None
        envelope = Envelope.from_json({**raw, "run": run_id})
        self._check_state(envelope.state)
        self._check_delegates(envelope.delegates)
        try:
            plugins.resolve("serializer", envelope.serializer)
        except ProviderError as exc:
            raise Refused(
                400, f"serializer {envelope.serializer!r} is not available here: {exc}"
            ) from None
        # The isolation asked for, checked now; the task is loaded only where its code runs.
        self.isolation.spec(envelope.isolation, envelope.memory_mb, "this server")
        self.isolation.models(envelope, "this server")
        if run_id in self.board.runs:
            return None
        if self.replicas is not None:
            while run_id in self._claiming:  # the same start, sent twice at once
                await asyncio.sleep(0.01)
            if run_id in self.board.runs:
                return None
            self._claiming.add(run_id)
            try:
                await self.replicas.claim(run_id)
            finally:
                self._claiming.discard(run_id)
        run = self.board.open(run_id, envelope.agent, envelope.session, arrived)
        work = execute(
            envelope,
            payload,
            run.outbox,
            stores=self.stores,
            key=self.key,
            isolation=self.isolation,
        )
        task = asyncio.create_task(work)
        self.board.watch(run, task)
        if self.board.cancelled_since(envelope.agent, envelope.session, arrived):
            run.outbox.finish(
                failure(
                    TaskCancelled(
                        f"the agent's runs in session {envelope.session!r} were cancelled "
                        "while this run was starting"
                    )
                )
            )
            task.cancel()
        elif self.replicas is not None and self.replicas.cancelled_while_claimed(run_id):
            run.outbox.finish(
                failure(TaskCancelled(f"run {run_id} was cancelled while it was starting"))
            )
            task.cancel()
        return run

    def _check_delegates(self, delegates: dict[str, Any]) -> None:
        """The sub-agents the run may call that run here follow the same rules as the run
        (those on other hosts follow their hosts')."""
        for delegate in delegates.values():
            if delegate.host.get("provider") == "local":
                self._check_state(delegate.state)
                self.isolation.spec(delegate.isolation, delegate.memory_mb, "this server")
                self._check_delegates(delegate.delegates)
            elif self.isolation.level != "none":  # in-process runs are the client's anyway
                self.isolation.remote(delegate.host, "this server")

    def _check_state(self, state: StateConfig) -> None:
        """The seed's rules for state on a server: versioned or ephemeral, in a storage this
        server has, at a path inside its state directory (or, on a server whose replicas
        share a database, a name inside that database)."""
        why = wire.state_refused(state)
        if why is not None:
            raise Refused(400, why)
        if state.type == "ephemeral":
            return
        assert state.storage is not None
        assert state.path is not None
        try:
            provider, _ = self.stores.where(state.storage, state.path)
        except StatePathRefused as exc:
            raise Refused(403, str(exc)) from None
        except StorageRefused as exc:
            raise Refused(400, str(exc)) from None
        try:
            plugins.resolve("storage", provider)
        except ProviderError as exc:
            raise Refused(
                400, f"storage {state.storage!r} is not available on the server: {exc}"
            ) from None


class EventStream(Response):
    """A run's messages as server-sent events, until the run ends or the client goes away: a
    client that leaves is noticed at once (the server sends nothing on a connection that
    closed), so that the run's detach grace starts.

    Plain ASGI rather than a StreamingResponse: every run goes through here, and many start
    at once; this skips the task group a StreamingResponse makes per response."""

    def __init__(self, run: Run, after: int, detach_grace: float) -> None:
        self.run, self.after, self.detach_grace = run, after, detach_grace
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
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
        messages = self.run.follow(self.after, self.detach_grace)
        try:
            chunk = b""
            async for chunk in messages:
                if self.run.done:  # the chunk may end with the run's last message
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                chunk = b""
            watcher.cancel()  # ending the response wakes it
            rest = b"".join([chunk] + [more async for more in messages])
            await send({"type": "http.response.body", "body": rest, "more_body": False})
        except asyncio.CancelledError:
            if not left or streaming.uncancel() > 0:
                raise  # cancelled by more than the client leaving: the server is stopping
        finally:
            watcher.cancel()
            await messages.aclose()
