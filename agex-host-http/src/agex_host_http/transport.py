"""How the http host talks to an agex server: start a run and follow its event stream to the
end (picking a dropped stream up again with ``Last-Event-ID``), cancel runs, and ask the
server's versions. Everything about HTTP on the client's side is here; what the messages
mean is :mod:`agex.remote`'s."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agex.errors import RemoteExecutionError
from agex_host_http import wire
from agex_host_http.sse import EventDecoder
from agex_host_http.stream import Origin, StreamError

if TYPE_CHECKING:
    from agex_host_http.proxied import ProxiedOrigin

TOKEN_ENV = "AGEX_SERVER_TOKEN"
#: Seconds between attempts to pick a dropped stream up again; then the call fails.
RECONNECT = (0.1, 0.25, 0.5, 1.0, 2.0)
#: A stream silent this long is dead: the server sends a keep-alive every 10 seconds.
READ_TIMEOUT = 60.0

#: Called with each new message of a run (its kind and its data, JSON text); returns the
#: run's outcome when the message is the last one.
OnMessage = Callable[[str, str], "dict[str, Any] | None"]


class Server:
    """The agex server at ``url``, as this client talks to it. ``credential`` gives the
    bearer token to send (None: none), read at each request."""

    def __init__(self, url: str, credential: Callable[[], str | None]) -> None:
        self.url = url
        self.credential = credential
        self._origins: weakref.WeakKeyDictionary[Any, Origin | ProxiedOrigin] = (
            weakref.WeakKeyDictionary()
        )

    async def prepare(self) -> None:
        """Connect ahead of the first request, while the caller prepares its body."""
        await self._origin().connect_ahead()

    async def run(self, run_id: str, body: bytes, on_message: OnMessage) -> dict[str, Any]:
        """Start the run and follow it to its end, reconnecting when the stream drops; the
        outcome ``on_message`` returned."""
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
                            outcome = on_message(kind, data)
                            if outcome is not None:
                                # The stream ends just after: then its connection can
                                # serve the next run.
                                await response.finish(linger=1.0)
                                return outcome
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

    async def cancel_run(self, run_id: str) -> None:
        """Tell the server to stop the run; best effort (the server also cancels runs that
        nobody follows)."""
        path = f"{wire.API}/runs/{run_id}/cancel"
        with contextlib.suppress(StreamError, TimeoutError):
            async with asyncio.timeout(5.0):
                response = await self._origin().request("POST", path, self._headers(), b"")
                await response.read()
                await response.aclose()

    def cancel_session(self, agent: str, session: str) -> int:
        """Stop the agent's runs in ``session`` on the server; how many there were."""
        import httpx

        response = httpx.post(
            f"{self.url}{wire.API}/cancel",
            json={"agent": agent, "session": session},
            headers=self._headers(),
            timeout=30.0,
        )
        raise_for(response.status_code, response.reason_phrase, response.content, self.url)
        cancelled: int = response.json()["cancelled"]
        return cancelled

    def version(self) -> dict[str, Any]:
        """What the server runs (``/v1/version``)."""
        import httpx

        try:
            response = httpx.get(
                f"{self.url}{wire.API}/version", headers=self._headers(), timeout=30.0
            )
        except httpx.TransportError as exc:
            raise RemoteExecutionError(
                f"cannot reach the agex server at {self.url}: {exc}"
            ) from None
        raise_for(response.status_code, response.reason_phrase, response.content, self.url)
        answer: dict[str, Any] = response.json()
        return answer

    # -- plumbing ----------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        credential = self.credential()
        return {} if credential is None else {"authorization": f"Bearer {credential}"}

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


@functools.lru_cache(maxsize=4)
def _tls(cafile: str | None, capath: str | None) -> Any:
    """One TLS context per trust setting (httpx reads SSL_CERT_FILE and SSL_CERT_DIR), made
    once: loading the certificate store costs tens of milliseconds, and every event loop
    gets its own connection pool."""
    import httpx

    return httpx.create_ssl_context()


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
    raise RemoteExecutionError(f"the agex server at {url} answered {status}: {detail}")
