"""Stops agent code that runs too long, or is cancelled, at no cost to the code itself.

One daemon thread keeps the deadlines. When one passes it raises an exception inside the
thread running the agent's code (CPython's ``PyThreadState_SetAsyncExc``), and raises it
again every ``REPEAT`` seconds until that code has stopped, in case the code swallowed it.
The exception arrives at the next bytecode boundary: a loop is stopped at once, a single
long call into C (a huge ``sum(range(...))``) only when it returns.

While the run's thread is in the host's own code on the agent's behalf (a live object's
method), the watch is *held*: an interrupt that comes due then is delivered as soon as that
code returns, never half way through it. Host code that never returns is never interrupted;
isolation (a worker process) is what bounds that. The cyclic garbage collector is paused for
as long as the watch is held: a collection there could finalize one of the agent's objects
(a generator suspended in ``try/finally``) and run the agent's own code where no interrupt
lands.
"""

from __future__ import annotations

import ctypes
import gc
import heapq
import itertools
import threading
import time
from typing import Any

REPEAT = 0.1


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class Watch:
    """One run's stake in the watchdog: where it runs, and whether it is still running.

    The run's own thread disarms it (see ``Sandbox.run``) without a Python-level call
    between the agent's code ending and the watch being disarmed: an interrupt can only
    arrive at such a call, and must never arrive in the host's code.
    """

    def __init__(self, thread_id: int, deadline: float | None) -> None:
        self.lock = threading.Lock()
        self.active = True
        self.fired: type[BaseException] | None = None
        self.holds = 0  # how deep the thread is in host code: interrupts wait while > 0
        self.missed = False  # one came due while held
        self.paused = False  # the garbage collector is paused for this watch's hold
        self.deadline = deadline
        self._target = ctypes.c_ulong(thread_id)

    def overran(self) -> bool:
        """Whether the run ended past its deadline without the watchdog firing: a long call
        into C holds the GIL, and the code may end before the watchdog's thread gets it."""
        return self.fired is None and self.deadline is not None and time.monotonic() > self.deadline

    def disarm(self) -> None:
        """Called by the run's own thread once ``active`` is False (set with no Python-level
        call before it), inside a loop that retries on :class:`Interrupt`: an interrupt
        already in flight may arrive at any call in here. An interrupt still pending is
        taken, not dropped: dropping it with ``PyThreadState_SetAsyncExc(id, NULL)`` leaves
        CPython 3.11's eval breaker set for good, which slows every later line of the
        process and hangs ``sys.settrace``."""
        with self.lock:
            pass  # the watchdog is not inside interrupt() from here on
        if self.fired is not None:
            _take_pending()

    def hold(self) -> None:
        """The run's thread enters host code: interrupts wait until the matching
        :meth:`release` (holds nest, so an inner release leaves the outer hold in place).
        One already in flight, or already fired, is raised here, before the host code
        starts; the caller releases even then."""
        with self.lock:
            self.holds += 1
        fired = self.fired
        if fired is not None:
            _take_pending()
            raise fired()
        # Nothing is in flight from here on (one coming due is kept for release), so no
        # interrupt can come between pausing the collector and noting it
        if not self.paused:
            _collector.pause()
            self.paused = True

    def release(self) -> None:
        """The host code returned: once the outermost hold ends, an interrupt that came due
        meanwhile is raised. (Never below zero: an interrupt in flight may have landed in
        :meth:`hold` before it counted.)"""
        with self.lock:
            self.holds = max(self.holds - 1, 0)
            if self.holds:
                return
            if self.paused:  # under the lock: no interrupt is sent until it is released
                self.paused = False
                _collector.resume()
            missed, self.missed = self.missed, False
        if missed and self.fired is not None:
            raise self.fired()

    def interrupt(self, exc_type: type[BaseException]) -> bool:
        """Raise ``exc_type`` in the run's thread if it is still running (watchdog side)."""
        with self.lock:
            if not self.active:
                return False
            self.fired = self.fired or exc_type
            if self.holds:
                self.missed = True  # raised by release(); asked again until then
            else:
                _set_async_exc(self._target, ctypes.py_object(self.fired))
            return True


class _Collector:
    """Pauses the cyclic garbage collector while any thread holds a watch, and restores it
    as it was when the last hold ends (the collector is one for the whole process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def pause(self) -> None:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def resume(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()


_collector = _Collector()


def _take_pending() -> None:
    """A Python-level call: an asynchronous exception still pending is raised on entry."""


class Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watch, type[BaseException]]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def at(self, when: float, watch: Watch, exc_type: type[BaseException]) -> None:
        """Interrupt ``watch`` with ``exc_type`` at monotonic time ``when``."""
        with self._wake:
            heapq.heappush(self._heap, (when, next(self._order), watch, exc_type))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="agex-watchdog", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wake.wait(timeout)
                _, _, watch, exc_type = heapq.heappop(self._heap)
            if watch.interrupt(exc_type):
                self.at(time.monotonic() + REPEAT, watch, exc_type)


_watchdog: Watchdog | None = None
_lock = threading.Lock()


def watchdog() -> Any:
    global _watchdog
    with _lock:
        if _watchdog is None:
            _watchdog = Watchdog()
        return _watchdog
