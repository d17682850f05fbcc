"""When Modal or a Volume's files fail, state says so as agex errors naming the store, the
session stays on its last commit, and the same storage goes on once the cause is gone."""

from __future__ import annotations

import errno

import pytest
from modal.exception import Error as ModalError

from agex.errors import StateLoadError, StateWriteError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex_host_modal import storage as stores
from agex_host_modal.storage import layout
from agex_host_modal.testing import FakeDict


def state_in(store) -> VersionedState:
    return VersionedState(store, CloudpickleSerializer(), "agent", "session")


def test_a_dict_that_refuses_a_write(fake, monkeypatch) -> None:
    store = stores.ModalDictStorage("faults")
    state = state_in(store)
    first = state.commit({"n": 1}).id
    real = FakeDict.update

    def refuse(self, *args, **kwargs):
        raise ModalError("the request is too large")

    monkeypatch.setattr(FakeDict, "update", refuse)
    with pytest.raises(StateWriteError, match=r"modal-dict 'faults'.*too large.*last commit"):
        state.commit({"n": 2})
    assert state.head() == first
    monkeypatch.setattr(FakeDict, "update", real)
    assert state_in(store).commit({"n": 3}).id != first
    assert state_in(store).values() == {"n": 3}


def test_a_dict_that_cannot_be_read(fake, monkeypatch) -> None:
    store = stores.ModalDictStorage("unreadable")
    state_in(store).commit({"n": 1})

    def fail(self, *args, **kwargs):
        raise ModalError("Modal could not be reached")

    monkeypatch.setattr(FakeDict, "get", fail)
    with pytest.raises(StateLoadError, match=r"modal-dict 'unreadable'.*could not be reached"):
        state_in(store).head()


def test_a_volume_whose_files_cannot_be_written(fake, monkeypatch) -> None:
    store = stores.ModalVolumeStorage("full")
    state = state_in(store)
    first = state.commit({"n": 1}).id

    class Full:
        def write_many(self, items):
            raise OSError(errno.ENOSPC, "No space left on device")

    real = stores.ModalVolumeStorage._files
    monkeypatch.setattr(stores.ModalVolumeStorage, "_files", lambda self: Full())
    with pytest.raises(StateWriteError, match=r"modal-volume 'full'.*No space left"):
        state.commit({"n": 2})
    monkeypatch.setattr(stores.ModalVolumeStorage, "_files", real)
    assert state.head() == first
    state_in(store).commit({"n": 3})
    assert state_in(store).values() == {"n": 3}


def test_a_volume_that_refuses_the_head_leaves_the_session_where_it_was(fake, monkeypatch) -> None:
    store = stores.ModalVolumeStorage("refusing")
    state = state_in(store)
    first = state.commit({"n": 1}).id

    def refuse(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(layout._Files, "write_move", refuse)
    with pytest.raises(StateWriteError, match=r"modal-volume 'refusing'.*Input/output"):
        state.commit({"n": 2})
    monkeypatch.undo()
    assert state_in(store).head() == first  # the Dict took the move back
    fake.dicts.pop("refusing")
    assert state_in(stores.ModalVolumeStorage("refusing")).values() == {"n": 1}
    state_in(store).commit({"n": 3})
    assert state_in(store).values() == {"n": 3}
