"""A moving key's claims: each move of a head or a turn writes one (a Modal Dict has no
compare-and-set), and the claims no reader can reach any more are removed, so a key keeps a
few of them however long it runs, without losing a move whose writer stopped midway."""

from __future__ import annotations

import pytest

from agex.state.turn import Turn
from agex_host_modal.storage import DAY, SETTLE, ModalDictStorage, ModalVolumeStorage
from agex_host_modal.testing import FakeDict


class Stopped(BaseException):
    """The process stopped here (a container killed)."""


def claims(fake, name: str) -> list[str]:
    return [k for k in fake.dicts[name] if k.startswith("c:")]


@pytest.mark.parametrize("kind", [ModalDictStorage, ModalVolumeStorage])
def test_a_turn_renewed_for_an_hour_keeps_a_few_claims(fake, clock, kind) -> None:
    store = kind("turns")
    turn = Turn(store, "t/session")
    assert turn.take()
    for _ in range(360):  # every 10 seconds
        clock.now += 10
        assert turn.renew()
    assert len(claims(fake, "turns")) <= SETTLE / 10 + 2
    assert store.get("t/session") == turn._held
    assert not Turn(store, "t/session").take()  # still held, by the last renewal


def test_a_winner_that_stops_between_its_claim_and_its_write_loses_nothing(
    fake, clock, monkeypatch
) -> None:
    store = ModalDictStorage("stopping")
    store.put_many({"h/x": b"one"})
    real = FakeDict.__dict__["put"]

    def stops(self, key, value, **options):
        if key == "k:h/x":
            raise Stopped
        return real.__get__(self)(key, value, **options)

    monkeypatch.setattr(FakeDict, "put", stops)
    with pytest.raises(Stopped):
        store.compare_and_set("h/x", b"one", b"two")
    monkeypatch.setattr(FakeDict, "put", real)
    clock.now += 2 * DAY  # long after: the daily look must not take the claim for spent
    other = ModalDictStorage("stopping")
    assert other.get("h/x") == b"two"
    assert not other.compare_and_set("h/x", b"one", b"three")
    held = b"two"
    for n in range(3, 30):
        clock.now += SETTLE
        assert other.compare_and_set("h/x", held, b"%d" % n)
        held = b"%d" % n
    assert ModalDictStorage("stopping").get("h/x") == b"29"
    assert len(claims(fake, "stopping")) <= 3


def test_the_daily_look_removes_claims_whose_writers_are_gone(fake, clock) -> None:
    ModalDictStorage("left").put_many({"h/x": b"0"})
    for n in range(1, 40):  # a process per move, gone before it could tidy up
        assert ModalDictStorage("left").compare_and_set("h/x", b"%d" % (n - 1), b"%d" % n)
    assert len(claims(fake, "left")) == 39
    clock.now += DAY + 60
    assert ModalDictStorage("left").get("h/x") == b"39"
    assert claims(fake, "left") == []
    assert ModalDictStorage("left").compare_and_set("h/x", b"39", b"40")
