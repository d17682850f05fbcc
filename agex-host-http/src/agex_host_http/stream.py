"""A small HTTP/1.1 client for run streams: one request, then the response body as it
comes.

Every run is one long streamed request, and many runs start at once: through httpx each
cost the client about a millisecond of request setup, pool bookkeeping and line decoding,
and that delayed the runs behind it. This speaks only what a run stream needs, over
keep-alive connections: a request with a body; a response framed by Content-Length,
chunked, or the end of the connection; TLS; timeouts. Everything else the client sends
goes through httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import AsyncGenerator
from urllib.parse import quote, urlsplit

#: Seconds to connect, and to send a request.
CONNECT_TIMEOUT = 30.0
#: Longest response head (status line and headers), and chunk-size line.
HEAD_LIMIT = 64 * 1024
#: Idle connections kept per server for later requests.
IDLE_LIMIT = 64
#: Most bytes handed on at once.
PIECE = 256 * 1024

_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class StreamError(Exception):
    """The connection failed or broke, timed out, or the answer is not HTTP/1.1 as this
    client reads it."""


class _Stale(StreamError):
    """A kept-alive connection that the server had closed: the request was not read."""


class Origin:
    """Connections to one server, for one event loop."""

    def __init__(self, url: str, tls: ssl.SSLContext | None, read_timeout: float) -> None:
        parts = urlsplit(url)
        if parts.hostname is None:
            raise ValueError(f"no host in {url!r}")
        self.host = parts.hostname
        secure = parts.scheme == "https"
        self.port = parts.port or (443 if secure else 80)
        self.tls = tls if secure else None
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.authority = host if parts.port is None else f"{host}:{parts.port}"
        self.base = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self.read_timeout = read_timeout
        self._idle: list[_Connection] = []
        self._shutdown: AsyncGenerator[None, None] | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> Response:
        """Send a request; the response once its head has arrived."""
        lines = [f"{method} {self.base}{path} HTTP/1.1", f"host: {self.authority}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        await self._close_at_shutdown()
        while self._idle:
            connection = self._idle.pop()
            if connection.usable():
                with contextlib.suppress(_Stale):
                    return await self._exchange(connection, head, body)
            connection.close()
        return await self._exchange(await self._connect(), head, body)

    async def connect_ahead(self) -> None:
        """Have a connection ready for the next request, if the server can be reached."""
        await self._close_at_shutdown()
        if not any(connection.usable() for connection in self._idle):
            with contextlib.suppress(StreamError):
                self.keep(await self._connect())

    async def _close_at_shutdown(self) -> None:
        """Idle connections are closed when their event loop shuts down (as asyncio.run's
        does), while it still runs: the loop closes the async generators it has started,
        and this one, suspended for the origin's life, closes them as it ends."""
        if self._shutdown is None:
            self._shutdown = self._closing()
            await anext(self._shutdown)

    async def _closing(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            for connection in self._idle:
                connection.close()
            self._idle.clear()

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                    limit=HEAD_LIMIT,
                )
        except TimeoutError:
            raise StreamError(f"connecting took over {CONNECT_TIMEOUT:g}s") from None
        except OSError as exc:  # TLS errors too
            raise StreamError(f"cannot connect: {exc}") from None
        return _Connection(reader, writer, fresh=True)

    async def _exchange(self, connection: _Connection, head: bytes, body: bytes | None) -> Response:
        connection.answered = False
        try:
            connection.writer.write(head + body if body is not None else head)
            if connection.writer.transport.get_write_buffer_size() > PIECE:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await connection.writer.drain()
            async with asyncio.timeout(self.read_timeout):
                return await Response.read_head(self, connection)
        except TimeoutError:
            connection.close()
            raise StreamError(f"no answer within {self.read_timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            connection.close()
            unread = not connection.answered and not getattr(exc, "partial", b"")
            if unread and not connection.fresh:
                raise _Stale() from None
            raise StreamError(f"the connection broke: {exc!r}") from None
        except BaseException:
            connection.close()
            raise

    def keep(self, connection: _Connection) -> None:
        if len(self._idle) < IDLE_LIMIT and connection.usable():
            connection.fresh = False
            self._idle.append(connection)
        else:
            connection.close()


class _Connection:
    __slots__ = ("answered", "fresh", "reader", "writer")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fresh: bool
    ) -> None:
        self.reader, self.writer, self.fresh, self.answered = reader, writer, fresh, False

    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.transport.is_closing()

    def close(self) -> None:
        self.writer.close()


