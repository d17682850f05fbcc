"""The client's transport (``agex_host_http.transport.Server``) on its own: against a real
`agex serve`, and against small servers on loopback that misbehave on purpose (streams that
drop, stall, or only keep alive; servers that close kept-alive connections; a proxy; TLS).
And the server-sent-events decoder."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import re
import ssl
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from agex import RemoteExecutionError
from agex_host_http import connections, transport
from agex_host_http.sse import EventDecoder

# -- a server that says what the test tells it to ---------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    connection: int  # which connection it came on, counting from 1


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class Loopback:
    """A server on loopback: each request goes to ``handler``, which writes the answer and
    says whether the connection stays open."""

    url: str
    requests: list[Request] = field(default_factory=list)
    connections: int = 0


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Loopback]:
    loopback = Loopback("")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loopback.connections += 1
        number = loopback.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, target, _ = line.split(" ")
                if "://" in target:  # the absolute form a proxy passes on
                    target = target.split("/", 3)[3] if target.count("/") > 2 else ""
                    target = "/" + target
                headers = {}
                for header in lines:
                    name, _, value = header.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                request = Request(method, target, headers, body, number)
                loopback.requests.append(request)
                if not await handler(request, writer):
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    loopback.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield loopback
    finally:
        server.close()


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
END = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def message(number: int, kind: str = "event", data: str = "{}") -> bytes:
    return chunk(f"id: {number}\nevent: {kind}\ndata: {data}\n\n".encode())


def result(number: int) -> bytes:
    return message(number, "result", json.dumps({"value": number}))


async def send(writer: asyncio.StreamWriter, *parts: bytes, pause: float = 0.0) -> None:
    for part in parts:
        writer.write(part)
        await writer.drain()
        if pause:
            await asyncio.sleep(pause)


def streaming(*parts: bytes, pause: float = 0.0) -> Handler:
    """Every request answered with the stream of ``parts``; the connection kept."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, STREAM_HEAD, *parts, pause=pause)
        return True

    return handle


def json_answer(status: int, answer: Any) -> bytes:
    body = json.dumps(answer).encode()
    head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: "
    return head.encode() + f"{len(body)}\r\n\r\n".encode() + body


class Follower:
    """Follows a run: what ``on_message`` got, and its outcome from the result."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    async def __call__(self, kind: str, data: str) -> dict[str, Any] | None:
        self.messages.append((kind, data))
        return json.loads(data) if kind == "result" else None


def client(url: str, token: str | None = "secret") -> transport.Server:
    return transport.Server(url, lambda: token)


@pytest.fixture(autouse=True)
def _no_proxy_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnects at once, and twice at most."""
    monkeypatch.setattr(transport, "RECONNECT", (0.01, 0.01))


# -- runs ------------------------------------------------------------------------------


def test_a_run_streams_its_messages_and_ends_with_its_outcome() -> None:
    async def main() -> tuple[dict[str, Any], Follower, Loopback]:
        handler = streaming(message(1), message(2, "tokens", '["a"]'), result(3), END)
        async with serving(handler) as loopback:
            follower = Follower()
            outcome = await client(loopback.url).run("run-1", b"the task", follower)
            return outcome, follower, loopback

    outcome, follower, loopback = asyncio.run(main())
    assert outcome == {"value": 3}
    assert follower.messages == [("event", "{}"), ("tokens", '["a"]'), ("result", '{"value": 3}')]
    (request,) = loopback.requests
    assert (request.method, request.target, request.body) == ("POST", "/v1/runs/run-1", b"the task")
    assert request.headers["authorization"] == "Bearer secret"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["host"] == urlsplit(loopback.url).netloc


