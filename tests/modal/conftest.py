"""The Modal tests run against ``agex_host_modal.testing.FakeModal``, put in place of the
``modal`` package through the provider's test hook (``agex_host_modal.sdk.use``).

``fake`` runs each container as a process started from the image the app would get, so a
file, entry point or package the image lacks fails here. ``fake_threads`` plays containers
as threads of the test process: only for tests that run storage code "in a container" in
the test process itself (the Volume storage through a mount)."""

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
