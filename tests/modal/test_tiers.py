"""What each tier keeps, and for how long, against the fake Modal's clock: a memory-tier
session used every day keeps its whole history however old, what the Dict forgot after a
week without use is reported as forgotten, and a Dict made before Modal's 2025 change is
refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agex.errors import StateIntegrityError, StateLoadError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex_host_modal.storage import DAY, ModalDictStorage, ModalVolumeStorage
from agex_host_modal.testing import DICT_TTL


def state_in(store) -> VersionedState:
    return VersionedState(store, CloudpickleSerializer(), "agent", "session")


def test_a_session_used_every_day_keeps_its_whole_history(fake, clock) -> None:
    """Tasks read the head, the commits back to the nearest snapshot and the values they
    use; the rest of the history is kept by the Dict's daily look."""
    made = []
    for day in range(35):
        state = state_in(ModalDictStorage("daily"))  # a new container each day
        for step in range(3):
            made.append(state.commit({"n": day * 3 + step, f"day{day}": day}).id)
        clock.now += DAY
    state = state_in(ModalDictStorage("daily"))
    assert [c.id for c in reversed(state.history())] == made
    assert state.checkout(made[0]) == {"n": 0, "day0": 0}
    assert state.checkout(made[70]) == {"n": 70, **{f"day{d}": d for d in range(24)}}


def test_the_dict_is_looked_after_once_a_day(fake, clock, monkeypatch) -> None:
    looks = []
    real = ModalDictStorage._look

    def look(self):
        looks.append(self.name)
        real(self)

    monkeypatch.setattr(ModalDictStorage, "_look", look)
    for _ in range(3):
        for _ in range(4):  # several processes, several tasks each, the same day
            state = state_in(ModalDictStorage("looked"))
            state.commit({"n": 1})
            state.values()
        clock.now += DAY
    assert len(looks) == 3


def test_what_the_dict_forgot_is_reported_as_forgotten(fake, clock) -> None:
    """An entry not read for a week is gone even while newer ones are not: three commits
    on one day, each read by the next, then a use just over a week after the second."""
    clock.now = 100 * DAY + 3600
    state = state_in(ModalDictStorage("forgetful"))
    first = state.commit({"n": 1}).id
    clock.now += 5 * 3600
    state.commit({"n": 2})
    clock.now += 5 * 3600
    state.commit({"n": 3})
    clock.now += DICT_TTL - 5 * 3600 + 60
    again = state_in(ModalDictStorage("forgetful"))
    forgotten = r"is not in Modal Dict 'forgetful'.*7 days.*storage=\"disk\""
    with pytest.raises(StateIntegrityError, match="commit " + first + " " + forgotten):
        again.history()
    with pytest.raises(StateIntegrityError, match="commit " + first + " " + forgotten):
        again.checkout(first)


def test_a_value_the_dict_forgot_is_reported_as_forgotten(fake) -> None:
    state = state_in(ModalDictStorage("forgot-a-value"))
    state.commit({"n": 1, "text": "kept"})
    blob = state.tree(state.head())["n"].blob
    fake.dicts["forgot-a-value"].pop("k:b/" + blob)  # as Modal drops an entry left unread
    with pytest.raises(StateIntegrityError, match=f"value b/{blob} is not in Modal Dict"):
        state_in(ModalDictStorage("forgot-a-value")).values()


def test_a_key_never_written_is_still_only_absent(fake) -> None:
    store = ModalDictStorage("absent")
    assert store.get("h/agent/session") is None
    assert store.get("s/agent/session") is None


@pytest.mark.parametrize("kind", [ModalDictStorage, ModalVolumeStorage])
def test_a_dict_made_before_modals_2025_change_is_refused(fake, kind) -> None:
    fake.dict_created["made-early"] = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    store = kind("made-early")
    refused = r"made on 2025-03-01, before .* 2025-05-20.*modal dict delete made-early"
    with pytest.raises(StateLoadError, match=refused):
        store.get("h/agent/session")
    with pytest.raises(StateLoadError, match=refused):
        state_in(store).commit({"n": 1})
    assert kind("made-later").get("h/agent/session") is None
