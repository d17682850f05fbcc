"""Values against Modal's Dict limits: no Dict entry holds more than PIECE bytes, no request
carries more than REQUEST bytes or DICT_UPDATE_ENTRIES entries, whatever one step writes; the
memory tier keeps a larger value in pieces, the disk tier in its Volume only."""

from __future__ import annotations

import cloudpickle
import pytest

from agex.errors import StateWriteError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex_host_modal.storage import (
    DICT_UPDATE_ENTRIES,
    PIECE,
    REQUEST,
    ModalDictStorage,
    ModalVolumeStorage,
)
from agex_host_modal.testing import FakeDict


def entry(fake, name: str, key: str):
    return cloudpickle.loads(fake.dicts[name][key][0])


def counted_updates(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = FakeDict.__dict__["update"]

    def update(self, other=None, /, **kwargs):
        sizes.append(len({**(other or {}), **kwargs}))
        return real.__get__(self)(other, **kwargs)

    monkeypatch.setattr(FakeDict, "update", update)
    return sizes


def test_the_fake_refuses_a_request_over_the_limit(fake, monkeypatch) -> None:
    fake.dict_request_limit = 64 * 1024
    store = fake.Dict.from_name("fits", create_if_missing=True)
    overhead = len(cloudpickle.dumps("k")) + len(cloudpickle.dumps(b"x" * 60_000)) - 60_000
    at = b"x" * (64 * 1024 - overhead)
    assert store.put("k", at)
    with pytest.raises(fake.exception.RequestSizeError):
        store.put("k", at + b"x")
    with pytest.raises(fake.exception.RequestSizeError):
        store.update({"k": at, "l": b"x"})


def test_a_value_of_one_piece_is_one_entry_and_one_byte_more_is_pieces(fake) -> None:
    store = ModalDictStorage("pieces")
    at, over = b"a" * PIECE, b"b" * (PIECE + 1)
    store.put_many({"b/at": at, "b/over": over})
    assert entry(fake, "pieces", "k:b/at") == at
    pieces = [k for k in fake.dicts["pieces"] if k.startswith("p:")]
    assert sorted(len(entry(fake, "pieces", k)) for k in pieces) == [1, PIECE]
    again = ModalDictStorage("pieces")
    assert again.get("b/at") == at
    assert again.get("b/over") == over


def test_a_step_larger_than_a_request_goes_in_requests_that_fit(fake, monkeypatch) -> None:
    """A Dict that refuses anything over REQUEST bytes takes a step of several times that."""
    fake.dict_request_limit = REQUEST + 4096
    state = VersionedState(ModalDictStorage("step"), CloudpickleSerializer(), "agent", "s")
    values = {f"v{i}": bytes([i]) * (PIECE - 1000) for i in range(12)}
    values["large"] = b"L" * (3 * PIECE)
    state.commit(values)
    again = VersionedState(ModalDictStorage("step"), CloudpickleSerializer(), "agent", "s")
    assert again.values() == values


def test_a_step_of_more_entries_than_an_update_takes_goes_in_several(fake, monkeypatch) -> None:
    sizes = counted_updates(monkeypatch)
    store = ModalDictStorage("entries")
    store.put_many({f"b/{i}": b"%d" % i for i in range(DICT_UPDATE_ENTRIES + 1)})
    assert max(sizes) <= DICT_UPDATE_ENTRIES
    assert ModalDictStorage("entries").get(f"b/{DICT_UPDATE_ENTRIES}") == b"10000"


def test_a_refused_request_is_a_write_error_and_the_session_stays(fake, monkeypatch) -> None:
    state = VersionedState(ModalDictStorage("refused"), CloudpickleSerializer(), "agent", "s")
    first = state.commit({"n": 1}).id
    fake.dict_request_limit = 1024
    with pytest.raises(StateWriteError, match="RequestSizeError"):
        state.commit({"n": b"2" * 4096})
    monkeypatch.undo()
    assert state.head() == first


def test_the_disk_tier_keeps_a_large_value_in_its_volume_only(fake) -> None:
    state = VersionedState(ModalVolumeStorage("large"), CloudpickleSerializer(), "agent", "s")
    large = b"v" * (PIECE + 1)
    state.commit({"large": large, "small": 1})
    blob = state.tree(state.head())["large"].blob
    assert "k:b/" + blob not in fake.dicts["large"]  # not mirrored in the Dict
    assert not any(k.startswith("p:") for k in fake.dicts["large"])
    assert any(name.startswith("+packs/big/") for name in fake.volumes["large"])
    fake.dicts.pop("large")
    again = VersionedState(ModalVolumeStorage("large"), CloudpickleSerializer(), "agent", "s")
    assert again.values() == {"large": large, "small": 1}
