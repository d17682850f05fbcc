"""The Modal tests run against ``agex_host_modal.testing.FakeModal``, put in place of the
``modal`` package through the provider's test hook (``agex_host_modal.sdk.use``)."""

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


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeModal]:
    modal = FakeModal(secrets=KEYS, clock=clock)
    LOCAL.forget()  # storages made under another fake must not answer here
    try:
        with sdk.use(modal):
            yield modal
    finally:
        LOCAL.forget()
        modal.close()
