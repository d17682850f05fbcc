import uuid

import pytest


@pytest.fixture
def database(postgres):
    """A new, empty database on the session's server; its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.sql(f"CREATE DATABASE {name}", database="postgres")
    yield postgres.url.rpartition("/")[0] + "/" + name
    postgres.sql(f"DROP DATABASE {name} WITH (FORCE)", database="postgres")


@pytest.fixture
def pg_env(monkeypatch, database):
    """The storage finds that database through AGEX_POSTGRES_URL, as a user configures it."""
    for var in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AGEX_POSTGRES_URL", database)
    return database


@pytest.fixture
def ascii_database(postgres):
    """A new database whose encoding is SQL_ASCII (PostgreSQL takes any byte there, so a
    notification may hold what is no text)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres.sql(
        f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0",
        database="postgres",
    )
    yield postgres.url.rpartition("/")[0] + "/" + name
    postgres.sql(f"DROP DATABASE {name} WITH (FORCE)", database="postgres")


@pytest.fixture
def own():
    """A PostgreSQL server of this test's own, to stop, restart, kill or pause (the
    session's server goes on answering the other tests); fsync off: a process, not a
    machine, is what fails here."""
    from agex_state_postgres.local import LocalServer

    server = LocalServer(fsync=False)
    server.start()
    yield server
    server.remove()
