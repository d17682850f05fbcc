"""`agex state check PATH`: a disk store's database, sessions, commits and values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from click.testing import CliRunner

from agex import plugins
from agex.cli import cli
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import KEY_ENV, VersionedState

needs_disk = pytest.mark.skipif(
    find_spec("agex_state_disk") is None, reason="agex-state-disk is not installed here"
)
KEY = b"the store's secret"


def check(path: Path | str, key: bytes | None = None):
    env = {KEY_ENV: None if key is None else key.decode()}
    return CliRunner().invoke(cli, ["state", "check", str(path)], env=env)


def make_store(path: Path, key: bytes | None = None) -> None:
    storage = plugins.create("storage", "disk", path=str(path))
    for session in ("s", "t"):
        state = VersionedState(storage, CloudpickleSerializer(), "ns", session, key=key)
        for i in range(4):
            state.commit({"n": i, "big": bytes(range(256)) * 40, session: [i] * 10})
    storage.close()


@pytest.fixture
def store(tmp_path) -> Path:
    make_store(tmp_path / "store")
    return tmp_path / "store"


class Opened:
    """The store's storage and session ``s``, to damage them."""

    def __init__(self, path: Path, key: bytes | None = None) -> None:
        self.storage = plugins.create("storage", "disk", path=str(path))
        self.state = VersionedState(self.storage, CloudpickleSerializer(), "ns", "s", key=key)
        self.head = self.state.head()
        self.tree = self.state.tree(self.head)

    def __enter__(self) -> Opened:
        return self

    def __exit__(self, *_) -> None:
        self.storage.close()


@needs_disk
def test_a_healthy_store(store) -> None:
    result = check(store)
    assert result.exit_code == 0, result.output
    assert result.output == f"{store}: healthy; 2 sessions, 8 commits, 9 values checked\n"


@needs_disk
def test_the_database_file_itself_may_be_named(store) -> None:
    assert check(store / "agex-state.sqlite3").exit_code == 0


