"""The Modal tests run against ``agex_host_modal.testing.FakeModal``, put in place of the
``modal`` package through the provider's test hook (``agex_host_modal.sdk.use``).

``fake`` runs each container as a process started from the image the app would get, so a
file, entry point or package the image lacks fails here. Every test uses it, except those
that must reach into the container from the test process, which use ``fake_threads``
(containers played by threads of the test process):

- test_contract.py's mounted Volume storage and test_tier_volume.py run storage code "in a
  container" in the test process;
- test_lazy_state.py counts what the container's code asks its storage for;
- two tests of test_host_async.py and one of test_host_errors.py patch code that runs in
  the container.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agex.stores import LOCAL
from agex_host_modal import sdk
from agex_host_modal.testing import FakeModal

KEYS = {"llm-keys": {"AGEX_TEST_SECRET": "from-the-secret"}}


class Clock:
    """A clock the test moves by hand (for the Dict's 7-day expiry)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _using(modal: FakeModal) -> Iterator[FakeModal]:
    LOCAL.forget()  # storages made under another fake must not answer here
    try:
        with sdk.use(modal):
            yield modal
    finally:
        LOCAL.forget()
        modal.close()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeModal]:
    yield from _using(FakeModal(secrets=KEYS, clock=clock))


@pytest.fixture
def fake_threads(clock: Clock) -> Iterator[FakeModal]:
    yield from _using(FakeModal(secrets=KEYS, clock=clock, containers="thread"))
