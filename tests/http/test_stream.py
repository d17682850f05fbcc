"""The client's run-stream transport against hand-written servers: response framing
(chunked, Content-Length, to the end of the connection), keep-alive, timeouts and errors;
and the server-sent-events decoder on its own."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from agex_host_http.sse import EventDecoder
from agex_host_http.stream import Origin, StreamError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A one-off server on loopback: its url, and the head of each request it read."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                heads.append(head)
                length = [
                    int(line.split(b":")[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ]
                if length:
                    await reader.readexactly(length[0])
                await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()


def answering(*parts: bytes, close: bool = False, pause: float = 0.0) -> Handler:
    """A handler writing ``parts`` one by one (a pause between them), then closing the
    connection if told to."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if close:
            writer.close()

    return handle


OK_CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


async def body_of(url: str, read_timeout: float = 5.0) -> bytes:
    origin = Origin(url, None, read_timeout)
    response = await origin.request("GET", "/x", {})
    try:
        return await response.read()
    finally:
        await response.aclose()


@pytest.mark.parametrize(
    "parts",
    [
        [b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"],
        # split everywhere: inside sizes, data and line ends
        [b"5", b"\r", b"\nhel", b"lo\r", b"\n6\r\n wor", b"ld", b"\r\n0\r", b"\n\r\n"],
        # extensions and upper-case hex
        [b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\n\r\n"],
        [b"B\r\nhello world\r\n0\r\n\r\n"],
        # trailers after the last chunk
        [b"b\r\nhello world\r\n0\r\nx-trailer: 1\r\nx-other: 2\r\n\r\n"],
    ],
)
def test_chunked_bodies_are_decoded(parts: list[bytes]) -> None:
    async def main() -> bytes:
        async with serving(answering(OK_CHUNKED, *parts, pause=0.01)) as (url, _):
            return await body_of(url)

    assert asyncio.run(main()) == b"hello world"


@pytest.mark.parametrize(
    ("parts", "says"),
    [
        ([b"zz\r\nhello\r\n0\r\n\r\n"], "malformed chunk size"),
        ([b"-5\r\nhello\r\n0\r\n\r\n"], "malformed chunk size"),
        ([b"0x5\r\nhello\r\n0\r\n\r\n"], "malformed chunk size"),
        ([b"3\r\nhello\r\n0\r\n\r\n"], "longer than it said"),
        ([b"5\r\nhel"], "mid-response"),
        ([b"5\r\nhello\r\n"], "mid-response"),
    ],
)
def test_broken_chunked_bodies_are_stream_errors(parts: list[bytes], says: str) -> None:
    async def main() -> None:
        async with serving(answering(OK_CHUNKED, *parts, close=True)) as (url, _):
            await body_of(url)

    with pytest.raises(StreamError, match=says):
        asyncio.run(main())


def test_bodies_framed_by_length_or_by_the_end_of_the_connection() -> None:
    async def main() -> tuple[bytes, bytes]:
        sized = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", b"he", b"llo")
        async with serving(sized) as (url, _):
            first = await body_of(url)
        to_close = answering(b"HTTP/1.0 200 OK\r\n\r\n", b"he", b"llo", close=True)
        async with serving(to_close) as (url, _):
            second = await body_of(url)
        return first, second

    assert asyncio.run(main()) == (b"hello", b"hello")


def test_a_short_body_is_a_stream_error() -> None:
    async def main() -> None:
        short = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello", close=True)
        async with serving(short) as (url, _):
            await body_of(url)

    with pytest.raises(StreamError, match="mid-response"):
        asyncio.run(main())


def test_a_kept_alive_connection_serves_the_next_request() -> None:
    async def main() -> tuple[list[bytes], int]:
        connections = 0
        reply = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

        async def counting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            if writer not in seen:
                seen.add(writer)
                connections += 1
            await reply(reader, writer)

        seen: set[asyncio.StreamWriter] = set()
        async with serving(counting) as (url, heads):
            origin = Origin(url, None, 5.0)
            bodies = []
            for _ in range(3):
                response = await origin.request("POST", "/runs/x", {"a": "b"}, b"body")
                bodies.append(await response.read())
                await response.aclose()
            assert heads[0].startswith(b"POST /runs/x HTTP/1.1\r\nhost: 127.0.0.1:")
            assert b"\r\na: b\r\ncontent-length: 4\r\n" in heads[0]
            return bodies, connections

    assert asyncio.run(main()) == ([b"ok"] * 3, 1)


def test_a_kept_alive_connection_the_server_closed_is_replaced_unnoticed() -> None:
    async def main() -> list[bytes]:
        once = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", close=True)
        async with serving(once) as (url, _):
            origin = Origin(url, None, 5.0)
            bodies = []
            for _ in range(3):
                response = await origin.request("GET", "/", {})
                bodies.append(await response.read())
                await response.aclose()  # kept: the server said nothing of closing
            return bodies

    assert asyncio.run(main()) == [b"ok"] * 3


def test_idle_connections_close_when_their_event_loop_shuts_down() -> None:
    async def main() -> list:
        reply = answering(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        async with serving(reply) as (url, _):
            origin = Origin(url, None, 5.0)
            await origin.connect_ahead()
            response = await origin.request("GET", "/", {})
            assert await response.read() == b"ok"
            await response.aclose()
            idle = [connection.writer.transport for connection in origin._idle]
            assert idle
            assert not any(transport.is_closing() for transport in idle)
            return idle

    assert all(transport.is_closing() for transport in asyncio.run(main()))


def test_a_silent_server_is_a_stream_error_after_the_read_timeout() -> None:
    async def main() -> None:
        silent = answering(OK_CHUNKED, b"5\r\nhello\r\n")  # then nothing, connection open
        async with serving(silent) as (url, _):
            await body_of(url, read_timeout=0.2)

    with pytest.raises(StreamError, match=r"sent nothing for 0\.2s"):
        asyncio.run(main())


def test_what_is_not_http_is_a_stream_error() -> None:
    async def main() -> None:
        async with serving(answering(b"SSH-2.0-OpenSSH\r\n\r\n", close=True)) as (url, _):
            await body_of(url)

    with pytest.raises(StreamError, match=r"not an HTTP/1\.1 answer"):
        asyncio.run(main())


def test_an_unreachable_server_is_a_stream_error() -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await body_of(f"http://127.0.0.1:{port}")

    with pytest.raises(StreamError, match="cannot connect"):
        asyncio.run(main())


def test_a_base_path_and_the_host_header_come_from_the_url() -> None:
    async def main() -> list[bytes]:
        reply = answering(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        async with serving(reply) as (url, heads):
            assert await body_of(url + "/behind/a proxy/") == b""
            return heads

    head = asyncio.run(main())[0]
    assert head.startswith(b"GET /behind/a%20proxy/x HTTP/1.1\r\nhost: 127.0.0.1:")


# -- server-sent events ----------------------------------------------------------------


def decode(*pieces: bytes) -> list[tuple[str, str, str]]:
    decoder = EventDecoder()
    return [message for piece in pieces for message in decoder.feed(piece)]


def test_messages_with_ids_events_and_data() -> None:
    stream = b'id: 1\nevent: tokens\ndata: ["a"]\n\n: keep-alive\n\n'
    stream += b"id: 2\nevent: result\ndata: {}\n\n"
    assert decode(stream) == [("1", "tokens", '["a"]'), ("2", "result", "{}")]


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_and_every_split_decode_alike(end: bytes) -> None:
    lines = [b"id: 7", b"event: event", b"data: caf\xc3\xa9", b"data:two", b"", b""]
    stream = end.join(lines)
    whole = decode(stream)
    assert whole == [("7", "event", "caf\u00e9\ntwo")]
    for cut in range(1, len(stream)):
        assert decode(stream[:cut], stream[cut:]) == whole, cut
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == whole


def test_a_lone_cr_ends_its_line_at_once() -> None:
    assert decode(b"data: a\r\r") == [("", "", "a")]  # no wait for a LF that never comes
    assert decode(b"data: a\r", b"data: b", b"\n\n") == [("", "", "a\nb")]


def test_the_last_id_carries_over_and_odd_fields_are_ignored() -> None:
    stream = (
        b"id: 3\ndata: a\n\n"
        b"data: b\nretry: 10\nunknown: x\ndata\n\n"  # "data" alone: an empty line of data
        b"id: bad\x00id\nevent: only-an-event\n\n"  # no data: not a message; the NUL id is ignored
        b"data:  two spaces\n\n"
    )
    assert decode(stream) == [("3", "", "a"), ("3", "", "b\n"), ("3", "", " two spaces")]


def test_a_long_line_in_many_pieces_is_decoded_once_whole() -> None:
    data = b"x" * 200_000
    stream = b"id: 1\nevent: tokens\ndata: " + data + b"\n\n"
    pieces = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    assert decode(*pieces) == [("1", "tokens", data.decode())]
