"""A session's turn: tasks on one session wait for each other instead of racing, across
threads, processes and servers that share the storage.

The turn is a lease held in the storage itself (``t/<namespace>/<session>``), taken and
handed back by compare-and-set, so it works on every storage the contract admits. Its
holder renews it while its task runs; a holder that died lets it lapse after ``LEASE``
seconds, and the next task takes it then. A task that found the lease lapsed under it (it
stalled past the lease) still cannot overwrite another's work: the session's head moves by
compare-and-set too, and it gets a conflict.
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from agex.protocols import Storage

#: What a task may do about another task on its session: wait for its turn, or race it and
#: on losing run again, give up quietly, or raise (see ``Agent.task``).
CONFLICTS = ("wait", "retry", "abandon", "fail")
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
        self._held: bytes | None = None
        self._given = False  # once handed on, never taken again (a late take gives back)
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take the turn if it is free (or lapsed); whether it was."""
        current = self.storage.get(self.key)
        if current is not None and current != _FREE and not _lapsed(current):
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
        if self._held is None:
            return False
        mine = self._claim()
        if self.storage.compare_and_set(self.key, self._held, mine):
            self._held = mine
            return True
        self._held = None
        return False

    def give(self) -> None:
        """Hand the turn on (if still held); this claim is over."""
        with self._lock:
            self._given = True
            if self._held is not None:
                self.storage.compare_and_set(self.key, self._held, _FREE)
                self._held = None

    def _claim(self) -> bytes:
        return json.dumps({"owner": self.owner, "until": time.time() + LEASE}).encode()


def _lapsed(value: bytes) -> bool:
    try:
        until = json.loads(value)["until"]
    except (ValueError, KeyError, TypeError):
        return True  # not a turn this code wrote: nobody holds it
    return not isinstance(until, int | float) or until < time.time()