class Body:
    """A response body read piece by piece, whichever origin gave the response."""

    async def read_piece(self) -> bytes:
        """The next bytes of the body, b"" once it has all been read."""
        raise NotImplementedError

    async def read(self) -> bytes:
        """The rest of the body."""
        pieces = []
        while piece := await self.read_piece():
            pieces.append(piece)
        return b"".join(pieces)


class Response(Body):
    """A response whose body is read as it comes: ``read_piece`` until it returns b""."""

    def __init__(self, origin: Origin, connection: _Connection) -> None:
        self._origin = origin
        self._connection = connection
        self.status = 0
        self.reason = ""
        self.headers: dict[str, str] = {}
        self._left = 0  # bytes of the body, or of the current chunk, not yet read
        self._chunked = False
        self._to_close = False  # the body ends with the connection
        self._crlf_due = False  # a chunk's data was read; its CRLF was not
        self._done = False
        self._reusable = False

    @classmethod
    async def read_head(cls, origin: Origin, connection: _Connection) -> Response:
        response = cls(origin, connection)
        while response.status < 200:  # skip informational answers (100 Continue)
            try:
                head = await connection.reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                raise StreamError("the response head is too long") from None
            connection.answered = True
            response._parse_head(head)
        return response

    def _parse_head(self, head: bytes) -> None:
        status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not (status.isascii() and status.isdigit()):
            raise StreamError(f"not an HTTP/1.1 answer: {status_line[:100]!r}")
        self.status, self.reason = int(status), reason
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise StreamError(f"malformed header line: {line[:100]!r}")
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        connection = headers.get("connection", "").lower()
        keep_alive = "close" not in connection and (
            version != "HTTP/1.0" or "keep-alive" in connection
        )
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            length = headers["content-length"]
            if not (length.isascii() and length.isdigit()):
                raise StreamError(f"malformed Content-Length: {length[:40]!r}")
            self._left = int(length)
            self._done = self._left == 0
        else:
            self._to_close = True
            keep_alive = False
        self._reusable = keep_alive

    async def read_piece(self) -> bytes:
        """The next bytes of the body, b"" once it has all been read."""
        if self._done:
            return b""
        try:
            async with asyncio.timeout(self._origin.read_timeout):
                if self._chunked:
                    return await self._read_chunk()
                return await self._read_plain()
        except TimeoutError:
            self._failed()
            raise StreamError(
                f"the server sent nothing for {self._origin.read_timeout:g}s"
            ) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            self._failed()
            raise StreamError(f"the connection broke mid-response: {exc!r}") from None
        except BaseException:
            self._failed()
            raise

    async def _read_plain(self) -> bytes:
        reader = self._connection.reader
        if self._to_close:
            data = await reader.read(PIECE)
            self._done = not data
            return data
        data = await self._read_counted()
        self._done = self._left == 0
        return data

    async def _read_chunk(self) -> bytes:
        reader = self._connection.reader
        if self._left == 0:
            if self._crlf_due and await reader.readexactly(2) != b"\r\n":
                raise StreamError("a chunk of the response is longer than it said")
            self._crlf_due = False
            size = await self._line()
            size = size.split(b";", 1)[0].strip()  # chunk extensions are ignored
            if not _CHUNK_SIZE.fullmatch(size):
                raise StreamError(f"malformed chunk size: {size[:40]!r}")
            self._left = int(size, 16)
            if self._left == 0:
                while await self._line():  # trailers, ignored
                    pass
                self._done = True
                return b""
        data = await self._read_counted()
        self._crlf_due = self._left == 0
        return data

    async def _read_counted(self) -> bytes:
        """Up to the ``_left`` bytes still due, which the server must send."""
        data = await self._connection.reader.read(min(self._left, PIECE))
        if not data:
            raise StreamError("the server closed the connection mid-response")
        self._left -= len(data)
        return data

    async def _line(self) -> bytes:
        try:
            line = await self._connection.reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise StreamError("a chunk-size or trailer line is too long") from None
        return line[:-2]

    async def finish(self, linger: float) -> None:
        """Read what is left of the body if it all comes within ``linger`` seconds, so that
        the connection can serve another request."""
        if not self._to_close:
            with contextlib.suppress(StreamError, TimeoutError):
                async with asyncio.timeout(linger):
                    while await self.read_piece():
                        pass

    async def aclose(self) -> None:
        """Done with the response: its connection serves later requests if the body was
        read to its end, and is closed otherwise."""
        if self._done and self._reusable:
            self._reusable = False
            self._origin.keep(self._connection)
        else:
            self._failed()

    def _failed(self) -> None:
        self._reusable = False
        self._connection.close()