def test_a_dropped_stream_resumes_with_each_message_handled_once(quick: None) -> None:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.method == "POST":  # two messages, then the connection breaks
            await send(writer, STREAM_HEAD, message(1), message(2), b"5\r\nid: ")
            return False
        # Picked up again from where it broke: the server sends the last one again.
        await send(writer, STREAM_HEAD, message(2), message(3), result(4), END)
        return True

    async def main() -> tuple[dict[str, Any], Follower, Loopback]:
        async with serving(handle) as loopback:
            follower = Follower()
            outcome = await client(loopback.url).run("run-2", b"task", follower)
            return outcome, follower, loopback

    outcome, follower, loopback = asyncio.run(main())
    assert outcome == {"value": 4}
    assert [kind for kind, _ in follower.messages] == ["event"] * 3 + ["result"]
    first, again = loopback.requests
    assert (first.method, first.target) == ("POST", "/v1/runs/run-2")
    assert (again.method, again.target) == ("GET", "/v1/runs/run-2/events")
    assert again.headers["last-event-id"] == "2"
    assert again.headers["authorization"] == "Bearer secret"


def test_keep_alives_keep_a_quiet_stream_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "READ_TIMEOUT", 0.3)
    keep_alive = chunk(b": keep-alive\n\n")
    # 1.5 s of nothing but keep-alives, five times the read timeout
    handler = streaming(message(1), *[keep_alive] * 15, result(2), END, pause=0.1)

    async def main() -> tuple[dict[str, Any], int]:
        async with serving(handler) as loopback:
            outcome = await client(loopback.url).run("run-3", b"task", Follower())
            return outcome, len(loopback.requests)

    assert asyncio.run(main()) == ({"value": 2}, 1)  # never reconnected


def test_a_silent_stream_is_given_up_after_the_read_timeout(
    monkeypatch: pytest.MonkeyPatch, quick: None
) -> None:
    monkeypatch.setattr(transport, "READ_TIMEOUT", 0.2)

    async def silent(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, STREAM_HEAD, message(1))
        await asyncio.sleep(5.0)  # then nothing, the connection open
        return False

    async def main() -> None:
        async with serving(silent) as loopback:
            follower = Follower()
            try:
                await client(loopback.url).run("run-4", b"task", follower)
            finally:
                assert follower.messages == [("event", "{}")]  # handled once, not thrice
                assert [r.method for r in loopback.requests] == ["POST", "GET", "GET"]

    with pytest.raises(
        RemoteExecutionError, match=r"ReadTimeout: the server sent nothing for 0\.2s"
    ):
        asyncio.run(main())


def test_a_stream_that_keeps_ending_early_is_given_up(quick: None) -> None:
    async def main() -> None:
        async with serving(streaming(message(1), END)) as loopback:
            await client(loopback.url).run("run-5", b"task", Follower())

    with pytest.raises(RemoteExecutionError, match="kept closing run run-5's stream"):
        asyncio.run(main())


def test_refusals_and_wrong_answers_are_clear_errors() -> None:
    answers = {
        "/v1/runs/refused": json_answer(409, {"detail": "versions differ"}),
        "/v1/runs/unauthorized": json_answer(401, {"detail": "bad token"}),
        "/v1/runs/not-sse": json_answer(200, {"detail": "hello"}),
    }

    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, answers[request.target])
        return True

    async def main() -> list[str]:
        errors = []
        async with serving(handle) as loopback:
            for run_id in ("refused", "unauthorized", "not-sse"):
                with pytest.raises(RemoteExecutionError) as caught:
                    await client(loopback.url).run(run_id, b"task", Follower())
                errors.append(str(caught.value))
        return errors

    refused, unauthorized, not_sse = asyncio.run(main())
    assert refused.endswith("answered 409: versions differ")
    assert "answered 401: bad token (set AGEX_SERVER_TOKEN" in unauthorized
    assert "answered run not-sse with application/json, not an event stream" in not_sse


def test_an_unreachable_server_fails_clearly(quick: None) -> None:
    async def main() -> str:
        async with serving(streaming()) as loopback:
            url = loopback.url
        with pytest.raises(RemoteExecutionError) as caught:
            await client(url).run("run-6", b"task", Follower())
        return str(caught.value)

    error = asyncio.run(main())
    assert "lost the connection to the agex server" in error
    assert "(ConnectError: cannot connect" in error


