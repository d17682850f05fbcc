"""The disk tier's Volume: it never goes back to an older head than the newest one it was
given, whatever order containers commit in or wherever a writer stopped; a long-lived
session keeps few files in it; a step of a task costs one Volume commit; and Volumes laid
out before packs still load."""

from __future__ import annotations

import contextvars
from urllib.parse import quote

import pytest

from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex.storage.memory import MemoryStorage
from agex_host_modal.storage import DAY, FAN, ModalVolumeStorage, mount_point
from agex_host_modal.storage.layout import _Files
from agex_host_modal.testing import FakeVolume
from agex_host_modal.testing.api import _container, _Spec
from agex_host_modal.testing.containers import ThreadContainer


@pytest.fixture
def fake(fake_threads):
    """Storage code runs "in a container" here, in this process: containers as threads."""
    return fake_threads


class Stopped(BaseException):
    """The process stopped here (a container killed)."""


def state_in(store, session: str = "session") -> VersionedState:
    return VersionedState(store, CloudpickleSerializer(), "agent", session)


def container(fake, name: str) -> tuple[contextvars.Context, object]:
    """A container that mounts Volume ``name``, and a context that runs code in it."""
    volume = fake.Volume.from_name(name, create_if_missing=True)
    made = ThreadContainer(fake, _Spec(lambda: None, {"volumes": {mount_point(name): volume}}))
    inside = contextvars.copy_context()
    inside.run(_container.set, made)
    return inside, made


def test_a_writer_stopped_between_the_dict_and_the_volume_rolls_nothing_back(
    fake, clock, monkeypatch
) -> None:
    state = state_in(ModalVolumeStorage("stopped"))
    state.commit({"n": 1})

    def stops(*args, **kwargs):
        raise Stopped

    monkeypatch.setattr(_Files, "write_move", stops)
    with pytest.raises(Stopped):
        state.commit({"n": 2})  # the Dict moved the head; the Volume never heard of it
    monkeypatch.undo()
    assert state_in(ModalVolumeStorage("stopped")).values() == {"n": 2}
    clock.now += DAY  # the next day's first use gives the Volume what the Dict holds
    state_in(ModalVolumeStorage("stopped")).head()
    fake.dicts.pop("stopped")  # then the Dict forgets
    assert state_in(ModalVolumeStorage("stopped")).values() == {"n": 2}


def test_the_daily_look_checks_only_the_heads_moved_since_the_last(
    fake, clock, monkeypatch
) -> None:
    checked = []
    real = ModalVolumeStorage._repair

    def repair(self, tips):
        checked.append(set(tips))
        real(self, tips)

    monkeypatch.setattr(ModalVolumeStorage, "_repair", repair)
    for n in range(20):
        state_in(ModalVolumeStorage("many"), f"session-{n}").commit({"n": n})
    clock.now += DAY
    state_in(ModalVolumeStorage("many"), "session-3").commit({"n": 33})
    clock.now += DAY
    ModalVolumeStorage("many").get("s/x")
    assert checked[-1] == {"h/agent/session-3"}


def test_volume_commits_that_land_out_of_order_keep_the_newest_head(fake, monkeypatch) -> None:
    state = state_in(ModalVolumeStorage("order"))
    state.commit({"n": 1})
    held = []
    real = _Files.write_move
    monkeypatch.setattr(_Files, "write_move", lambda files, *args: held.append((files, args)))
    state.commit({"n": 2})
    newest = state.commit({"n": 3}).id
    monkeypatch.undo()
    for files, args in reversed(held):  # the later move reaches the Volume first
        real(files, *args)
    fake.dicts.pop("order")
    again = state_in(ModalVolumeStorage("order"))
    assert again.head() == newest
    assert again.values() == {"n": 3}


