"""What every request passes before anything else runs: the bearer token, then the body's
declared size; and a time limit on sending the body. Nothing from a request that fails here
is parsed, let alone unpickled."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Reachable without the token: nothing here acts or reveals anything.
PUBLIC = frozenset({"/v1/health", "/openapi.json"})


class Guard:
    """ASGI middleware: the token, then the body size, before anything else runs; then the
    body must arrive within ``body_timeout`` seconds, or the client gets a 408."""

    def __init__(
        self, app: ASGIApp, token: str | None, max_body: int, body_timeout: float = 30.0
    ) -> None:
        self.app = app
        self.credential = None if token is None else token.encode()
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":  # no route speaks it: refused before anything reads it
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refused = self._refuse(scope, headers)
        if refused is not None:
            status, detail, extra = refused
            # The body is never read: the connection goes, with whatever else was sent.
            await respond(send, status, detail, [*extra, (b"connection", b"close")])
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            timed = _TimedBody(receive, send, self.body_timeout)
            await self.app(scope, timed.receive, timed.send)
        else:
            await self.app(scope, receive, send)

    def _refuse(
        self, scope: Scope, headers: dict[bytes, bytes]
    ) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        if self.credential is not None and scope["path"] not in PUBLIC:
            given = headers.get(b"authorization")
            challenge = [(b"www-authenticate", b'Bearer realm="agex"')]
            if given is None:
                return 401, "this server needs a token: Authorization: Bearer <token>", challenge
            scheme, _, given_credential = given.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(
                given_credential.strip(), self.credential
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


async def respond(
    send: Any, status: int, detail: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A JSON error answer, shaped as FastAPI's: ``{"detail": ...}``."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TimedBody:
    """A request's ``receive`` that gives the client ``seconds`` to send the whole body. When
    the time is up the client gets a 408 and the application sees the client leave."""

    __slots__ = ("_deadline", "_done", "_receive", "_send", "_timed_out")

    def __init__(self, receive: Any, send: Any, seconds: float) -> None:
        self._receive, self._send = receive, send
        self._deadline = asyncio.get_running_loop().time() + seconds
        self._done = False
        self._timed_out = False

    async def receive(self) -> Any:
        if self._done:
            return await self._receive()
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            self._done = self._timed_out = True
            await respond(
                self._send,
                408,
                "the request body did not arrive in time",
                [(b"connection", b"close")],
            )
            return {"type": "http.disconnect"}
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._done = True
        return message

    async def send(self, message: Any) -> None:
        if self._timed_out:
            return  # after the 408, the application has no one to answer
        if message["type"] == "http.response.start":
            self._done = True  # it answers without the rest of the body: no 408 now
        await self._send(message)
