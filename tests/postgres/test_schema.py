"""agex's tables in PostgreSQL: made on first use (by one of many processes at once), used
by a user that may not make them, versioned (a newer version refused, an older one
upgraded), and holding nothing the HMAC key does not vouch for."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import uuid
from urllib.parse import quote

import pytest

from agex.errors import StateIntegrityError, StateLoadError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex_state_postgres import schema
from agex_state_postgres.storage import PostgresStorage

DOC = (pathlib.Path(__file__).parents[2] / "docs" / "state.md").read_text()
#: What docs/state.md has an owner run: the tables, and the grants for agex's user.
DOC_CREATE, DOC_GRANTS = re.findall(r"```sql\n(.*?)```", DOC, flags=re.S)
GRANTS = DOC_GRANTS.replace("agex_app", "{user}")


def dbname(url: str) -> str:
    return url.rsplit("/", 1)[1]


def made(url: str) -> None:
    """Use a storage at ``url`` once, as the owner of the database would."""
    storage = PostgresStorage("owner", url=url)
    storage.get("k")
    storage.close()


def tables(postgres, database: str) -> set[str]:
    rows = postgres.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=dbname(database)
    )
    return {name for (name,) in rows}


def version(postgres, database: str) -> list[int]:
    return [
        v for (v,) in postgres.sql("SELECT version FROM agex_schema", database=dbname(database))
    ]


def test_the_tables_are_made_on_first_use(postgres, database) -> None:
    storage = PostgresStorage("first", url=database)
    assert tables(postgres, database) == set()  # nothing until it is used
    assert storage.get("k") is None
    assert tables(postgres, database) == {"agex_schema", "agex_kv"}
    assert version(postgres, database) == [schema.VERSION]
    storage.close()


MAKE = textwrap.dedent("""
    import sys
    from agex_state_postgres.storage import PostgresStorage
    sys.stdin.readline()  # all start together
    storage = PostgresStorage("many", url=sys.argv[1])
    storage.put_many({sys.argv[2]: b"1"})
    print(storage.get(sys.argv[2]).decode())
