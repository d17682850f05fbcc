"""Run streams through httpx when the environment names a proxy for the server
(HTTP_PROXY, HTTPS_PROXY, ALL_PROXY; NO_PROXY then decides): the stream client connects
only directly, and httpx honours the proxy settings as it does for the client's other
requests. Same interface as :class:`~agex_host_http.stream.Origin`."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agex_host_http.stream import Body, StreamError


def names_a_proxy(url: str) -> bool:
    """Whether the environment names a proxy for ``url``'s scheme (which httpx may still
    bypass, by NO_PROXY)."""
    proxies = urllib.request.getproxies()
    return bool(proxies.get(url.partition(":")[0]) or proxies.get("all"))


class ProxiedOrigin:
    def __init__(self, url: str, tls: Any, read_timeout: float) -> None:
        self.url = url
        self._client = httpx.AsyncClient(
            verify=tls if tls is not None else True,
            timeout=httpx.Timeout(30.0, read=read_timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> ProxiedResponse:
        request = self._client.build_request(method, self.url + path, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise StreamError(f"{type(exc).__name__}: {exc}") from None
        return ProxiedResponse(response)

    async def connect_ahead(self) -> None:
        """httpx connects when it sends."""


class ProxiedResponse(Body):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code
        self.reason = response.reason_phrase
        self.headers = response.headers
        self._pieces: AsyncIterator[bytes] = response.aiter_bytes()

    async def read_piece(self) -> bytes:
        """The next bytes of the body, b"" once it has all been read."""
        try:
            async for piece in self._pieces:
                if piece:
                    return piece
        except httpx.TransportError as exc:
            raise StreamError(f"{type(exc).__name__}: {exc}") from None
        return b""

    async def finish(self, linger: float) -> None:
        """httpx keeps the connection only if the body was read to its end."""

    async def aclose(self) -> None:
        await self._response.aclose()
