"""uvicorn's HTTP protocol with a time limit on a request's head.

uvicorn limits how long an idle kept-alive connection stays open, but not how long a client
may take to send a request's head: a connection that sends nothing, or a header a byte at a
time, would stay open for as long as the client likes, and enough of them exhaust the
server's file descriptors. Here each request's head must arrive within ``HEAD_TIMEOUT``
seconds of the connection opening, of the request's first byte, or of any byte that arrives
while no request is being served; its body is timed by
:class:`~agex_host_http.server.guard.Guard`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Seconds a client has to send a request's line and headers.
HEAD_TIMEOUT = 10.0


class TimedHeadProtocol(HttpToolsProtocol):
    head_timeout = HEAD_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Bytes while no request is being served (a stray line end, the rest of a body the
        # answer did not wait for) stopped uvicorn's keep-alive timer: this one stands in.
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def timed_head(seconds: float) -> type[TimedHeadProtocol]:
    """The protocol class, giving clients ``seconds`` to send a request's head."""
    return type("TimedHeadProtocol", (TimedHeadProtocol,), {"head_timeout": seconds})
