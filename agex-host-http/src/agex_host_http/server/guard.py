"""What every request passes before anything else runs: the bearer token, then the body's
declared size. Nothing from a request that fails here is parsed, let alone unpickled."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: Reachable without the token: nothing here acts or reveals anything.
PUBLIC = frozenset({"/v1/health", "/openapi.json"})


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
            await respond(send, status, detail, extra)
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