""")


def test_many_processes_making_the_tables_at_once(postgres, database) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MAKE, database, f"k{n}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert out.strip() == "1"
    assert version(postgres, database) == [schema.VERSION]  # recorded once
    storage = PostgresStorage("many", url=database)
    assert storage.keys("k") == [f"k{n}" for n in range(8)]
    storage.close()


@pytest.fixture
def app_user(postgres, database):
    """A user that may log in and nothing else; its URL."""
    name = f"app_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    postgres.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    url = f"postgresql://{name}:{quote(password)}@127.0.0.1:{postgres.port}/{dbname(database)}"
    yield name, url
    postgres.sql(f"DROP OWNED BY {name} CASCADE", database=dbname(database))
    postgres.sql(f"DROP ROLE {name}")


def test_tables_an_owner_made_serve_a_user_with_only_the_grants(
    postgres, database, app_user
) -> None:
    name, url = app_user
    # The owner makes them, by running the storage once (or schema.CREATE), and grants.
    made(database)
    postgres.sql(GRANTS.format(user=name), database=dbname(database))
    storage = PostgresStorage("team/app", url=url)
    state = VersionedState(storage, CloudpickleSerializer(), "ns", "s")
    state.commit({"x": 1})
    state.commit({"x": 2, "y": [1, 2]})
    assert state.values() == {"x": 2, "y": [1, 2]}
    assert len(state.history()) == 2
    storage.delete("nothing")
    storage.close()


def test_the_owners_sql_in_the_docs_makes_them(postgres, database, app_user) -> None:
    assert DOC_CREATE.partition("\n")[2].strip() == schema.CREATE.strip()  # as agex makes them
    name, url = app_user
    postgres.sql(DOC_CREATE, database=dbname(database))
    postgres.sql(GRANTS.format(user=name), database=dbname(database))
    storage = PostgresStorage("team/app", url=url)
    storage.put_many({"k": b"v"})
    assert storage.get("k") == b"v"
    storage.close()


def test_a_user_without_the_grants_is_told_what_it_lacks(postgres, database, app_user) -> None:
    name, url = app_user
    made(database)
    postgres.sql(
        f"GRANT SELECT ON agex_schema, agex_kv TO {name}", database=dbname(database)
    )  # reads, but no writes
    storage = PostgresStorage("team/app", url=url)
    assert storage.get("k") is None
    with pytest.raises(Exception, match="grant the user what it lacks") as failed:
        storage.put_many({"k": b"v"})
    assert "permission denied" in str(failed.value)
    storage.close()


def test_a_newer_version_is_refused(postgres, database) -> None:
    made(database)
    postgres.sql(
        "UPDATE agex_schema SET version = %s", schema.VERSION + 1, database=dbname(database)
    )
    with pytest.raises(StateLoadError, match="newer than this agex-state-postgres knows") as found:
        PostgresStorage("v", url=database).get("k")
    assert "upgrade agex-state-postgres" in str(found.value)
    assert version(postgres, database) == [schema.VERSION + 1]  # left as it was


def test_an_older_version_is_upgraded_once(postgres, database, monkeypatch) -> None:
    old = PostgresStorage("v", url=database)
    old.put_many({"kept": b"1"})
    old.close()
    monkeypatch.setattr(schema, "VERSION", schema.VERSION + 1)
    monkeypatch.setitem(
        schema.UPGRADES, schema.VERSION - 1, "ALTER TABLE agex_kv ADD COLUMN note text"
    )
    new = PostgresStorage("v", url=database)
    assert new.get("kept") == b"1"  # the data is kept
    assert version(postgres, database) == [schema.VERSION]
    columns = postgres.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'agex_kv'",
        database=dbname(database),
    )
    assert ("note",) in columns
    again = PostgresStorage("v", url=database)
    again.get("kept")  # at the version now: no step again
    again.close()
    new.close()


def test_an_upgrade_that_fails_changes_nothing(postgres, database, monkeypatch) -> None:
    made(database)
    monkeypatch.setattr(schema, "VERSION", schema.VERSION + 1)
    monkeypatch.setitem(
        schema.UPGRADES,
        schema.VERSION - 1,
        "ALTER TABLE agex_kv ADD COLUMN note text; SELECT no_such_function()",
    )
    with pytest.raises(StateLoadError, match="could not make agex's tables"):
        PostgresStorage("v", url=database).get("k")
    assert version(postgres, database) == [schema.VERSION - 1]
    columns = postgres.sql(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'agex_kv'",
        database=dbname(database),
    )
    assert ("note",) not in columns  # one transaction: the step before the failure undone


# -- the HMAC key --------------------------------------------------------------------------


class Planted:
    """Unpickling it leaves a file: the proof that a value was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def keyed(storage, key: bytes | None) -> VersionedState:
    return VersionedState(storage, CloudpickleSerializer(), "ns", "s", key=key)


def test_a_value_changed_in_the_table_is_refused_not_loaded(postgres, database, tmp_path) -> None:
    storage = PostgresStorage("signed", url=database)
    keyed(storage, b"the key").commit({"x": 1})
    (blob,) = storage.keys("b/")
    marker = tmp_path / "loaded"
    payload = CloudpickleSerializer().dumps(Planted(str(marker)))
    postgres.sql(
        "UPDATE agex_kv SET value = %s WHERE store = %s AND key = %s",
        os.urandom(32) + payload,
        "signed",
        blob,
        database=dbname(database),
    )
    storage.close()
    reader = PostgresStorage("signed", url=database)
    with pytest.raises(StateIntegrityError, match="failed its integrity check"):
        keyed(reader, b"the key").values()
    assert not marker.exists()
    reader.close()


def test_a_session_written_without_the_key_is_refused(database, tmp_path, monkeypatch) -> None:
    storage = PostgresStorage("unsigned", url=database)
    keyed(storage, None).commit({"x": Planted(str(tmp_path / "loaded"))})
    monkeypatch.setenv("AGEX_STATE_KEY", "the key")
    with pytest.raises(StateIntegrityError, match="without the key"):
        keyed(storage, None).values()  # the key comes from the environment
    assert not (tmp_path / "loaded").exists()
    storage.close()


def test_a_head_moved_in_the_table_is_refused(postgres, database) -> None:
    storage = PostgresStorage("head", url=database)
    state = keyed(storage, b"the key")
    first = state.commit({"x": 1}).id
    state.commit({"x": 2})
    postgres.sql(
        "UPDATE agex_kv SET value = %s WHERE store = %s AND key = %s",
        first.encode(),
        "head",
        state.head_key,
        database=dbname(database),
    )
    with pytest.raises(StateIntegrityError, match="failed its integrity check"):
        keyed(storage, b"the key").head()
    storage.close()
