"""The versioned engine over real storages: commits, history, integrity, conflicts."""

import threading
from importlib.util import find_spec

import pytest

from agex import plugins
from agex.errors import StateConflict, StateIntegrityError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState

STORAGES = ["memory"] + [
    name
    for name, module in (("disk", "agex_state_disk"), ("postgres", "agex_state_postgres"))
    if find_spec(module)
]


class CountingSerializer(CloudpickleSerializer):
    def __init__(self) -> None:
        super().__init__()
        self.dumped: list[object] = []
        self.loaded = 0

    def dumps(self, value):
        self.dumped.append(value)
        return super().dumps(value)

    def loads(self, data):
        self.loaded += 1
        return super().loads(data)


@pytest.fixture(params=STORAGES)
def storage(request, state_path):
    path = state_path(request.param)
    made = plugins.create("storage", request.param, **({} if path is None else {"path": path}))
    yield made
    getattr(made, "close", lambda: None)()


def state(storage, session="s", namespace="agent", key=None, serializer=None):
    return VersionedState(
        storage, serializer or CloudpickleSerializer(), namespace, session, key=key
    )


def test_commits_and_values(storage) -> None:
    s = state(storage)
    assert s.head() is None
    assert s.values() == {}
    first = s.commit({"x": 1, "data": [1, 2]}, events=[{"type": "ActionEvent"}])
    second = s.commit({"x": 2}, removed=["data"])
    assert s.head() == second.id
    assert s.values() == {"x": 2}
    assert s.values(first.id) == {"x": 1, "data": [1, 2]}
    assert [c.id for c in s.history()] == [second.id, first.id]
    assert s.history()[-1].events == ({"type": "ActionEvent"},)


def test_checkout_is_read_only(storage) -> None:
    s = state(storage)
    first = s.commit({"x": 1})
    view = s.checkout(first.id)
    with pytest.raises(TypeError):
        view["x"] = 2  # type: ignore[index]
    assert view == {"x": 1}


def test_revert_moves_forward_to_old_values(storage) -> None:
    s = state(storage)
    first = s.commit({"x": 1})
    s.commit({"x": 2, "y": 3})
    back = s.revert(first.id)
    assert s.values() == {"x": 1}
    assert s.head() == back.id
    assert len(s.history()) == 3  # nothing is lost: the reverted commit is still there


def test_diff(storage) -> None:
    s = state(storage)
    a = s.commit({"x": 1, "gone": 0})
    b = s.commit({"x": 2, "new": 1}, removed=["gone"])
    assert s.diff(a.id, b.id) == {"added": ["new"], "removed": ["gone"], "changed": ["x"]}


def test_equal_values_are_stored_once(storage) -> None:
    s = state(storage)
    s.commit({"a": "same text" * 100, "b": "same text" * 100})
    s.commit({"c": "same text" * 100})
    assert len(list(storage.keys("b/"))) == 1


def test_commit_serializes_only_what_it_is_given(storage) -> None:
    counting = CountingSerializer()
    s = state(storage, serializer=counting)
    s.commit({f"v{i}": list(range(1000)) for i in range(50)})
    counting.dumped.clear()
    s.commit({"small": 1})
    assert counting.dumped == [1]
    assert s.values()["v49"] == list(range(1000))


def test_unserializable_values_are_left_out_and_named(storage) -> None:
    s = state(storage)
    done = s.commit({"ok": 1, "lock": threading.Lock()})
    assert set(done.skipped) == {"lock"}
    assert "lock" in done.skipped["lock"] or "pickle" in done.skipped["lock"]
    assert s.values() == {"ok": 1}


def test_sessions_and_namespaces_are_isolated(storage) -> None:
    state(storage, session="a").commit({"x": "a"})
    state(storage, session="b").commit({"x": "b"})
    state(storage, namespace="other/agent", session="a").commit({"x": "other"})
    assert state(storage, session="a").values() == {"x": "a"}
    assert state(storage, session="b").values() == {"x": "b"}
    assert state(storage, namespace="other/agent", session="a").values() == {"x": "other"}


def test_the_loser_of_a_race_gets_a_conflict(storage) -> None:
    one, two = state(storage), state(storage)
    base = one.commit({"x": 0}).id
    one.commit({"x": 1}, base=base)
    with pytest.raises(StateConflict, match="moved on"):
        two.commit({"x": 2}, base=base)
    assert one.values() == {"x": 1}


def test_blobs_carry_an_hmac_with_a_key(storage) -> None:
    counting = CountingSerializer()
    s = state(storage, key=b"secret", serializer=counting)
    s.commit({"x": {"nested": [1, 2]}})
    assert state(storage, key=b"secret").values() == {"x": {"nested": [1, 2]}}
    (blob,) = storage.keys("b/")
    data = storage.get(blob)
    storage.put_many({blob: data[:-1] + bytes([data[-1] ^ 1])})  # tamper
    counting.loaded = 0
    with pytest.raises(StateIntegrityError, match="failed its integrity check"):
        state(storage, key=b"secret", serializer=counting).values()
    assert counting.loaded == 0  # refused before anything was unpickled


