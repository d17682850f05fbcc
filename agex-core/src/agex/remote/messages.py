"""What a run says while it runs, as numbered messages any number of readers follow: its
events, the model's output, and one final outcome.

Model output comes in many small pieces: pieces that arrive before anyone has read the
previous ones join them in one message, so a fast model fills the log with few, long
messages and a slow reader costs nothing extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, NamedTuple

from agex.protocols import Sink

if TYPE_CHECKING:
    from agex.events import Event

#: The kinds of message: an event (its JSON text), model output (a list of strings), and the
#: outcome: "result" or "error" (a dict, see :mod:`agex.remote.outcome`), always last.
KINDS = ("event", "tokens", "result", "error")
ENDS = ("result", "error")


class Message(NamedTuple):
    id: int
    kind: str
    data: Any


class Lost(NamedTuple):
    """The messages a reader asked for are no longer kept."""

    first: int  # the oldest message still kept
    last: int  # the newest message written


class Outbox(Sink):
    """A sink that writes a run's events and model output as messages, and its outcome last.

    It keeps at most about ``limit`` messages (None: all of them) for readers that come back
    late; older ones are dropped, and a reader that asks for them gets :class:`Lost`.
    """

    __slots__ = ("_changed", "_first", "_log", "_next", "_read", "done", "limit")

    def __init__(self, limit: int | None = None) -> None:
        # Its callbacks write messages; a sub-agent run from this run's agent code reports
        # through them too.
        super().__init__(self.write_event, self.write_token)
        self.limit = limit
        self.done = False
        self._log: list[Message] = []
        self._first = 1  # id of _log[0]
        self._next = 1
        self._read = 0  # the highest id handed to a reader: messages up to it are final
        self._changed = asyncio.Event()

    # -- writing ---------------------------------------------------------------------

    def write_event(self, event: Event) -> None:
        self.publish("event", event.to_json())

    def write_token(self, text: str) -> None:
        log = self._log
        if log and log[-1].kind == "tokens" and log[-1].id > self._read:
            log[-1].data.append(text)
            self._changed.set()
            return
        self.publish("tokens", [text])

    def publish(self, kind: str, data: Any) -> None:
        if self.done:
            return  # the outcome is the last word
        self._log.append(Message(self._next, kind, data))
        self._next += 1
        if self.limit is not None and len(self._log) > 2 * self.limit:
            drop = len(self._log) - self.limit  # in bulk: amortised O(1) per message
            del self._log[:drop]
            self._first += drop
        self._changed.set()

    def finish(self, outcome: dict[str, Any]) -> None:
        """Write the outcome (``agex.remote.outcome``): the run's last message."""
        kind = "result" if outcome.get("kind") == "result" else "error"
        self.publish(kind, outcome)
        self.done = True

    # -- reading ---------------------------------------------------------------------

    @property
    def last(self) -> int:
        """The id of the newest message (0 before the first)."""
        return self._next - 1

    def read(self, after: int = 0) -> list[Message] | Lost:
        """The messages after id ``after`` that are written now (none: an empty list)."""
        if after + 1 < self._first:
            return Lost(self._first, self._next - 1)
        batch = self._log[after + 1 - self._first :]
        if batch:
            self._read = max(self._read, batch[-1].id)
        return batch

    async def changed(self, after: int, timeout: float | None = None) -> bool:
        """Wait until there is a message after id ``after``; False when ``timeout`` seconds
        pass first."""
        if self._next - 1 > after:
            return True
        self._changed.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def follow(
        self, after: int = 0, keepalive: float | None = None
    ) -> AsyncGenerator[list[Message] | Lost, None]:
        """Every message after ``after``, in batches as they come, to the outcome; an empty
        batch each ``keepalive`` seconds without one; :class:`Lost` (and the end) when the
        messages asked for are no longer kept."""
        while True:
            batch = self.read(after)
            if isinstance(batch, Lost):
                yield batch
                return
            if batch:
                after = batch[-1].id
                yield batch
                if batch[-1].kind in ENDS:
                    return
                continue
            if not await self.changed(after, keepalive):
                yield []
                continue
            # Whatever else is written in the same moment (an event, then the outcome)
            # goes out with it, in one batch.
            await asyncio.sleep(0)
