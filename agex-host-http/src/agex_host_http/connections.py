"""The client's connections to an agex server, one pool per event loop, made and spoken
through httpcore (HTTP/1.1 with h11, TLS, HTTP and SOCKS proxies).

What is ours lies below HTTP:

- which idle connection serves the next request. httpcore's own pool re-examines every
  connection it holds on each request and on each response's end (a readiness check on
  every idle socket, and a count of them all for each idle one): with hundreds of runs
  streaming at once that bookkeeping cost more than the runs. Here an idle connection is
  taken from the top of a stack, the most recently used first, and the oldest are dropped
  from the bottom once they expire.
- the sockets: an httpcore network backend on asyncio's own transports. httpcore's
  default goes through anyio, whose per-read cancel scopes doubled the client's work per
  run stream.
- the lock of each direct connection, which httpcore takes for each request: anyio's
  yields to every other ready task first, so that in a burst no request went out before
  every run had prepared its own.

This module is imported when a client first makes a request, not with the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from typing import Any, cast

import httpcore

#: Bytes received and not yet read beyond which a connection stops reading from its socket.
RECEIVE_LIMIT = 1024 * 1024
#: Bytes written at once rather than held back to go with the next write.
SEND_PIECE = 64 * 1024
#: Idle connections kept per event loop, at most.
IDLE_LIMIT = 1024

#: What breaks a request: the connection could not be made or broke, the server sent
#: something that is not HTTP, or nothing in time.
FAILURES: tuple[type[Exception], ...] = (
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.ProxyError,
)


# -- sockets ---------------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    """One connection's received bytes, kept until httpcore reads them."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.ended = False  # the server closed its side, or the connection is lost
        self.error: Exception | None = None
        self.paused = False  # reading from the socket paused: too much is unread
        self.full = False  # the send buffer is above its high-water mark
        self._reading: asyncio.Future[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        # One timer per connection for silences, rather than one per read: reads wait
        # until ``_deadline``, and the timer, when it fires early, sets itself again.
        self._deadline = 0.0
        self._silence = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) > RECEIVE_LIMIT and not self.paused and self.transport:
            self.paused = True
            self.transport.pause_reading()
        _wake(self._reading)

    def eof_received(self) -> bool:
        self.ended = True
        _wake(self._reading)
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended = True
        self.error = exc
        _wake(self._reading)
        _wake(self._writing)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def pause_writing(self) -> None:
        self.full = True

    def resume_writing(self) -> None:
        self.full = False
        _wake(self._writing)

    async def readable(self, timeout: float | None) -> None:
        """Wait for bytes or the end of the connection; httpcore.ReadTimeout after
        ``timeout`` seconds of neither."""
        loop = asyncio.get_running_loop()
        self._reading = waiter = loop.create_future()
        if timeout is not None:
            self._silence = timeout
            self._deadline = deadline = loop.time() + timeout
            if self._timer is None or self._timer.when() > deadline:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(deadline, self._check_silence)
        try:
            await waiter
        finally:
            self._reading = None

    def _check_silence(self) -> None:
        self._timer = None
        waiter = self._reading
        if waiter is None or waiter.done():
            return  # not waiting: the next wait sets a timer
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(
                httpcore.ReadTimeout(f"the server sent nothing for {self._silence:g}s")
            )
        else:
            self._timer = loop.call_at(self._deadline, self._check_silence)

    async def writable(self, timeout: float | None) -> None:
        self._writing = waiter = asyncio.get_running_loop().create_future()
        try:
            await _within(waiter, timeout, httpcore.WriteTimeout, "the server took nothing")
        finally:
            self._writing = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _within(
    waiter: asyncio.Future[None], timeout: float | None, error: type[Exception], what: str
) -> None:
    """Wait for ``waiter``; ``error`` if ``timeout`` seconds pass first."""
    if timeout is None:
        await waiter
        return

    def expire() -> None:
        if not waiter.done():
            waiter.set_exception(error(f"{what} for {timeout:g}s"))

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await waiter
    finally:
        timer.cancel()


