"""Host "http": the whole loop runs on an agex server (``agex serve``); events and tokens
stream back as server-sent events while it runs.

A dropped stream is picked up again with ``Last-Event-ID``: the server keeps each run's
recent messages, so none is lost and none arrives twice. Cancelling the call (or
``task.cancel(session)``) cancels the run on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import weakref
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agex.errors import RemoteExecutionError
from agex.events import Event
from agex_host_http import wire
from agex_host_http.sse import EventDecoder
from agex_host_http.stream import Origin, StreamError

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink
    from agex_host_http.proxied import ProxiedOrigin

TOKEN_ENV = "AGEX_SERVER_TOKEN"
#: Seconds between attempts to pick a dropped stream up again; then the call fails.
RECONNECT = (0.1, 0.25, 0.5, 1.0, 2.0)
#: A stream silent this long is dead: the server sends a keep-alive every 10 seconds.
READ_TIMEOUT = 60.0


class HttpHost:
    provider = "http"

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 300.0,
        serializer: str = "cloudpickle",
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be a string such as 'http://agent-server:8000', got {url!r}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"url must be an http:// or https:// address such as "
                f"'http://agent-server:8000', got {url!r}"
            )
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string (or None to read AGEX_SERVER_TOKEN)")
        from agex import plugins

        plugins.resolve("serializer", serializer)
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = float(timeout)
        self.serializer = serializer
        self._origins: weakref.WeakKeyDictionary[Any, Origin | ProxiedOrigin] = (
            weakref.WeakKeyDictionary()
        )

    # -- the Host protocol -------------------------------------------------------------

    def validate(self, agent: Agent) -> None:
        """The seed's rules: state must live where the server can reach it."""
        config = agent.state_config
        if config.type == "live":
            raise ValueError(wire.LIVE_REFUSED)
        if config.type == "versioned" and (config.storage == "memory" or not config.path):
            raise ValueError(wire.MEMORY_REFUSED)

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        from agex.hosts.shipping import ship

        agent = invocation.agent
        # Connecting first, the request goes out as soon as its body is ready, while calls
        # started alongside this one still prepare theirs.
        await self._origin().connect_ahead()
        serializer = self._serializer()
        state = agent.state_config
        envelope = {
            "agent": agent.name,
            "session": invocation.session,
            "state": {"type": state.type, "storage": state.storage, "path": state.path},
            "serializer": self.serializer,
            "timeout": self.timeout,
            "versions": wire.versions(),
        }
        body = wire.request_body(envelope, ship(invocation, serializer))
        run_id = secrets.token_urlsafe(16)
        try:
            async with asyncio.timeout(self.timeout + 30.0):  # the server enforces timeout
                ended = await self._follow(run_id, body, sink)
        except TimeoutError:
            await self._cancel_run(run_id)
            raise RemoteExecutionError(
                f"the server at {self.url} did not finish run {run_id} within the host's "
                f"{self.timeout:g}s timeout"
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_run(run_id))
            raise
        kind, message = ended
        position = message.get("position")
        if isinstance(position, int) and hasattr(agent.llm, "position"):
            agent.llm.position = position  # a scripted model continues where the run stopped
        if kind == "error":
            wire.raise_error(message)
        try:
            return wire.decode_value(message, self._token() or "", serializer)
        except ValueError as exc:
            raise RemoteExecutionError(str(exc)) from None

    def cancel(self, agent: Agent, session: str) -> int:
        import httpx

        response = httpx.post(
            f"{self.url}{wire.API}/cancel",
            json={"agent": agent.name, "session": session},
            headers=self._headers(),
            timeout=30.0,
        )
        _raise_for(response.status_code, response.reason_phrase, response.content, self.url)
        cancelled: int = response.json()["cancelled"]
        return cancelled

    def warmup(self, agent: Agent) -> None:
        """Check that the server answers, accepts the token, and runs versions this
        client's tasks load on."""
        import httpx

        try:
            response = httpx.get(
                f"{self.url}{wire.API}/version", headers=self._headers(), timeout=30.0
            )
        except httpx.TransportError as exc:
            raise RemoteExecutionError(
                f"cannot reach the agex server at {self.url}: {exc}"
            ) from None
        _raise_for(response.status_code, response.reason_phrase, response.content, self.url)
        server = response.json()
        why = wire.mismatch(wire.versions(), server)
        if why is not None:
            raise RemoteExecutionError(f"{self.url}: {why}")
        if self.serializer not in server.get("serializers", ()):
            raise RemoteExecutionError(
                f"the server at {self.url} has no serializer {self.serializer!r}; it has "
                f"{', '.join(server.get('serializers', ())) or 'none'}"
            )

    def dump_config(self) -> dict[str, Any]:
        """Rebuilds this host elsewhere; the token stays behind (it is read from
        AGEX_SERVER_TOKEN where the host is used)."""
        return {
            "provider": self.provider,
            "url": self.url,
            "timeout": self.timeout,
            "serializer": self.serializer,
        }

    def state_storage(self, agent: Agent, session: str) -> Any:
        raise ValueError(
            f"agent {agent.name!r} runs on the server at {self.url}, and so does its state: "
            "inspect it on the server, with a local agent of the same name whose state path "
            "is the server's --state-dir joined with this path"
        )

    # -- pickling: the token and connections stay here -------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["token"] = None
        state["_origins"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._origins = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"HttpHost(url={self.url!r})"

    # -- plumbing ----------------------------------------------------------------------

    def _token(self) -> str | None:
        return self.token or os.environ.get(TOKEN_ENV) or None

    def _headers(self) -> dict[str, str]:
        token = self._token()
        return {} if token is None else {"authorization": f"Bearer {token}"}

    def _serializer(self) -> Any:
        from agex import plugins

        return plugins.create("serializer", self.serializer)

    def _origin(self) -> Origin | ProxiedOrigin:
        """The connections of the running event loop (a connection belongs to one loop)."""
        loop = asyncio.get_running_loop()
        origin = self._origins.get(loop)
        if origin is None:
            # Idle connections hold on to their loop: those of loops that have closed (an
            # earlier asyncio.run) go, so that loop and connections can be collected.
            for closed in [other for other in self._origins if other.is_closed()]:
                del self._origins[closed]
            tls = None
            if self.url.startswith("https:"):
                tls = _tls(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
            from agex_host_http.proxied import ProxiedOrigin, names_a_proxy

            if names_a_proxy(self.url):
                origin = ProxiedOrigin(self.url, tls, READ_TIMEOUT)
            else:
                origin = Origin(self.url, tls, READ_TIMEOUT)
            self._origins[loop] = origin
        return origin

    async def _follow(self, run_id: str, body: bytes, sink: Sink) -> tuple[str, dict[str, Any]]:
        """Start the run and follow it to its end, reconnecting when the stream drops."""
        origin = self._origin()
        started = False  # the server has the run
        last = 0  # id of the last message handled
        retries = iter(RECONNECT)
        problem: Exception | None = None
        while True:
            headers = self._headers()
            if started:
                method, path, content = "GET", f"{wire.API}/runs/{run_id}/events", None
                headers["last-event-id"] = str(last)
            else:  # sent again, it follows the run if the first attempt got through
                method, path, content = "POST", f"{wire.API}/runs/{run_id}", body
            headers["accept"] = "text/event-stream"
            try:
                response = await origin.request(method, path, headers, content)
                try:
                    if response.status != 200:
                        _raise_for(
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
                            if kind == "tokens":
                                for text in json.loads(data):
                                    sink.token(text)
                            elif kind == "event":
                                sink.event(Event.from_json(data))
                            elif kind in ("result", "error"):
                                # The stream ends just after: then its connection can
                                # serve the next run.
                                await response.finish(linger=1.0)
                                return kind, json.loads(data)
                finally:
                    await response.aclose()
                problem = None  # the stream ended before the run did
            except StreamError as exc:
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

    async def _cancel_run(self, run_id: str) -> None:
        """Tell the server to stop the run; best effort (the server also cancels runs that
        nobody follows)."""
        path = f"{wire.API}/runs/{run_id}/cancel"
        with contextlib.suppress(StreamError, TimeoutError):
            async with asyncio.timeout(5.0):
                response = await self._origin().request("POST", path, self._headers(), b"")
                await response.read()
                await response.aclose()


@functools.lru_cache(maxsize=4)
def _tls(cafile: str | None, capath: str | None) -> Any:
    """One TLS context per trust setting (httpx reads SSL_CERT_FILE and SSL_CERT_DIR), made
    once: loading the certificate store costs tens of milliseconds, and every event loop
    gets its own connection pool."""
    import httpx

    return httpx.create_ssl_context()


def _raise_for(status: int, reason: str, body: bytes, url: str, run_id: str | None = None) -> None:
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
    raise RemoteExecutionError(f"the agex server at {url} answered {status}: {detail}")
