"""The contract every storage meets; versioned state relies on each of these behaviours."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agex.storage import Storage
from agex.testing.provider import ProviderContract


class StorageContract(ProviderContract):
    kind: ClassVar[str] = "storage"
    #: Set to True when data must outlive the storage object (a second one with the same
    #: options sees it).
    persistent: ClassVar[bool] = False

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        storage = self.create(tmp_path)
        yield storage
        close = getattr(storage, "close", None)
        if close is not None:
            close()

    def test_is_a_storage(self, storage: Any) -> None:
        assert isinstance(storage, Storage)

    def test_missing_key_is_none(self, storage: Storage) -> None:
        assert storage.get("absent") is None

    def test_put_many_then_get(self, storage: Storage) -> None:
        storage.put_many({"a": b"1", "b/c": b"2", "ü": b"\x00\xff"})
        assert storage.get("a") == b"1"
        assert storage.get("b/c") == b"2"
        assert storage.get("ü") == b"\x00\xff"
        assert isinstance(storage.get("a"), bytes)

    def test_empty_value_is_not_missing(self, storage: Storage) -> None:
        storage.put_many({"empty": b""})
        assert storage.get("empty") == b""

    def test_put_many_overwrites(self, storage: Storage) -> None:
        storage.put_many({"k": b"old"})
        storage.put_many({"k": b"new"})
        assert storage.get("k") == b"new"

    def test_large_value(self, storage: Storage) -> None:
        big = bytes(range(256)) * 8192  # 2 MiB
        storage.put_many({"big": big})
        assert storage.get("big") == big

    def test_bad_batch_writes_nothing(self, storage: Storage) -> None:
        with pytest.raises(TypeError):
            storage.put_many({"good": b"1", "bad": "not bytes"})  # type: ignore[dict-item]
        assert storage.get("good") is None

    def test_bad_key_is_refused(self, storage: Storage) -> None:
        with pytest.raises(TypeError):
            storage.get(3)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            storage.put_many({"": b"x"})

    def test_delete(self, storage: Storage) -> None:
        storage.put_many({"gone": b"x", "kept": b"y"})
        storage.delete("gone")
        storage.delete("never-there")
        assert storage.get("gone") is None
        assert storage.get("kept") == b"y"

    def test_keys_by_prefix(self, storage: Storage) -> None:
        storage.put_many({"s/1": b"", "s/2": b"", "s2": b"", "t/1": b""})
        assert set(storage.keys("s/")) == {"s/1", "s/2"}
        assert set(storage.keys("s")) == {"s/1", "s/2", "s2"}
        assert set(storage.keys()) >= {"s/1", "s/2", "s2", "t/1"}
        assert set(storage.keys("nothing")) == set()

    def test_prefix_is_literal(self, storage: Storage) -> None:
        """No wildcard or LIKE semantics leak through: % and _ are plain characters."""
        storage.put_many({"a%b": b"", "a_c": b"", "axb": b""})
        assert set(storage.keys("a%")) == {"a%b"}
        assert set(storage.keys("a_")) == {"a_c"}

    def test_compare_and_set_creates_only_when_absent(self, storage: Storage) -> None:
        assert storage.compare_and_set("head", None, b"c1") is True
        assert storage.compare_and_set("head", None, b"c2") is False
        assert storage.get("head") == b"c1"

    def test_compare_and_set_swaps_only_on_match(self, storage: Storage) -> None:
        storage.put_many({"head": b"c1"})
        assert storage.compare_and_set("head", b"other", b"c2") is False
        assert storage.get("head") == b"c1"
        assert storage.compare_and_set("head", b"c1", b"c2") is True
        assert storage.get("head") == b"c2"

    def test_compare_and_set_on_absent_with_expected_value(self, storage: Storage) -> None:
        assert storage.compare_and_set("nobody", b"c1", b"c2") is False
        assert storage.get("nobody") is None

    def test_compare_and_set_has_one_winner(self, storage: Storage) -> None:
        start = threading.Barrier(8)
        wins: list[bytes] = []

        def contend(i: int) -> None:
            mine = f"writer-{i}".encode()
            start.wait()
            if storage.compare_and_set("race", None, mine):
                wins.append(mine)

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert storage.get("race") == wins[0]

    def test_increments_are_not_lost(self, storage: Storage) -> None:
        """Read-modify-write through compare_and_set, as a session head moves."""
        storage.put_many({"n": b"0"})

        def bump() -> None:
            for _ in range(25):
                while True:
                    seen = storage.get("n")
                    assert seen is not None
                    if storage.compare_and_set("n", seen, str(int(seen) + 1).encode()):
                        break

        threads = [threading.Thread(target=bump) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert storage.get("n") == b"100"

    def test_a_sessions_turn_has_one_holder_at_a_time(self, storage: Storage) -> None:
        """Tasks on one session take turns through the storage (see ``agex.state.turn``)."""
        from agex.state.turn import Turn

        holding: list[int] = []
        most, lost = [0], []
        start = threading.Barrier(6)

        def task() -> None:
            start.wait()
            for _ in range(5):
                turn = Turn(storage, "t/agent/session")  # a claim per task
                while not turn.take():
                    pass
                holding.append(1)
                most[0] = max(most[0], len(holding))
                if not turn.renew():
                    lost.append(turn.owner)
                holding.pop()
                turn.give()

        threads = [threading.Thread(target=task) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert most[0] == 1
        assert not lost

    def test_a_task_moves_the_session_only_when_it_finishes(self, storage: Storage) -> None:
        from agex.errors import StateConflict
        from agex.serializers import CloudpickleSerializer
        from agex.state.versioned import VersionedState

        state = VersionedState(storage, CloudpickleSerializer(), "agent", "session")
        start = state.commit({"n": 0}).id
        step = state.commit_serialized({"n": b"one"}, base=start, task="run-1").id
        assert state.head() == start  # a step of an unfinished task
        assert [c.completed for c in state.history(unfinished=True)] == [True, False]
        state.finish(start, step, "run-1")
        assert state.head() == step
        assert all(c.completed for c in state.history(unfinished=True))
        late = state.commit_serialized({"n": b"two"}, base=start, task="run-2").id
        with pytest.raises(StateConflict):
            state.finish(start, late, "run-2")  # run-1 finished first
        assert state.head() == step

    def test_a_lost_head_is_damage_not_a_new_session(self, storage: Storage) -> None:
        from agex.errors import StateIntegrityError
        from agex.serializers import CloudpickleSerializer
        from agex.state.versioned import VersionedState

        state = VersionedState(storage, CloudpickleSerializer(), "agent", "session")
        state.commit({"n": 0})
        state.commit({"n": 1})
        storage.delete(state.head_key)
        with pytest.raises(StateIntegrityError, match="missing"):
            state.head()
        fresh = VersionedState(storage, CloudpickleSerializer(), "agent", "fresh")
        first = fresh.commit_serialized({"n": b"1"}, base=None, task="run").id
        fresh.commit_serialized({"n": b"2"}, base=first, task="run")
        assert fresh.head() is None  # a first task not finished: still a new session

    def test_data_outlives_the_object(self, tmp_path: Path) -> None:
        if not self.persistent:
            pytest.skip("this storage does not claim persistence")
        first = self.create(tmp_path)
        first.put_many({"kept": b"yes"})
        getattr(first, "close", lambda: None)()
        second = self.create(tmp_path)
        assert second.get("kept") == b"yes"
        getattr(second, "close", lambda: None)()