def test_a_base_path_in_the_url_prefixes_every_request() -> None:
    async def main() -> list[Request]:
        async with serving(streaming(result(1), END)) as loopback:
            await client(loopback.url + "/behind/a proxy/").run("run-7", b"task", Follower())
            return loopback.requests

    (request,) = asyncio.run(main())
    assert request.target == "/behind/a%20proxy/v1/runs/run-7"


def test_a_stream_framed_by_the_end_of_the_connection_is_read() -> None:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        head = b"HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n"
        await send(
            writer, head, b"id: 1\ndata: {}\n\n", b'id: 2\nevent: result\ndata: {"v": 1}\n\n'
        )
        return False

    async def main() -> dict[str, Any]:
        async with serving(handle) as loopback:
            return await client(loopback.url).run("run-8", b"task", Follower())

    assert asyncio.run(main()) == {"v": 1}


# -- connections -----------------------------------------------------------------------


def test_runs_one_after_another_share_one_connection() -> None:
    async def main() -> Loopback:
        async with serving(streaming(message(1), result(2), END)) as loopback:
            server = client(loopback.url)
            for number in range(5):
                await server.prepare()
                await server.run(f"run-{number}", b"task", Follower())
            return loopback

    loopback = asyncio.run(main())
    assert len(loopback.requests) == 5
    assert loopback.connections == 1  # each body was read to its end, so each was kept


def test_bursts_of_runs_reuse_the_connections_the_last_burst_left() -> None:
    """The client keeps as many idle connections as a burst needs: the next burst does not
    reconnect."""

    async def main() -> tuple[Loopback, int]:
        async with serving(streaming(message(1), result(2), END, pause=0.05)) as loopback:
            server = client(loopback.url)

            async def one(number: int) -> dict[str, Any]:
                await server.prepare()
                return await server.run(f"run-{number}", b"task", Follower())

            for burst in range(3):
                outcomes = await asyncio.gather(*(one(burst * 1000 + n) for n in range(150)))
                assert outcomes == [{"value": 2}] * 150
            return loopback, server._pool().idle()

    loopback, idle = asyncio.run(main())
    assert len(loopback.requests) == 450
    assert loopback.connections == 150
    assert idle == 150


def test_a_request_goes_out_before_other_ready_tasks_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a burst, each run's request is sent as soon as its body is ready, not after every
    other run has prepared its own: the server starts on the first meanwhile."""
    order: list[str] = []
    send = connections._Stream._send

    def recorded(self: Any) -> None:
        if self._unsent:
            order.append("request sent")
        send(self)

    monkeypatch.setattr(connections._Stream, "_send", recorded)

    async def main() -> None:
        async with serving(streaming(result(1), END)) as loopback:
            server = client(loopback.url)
            for _ in range(2):  # on a connection made ahead, then on one kept alive
                await server.prepare()

                async def another() -> None:
                    order.append("another task ran")

                other = asyncio.create_task(another())  # ready to run
                await server.run("run", b"task", Follower())
                await other

    asyncio.run(main())
    assert order == ["request sent", "another task ran"] * 2


def test_a_kept_connection_the_server_closed_is_replaced_unnoticed() -> None:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, STREAM_HEAD, result(1), END)
        return False  # closes, having said nothing of closing

    async def main() -> tuple[list[dict[str, Any]], Loopback]:
        async with serving(handle) as loopback:
            server = client(loopback.url)
            outcomes = []
            for number in range(3):
                outcomes.append(await server.run(f"run-{number}", b"task", Follower()))
                await asyncio.sleep(0.05)  # the server's close arrives
            return outcomes, loopback

    outcomes, loopback = asyncio.run(main())
    assert outcomes == [{"value": 1}] * 3
    assert [r.target for r in loopback.requests] == [f"/v1/runs/run-{n}" for n in range(3)]


def test_a_request_on_a_connection_closed_as_it_is_sent_goes_again_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing a kept-alive connection races with the next request on it: the request,
    unanswered, goes again on a fresh connection at once, not after a reconnect delay."""
    monkeypatch.setattr(transport, "RECONNECT", ())  # no second attempt for the run
    served = 0

    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        nonlocal served
        served += 1
        if served == 2:  # the second request: read, then the connection closes unanswered
            return False
        await send(writer, STREAM_HEAD, result(served), END)
        return True

    async def main() -> tuple[list[dict[str, Any]], Loopback]:
        async with serving(handle) as loopback:
            server = client(loopback.url)
            outcomes = [await server.run(f"run-{n}", b"task", Follower()) for n in range(2)]
            return outcomes, loopback

    outcomes, loopback = asyncio.run(main())
    assert outcomes == [{"value": 1}, {"value": 3}]
    assert [(r.target, r.connection) for r in loopback.requests] == [
        ("/v1/runs/run-0", 1),
        ("/v1/runs/run-1", 1),
        ("/v1/runs/run-1", 2),
    ]


