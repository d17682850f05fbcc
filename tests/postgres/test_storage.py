"""Storage "postgres" passes the contract every storage meets, on a real PostgreSQL server."""

import uuid
from pathlib import Path

import pytest

from agex.testing import StorageContract


class TestPostgresStorage(StorageContract):
    provider = "postgres"
    persistent = True

    @pytest.fixture(autouse=True)
    def _database(self, pg_env):
        self.name = f"contract/{uuid.uuid4().hex}"

    def options(self, tmp_path: Path) -> dict:
        return {"path": self.name}


@pytest.fixture
def storage(pg_env):
    from agex_state_postgres.storage import PostgresStorage

    made = PostgresStorage(f"keys/{uuid.uuid4().hex}")
    yield made
    made.close()


UNUSUAL = [
    "a\\b",
    "a\\\\b",
    "a\\%",
    "é/ü",
    "𝄞/x",
    "\U0010ffff",
    "\U0010ffff\U0010ffffz",
    "\ud7ff",
    "\ue000",
    "~",
    "\x7f",
    "k" * 1900,
]


@pytest.mark.parametrize("key", UNUSUAL)
def test_keys_by_a_prefix_of_unusual_characters(storage, key) -> None:
    """A prefix is literal, whatever it holds, and finds its keys and no others: keys sort
    by code point, and the prefix's range ends just above it."""
    below = ord(key[-1]) - 1
    below = 0xD7FF if 0xD800 <= below <= 0xDFFF else below  # (no surrogates: not text)
    neighbours = {key + "/1", key + "\U0010ffff", key[:-1] + chr(below) + "z"}
    storage.put_many({k: b"1" for k in {key, *neighbours}})
    assert storage.get(key) == b"1"
    expected = sorted(k for k in {key, *neighbours} if k.startswith(key))
    assert storage.keys(key) == expected
    assert key in storage.keys(key[:1])


def test_a_key_postgres_cannot_keep_is_refused_by_what_it_is(storage) -> None:
    with pytest.raises(ValueError, match="NUL"):
        storage.put_many({"a\x00b": b"1"})
    with pytest.raises(ValueError, match="at most 2000 bytes"):
        storage.put_many({"k" * 3000: b"1"})
    with pytest.raises(ValueError, match="at most 2000 bytes"):
        storage.get("é" * 1500)
    with pytest.raises(ValueError, match="UTF-8"):
        storage.put_many({"\ud800": b"1"})
    assert storage.keys() == []  # nothing of either was written


def test_storages_on_one_database_share_its_connections(pg_env, postgres) -> None:
    """A server keeps each client path's state in a storage of its own: fifty of them, used
    at once, hold no more connections than one storage's pool."""
    import threading

    from agex import plugins

    stores = [
        plugins.create("storage", "postgres", path=f"many/{i}", pool_size=4) for i in range(50)
    ]
    start = threading.Barrier(10)

    def use(chunk: list) -> None:
        start.wait()
        for storage in chunk:
            storage.put_many({"k": b"v"})
            assert storage.compare_and_set("h", None, b"1")

    threads = [threading.Thread(target=use, args=(stores[i::10],)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    database = pg_env.rpartition("/")[2]
    (count,) = postgres.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        database,
    )[0]
    assert 1 <= count <= 4
    for storage in stores:
        assert storage.get("k") == b"v"
        storage.close()
    # The last one closed closes the pool.
    assert (
        postgres.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
            database,
            database="postgres",
        )[0][0]
        == 0
    )
