"""Time as Modal ages Dict entries: the wall clock, or the clock of a stand-in for Modal
(tests move it), and the day by which the Dict is looked after."""

from __future__ import annotations

import time
from collections.abc import Callable

from agex_host_modal import sdk

#: How often the Dict is looked after (kept alive, its spent claims removed): the first use
#: of a day does it, so an entry is read at least every day the Dict is used.
DAY = 24 * 3600.0


def _clock() -> Callable[[], float] | None:
    """The clock of a stand-in for Modal (tests move it), whose Dict ages entries by it."""
    clock = getattr(sdk.modal(), "clock", None)
    return clock if callable(clock) else None


def _now() -> float:
    """Wall time, as Modal ages Dict entries."""
    clock = _clock()
    return time.time() if clock is None else clock()


def _ticks() -> float:
    """Seconds on a clock that only moves forward, for how long something took."""
    clock = _clock()
    return time.monotonic() if clock is None else clock()
