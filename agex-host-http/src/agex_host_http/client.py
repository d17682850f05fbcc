"""Host "http": the whole loop runs on an agex server (``agex serve``); events and tokens
stream back as server-sent events while it runs.

A dropped stream is picked up again with ``Last-Event-ID``: the server keeps each run's
recent messages, so none is lost and none arrives twice. Cancelling the call (or
``task.cancel(session)``) cancels the run on the server.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from agex.errors import RemoteExecutionError
from agex.hosts import Host
from agex_host_http import wire
from agex_host_http.transport import TOKEN_ENV, Server

if TYPE_CHECKING:
    from agex.agent import Agent
    from agex.hosts import Invocation, Sink

__all__ = ["TOKEN_ENV", "HttpHost"]


class HttpHost(Host):
    provider = "http"
    ships_agent = True  # the loop runs on the server

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 300.0,
        serializer: str = "cloudpickle",
    ) -> None:
        if url is None:
            raise ValueError(
                "the http host needs url=, the agex server's address: "
                'connect_host(provider="http", url="http://agent-server:8000")'
            )
        if not isinstance(url, str):
            raise TypeError(f"url must be a string such as 'http://agent-server:8000', got {url!r}")
        parts = urlsplit(url)
        if "@" in parts.netloc:
            raise ValueError(
                "url must not hold credentials (user:password@): the server's token goes in "
                "token= or the AGEX_SERVER_TOKEN environment variable"
            )
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
        self._server = Server(self.url, self._credential)

    # -- the Host protocol -------------------------------------------------------------

    def validate(self, agent: Agent) -> None:
        """The seed's rules: state must live where the server can reach it."""
        why = wire.state_refused(agent.state_config)
        if why is not None:
            raise ValueError(why)

    async def arun(self, invocation: Invocation, sink: Sink) -> Any:
        from agex import plugins, remote

        # Connecting first, the request goes out as soon as its body is ready, while calls
        # started alongside this one still prepare theirs.
        await self._server.prepare()
        serializer = plugins.create("serializer", self.serializer)
        envelope = remote.Envelope.of(invocation, serializer=self.serializer, timeout=self.timeout)
        outcome = await self._post(envelope, remote.ship(invocation, serializer), sink)
        return remote.settle(outcome, invocation, self._credential() or "")

    async def arun_shipped(
        self, envelope: Any, payload: bytes, sink: Sink, agent: Any = None
    ) -> dict[str, Any]:
        """A task a worker process shipped (a sub-agent its agent code calls): run on the
        server, its outcome's HMAC checked here and the value left for the worker to load.
        (``agent``, when the caller has it, is not needed: the server has what it runs.)"""
        from dataclasses import replace

        from agex.remote.outcome import verified

        await self._server.prepare()
        envelope = replace(envelope, serializer=self.serializer, timeout=self.timeout)
        outcome = await self._post(envelope, payload, sink)
        return verified(outcome, self._credential() or "")

    async def _post(self, envelope: Any, payload: bytes, sink: Sink) -> dict[str, Any]:
        """Run a shipped task on the server, its messages to ``sink``; its outcome."""
        from agex import remote

        body = wire.request_body(envelope.to_json(), payload)

        async def on_message(kind: str, data: str) -> dict[str, Any] | None:
            return await remote.deliver(kind, data if kind == "event" else json.loads(data), sink)

        try:
            async with asyncio.timeout(self.timeout + 30.0):  # the server enforces timeout
                outcome: dict[str, Any] = await self._server.run(envelope.run, body, on_message)
        except TimeoutError:
            await self._server.cancel_run(envelope.run)
            raise RemoteExecutionError(
                f"the server at {self.url} did not finish run {envelope.run} within the "
                f"host's {self.timeout:g}s timeout"
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._server.cancel_run(envelope.run))
            raise
        return outcome

    def cancel(self, agent: Agent, session: str) -> int:
        return self._server.cancel_session(agent.name, session)

    def warmup(self, agent: Agent) -> None:
        """Check that the server answers, accepts the token, and runs versions this
        client's tasks load on."""
        from agex.remote import shipping

        server = self._server.version()
        why = shipping.mismatch(shipping.versions(), server)
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
            "is the server's --state-dir joined with this path (for a server with "
            '--state-url: storage "postgres", this path, and AGEX_POSTGRES_URL naming its '
            "database)"
        )

    # -- pickling: the token and connections stay here -------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["token"] = None
        del state["_server"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._server = Server(self.url, self._credential)

    def __repr__(self) -> str:
        return f"HttpHost(url={self.url!r})"

    def _credential(self) -> str | None:
        return self.token or os.environ.get(TOKEN_ENV) or None
