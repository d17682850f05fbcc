"""The runs a server holds, by id: the one registry the run endpoints and both cancel
endpoints use. Each run is its loop as an asyncio task, writing to an
:class:`~agex.remote.Outbox` that any number of clients follow as server-sent events, from the
start or from the last message they saw (``Last-Event-ID``).

A run nobody follows for ``detach_grace`` seconds is cancelled (its client went away); a
finished run is kept ``retention`` seconds for clients that reconnect late.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from agex.remote.messages import Lost, Message, Outbox
from agex.remote.outcome import failure

#: Run ids are chosen by the client, so that it can reconnect even if the first response
#: never reached it.
RUN_ID = r"^[A-Za-z0-9_-]{8,64}$"

#: SSE comment sent when nothing else has been for this long, so proxies and the client
#: know the connection is alive while the model thinks.
KEEPALIVE = 10.0
#: Seconds a session's cancel is remembered for runs still starting (a start waits on the
#: database at most its timeout), and how many sessions' cancels are kept before pruning.
_CANCEL_WINDOW = 600.0
_CANCELS_KEPT = 1000


class Run:
    def __init__(
        self,
        run_id: str,
        agent_name: str,
        session: str,
        limit: int,
        keepalive: float,
        arrived: float | None = None,
    ) -> None:
        self.id = run_id
        self.agent_name = agent_name
        self.session = session
        self.keepalive = keepalive
        self.outbox = Outbox(limit)
        self.task: asyncio.Task[Any] | None = None
        self.followers = 0
        #: When its request arrived (time.monotonic()): a cancel of its session after
        #: that stops it, even one read from the database later.
        self.arrived = time.monotonic() if arrived is None else arrived
        self._orphan: asyncio.TimerHandle | None = None

    @property
    def done(self) -> bool:
        return self.outbox.done

    def cancel(self) -> bool:
        """Stop the run; False when it has ended already."""
        if self.done or self.task is None or self.task.done():
            return False
        self.task.cancel()
        return True

    async def follow(self, after: int, detach_grace: float) -> AsyncGenerator[bytes, None]:
        """The run's messages after id ``after``, as SSE, until it ends."""
        self.followers += 1
        if self._orphan is not None:
            self._orphan.cancel()
            self._orphan = None
        try:
            async for batch in self.outbox.follow(after, self.keepalive):
                if isinstance(batch, Lost):
                    yield _lost(self.id, after, batch)
                elif batch:
                    after = batch[-1].id
                    yield encode(batch)
                else:
                    yield b": keep-alive\n\n"
        finally:
            self.followers -= 1
            if self.followers == 0 and not self.done:
                loop = asyncio.get_running_loop()
                self._orphan = loop.call_later(detach_grace, self._abandoned)

    def _abandoned(self) -> None:
        self._orphan = None
        if self.followers == 0:
            self.cancel()


def encode(batch: list[Message]) -> bytes:
    """One chunk of server-sent events for a batch of messages."""
    out = []
    for message_id, kind, data in batch:
        if kind == "tokens":
            text = json.dumps(data, separators=(",", ":"))
        elif kind == "event":
            text = data
        else:
            text = json.dumps(data)
        out.append(f"id: {message_id}\nevent: {kind}\ndata: {text}\n\n")
    return "".join(out).encode()


def _lost(run_id: str, after: int, lost: Lost) -> bytes:
    detail = {
        "kind": "error",
        "type": "EventsLost",
        "message": f"messages {after + 1} to {lost.first - 1} of run {run_id} are no longer "
        "kept (the server keeps the most recent ones): what the run says from here on, its "
        "result included, is lost to this client",
    }
    return encode([Message(lost.last + 1, "error", detail)])


class RunBoard:
    """The server's runs by id."""

    def __init__(self, limit: int, retention: float, keepalive: float = KEEPALIVE) -> None:
        self.limit = limit
        self.retention = retention
        self.keepalive = keepalive
        self.runs: dict[str, Run] = {}
        #: Called with a run's id when the run ends, and when it is forgotten.
        self.on_end: Callable[[str], None] | None = None
        self.on_forget: Callable[[str], None] | None = None
        # When each (agent, session) was last cancelled (time.monotonic()), so that a run
        # whose request arrived before a cancel, and was still starting, stops too.
        self._cancels: dict[tuple[str, str], float] = {}

    def open(self, run_id: str, agent_name: str, session: str, arrived: float | None = None) -> Run:
        """A new run, its request arrived at ``arrived`` (time.monotonic(); default now)."""
        run = Run(run_id, agent_name, session, self.limit, self.keepalive, arrived)
        self.runs[run_id] = run
        return run

    def watch(self, run: Run, task: asyncio.Task[Any]) -> None:
        """``task`` runs the run's loop. However it ends (even cancelled before its first
        step, when none of its own code runs), followers get a last message, and the run is
        forgotten after the retention period."""
        run.task = task
        task.add_done_callback(lambda _: self._ended(run))

    def cancel_session(self, agent_name: str, session: str) -> int:
        """Stop every run of this agent in this session; how many there were. Runs whose
        requests arrived before now and are still starting stop once started
        (:meth:`cancelled_since`)."""
        return self.cancel_session_at(agent_name, session, time.monotonic())

    def cancel_session_at(self, agent_name: str, session: str, at: float) -> int:
        """Stop the agent's runs in ``session`` whose requests arrived before ``at``
        (time.monotonic(): a cancel made then, heard only now); how many there were. Runs
        still starting whose requests arrived before it stop once started."""
        now = time.monotonic()
        if len(self._cancels) >= _CANCELS_KEPT:
            self._cancels = {k: t for k, t in self._cancels.items() if now - t < _CANCEL_WINDOW}
        key = (agent_name, session)
        self._cancels[key] = max(at, self._cancels.get(key, at))
        runs = [
            run
            for run in self.runs.values()
            if run.agent_name == agent_name and run.session == session and run.arrived <= at
        ]
        return sum(run.cancel() for run in runs)

    def cancelled_since(self, agent_name: str, session: str, since: float) -> bool:
        """Whether the agent's runs in ``session`` were cancelled at ``since``
        (time.monotonic()) or later: a run whose request arrived then must not start."""
        at = self._cancels.get((agent_name, session))
        return at is not None and at >= since

    def _ended(self, run: Run) -> None:
        if not run.done:
            from agex.errors import TaskCancelled

            run.outbox.finish(failure(TaskCancelled("the run stopped before it began")))
        if self.on_end is not None:
            self.on_end(run.id)
        asyncio.get_running_loop().call_later(self.retention, self._forget, run.id)

    def _forget(self, run_id: str) -> None:
        self.runs.pop(run_id, None)
        if self.on_forget is not None:
            self.on_forget(run_id)