class _Stream(httpcore.AsyncNetworkStream):
    """A connection as httpcore reads and writes it. What httpcore writes goes out together
    when it next reads (or on the event loop's next turn): a request's head and body in one
    segment, not two."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._unsent: list[bytes] = []

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        received = protocol.received
        if self._unsent:
            self._send()
        while not received:
            if protocol.ended:
                if protocol.error is not None:
                    raise httpcore.ReadError(f"the connection broke: {protocol.error}")
                return b""
            await protocol.readable(timeout)
        if len(received) <= max_bytes:
            data = bytes(received)
            received.clear()
        else:
            data = bytes(received[:max_bytes])
            del received[:max_bytes]
        if protocol.paused and len(received) <= RECEIVE_LIMIT // 2:
            protocol.paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.ended or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        unsent = self._unsent
        if not unsent:
            asyncio.get_running_loop().call_soon(self._send)
        unsent.append(buffer)
        if sum(map(len, unsent)) < SEND_PIECE:
            return
        self._send()
        while protocol.full and not protocol.ended:
            await protocol.writable(timeout)
        if protocol.error is not None:
            raise httpcore.WriteError(f"the connection broke: {protocol.error}")

    def _send(self) -> None:
        unsent = self._unsent
        if unsent and not self._transport.is_closing():
            self._transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))
        unsent.clear()

    async def aclose(self) -> None:
        self._send()
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self._transport,
                self._protocol,
                ssl_context,
                server_hostname=server_hostname,
                ssl_handshake_timeout=timeout,
            )
        except OSError as exc:  # TLS errors too
            self._transport.close()
            raise httpcore.ConnectError(f"TLS failed: {exc}") from None
        except BaseException:
            self._transport.close()
            raise
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle connection the server has closed or spoken on
            return bool(self._protocol.received) or self._protocol.ended
        names = {"client_addr": "sockname", "server_addr": "peername"}
        return self._transport.get_extra_info(names.get(info, info))


class Backend(httpcore.AsyncNetworkBackend):
    """httpcore's connections on asyncio's transports."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {}
        if local_address is not None:
            options["local_addr"] = (local_address, 0)
        if isinstance(loop, asyncio.BaseEventLoop) and not _is_address(host):
            # A name may have IPv6 and IPv4 addresses: try them side by side. (asyncio's
            # own loop does; others, such as uvloop on a server, may not know how.)
            options["happy_eyeballs_delay"] = 0.25
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(_Protocol, host, port, **options)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"connecting took over {timeout:g}s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot connect: {exc}") from None
        sock: socket.socket | None = transport.get_extra_info("socket")
        if sock is not None:
            for option in socket_options or ():
                sock.setsockopt(*option)
        return _Stream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


BACKEND = Backend()


@functools.lru_cache(maxsize=64)
def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- the pool --------------------------------------------------------------------------


