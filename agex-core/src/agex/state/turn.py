"""A session's turn: tasks on one session wait for each other instead of racing, across
threads, processes and servers that share the storage.

The turn is a lease held in the storage itself (``t/<session>``: one for every agent's state
in the session), taken and handed back by compare-and-set, so it works on every storage the
contract admits. Its holder renews it while its task runs, writing a new claim each time; a
waiter counts a claim as lapsed once it has seen it unchanged for ``LEASE`` seconds of its
own clock (no two machines' clocks need agree), and a holder that died lets it lapse so. A
task that found its lease lapsed under it (it stalled past the lease) still cannot overwrite
another's work: the session's head moves by compare-and-set too, and it gets a conflict.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid

from agex.protocols import Storage

#: What a task may do about another task on its session: wait for its turn, or race it and
#: on losing run again, give up quietly, or raise (see ``Agent.task``).
CONFLICTS = ("wait", "retry", "abandon", "fail")
#: Most times a task runs again after losing its session (each time asks the model anew).
MAX_RETRIES = 10
#: Seconds a turn lasts without being renewed.
LEASE = 30.0
#: Longest pause between two looks at a busy turn.
_MOST = 0.2
_FREE = b"free"


class Turn:
    """One task's claim on a session's turn."""

    def __init__(self, storage: Storage, key: str) -> None:
        self.storage, self.key = storage, key
        self.owner = uuid.uuid4().hex
        self._renewals = 0
        self._held: bytes | None = None
        self._given = False  # once handed on, never taken again (a late take gives back)
        self._lock = threading.Lock()
        self._seen: tuple[bytes | None, float] = (None, 0.0)  # a claim, since when

    def take(self) -> bool:
        """Take the turn if it is free (or lapsed); whether it was."""
        current = self.storage.get(self.key)
        if current is not None and current != _FREE and not self._lapsed(current):
            return False
        mine = self._claim()
        with self._lock:
            if self._given or not self.storage.compare_and_set(self.key, current, mine):
                return False
            self._held = mine
            return True

    def pause(self, waited: float) -> float:
        """How long to wait before looking again, having waited ``waited`` seconds."""
        return min(0.005 * 2 ** min(waited * 20, 6), _MOST)

    def renew(self) -> bool:
        """Keep the turn for another lease; whether it was still held."""
        with self._lock:
            if self._held is None or self._given:
                return False
            mine = self._claim()
            if self.storage.compare_and_set(self.key, self._held, mine):
                self._held = mine
                return True
            self._held = None
            return False

    def give(self) -> None:
        """Hand the turn on (if still held); this claim is over. Best effort: a turn not
        handed back lapses."""
        with self._lock:
            self._given = True
            held, self._held = self._held, None
            if held is not None:
                with contextlib.suppress(Exception):  # the storage failed: it lapses instead
                    self.storage.compare_and_set(self.key, held, _FREE)

    def _claim(self) -> bytes:
        self._renewals += 1
        return f"{self.owner}:{self._renewals}".encode()

    def _lapsed(self, value: bytes) -> bool:
        """Whether ``value``, another's claim, has stood unchanged for a whole lease."""
        now = time.monotonic()
        if self._seen[0] != value:
            self._seen = (value, now)
        return now - self._seen[1] >= LEASE