def test_a_blob_written_without_the_key_is_refused(storage) -> None:
    state(storage).commit({"x": 1})
    with pytest.raises(StateIntegrityError, match="failed its integrity check"):
        state(storage, key=b"secret").values()


def test_wrong_key_is_refused(storage) -> None:
    state(storage, key=b"one").commit({"x": 1})
    with pytest.raises(StateIntegrityError):
        state(storage, key=b"two").values()


def test_key_from_the_environment(storage, monkeypatch) -> None:
    monkeypatch.setenv("AGEX_STATE_KEY", "from-env")
    state(storage).commit({"x": 1})
    monkeypatch.delenv("AGEX_STATE_KEY")
    with pytest.raises(StateIntegrityError):
        state(storage, key=b"other").values()


def test_corrupted_blob_without_a_key_is_caught_by_its_hash(storage) -> None:
    s = state(storage)
    s.commit({"x": "value"})
    (blob,) = storage.keys("b/")
    storage.put_many({blob: CloudpickleSerializer().dumps("other")})
    with pytest.raises(StateIntegrityError, match="does not match its hash"):
        state(storage).values()


def test_unknown_commit(storage) -> None:
    with pytest.raises(KeyError, match="no commit"):
        state(storage).values("0" * 64)


def test_a_crash_before_the_head_moves_leaves_the_last_commit(storage) -> None:
    class Crash(Exception):
        pass

    s = state(storage)
    s.commit({"x": 1})
    # Where the storage writes the commit and moves the head in one transaction, the crash
    # comes before that transaction ends.
    moves = "put_and_set" if hasattr(storage, "put_and_set") else "compare_and_set"
    real = getattr(storage, moves)

    def crash(*args):
        raise Crash("killed between writing the commit and moving the head")

    setattr(storage, moves, crash)
    try:
        with pytest.raises(Crash):
            s.commit({"x": 2})
    finally:
        setattr(storage, moves, real)
    assert state(storage).values() == {"x": 1}
    assert len(state(storage).history()) == 1


def test_indexes_rebuild_across_snapshots(storage) -> None:
    from agex.state.versioned import SNAPSHOT_EVERY

    s = state(storage)
    s.commit({f"v{i}": i for i in range(20)})
    ids = [
        s.commit({"n": n}, removed=[f"v{n}"] if n < 20 else []).id
        for n in range(SNAPSHOT_EVERY + 10)
    ]
    fresh = state(storage)  # no cache: rebuilt from snapshots and changes in the storage
    at_end = fresh.values()
    assert at_end["n"] == SNAPSHOT_EVERY + 9
    assert not any(f"v{i}" in at_end for i in range(20))
    assert fresh.values(ids[5]) == {"n": 5, **{f"v{i}": i for i in range(6, 20)}}


def test_a_commit_records_only_its_changes(storage) -> None:
    s = state(storage)
    s.commit({f"v{i}": i for i in range(100)})  # depth 0: a snapshot
    second = s.commit({"small": 1})
    record = storage.get(f"c/{second.id}")
    assert b"v99" not in record
    assert list(state(storage).commit_of(second.id).changes) == ["small"]


def test_with_a_key_commits_and_heads_cannot_be_forged(storage) -> None:
    import hashlib
    import json

    s = state(storage, key=b"secret")
    s.commit({"x": 1})
    (blob,) = [k for k in storage.keys("b/")]
    digest = blob.rsplit("/", 1)[1]
    forged = json.dumps(
        {
            "parent": None,
            "changes": {"__builtins__": digest},
            "depth": 0,
            "events": [],
            "time": 0,
            "snapshot": {"__builtins__": digest},
        },
        sort_keys=True,
    ).encode()
    forged_id = hashlib.sha256(forged).hexdigest()
    storage.put_many({f"c/{forged_id}": forged})
    head_key = next(iter(storage.keys("h/")))
    storage.put_many({head_key: forged_id.encode()})  # moved without the key
    with pytest.raises(StateIntegrityError, match="moved by a writer without the key"):
        state(storage, key=b"secret").values()


def test_reserved_names_are_refused_on_load(storage) -> None:
    import hashlib
    import json

    s = state(storage)
    s.commit({"x": 1})
    digest = s.tree(s.head())["x"].blob
    forged = json.dumps(
        {
            "parent": None,
            "changes": {"_agex_attr": digest},
            "depth": 0,
            "events": [],
            "time": 0,
            "snapshot": {"_agex_attr": digest},
        },
        sort_keys=True,
    ).encode()
    forged_id = hashlib.sha256(forged).hexdigest()
    storage.put_many({f"c/{forged_id}": forged})
    with pytest.raises(StateIntegrityError, match="reserved name '_agex_attr'"):
        state(storage).values(forged_id)


def test_an_empty_key_is_refused(storage, monkeypatch) -> None:
    monkeypatch.setenv("AGEX_STATE_KEY", "")
    with pytest.raises(ValueError, match="set but empty"):
        state(storage)


def test_signed_and_unsigned_copies_of_a_value_do_not_collide(storage) -> None:
    state(storage, key=b"k", session="signed").commit({"x": "same"})
    state(storage, session="plain").commit({"x": "same"})  # no key: must not overwrite
    assert state(storage, key=b"k", session="signed").values() == {"x": "same"}