def test_two_containers_committing_out_of_order_keep_the_newest_head(fake, monkeypatch) -> None:
    """Two containers mount the Volume; the first moves the head, the second moves it on,
    and the first's Volume commits land after the second's."""
    in_a, a = container(fake, "mounts")
    in_b, _ = container(fake, "mounts")
    first = in_a.run(ModalVolumeStorage, "mounts")
    in_a.run(state_in(first).commit, {"n": 1})
    second = in_b.run(ModalVolumeStorage, "mounts")  # mounts what the first committed
    held = []
    real = FakeVolume.__dict__["commit"]

    def commit(volume):
        if _container.get() is a:
            held.append(volume)
        else:
            real.__get__(volume)()

    monkeypatch.setattr(FakeVolume, "commit", commit)
    in_a.run(state_in(first).commit, {"n": 2})
    newest = in_b.run(state_in(second).commit, {"n": 3}).id
    monkeypatch.undo()
    for volume in held:
        in_a.run(volume.commit)
    fake.dicts.pop("mounts")
    again = state_in(ModalVolumeStorage("mounts"))
    assert again.head() == newest
    assert again.values() == {"n": 3}
    assert len(again.history()) == 3


def test_a_long_lived_session_keeps_few_files(fake) -> None:
    state = state_in(ModalVolumeStorage("long"))
    for step in range(300):
        state.commit({"n": step, "text": f"step {step}"})
    files = fake.volumes["long"]
    assert len(files) < 3 * FAN
    fake.dicts.pop("long")
    again = state_in(ModalVolumeStorage("long"))
    assert again.values() == {"n": 299, "text": "step 299"}
    history = again.history()
    assert len(history) == 300
    assert again.checkout(history[-1].id) == {"n": 0, "text": "step 0"}


def test_a_task_step_costs_one_volume_commit(fake, monkeypatch) -> None:
    commits = []
    real = FakeVolume.__dict__["commit"]
    monkeypatch.setattr(FakeVolume, "commit", lambda self: commits.append(real.__get__(self)()))
    inside, _ = container(fake, "steps")
    inside.run(task_of_two_steps, commits)


def task_of_two_steps(commits: list) -> None:
    state = state_in(ModalVolumeStorage("steps"))
    start = state.commit({"n": 0}).id
    commits.clear()
    turn = state.turn()
    assert turn.take()
    assert turn.renew()
    assert commits == []  # a session's turn lives in the Dict only
    step = state.commit_serialized({"n": b"1"}, base=start, task="run").id
    assert len(commits) == 1
    last = state.commit_serialized({"n": b"2"}, base=step, task="run").id
    assert len(commits) == 2
    state.finish(start, last, "run")
    assert len(commits) == 3
    turn.give()
    assert len(commits) == 3


def old_file(key: str) -> str:
    """Where a key was kept before packs: its quoted name, cut into folders ending in @
    every 200 characters."""
    quoted = quote(key, safe="")
    parts = [quoted[i : i + 200] for i in range(0, len(quoted), 200)]
    return "/".join([*(p + "@" for p in parts[:-1]), parts[-1]])


def test_a_volume_laid_out_before_packs_still_loads(fake) -> None:
    session = "a-session-with-a-long-name-" * 8  # its head's file is cut into folders
    old = MemoryStorage()
    before = state_in(old, session)
    first = before.commit({"n": 1}).id
    before.commit({"n": 2, "notes": ["kept"]})
    stored = old.keys()  # every key the state wrote
    fake.volumes["laid-out-before"] = {old_file(k): old.get(k) for k in stored}
    assert any("@/" in name for name in fake.volumes["laid-out-before"])

    state = state_in(ModalVolumeStorage("laid-out-before"), session)
    assert state.values() == {"n": 2, "notes": ["kept"]}
    assert state.checkout(first) == {"n": 1}
    assert set(stored) <= set(ModalVolumeStorage("laid-out-before").keys())
    third = state.commit({"n": 3}).id
    fake.dicts.pop("laid-out-before")
    again = state_in(ModalVolumeStorage("laid-out-before"), session)
    assert again.head() == third
    assert again.values() == {"n": 3, "notes": ["kept"]}
    assert [c.id for c in again.history()][-1] == first
