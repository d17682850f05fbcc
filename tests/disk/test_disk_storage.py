"""Storage "disk" passes the contract every storage meets, across processes too."""

import subprocess
import sys
from pathlib import Path

import pytest

from agex import connect_state, plugins
from agex.testing import StorageContract


class TestDiskStorage(StorageContract):
    provider = "disk"
    persistent = True

    def options(self, tmp_path: Path) -> dict:
        return {"path": str(tmp_path / "state")}


def test_connect_state_takes_disk_with_a_path(tmp_path) -> None:
    config = connect_state(type="live", storage="disk", path=str(tmp_path))
    assert (config.storage, config.path) == ("disk", str(tmp_path))
    with pytest.raises(ValueError, match='storage="disk" needs a path'):
        connect_state(type="live", storage="disk")


def test_a_path_is_required_by_the_storage_too() -> None:
    with pytest.raises(ValueError, match="needs a path"):
        plugins.create("storage", "disk")


BUMP = """
import sys
from agex import plugins
storage = plugins.create("storage", "disk", path=sys.argv[1])
for _ in range(int(sys.argv[2])):
    while True:
        seen = storage.get("n")
        if storage.compare_and_set("n", seen, str(int(seen or b"0") + 1).encode()):
            break
storage.close()
"""


def test_processes_incrementing_one_key_lose_nothing(tmp_path) -> None:
    path = str(tmp_path / "state")
    workers = [subprocess.Popen([sys.executable, "-c", BUMP, path, "100"]) for _ in range(4)]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    storage = plugins.create("storage", "disk", path=path)
    assert storage.get("n") == b"400"
    storage.close()


def test_one_file_in_wal_mode(tmp_path) -> None:
    import sqlite3

    storage = plugins.create("storage", "disk", path=str(tmp_path))
    storage.put_many({"k": b"v"})
    storage.close()
    (database,) = [p for p in tmp_path.iterdir() if p.suffix == ".sqlite3"]
    mode = sqlite3.connect(database).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


OPEN_AND_WRITE = """
import sys, time
from agex import plugins
start = float(sys.argv[2])
time.sleep(max(start - time.time(), 0))
storage = plugins.create("storage", "disk", path=sys.argv[1])
storage.put_many({sys.argv[3]: b"x"})
storage.close()
"""


def test_processes_creating_one_new_database_at_once(tmp_path) -> None:
    import time

    for round_ in range(6):
        path = str(tmp_path / f"new-{round_}")
        start = str(time.time() + 0.5)
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AND_WRITE, path, start, f"k{i}"],
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(8)
        ]
        errors = [w.communicate(timeout=60)[1] for w in workers]
        assert [w.returncode for w in workers] == [0] * 8, errors
        storage = plugins.create("storage", "disk", path=path)
        assert sorted(storage.keys()) == [f"k{i}" for i in range(8)]
        storage.close()
