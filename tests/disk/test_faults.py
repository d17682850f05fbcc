"""Storage "disk" when the disk fails it: a full disk, a read-only or vanished directory, a
lock held too long, a damaged database file. Each failure is an agex error naming the store
and the cause, the session stays on its last commit, and the same storage object goes on
once the cause is gone. Damage is never read as a wrong value, nor as an empty session."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner

from agex import plugins
from agex.cli import cli
from agex.errors import StateIntegrityError, StateLoadError, StateWriteError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import KEY_ENV, VersionedState
from agex_state_disk.storage import FILENAME, DiskStorage


def versioned(storage, session: str = "s", key: bytes | None = None) -> VersionedState:
    return VersionedState(storage, CloudpickleSerializer(), "ns", session, key=key)


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MB file system of its own, to fill up and to make read-only."""
    where = tmp_path / "mnt"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small file system is not permitted here: {mounted.stderr}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(where)], check=True)  # a test left it busy


def fill(where: Path) -> Path:
    """Fill the file system of ``where`` to the last byte; returns the file that does."""
    filler = where / "filler"
    with open(filler, "wb", buffering=0) as out:
        for size in (1 << 16, 1 << 12, 1 << 8, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler


def test_a_full_disk_mid_commit_keeps_the_session_and_the_storage_goes_on(tmpfs) -> None:
    storage = DiskStorage(tmpfs / "store")
    state = versioned(storage)
    first = state.commit({"a": 1}).id
    filler = fill(tmpfs)
    with pytest.raises(StateWriteError, match="the disk is full") as caught:
        state.commit({"b": os.urandom(300_000)})
    assert str(tmpfs / "store") in str(caught.value)
    assert state.head() == first
    assert versioned(storage).values() == {"a": 1}
    filler.unlink()
    second = state.commit({"b": b"x" * 300_000}).id  # the same storage object
    assert versioned(storage).values() == {"a": 1, "b": b"x" * 300_000}
    assert [c.id for c in versioned(storage).history()] == [second, first]
    storage.close()


class FillsAfterData:
    """A storage through which the disk fills up between a commit's data and its head."""

    def __init__(self, storage: DiskStorage, where: Path) -> None:
        self.storage, self.where, self.filler = storage, where, None

    def __getattr__(self, name):
        return getattr(self.storage, name)

    def put_many(self, items) -> None:
        self.storage.put_many(items)
        if self.filler is None:
            self.filler = fill(self.where)


def test_a_disk_filling_between_a_commit_s_data_and_its_head(tmpfs) -> None:
    storage = DiskStorage(tmpfs / "store")
    first = versioned(storage).commit({"a": 1}).id
    filling = FillsAfterData(storage, tmpfs)
    state = versioned(filling)
    with pytest.raises(StateWriteError, match="the disk is full"):
        state.commit({"a": 2})
    assert versioned(storage).head() == first
    filling.filler.unlink()
    state.commit({"a": 3})
    assert versioned(storage).values() == {"a": 3}
    storage.close()


HOLD_OPEN = textwrap.dedent("""
    import sys, time
    from agex_state_disk.storage import DiskStorage
    DiskStorage(sys.argv[1]).get("h/ns/s")
    print("ready", flush=True)
    time.sleep(600)
""")


def test_a_read_only_file_system_refuses_writes_and_the_storage_goes_on(tmpfs) -> None:
    store = tmpfs / "store"
    storage = DiskStorage(store)
    state = versioned(storage)
    first = state.commit({"a": 1}).id
    storage.close()
    # A process killed while it had the store open leaves the WAL's files behind, so that
    # the store can still be read once its file system is read-only.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_OPEN, str(store)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "ready"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        assert state.head() == first
        with pytest.raises(StateWriteError, match="read-only") as caught:
            state.commit({"a": 2})
        assert str(store) in str(caught.value)
        assert versioned(storage).values() == {"a": 1}
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    state.commit({"a": 3})
    assert versioned(storage).values() == {"a": 3}
    storage.close()


def test_a_store_on_a_read_only_file_system_that_cannot_be_opened_says_so(tmpfs) -> None:
    store = tmpfs / "store"
    storage = DiskStorage(store)
    versioned(storage).commit({"a": 1})
    storage.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        with pytest.raises(StateLoadError, match="mounted read-only") as caught:
            versioned(storage).head()
        assert str(store) in str(caught.value)
        with pytest.raises(StateWriteError, match="cannot be created"):
            DiskStorage(tmpfs / "elsewhere")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    assert versioned(storage).values() == {"a": 1}
    storage.close()


def test_a_store_removed_under_a_live_storage(tmp_path) -> None:
    store, saved = tmp_path / "store", tmp_path / "saved"
    storage = DiskStorage(store)
    state = versioned(storage)
    first = state.commit({"a": 1}).id
    shutil.copytree(store, saved, ignore=shutil.ignore_patterns("*-shm"))
    shutil.rmtree(store)
    with pytest.raises(StateWriteError, match="removed or replaced while in use") as caught:
        state.commit({"a": 2})  # not written into the deleted file, then lost
    assert str(store) in str(caught.value)
    with pytest.raises(StateLoadError, match="its directory is gone"):
        state.head()
    assert not store.exists()  # not made again, empty
    shutil.copytree(saved, store)  # put back
    assert state.head() == first
    state.commit({"a": 3})
    assert versioned(storage).values() == {"a": 3}
    storage.close()


HOLD_LOCK = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    print("locked", flush=True)
    sys.stdin.readline()
    db.execute("COMMIT")
""")


def test_a_lock_held_past_the_timeout(tmp_path) -> None:
    store = tmp_path / "store"
    state = versioned(DiskStorage(store))
    first = state.commit({"a": 1}).id
    state.storage.close()
    storage = plugins.create("storage", "disk", path=str(store), timeout=0.2)
    state = versioned(storage)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(store / FILENAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StateWriteError, match=r"held its write lock for over 0\.2 s") as caught:
            state.commit({"a": 2})
        assert str(store) in str(caught.value)
        assert state.head() == first  # reads go on meanwhile
    finally:
        holder.communicate("\n", timeout=60)
    assert holder.returncode == 0
    state.commit({"a": 3})
    assert versioned(storage).values() == {"a": 3}
    storage.close()


def test_a_path_that_cannot_be_made_into_a_store(tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StateWriteError, match="a file, not a directory, is in the way"):
        DiskStorage(tmp_path / "file" / "store")
    with pytest.raises(StateLoadError, match="is not an agex state store"):
        DiskStorage(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


# -- damage ------------------------------------------------------------------------------


def pages(file: Path) -> tuple[int, bytes]:
    data = file.read_bytes()
    return int.from_bytes(data[16:18], "big") or 65536, data


def root_page(file: Path, name: str) -> int:
    with sqlite3.connect(file) as db:
        return db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[
            0
        ]


def change(file: Path, page: int, old: bytes, new: bytes) -> None:
    """Replace ``old`` by ``new`` (as long) in page ``page`` (counted from 1) of ``file``."""
    size, data = pages(file)
    start = (page - 1) * size
    at = data.index(old, start, start + size)
    file.write_bytes(data[:at] + new + data[at + len(old) :])


@pytest.fixture
def store(tmp_path) -> Path:
    """A store with sessions s and t, and everything in its database file (no WAL)."""
    storage = DiskStorage(tmp_path / "store")
    versioned(storage, "s").commit({"a": 1})
    versioned(storage, "t").commit({"a": 2})
    storage.close()
    return tmp_path / "store"


def test_a_head_the_index_lost_is_damage_not_an_empty_session(store) -> None:
    file = store / FILENAME
    change(file, root_page(file, "sqlite_autoindex_kv_1"), b"h/ns/s", b"h/ns/r")
    storage = DiskStorage(store)
    with pytest.raises(StateIntegrityError, match="index has lost key 'h/ns/s'") as caught:
        versioned(storage, "s").head()
    assert "agex state check" in str(caught.value)
    assert "REINDEX" in str(caught.value)
    with pytest.raises(StateIntegrityError, match="index has lost key"):
        versioned(storage, "s").commit({"a": 5})  # nor is it overwritten as new
    assert versioned(storage, "t").values() == {"a": 2}
    storage.close()


def test_an_index_leading_to_another_row_is_damage_not_its_value(store) -> None:
    file = store / FILENAME
    # The table's row of session t now says it is session s's; the index still leads t to it.
    change(file, root_page(file, "kv"), b"h/ns/t", b"h/ns/s")
    storage = DiskStorage(store)
    with pytest.raises(StateIntegrityError, match="leads key 'h/ns/t' to the row of another"):
        versioned(storage, "t").head()
    storage.close()


def test_a_database_file_that_is_not_one(store) -> None:
    file = store / FILENAME
    file.write_bytes(b"\x00" * 100 + file.read_bytes()[100:])
    with pytest.raises(StateIntegrityError, match="damaged") as caught:
        versioned(DiskStorage(store)).head()
    assert str(store) in str(caught.value)


@pytest.mark.parametrize("where", ["schema format", "schema text", "table name"])
def test_a_damaged_header_or_schema_is_damage(store, where) -> None:
    file = store / FILENAME
    data = bytearray(file.read_bytes())
    if where == "schema format":
        data[47] ^= 1 << 3  # a format SQLite does not know
    elif where == "schema text":
        data[data.index(b"CREATE TABLE kv") + 13] ^= 1 << 7  # not UTF-8 any more
    else:
        data[data.index(b"tablekvkv") + 5] ^= 1 << 1  # the table is not named kv any more
    file.write_bytes(data)
    with pytest.raises(StateIntegrityError, match="damaged"):
        DiskStorage(store)
    result = CliRunner().invoke(cli, ["state", "check", str(store)], env={KEY_ENV: None})
    assert result.exit_code == 1, result.output
    assert (store / FILENAME).read_bytes() == data  # nothing was made anew


# -- bit flips ---------------------------------------------------------------------------

FLIPS = 200
SESSIONS = ("s0", "s1")  # names one bit apart: a flip can turn one into the other
AGEX = (StateIntegrityError, StateLoadError, StateWriteError)


class Golden:
    """A small healthy store, and what each of its sessions holds."""

    def __init__(self, path: Path, key: bytes | None) -> None:
        self.path, self.key = path, key
        storage = DiskStorage(path)
        for n, session in enumerate(SESSIONS):
            state = versioned(storage, session, key)
            for i in range(5):
                state.commit(
                    {"i": i, "text": f"{session} step {i}", "list": list(range(i + n))},
                    removed=["gone"] if i == 3 else [],
                )
                if i == 1:
                    state.commit({"big": random.Random(n).randbytes(6000), "gone": 1})
        self.expected = {s: self.read(storage, s) for s in SESSIONS}
        storage.close()  # all in the database file: no WAL left
        self.file = path / FILENAME
        size, data = pages(self.file)
        self.size, self.data = size, data
        with sqlite3.connect(self.file) as db:
            self.regions = regions(db, data, size)

    def read(self, storage, session: str) -> tuple:
        """What a task reads of ``session``: its head, index, checked bytes, values."""
        state = versioned(storage, session, self.key)
        head = state.head()
        return head, state.tree(head), state.raw(head), state.values(head)


def regions(db: sqlite3.Connection, data: bytes, size: int) -> dict[str, list[int]]:
    """Byte offsets to flip bits at, by what they hold."""
    found: dict[str, list[int]] = {k: [] for k in ("header", "schema", "index", "heads")}
    found |= {"commits": [], "values": [], "anywhere": list(range(len(data)))}
    found["header"] = list(range(100))
    for name, page, kind in db.execute("SELECT name, pageno, pagetype FROM dbstat"):
        at = range((page - 1) * size, page * size)
        if name == "sqlite_schema":
            found["schema"] += [o for o in at if o >= 100]
        elif name.startswith("sqlite_autoindex"):
            found["index"] += at
        elif kind == "overflow":
            found["values"] += at
        else:
            chunk = data[at.start : at.stop]
            for marker, region in ((b"h/ns/", "heads"), (b"c/", "commits"), (b"b/", "values")):
                start = chunk.find(marker)
                while start >= 0:  # the row around each key: its header, key and value
                    found[region] += range(at.start + max(start - 8, 0), at.start + start + 90)
                    start = chunk.find(marker, start + 1)
    return {k: sorted(set(v)) for k, v in found.items() if v}


@pytest.fixture(scope="module")
def goldens(tmp_path_factory) -> list[Golden]:
    made = []
    for key in (None, b"flip-key"):
        where = tmp_path_factory.mktemp("golden")
        os.environ.pop(KEY_ENV, None)
        made.append(Golden(where / "store", key))
    return made


def task_reads(golden: Golden, path: Path) -> dict[str, str]:
    """Each session read as a task reads it: "ok" (as it was), "error" (an agex error), or
    what went wrong."""
    try:
        storage = DiskStorage(path)
    except AGEX:
        return dict.fromkeys(SESSIONS, "error")
    except Exception:
        return dict.fromkeys(SESSIONS, "raised " + _summary())
    out = {}
    try:
        for session in SESSIONS:
            try:
                found = golden.read(storage, session)
            except AGEX:
                out[session] = "error"
                continue
            except Exception:
                out[session] = "raised " + _summary()
                continue
            head, values = found[0], found[3]
            if head is None:
                out[session] = "empty: the session read as having no commits"
            elif found != golden.expected[session]:
                out[session] = f"wrong value: read {values!r:.200}"
            else:
                out[session] = "ok"
    finally:
        storage.close()
    return out


def _summary() -> str:
    """The exception being handled, with its innermost agex frames."""
    kind, exc, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if "agex" in f.filename]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames[-3:][::-1])
    return f"{kind.__name__}: {str(exc)[:160]} at {where}"


def test_bit_flips_are_read_as_the_right_values_or_an_agex_error(goldens, tmp_path) -> None:
    failures, checked, outcomes = [], {0: 0, 1: 0}, {"ok": 0, "error": 0}
    for golden in goldens:
        env = {KEY_ENV: None if golden.key is None else golden.key.decode()}
        result = CliRunner().invoke(cli, ["state", "check", str(golden.path)], env=env)
        assert result.exit_code == 0, result.output
    for i in range(FLIPS):
        rng = random.Random(i)
        golden = goldens[i % 2]
        region = sorted(golden.regions)[(i // 2) % len(golden.regions)]
        offset, bit = rng.choice(golden.regions[region]), rng.randrange(8)
        copy = tmp_path / str(i)
        copy.mkdir()
        damaged = bytearray(golden.data)
        damaged[offset] ^= 1 << bit
        (copy / FILENAME).write_bytes(damaged)
        read = task_reads(golden, copy)
        env = {KEY_ENV: None if golden.key is None else golden.key.decode()}
        result = CliRunner().invoke(cli, ["state", "check", str(copy)], env=env)
        what = (
            f"flip {i} ({'keyed' if golden.key else 'unkeyed'} store, {region}, page "
            f"{offset // golden.size + 1}, byte {offset % golden.size}, bit {bit})"
        )
        for session, outcome in read.items():
            if outcome in outcomes:
                outcomes[outcome] += 1
            else:
                failures.append(f"{what}, session {session}: {outcome}")
        crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
        if crashed or result.exit_code not in (0, 1):
            failures.append(f"{what}: agex state check ended {result.exit_code}: {result.output}")
        elif "error" in read.values() and result.exit_code != 1:
            failures.append(f"{what}: a task met damage, agex state check passed the store")
        else:
            checked[result.exit_code] += 1
        shutil.rmtree(copy)
    print(f"sessions read: {outcomes}; agex state check: {checked} (exit status: stores)")
    assert not failures, f"{len(failures)} failure(s):\n" + "\n".join(failures)
