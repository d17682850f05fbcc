"""How the http host talks to an agex server: start a run and follow its event stream to the
end (picking a dropped stream up again with ``Last-Event-ID``), cancel runs, and ask the
server's versions. What the messages mean is :mod:`agex.remote`'s.

All of it goes through httpcore, the transport layer of httpx: HTTP/1.1, TLS and proxies as
httpx has them. Proxies are those the environment names (HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY, and NO_PROXY to go around them; SOCKS with the socksio package); certificates
are checked against SSL_CERT_FILE or SSL_CERT_DIR when set, certifi's otherwise. Each event
loop has its connections (:mod:`agex_host_http.connections`), and keeps them between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import urllib.request
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from agex.errors import RemoteExecutionError
from agex_host_http import wire
from agex_host_http.sse import EventDecoder

if TYPE_CHECKING:
    import ssl

    import httpcore

    from agex_host_http.connections import Pool

TOKEN_ENV = "AGEX_SERVER_TOKEN"
#: Seconds between attempts to pick a dropped stream up again; then the call fails.
RECONNECT = (0.1, 0.25, 0.5, 1.0, 2.0)
#: A stream silent this long is dead: the server sends a keep-alive every 10 seconds.
READ_TIMEOUT = 60.0
#: Seconds to connect (TLS included), and to send a request.
CONNECT_TIMEOUT = 30.0
#: Seconds a connection is kept idle for the next request: less than the server keeps it
#: (uvicorn: 5), so that the client, not the server, closes it.
KEEPALIVE = 4.0
#: Seconds for the calls that are not runs (the version handshake, cancelling).
CALL_TIMEOUT = 30.0

#: Called with each new message of a run (its kind and its data, JSON text); returns the
#: run's outcome when the message is the last one.
OnMessage = Callable[[str, str], "Awaitable[dict[str, Any] | None]"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Server:
    """The agex server at ``url``, as this client talks to it. ``credential`` gives the
    bearer token to send (None: none), read at each request."""

    def __init__(self, url: str, credential: Callable[[], str | None]) -> None:
        self.url = url
        self.credential = credential
        parts = urlsplit(url)
        if parts.hostname is None or parts.scheme not in _DEFAULT_PORTS:
            raise ValueError(f"not an http:// or https:// address with a host: {url!r}")
        self._scheme = parts.scheme
        # A name beyond ASCII goes as the DNS has it (IDNA).
        self._host = (
            parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode()
        )
        self._port = parts.port or _DEFAULT_PORTS[parts.scheme]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = (host if parts.port is None else f"{host}:{parts.port}").encode()
        self._base = quote(parts.path.rstrip("/"), safe="/%:@!$&'()*+,;=-._~")
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool] = (
            weakref.WeakKeyDictionary()
        )

    async def prepare(self) -> None:
        """Connect ahead of the first request, while the caller prepares its body."""
        await self._pool().connect_ahead(CONNECT_TIMEOUT)

    async def run(self, run_id: str, body: bytes, on_message: OnMessage) -> dict[str, Any]:
        """Start the run and follow it to its end, reconnecting when the stream drops; the
        outcome ``on_message`` returned."""
        from agex_host_http.connections import FAILURES

        pool = self._pool()
        started = False  # the server has the run
        last = 0  # id of the last message handled
        retries = iter(RECONNECT)
        problem: Exception | None = None
        while True:
            if started:
                method, path, content = b"GET", f"{wire.API}/runs/{run_id}/events", None
                headers = self._headers(content, b"text/event-stream")
                headers.append((b"Last-Event-ID", str(last).encode()))
            else:  # sent again, it follows the run if the first attempt got through
                method, path, content = b"POST", f"{wire.API}/runs/{run_id}", body
                headers = self._headers(content, b"text/event-stream")
            try:
                response = await pool.send(
                    method, self._target(path), headers, content, _timeouts()
                )
                try:
                    if response.status != 200:
                        raise_for(
                            response.status,
                            response.reason,
                            await response.read(),
                            self.url,
                            run_id if started else None,
                        )
                    media = response.headers.get("content-type", "").partition(";")[0].strip()
                    if media != "text/event-stream":
                        raise RemoteExecutionError(
                            f"the agex server at {self.url} answered run {run_id} with "
                            f"{media or 'no content type'}, not an event stream"
                        )
                    started = True
                    decoder = EventDecoder()
                    while piece := await response.read_piece():
                        for message_id, kind, data in decoder.feed(piece):
                            if not message_id.isdigit() or int(message_id) <= last:
                                continue  # already handled before the reconnect
                            last = int(message_id)
                            retries = iter(RECONNECT)
                            outcome = await on_message(kind, data)
                            if outcome is not None:
                                # The stream ends just after: then its connection can
                                # serve the next run.
                                await response.finish(linger=1.0)
                                return outcome
                finally:
                    await response.aclose()
                problem = None  # the stream ended before the run did
            except FAILURES as exc:
                problem = exc
            delay = next(retries, None)
            if delay is None:
                raise RemoteExecutionError(
                    f"lost the connection to the agex server at {self.url} during run "
                    f"{run_id} and could not get it back ({type(problem).__name__}: {problem})"
                    if problem is not None
                    else f"the agex server at {self.url} kept closing run {run_id}'s stream"
                )
            await asyncio.sleep(delay)

    async def cancel_run(self, run_id: str) -> None:
        """Tell the server to stop the run; best effort (the server also cancels runs that
        nobody follows)."""
        from agex_host_http.connections import FAILURES

        target = self._target(f"{wire.API}/runs/{run_id}/cancel")
        with contextlib.suppress(TimeoutError, *FAILURES):
            async with asyncio.timeout(5.0):
                response = await self._pool().send(
                    b"POST", target, self._headers(b""), b"", _timeouts()
                )
                try:
                    await response.read()
                finally:
                    await response.aclose()

    def cancel_session(self, agent: str, session: str) -> int:
        """Stop the agent's runs in ``session`` on the server; how many there were."""
        body = json.dumps({"agent": agent, "session": session}).encode()
        answer = self._call(b"POST", f"{wire.API}/cancel", body)
        cancelled: int = answer["cancelled"]
        return cancelled

    def version(self) -> dict[str, Any]:
        """What the server runs (``/v1/version``)."""
        return self._call(b"GET", f"{wire.API}/version")

    # -- plumbing ----------------------------------------------------------------------

    def _call(self, method: bytes, path: str, body: bytes | None = None) -> dict[str, Any]:
        """A request outside any event loop, on a connection of its own; the JSON answer."""
        from agex_host_http.connections import FAILURES

        headers = self._headers(body, b"application/json")
        if body is not None:
            headers.append((b"Content-Type", b"application/json"))
        try:
            with self._maker(proxy_for(self.url), sync=True) as maker:
                response = maker.request(
                    method,
                    self._target(path),
                    headers=headers,
                    content=body,
                    extensions={"timeout": _timeouts(CALL_TIMEOUT)},
                )
        except FAILURES as exc:
            raise RemoteExecutionError(
                f"cannot reach the agex server at {self.url}: {exc}"
            ) from None
        reason = response.extensions.get("reason_phrase", b"")
        reason = reason.decode("latin-1") if isinstance(reason, bytes) else ""
        raise_for(response.status, reason, response.content, self.url)
        try:
            answer: dict[str, Any] = json.loads(response.content)
        except ValueError:
            raise RemoteExecutionError(
                f"the agex server at {self.url} answered {path} with something not JSON"
            ) from None
        return answer

    def _headers(self, body: bytes | None, accept: bytes = b"*/*") -> list[tuple[bytes, bytes]]:
        headers = [(b"Host", self._authority), (b"Accept", accept)]
        credential = self.credential()
        if credential is not None:
            headers.append((b"Authorization", f"Bearer {credential}".encode()))
        if body is not None:
            headers.append((b"Content-Length", str(len(body)).encode()))
        return headers

    def _target(self, path: str) -> httpcore.URL:
        import httpcore

        target = (self._base + path).encode()
        return httpcore.URL(scheme=self._scheme, host=self._host, port=self._port, target=target)

    def _pool(self) -> Pool:
        """The connections of the running event loop (a connection belongs to one loop)."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # Idle connections hold on to their loop: those of loops that have closed (an
            # earlier asyncio.run) go, so that loop and connections can be collected.
            for closed in [other for other in self._pools if other.is_closed()]:
                del self._pools[closed]
            import httpcore

            from agex_host_http.connections import Pool

            origin = httpcore.Origin(self._scheme.encode(), self._host.encode(), self._port)
            proxy = proxy_for(self.url)
            maker = None if proxy is None else self._maker(proxy, sync=False)
            pool = self._pools[loop] = Pool(origin, self._tls(proxy), KEEPALIVE, maker)
        return pool

    def _tls(self, proxy: str | None) -> ssl.SSLContext | None:
        if self._scheme == "https" or (proxy is not None and proxy.startswith("https:")):
            return _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        return None

    def _maker(self, proxy: str | None, sync: bool) -> Any:
        """An httpcore pool that makes connections to the server: directly, or through
        ``proxy``."""
        import httpcore

        options: dict[str, Any] = {"keepalive_expiry": KEEPALIVE}
        tls = self._tls(proxy)
        if tls is not None:
            options["ssl_context"] = tls
        if not sync:
            from agex_host_http.connections import BACKEND

            options["network_backend"] = BACKEND
        if proxy is None:
            return (httpcore.ConnectionPool if sync else httpcore.AsyncConnectionPool)(**options)
        parts = urlsplit(proxy)
        if parts.hostname is None:
            raise RemoteExecutionError(
                f"the proxy the environment names, {shown(proxy)!r}, has no host"
            )
        proxy_url = httpcore.URL(
            scheme=parts.scheme, host=parts.hostname, port=parts.port, target="/"
        )
        auth = None
        if parts.username is not None:
            auth = (unquote(parts.username), unquote(parts.password or ""))
        if parts.scheme in ("http", "https"):
            if parts.scheme == "https":
                options["proxy_ssl_context"] = tls
            kind = httpcore.HTTPProxy if sync else httpcore.AsyncHTTPProxy
            return kind(proxy_url=proxy_url, proxy_auth=auth, **options)
        if parts.scheme in ("socks5", "socks5h"):
            if importlib.util.find_spec("socksio") is None:
                raise RemoteExecutionError(
                    f"the proxy for {self.url} is a SOCKS proxy ({shown(proxy)}): that needs the "
                    "socksio package (pip install socksio)"
                )
            socks = httpcore.SOCKSProxy if sync else httpcore.AsyncSOCKSProxy
            return socks(proxy_url=proxy_url, proxy_auth=auth, **options)
        raise RemoteExecutionError(
            f"the proxy for {self.url} is {shown(proxy)}: only http, https and socks5 proxies work"
        )


def shown(url: str) -> str:
    """``url`` as errors show it: without the password it may hold (a proxy's, from the
    environment), since errors are printed, logged and may reach a model."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTP_PROXY, HTTPS_PROXY or ALL_PROXY),
    unless NO_PROXY exempts its host; None for a direct connection."""
    proxies = urllib.request.getproxies()
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or parts.hostname is None:
        return None
    host = parts.hostname
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)
    if urllib.request.proxy_bypass(host if ":" in host else f"{host}:{port}"):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _timeouts(limit: float | None = None) -> dict[str, float]:
    read = READ_TIMEOUT if limit is None else limit
    send = CONNECT_TIMEOUT if limit is None else limit
    return {"connect": send, "read": read, "write": send, "pool": send}


@functools.lru_cache(maxsize=4)
def _tls(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One TLS context per trust setting, made once: loading the certificate store costs
    tens of milliseconds, and every event loop gets its own connections."""
    import ssl

    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def raise_for(status: int, reason: str, body: bytes, url: str, run_id: str | None = None) -> None:
    """A clear error for a refused request, with the server's own explanation."""
    if status < 400:
        return
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = body.decode("utf-8", "replace")[:500] or reason
    if status == 401:
        detail += f" (set {TOKEN_ENV}, or pass token= to connect_host)"
    elif status == 404 and run_id is not None:
        detail += "; the run's session state is at its last commit"
    elif status == 421:
        raise MisdirectedRun(f"the agex server at {url} answered {status}: {detail}")
    raise RemoteExecutionError(f"the agex server at {url} answered {status}: {detail}")


class MisdirectedRun(RemoteExecutionError):
    """A request about a run reached a replica that does not hold it (421 Misdirected
    Request): another replica of the server started it. The load balancer in front of the
    replicas must send every request naming a run id to the same replica (docs/hosts.md);
    the run was not started twice."""
