"""The runs a server holds: each run's loop as an asyncio task, and what it said as a
bounded, numbered log that any number of clients follow, from the start or from the last
message they saw (``Last-Event-ID``).

A run nobody follows for ``detach_grace`` seconds is cancelled (its client went away); a
finished run is kept ``retention`` seconds for clients that reconnect late.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

#: SSE comment sent when nothing else has been for this long, so proxies and the client
#: know the connection is alive while the model thinks.
KEEPALIVE = 10.0


class Run:
    def __init__(
        self, run_id: str, agent_name: str, session: str, limit: int, keepalive: float
    ) -> None:
        self.id = run_id
        self.agent_name = agent_name
        self.session = session
        self.limit = limit
        self.keepalive = keepalive
        self.task: asyncio.Task[Any] | None = None
        self.done = False
        self.cancel_requested = False
        self.followers = 0
        # (id, kind, data): data is JSON text, or for "tokens" a list of JSON strings that
        # grows until a follower has been sent it.
        self._log: list[tuple[int, str, Any]] = []
        self._first = 1  # id of _log[0]
        self._next = 1
        self._sent = 0  # the highest id handed to any follower: entries up to it are final
        self._changed = asyncio.Event()
        self._orphan: asyncio.TimerHandle | None = None

    # -- writing ---------------------------------------------------------------------

    def token(self, text: str) -> None:
        """A model token; tokens that arrive before anyone was sent the previous ones join
        them in one message, so a fast model fills the log with few, long messages."""
        last = self._log[-1] if self._log else None
        if last is not None and last[1] == "tokens" and last[0] > self._sent:
            last[2].append(json.dumps(text))
            self._changed.set()
            return
        self.publish("tokens", [json.dumps(text)])

    def publish(self, kind: str, data: Any) -> None:
        self._log.append((self._next, kind, data))
        self._next += 1
        if len(self._log) > 2 * self.limit:  # trim in bulk: amortised O(1) per message
            drop = len(self._log) - self.limit
            del self._log[:drop]
            self._first += drop
        self._changed.set()

    def finish(self, kind: str, message: dict[str, Any]) -> None:
        self.publish(kind, json.dumps(message))
        self.done = True
        self._changed.set()

    def cancel(self) -> bool:
        if self.done or self.task is None:
            return False
        self.cancel_requested = True
        self.task.cancel()
        return True

    # -- following -------------------------------------------------------------------

    async def follow(self, after: int, detach_grace: float) -> AsyncGenerator[bytes, None]:
        """The run's messages after id ``after``, as SSE, until it ends."""
        self.followers += 1
        if self._orphan is not None:
            self._orphan.cancel()
            self._orphan = None
        try:
            while True:
                if after + 1 < self._first:
                    yield _sse(
                        self._next,
                        "error",
                        json.dumps(
                            {
                                "type": "EventsLost",
                                "message": f"messages {after + 1} to {self._first - 1} of run "
                                f"{self.id} are no longer kept (the server keeps the last "
                                f"{self.limit}); the run goes on, its result is lost to "
                                "this client",
                            }
                        ),
                    )
                    return
                start = after + 1 - self._first
                if start < len(self._log):
                    batch = self._log[start:]
                    after = batch[-1][0]
                    self._sent = max(self._sent, after)
                    yield _encode(batch)
                    continue
                if self.done:
                    return
                self._changed.clear()
                try:
                    async with asyncio.timeout(self.keepalive):
                        await self._changed.wait()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                # Whatever else is published in the same moment (an event, then the run's
                # result) goes out with it, in one write.
                await asyncio.sleep(0)
        finally:
            self.followers -= 1
            if self.followers == 0 and not self.done:
                loop = asyncio.get_running_loop()
                self._orphan = loop.call_later(detach_grace, self._abandoned)

    def _abandoned(self) -> None:
        self._orphan = None
        if self.followers == 0:
            self.cancel()


def _sse(message_id: int, kind: str, data: str) -> bytes:
    return f"id: {message_id}\nevent: {kind}\ndata: {data}\n\n".encode()


def _encode(batch: list[tuple[int, str, Any]]) -> bytes:
    """One chunk for a batch of messages; consecutive token messages become one, under the
    last one's id."""
    out: list[bytes] = []
    tokens: list[str] = []
    last = 0
    for message_id, kind, data in batch:
        if kind == "tokens":
            tokens += data
            last = message_id
            continue
        if tokens:
            out.append(_sse(last, "tokens", "[" + ",".join(tokens) + "]"))
            tokens = []
        out.append(_sse(message_id, kind, data))
    if tokens:
        out.append(_sse(last, "tokens", "[" + ",".join(tokens) + "]"))
    return b"".join(out)


class RunBoard:
    """The server's runs by id."""

    def __init__(self, limit: int, retention: float, keepalive: float = KEEPALIVE) -> None:
        self.limit = limit
        self.retention = retention
        self.keepalive = keepalive
        self.runs: dict[str, Run] = {}

    def open(self, run_id: str, agent_name: str, session: str) -> Run:
        run = self.runs[run_id] = Run(run_id, agent_name, session, self.limit, self.keepalive)
        return run

    def watch(self, run: Run, task: asyncio.Task[Any]) -> None:
        """``task`` runs the run's loop. However it ends (even cancelled before its first
        step, when none of its own code runs), followers get a last message, and the run is
        forgotten after the retention period."""
        run.task = task
        task.add_done_callback(lambda _: self._ended(run))

    def _ended(self, run: Run) -> None:
        if not run.done:
            kind = "TaskCancelled" if run.cancel_requested else "RuntimeError"
            run.finish("error", {"type": kind, "message": "the run stopped before it began"})
        asyncio.get_running_loop().call_later(self.retention, self.runs.pop, run.id, None)
