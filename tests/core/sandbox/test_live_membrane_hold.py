"""Attack on the watchdog's hold (agex/sandbox/live.py ``_held``, watchdog.py ``Watch.hold``):
while a live object's method runs, the run's interrupts are held until it returns, on the
premise that only the host's code runs then. But agent code can run there too: an agent
generator suspended inside ``try/finally``, left in a reference cycle, is finalized by the
garbage collector wherever the next collection happens, and a live method that allocates
(``fetchall`` of a few thousand rows) triggers one. The generator's ``finally`` then runs
inside the held call, so the time limit never lands: agent code runs unbounded in the
trusted process (isolation is refused for live objects, so nothing else bounds it).

The agent's loop here is bounded (6 s) so that the test ends; an infinite one never would.
Asserts the SAFE behaviour: a 0.5 s limit stops the run within a few seconds.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time

import pytest

from agex.sandbox import Policy, Sandbox
from agex.sandbox.watchdog import Watch


class Store:
    def rows(self, n: int) -> list:
        return [(i, str(i)) for i in range(n)]  # as a fetchall does


CODE = """
import datetime
log = []
def slow():
    try:
        yield 1
    finally:
        log.append("finally")
        end = datetime.datetime.now() + datetime.timedelta(seconds=6)
        while datetime.datetime.now() < end:
            pass
class Box:
    pass
for k in range(50):
    g = slow()
    next(g)
    b = Box()
    b.g = g
    b.me = b
    del g, b
    n = len(db.rows(2000))
"""


# The time limit lands in the agent's finally as the collector finalizes the generator, and
# Python reports an exception raised in a finalizer as unraisable: expected here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_agent_code_finalized_inside_a_live_call_is_still_timed() -> None:
    policy = Policy()
    policy.live_object(Store(), "db", include=["rows"])
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    took: list[float] = []

    def go() -> None:
        start = time.monotonic()
        with contextlib.suppress(BaseException):  # the timeout is expected; its timing is the test
            sandbox.run(CODE, namespace, timeout=0.5)
        took.append(time.monotonic() - start)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(30)
    assert took, "the run did not end at all"
    assert took[0] < 3.0, (
        f"a 0.5 s time limit stopped the run after {took[0]:.1f} s: agent code ran inside "
        "a live method's hold, where no interrupt lands"
    )


class Probe:
    def __init__(self) -> None:
        self.collecting: list[bool] = []

    def look(self) -> int:
        self.collecting.append(gc.isenabled())
        return len(self.collecting)


def test_the_collector_is_paused_during_a_held_call_and_restored_after() -> None:
    probe = Probe()
    policy = Policy()
    policy.live_object(probe, "db", include=["look"])
    sandbox = Sandbox(policy)
    assert gc.isenabled()
    result = sandbox.run("n = db.look()\nm = db.look()\n", sandbox.namespace(), timeout=30)
    assert result.error is None, result.error
    assert probe.collecting == [False, False]
    assert gc.isenabled()


def test_a_collector_left_off_by_the_host_stays_off() -> None:
    probe = Probe()
    policy = Policy()
    policy.live_object(probe, "db", include=["look"])
    sandbox = Sandbox(policy)
    gc.disable()
    try:
        sandbox.run("n = db.look()\n", sandbox.namespace(), timeout=30)
        assert not gc.isenabled()
    finally:
        gc.enable()


class Late(Exception):
    pass


def test_a_nested_release_does_not_end_the_outer_hold() -> None:
    watch = Watch(threading.get_ident(), None)
    try:
        watch.hold()
        watch.hold()
        assert watch.interrupt(Late)  # held: not raised in this thread, kept for later
        watch.release()  # the inner hold ends: the outer one still holds it
        assert not gc.isenabled()
        with pytest.raises(Late):
            watch.release()
        assert gc.isenabled()
    finally:
        watch.active = False