def test_each_event_loop_has_its_connections_closed_and_released_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync task call runs an event loop of its own; when that loop shuts down, its idle
    connections close, and its pool goes once another loop needs one."""
    sockets: list[Any] = []
    connect = connections.Backend.connect_tcp

    async def recorded(self: Any, *args: Any, **kwargs: Any) -> Any:
        stream = await connect(self, *args, **kwargs)
        sockets.append(stream.get_extra_info("socket"))
        return stream

    monkeypatch.setattr(connections.Backend, "connect_tcp", recorded)

    async def main() -> None:
        async with serving(streaming(result(1), END)) as loopback:
            server = client(loopback.url)
            loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

            async def one_run() -> None:
                loops.append(weakref.ref(asyncio.get_running_loop()))
                await server.run("run", b"task", Follower())

            for _ in range(2):  # each in a loop of its own, in a thread of its own
                await asyncio.to_thread(asyncio.run, one_run())
            assert len(sockets) == 2  # a connection per loop...
            assert all(sock.fileno() == -1 for sock in sockets)  # ...closed with its loop
            await one_run()
            gc.collect()
            assert [loop() for loop in loops[:2]] == [None, None]  # collected
            assert list(server._pools) == [asyncio.get_running_loop()]

    asyncio.run(main())


# -- the calls outside any event loop ------------------------------------------------


def test_version_and_cancelling_a_session_are_plain_requests() -> None:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.target == "/v1/version":
            await send(writer, json_answer(200, {"agex": "1.2.3"}))
        else:
            await send(writer, json_answer(200, {"cancelled": 2}))
        return True

    async def main() -> tuple[dict[str, Any], int, list[Request]]:
        async with serving(handle) as loopback:
            server = client(loopback.url)
            version = await asyncio.to_thread(server.version)
            cancelled = await asyncio.to_thread(server.cancel_session, "agent", "s")
            return version, cancelled, loopback.requests

    version, cancelled, (asked, cancel) = asyncio.run(main())
    assert version == {"agex": "1.2.3"}
    assert cancelled == 2
    assert (asked.method, asked.target) == ("GET", "/v1/version")
    assert asked.headers["authorization"] == "Bearer secret"
    assert (cancel.method, cancel.target) == ("POST", "/v1/cancel")
    assert json.loads(cancel.body) == {"agent": "agent", "session": "s"}


def test_version_of_an_unreachable_server_fails_clearly() -> None:
    async def main() -> str:
        async with serving(streaming()) as loopback:
            return loopback.url

    url = asyncio.run(main())
    with pytest.raises(
        RemoteExecutionError, match=re.escape(f"cannot reach the agex server at {url}")
    ):
        client(url).version()


def test_cancelling_a_run_tells_the_server_and_never_fails() -> None:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        await send(writer, json_answer(200, {"cancelled": 1}))
        return True

    async def main() -> list[Request]:
        async with serving(handle) as loopback:
            await client(loopback.url).cancel_run("run-9")
            url = loopback.url
            requests = loopback.requests
        await client(url).cancel_run("run-9")  # nobody listens any more: no error
        return requests

    (request,) = asyncio.run(main())
    assert (request.method, request.target) == ("POST", "/v1/runs/run-9/cancel")


# -- a real server ---------------------------------------------------------------------


def test_the_handshake_with_agex_serve(server) -> None:
    answer = client(server.url, server.token).version()
    assert {"python", "agex", "cloudpickle"} <= set(answer)
    with pytest.raises(RemoteExecutionError, match=r"answered 401: .*\(set AGEX_SERVER_TOKEN"):
        client(server.url, None).version()
    with pytest.raises(RemoteExecutionError, match="answered 403: the token is wrong"):
        client(server.url, "wrong").version()


def test_agex_serve_keeps_one_connection_for_the_runs_of_an_event_loop(
    server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agex import Agent, connect_host
    from agex.testing.host import scripted

    connected: list[str] = []
    connect = connections.Backend.connect_tcp

    async def counted(self: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        connected.append(f"{host}:{port}")
        return await connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(connections.Backend, "connect_tcp", counted)
    host = connect_host(provider="http", url=server.url, token=server.token)

    def job() -> Any:
        agent = Agent(host=host, llm=scripted("task_success(1)"))

        @agent.task
        async def job() -> int:
            """Job."""

        return job

    async def main() -> list[int]:
        return [await job()() for _ in range(4)]

    assert asyncio.run(main()) == [1] * 4
    assert connected == [f"127.0.0.1:{server.port}"]


# -- proxies and TLS -------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    seen: list[str] = field(default_factory=list)  # the first line of each request
    credentials: list[str] = field(default_factory=list)  # each Proxy-Authorization


@contextlib.asynccontextmanager
async def proxying() -> AsyncIterator[Proxy]:
    """An HTTP proxy: requests in absolute form are passed on, CONNECT opens a tunnel."""
    proxy = Proxy("")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *fields = head.decode().split("\r\n")
        proxy.seen.append(line)
        proxy.credentials += [
            value.strip()
            for name, _, value in (field.partition(":") for field in fields)
            if name.lower() == "proxy-authorization"
        ]
        method, target, _ = line.split(" ")
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream_reader, upstream = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target)
            assert parts.hostname is not None
            upstream_reader, upstream = await asyncio.open_connection(parts.hostname, parts.port)
            upstream.write(head)
        await asyncio.gather(pipe(reader, upstream), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield proxy
    finally:
        server.close()


async def run_and_ask(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run, and the server's version, as the client sends them."""
    server = client(url)
    outcome = await server.run("run-p", b"task", Follower())
    return outcome, await asyncio.to_thread(server.version)