class _Lock:
    """An HTTP/1.1 connection's lock, taken at once when it is free. httpcore's own (anyio's,
    on asyncio) first lets every other ready task run: in a burst of runs, no request went
    out before all of them had prepared theirs, and the server waited meanwhile (a tenth
    of a second for 200 runs)."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> _Lock:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()


class Pool:
    """The connections of one event loop to one server at ``origin``. Directly, they are
    made here (so that one can be made ahead of its request); through a proxy, ``proxy``
    makes them (an httpcore proxy pool, used only for that)."""

    def __init__(
        self,
        origin: httpcore.Origin,
        tls: ssl.SSLContext | None,
        keepalive: float,
        proxy: httpcore.AsyncConnectionPool | None = None,
    ) -> None:
        self._origin = origin
        self._tls = tls
        self._keepalive = keepalive
        self._proxy = proxy
        self._idle: deque[httpcore.AsyncConnectionInterface] = deque()
        # Connected ahead of their request: when each was made, it, and its stream.
        self._fresh: list[
            tuple[float, httpcore.AsyncHTTP11Connection, httpcore.AsyncNetworkStream]
        ] = []
        self._shutdown: AsyncGenerator[None, None] | None = None

    async def send(
        self,
        method: bytes,
        url: httpcore.URL,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        timeout: dict[str, float],
    ) -> Response:
        """Send a request; the response once its head has arrived."""
        await self._close_at_shutdown()
        request = httpcore.Request(
            method, url, headers=headers, content=body, extensions={"timeout": timeout}
        )
        while True:
            connection, reused = await self._checkout(timeout["connect"])
            try:
                answer = await connection.handle_async_request(request)
            except FAILURES as exc:
                await connection.aclose()
                if reused and not isinstance(exc, httpcore.TimeoutException):
                    # Kept alive, and closed by the server as it was sent: once more on a
                    # fresh connection (a run sent twice is followed, not run twice).
                    continue
                raise
            except BaseException:
                await connection.aclose()
                raise
            return Response(self, connection, answer)

    async def connect_ahead(self, timeout: float) -> None:
        """Have a connection ready for the next request, if the server can be reached."""
        await self._close_at_shutdown()
        if self._proxy is None and not self._idle and not self._fresh:
            with contextlib.suppress(*FAILURES):
                stream = await self._connect(timeout)
                self._fresh.append((time.monotonic(), self._http11(stream), stream))

    async def _checkout(self, timeout: float) -> tuple[httpcore.AsyncConnectionInterface, bool]:
        """A connection for the next request, and whether it served one before."""
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection, True
            await connection.aclose()
        fresh = self._fresh
        while fresh:
            made, connection, stream = fresh.pop()
            if time.monotonic() - made < self._keepalive and not stream.get_extra_info(
                "is_readable"
            ):
                return connection, False
            await connection.aclose()
        if self._proxy is not None:
            return self._proxy.create_connection(self._origin), False
        return self._http11(await self._connect(timeout)), False

    def _http11(self, stream: httpcore.AsyncNetworkStream) -> httpcore.AsyncHTTP11Connection:
        connection = httpcore.AsyncHTTP11Connection(self._origin, stream, self._keepalive)
        if hasattr(connection, "_state_lock"):
            setattr(connection, "_state_lock", _Lock())  # noqa: B010
        return connection

    async def _connect(self, timeout: float) -> httpcore.AsyncNetworkStream:
        host = self._origin.host.decode("ascii")
        stream = await BACKEND.connect_tcp(host, self._origin.port, timeout)
        if self._tls is not None:
            stream = await stream.start_tls(self._tls, host, timeout)
        return stream

    async def checkin(self, connection: httpcore.AsyncConnectionInterface) -> None:
        """A connection whose response is over: kept for the next request if it can serve
        one, closed otherwise."""
        idle = self._idle
        if connection.is_idle() and len(idle) < IDLE_LIMIT:
            idle.append(connection)
        else:
            await connection.aclose()
        while idle and idle[0].has_expired():  # the longest idle come first
            await idle.popleft().aclose()

    async def _close_at_shutdown(self) -> None:
        """Idle connections are closed when their event loop shuts down (as asyncio.run's
        does), while it still runs: the loop closes the async generators it has started,
        and this one, suspended for the pool's life, closes them as it ends."""
        if self._shutdown is None:
            self._shutdown = self._closing()
            await anext(self._shutdown)

    async def _closing(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            idle = [*self._idle, *(connection for _, connection, _ in self._fresh)]
            self._idle, self._fresh = deque(), []
            for connection in idle:
                with contextlib.suppress(Exception):
                    await connection.aclose()

    def idle(self) -> int:
        """How many connections wait for a request."""
        return len(self._idle) + len(self._fresh)


class Response:
    """A response whose body is read as it comes: ``read_piece`` until it returns b""."""

    def __init__(
        self, pool: Pool, connection: httpcore.AsyncConnectionInterface, answer: httpcore.Response
    ) -> None:
        self._pool = pool
        self._connection: httpcore.AsyncConnectionInterface | None = connection
        self._answer = answer
        self.status = answer.status
        reason = answer.extensions.get("reason_phrase", b"")
        self.reason = reason.decode("latin-1") if isinstance(reason, bytes) else ""
        self.headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in answer.headers
        }
        stream = answer.stream
        assert isinstance(stream, AsyncIterable), stream
        self._pieces: AsyncIterator[bytes] = aiter(stream)
        self._done = False

    async def read_piece(self) -> bytes:
        """The next bytes of the body, b"" once it has all been read."""
        while not self._done:
            try:
                piece = await anext(self._pieces)
            except StopAsyncIteration:
                self._done = True
                break
            if piece:
                return piece
        return b""

    async def read(self) -> bytes:
        """The rest of the body."""
        pieces = []
        while piece := await self.read_piece():
            pieces.append(piece)
        return b"".join(pieces)

    async def finish(self, linger: float) -> None:
        """Read what is left of the body if it all comes within ``linger`` seconds, so that
        the connection can serve another request."""
        with contextlib.suppress(TimeoutError, *FAILURES):
            async with asyncio.timeout(linger):
                while await self.read_piece():
                    pass

    async def aclose(self) -> None:
        """Done with the response: its connection serves later requests if the body was
        read to its end, and is closed otherwise."""
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await self._answer.aclose()
            finally:
                await self._pool.checkin(connection)