@needs_disk
def test_the_console_script(store) -> None:
    exe = shutil.which("agex", path=os.path.dirname(sys.executable))
    assert exe
    result = subprocess.run([exe, "state", "check", str(store)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "healthy" in result.stdout


@needs_disk
def test_a_missing_value(store) -> None:
    with Opened(store) as opened:
        blob = opened.tree["big"].blob
        opened.storage.delete(f"b/{blob}")
    result = check(store)
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if f"b/{blob}" in line]
    assert line.startswith("session ns/")
    assert "variable 'big'" in line
    assert f"value {blob} is missing" in line
    assert "damaged: 1 problem(s)" in result.output.splitlines()[-1]


@needs_disk
def test_a_value_with_wrong_bytes(store) -> None:
    with Opened(store) as opened:
        blob = opened.tree["s"].blob
        opened.storage.put_many({f"b/{blob}": b"not what was stored"})
        commit = opened.state.commit_of(opened.head)
    result = check(store)
    assert result.exit_code == 1
    (line,) = result.output.splitlines()[:-1]
    assert line.startswith(f"session ns/s: commit {commit.id[:12]}, variable 's', value b/{blob}:")
    assert f"value {blob} does not match its hash" in line


@needs_disk
def test_a_commit_whose_record_does_not_match_its_id(store) -> None:
    with Opened(store) as opened:
        parent = opened.state.commit_of(opened.head).parent
        record = json.loads(opened.storage.get(f"c/{parent}"))
        record["time"] += 1
        opened.storage.put_many({f"c/{parent}": json.dumps(record, sort_keys=True).encode()})
    result = check(store)
    assert result.exit_code == 1
    assert f"session ns/s: commit {parent} is damaged: " in result.output
    assert "does not match its id" in result.output
    assert "t: healthy" not in result.output


@needs_disk
def test_a_head_pointing_to_a_missing_commit(store) -> None:
    missing = "0" * 64
    with Opened(store) as opened:
        assert opened.storage.compare_and_set("h/ns/s", opened.head.encode(), missing.encode())
    result = check(store)
    assert result.exit_code == 1
    (line,) = result.output.splitlines()[:-1]
    assert line.startswith("session ns/s: ")
    assert missing[:12] in line
    assert "missing" in line


@needs_disk
def test_a_head_that_is_not_a_commit_id(store) -> None:
    with Opened(store) as opened:
        opened.storage.put_many({"h/ns/t": b"\xff\xfe not a commit"})
    result = check(store)
    assert result.exit_code == 1
    (line,) = result.output.splitlines()[:-1]
    assert line.startswith("session ns/t: its head is damaged: ")


@needs_disk
def test_a_damaged_database_file(store) -> None:
    file = store / "agex-state.sqlite3"
    file.write_bytes(b"\0" * 100 + file.read_bytes()[100:])
    result = check(store)
    assert result.exit_code == 1
    assert result.output.startswith("database: ")
    assert "damaged" in result.output.splitlines()[-1]


@needs_disk
def test_a_keyed_store_is_checked_with_its_key(tmp_path) -> None:
    make_store(tmp_path / "store", KEY)
    result = check(tmp_path / "store", KEY)
    assert result.exit_code == 0, result.output
    assert "healthy" in result.output
    with Opened(tmp_path / "store", KEY) as opened:
        commit = opened.state.commit_of(opened.head)
        blob = opened.tree["n"].blob
        # Forged: the right hash, written without the key.
        forged = opened.storage.keys("b/")[0].rpartition("/")[0] + "/" + blob
        original = opened.storage.get(forged)
        opened.storage.put_many({forged: b"\0" * 32 + original[32:]})
    result = check(tmp_path / "store", KEY)
    assert result.exit_code == 1
    assert f"commit {commit.id[:12]}, variable 'n'" in result.output
    assert "failed its integrity check under AGEX_STATE_KEY" in result.output


@needs_disk
def test_a_keyed_store_without_its_key_is_checked_but_for_its_hmacs(tmp_path) -> None:
    make_store(tmp_path / "store", KEY)
    result = check(tmp_path / "store")
    assert result.exit_code == 0, result.output
    assert "note: 2 session(s) were written under AGEX_STATE_KEY" in result.output
    assert "HMACs not" in result.output
    with Opened(tmp_path / "store", KEY) as opened:
        (key,) = [k for k in opened.storage.keys("b/") if k.endswith(opened.tree["n"].blob)]
        opened.storage.put_many({key: opened.storage.get(key)[:-1] + b"?"})
    result = check(tmp_path / "store")
    assert result.exit_code == 1
    assert "does not match its hash" in result.output


@needs_disk
def test_a_path_that_is_not_a_store(tmp_path) -> None:
    result = check(tmp_path / "nothing")
    assert result.exit_code == 2
    assert "is not an agex state store: no such directory" in result.output
    (tmp_path / "empty").mkdir()
    result = check(tmp_path / "empty")
    assert result.exit_code == 2
    assert "is not an agex state store" in result.output
    assert list((tmp_path / "empty").iterdir()) == []  # nothing was made there
    assert not (tmp_path / "nothing").exists()


def test_without_the_disk_storage_it_says_what_to_install(tmp_path) -> None:
    if find_spec("agex_state_disk") is not None:
        pytest.skip("agex-state-disk is installed in this session")
    tmp_path.joinpath("agex-state.sqlite3").write_bytes(b"")
    result = check(tmp_path)
    assert result.exit_code == 2
    assert 'pip install "agex-core[disk]"' in result.output


@needs_disk
def test_a_lost_head_and_a_run_that_leads_nowhere(store) -> None:
    with Opened(store) as opened:
        opened.storage.delete("h/ns/s")
        opened.storage.put_many({"r/ns/t/a-run": b"0" * 64})
    result = check(store)
    assert result.exit_code == 1
    lines = result.output.splitlines()[:-1]
    assert "session ns/s: its head is missing" in lines
    assert any(line.startswith("run r/ns/t/a-run: ") and "missing" in line for line in lines)