async def stream_or_version(request: Request, writer: asyncio.StreamWriter) -> bool:
    if request.target == "/v1/version":
        await send(writer, json_answer(200, {"agex": "x"}))
    else:
        await send(writer, STREAM_HEAD, result(1), END)
    return True


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_runs_and_calls_go_through_the_proxy_the_environment_names(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> tuple[Any, Loopback, Proxy]:
        async with serving(stream_or_version) as loopback, proxying() as proxy:
            monkeypatch.setenv(variable, proxy.url)
            answers = await run_and_ask(loopback.url)
            return answers, loopback, proxy

    answers, loopback, proxy = asyncio.run(main())
    assert answers == ({"value": 1}, {"agex": "x"})
    assert proxy.seen == [
        f"POST {loopback.url}/v1/runs/run-p HTTP/1.1",
        f"GET {loopback.url}/v1/version HTTP/1.1",
    ]


def test_a_proxy_url_with_credentials_authenticates(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[Any, Proxy]:
        async with serving(stream_or_version) as loopback, proxying() as proxy:
            with_credentials = proxy.url.replace("http://", "http://agent:p%40ss@")
            monkeypatch.setenv("HTTP_PROXY", with_credentials)
            return await run_and_ask(loopback.url), proxy

    answers, proxy = asyncio.run(main())
    assert answers == ({"value": 1}, {"agex": "x"})
    basic = "Basic " + base64.b64encode(b"agent:p@ss").decode()
    assert proxy.credentials == [basic, basic]


def test_no_proxy_goes_around_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> tuple[Any, Proxy]:
        async with serving(stream_or_version) as loopback, proxying() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
            return await run_and_ask(loopback.url), proxy

    answers, proxy = asyncio.run(main())
    assert answers == ({"value": 1}, {"agex": "x"})
    assert proxy.seen == []


@pytest.fixture
def certificates(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server's TLS context, and the file of the authority that signed its certificate."""
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    path = tmp_path / "authority.pem"
    authority.cert_pem.write_to_path(str(path))
    return context, path


def test_https_is_checked_against_ssl_cert_file(
    certificates: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch, quick: None
) -> None:
    context, authority = certificates
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def main() -> tuple[Any, str]:
        async with serving(stream_or_version, tls=context) as loopback:
            monkeypatch.setenv("SSL_CERT_FILE", str(authority))
            trusted = await run_and_ask(loopback.url)
            monkeypatch.delenv("SSL_CERT_FILE")  # certifi's authorities do not know it
            with pytest.raises(RemoteExecutionError) as caught:
                await client(loopback.url).run("run-t", b"task", Follower())
            return trusted, str(caught.value)

    trusted, untrusted = asyncio.run(main())
    assert trusted == ({"value": 1}, {"agex": "x"})
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted


def test_https_goes_through_a_proxy_tunnel(
    certificates: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, authority = certificates
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))

    async def main() -> tuple[Any, Loopback, Proxy]:
        async with serving(stream_or_version, tls=context) as loopback, proxying() as proxy:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            return await run_and_ask(loopback.url), loopback, proxy

    answers, loopback, proxy = asyncio.run(main())
    assert answers == ({"value": 1}, {"agex": "x"})
    authority_of = urlsplit(loopback.url).netloc
    assert proxy.seen == [f"CONNECT {authority_of} HTTP/1.1"] * 2  # the run, then the call
    assert [r.target for r in loopback.requests] == ["/v1/runs/run-p", "/v1/version"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_runs_work_on_any_event_loop(
    loop: str, certificates: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sub-agent calls its own server from agex serve's event loop, which is uvloop's: the
    transport asks of a loop only what asyncio's interface has. Here over TLS, to a server
    named rather than numbered, with a stream that drops and is picked up again."""
    factory = asyncio.new_event_loop
    if loop == "uvloop":
        factory = pytest.importorskip("uvloop").new_event_loop
    context, authority = certificates
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))

    async def handle(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.method == "POST":
            await send(writer, STREAM_HEAD, message(1), b"5\r\nid: ")
            return False
        await send(writer, STREAM_HEAD, message(2), result(3), END)
        return True

    async def main() -> tuple[dict[str, Any], Follower]:
        async with serving(handle, tls=context) as loopback:
            follower = Follower()
            url = loopback.url.replace("127.0.0.1", "localhost")
            return await client(url).run("run-l", b"task", follower), follower

    with asyncio.Runner(loop_factory=factory) as runner:
        outcome, follower = runner.run(main())
    assert outcome == {"value": 3}
    assert [kind for kind, _ in follower.messages] == ["event", "event", "result"]


def test_unusable_proxies_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "ftp://proxy.example:21")
    with pytest.raises(RemoteExecutionError, match="only http, https and socks5 proxies"):
        client("http://agent-server:8000").version()
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "socks5://proxy.example:1080")
    try:
        import socksio  # noqa: F401
    except ImportError:
        with pytest.raises(RemoteExecutionError, match=r"SOCKS proxy.*needs the socksio package"):
            client("http://agent-server:8000").version()


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
    assert decode(b"data: a\r", b"\n", b"\n") == [("", "", "a")]  # a CRLF split in two


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


def test_invalid_utf8_is_replaced_and_a_character_split_between_pieces_is_kept() -> None:
    stream = "data: caf\u00e9\n\n".encode()
    cut = stream.index(b"\xa9")  # inside the two bytes of the é
    assert decode(stream[:cut], stream[cut:]) == [("", "", "caf\u00e9")]
    assert decode(b"data: \xff\n\n") == [("", "", "\ufffd")]
