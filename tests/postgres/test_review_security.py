"""What a security review of the PostgreSQL storage and `agex serve --state-url` found, each
asserting the safe behaviour: a server never given a database keeps clients out of one; a
notification the listener cannot read does not end its listening; a password is never
shown, whatever its characters, and is in no repr, pickle or first environment."""

from __future__ import annotations

import importlib.util
import pickle
import re
import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from agex import Agent, RemoteExecutionError, connect_host, connect_state, hookimpl
from agex.testing.host import scripted

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location(
    "agex_review_security_http_server", ROOT / "tests" / "http" / "conftest.py"
)
assert _spec is not None
assert _spec.loader is not None
_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_http)


@pytest.fixture(autouse=True)
def _send_test_modules_by_value(ship_test_module: None) -> None:
    """This module's functions run on the server, where it is not importable."""


@pytest.fixture
def start(tmp_path: Path) -> Any:
    started: list[Any] = []

    def make(env: dict | None = None, state_dir: bool = True) -> Any:
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        server = _http.Server(directory, secrets.token_urlsafe(24), env=env)
        server.keeps_state_dir = state_dir
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


def password(url: str) -> str:
    found = urlsplit(url).password
    assert found
    return found


class ElsewhereStorage:
    """A storage this client has and the server may not: kept anywhere but a path."""

    @hookimpl
    def agex_register_storages(self, registry: Any) -> None:
        registry.register("elsewhere", lambda path=None: None)


@pytest.mark.parametrize("storage", ["postgres", "elsewhere"])
def test_a_state_dir_server_keeps_client_state_in_its_state_dir_only(
    start, database, storage, register_plugin
) -> None:
    """A server run with --state-dir, on a machine whose environment names a database (for
    the operator's own agents): a client asking for storage "postgres" (or any storage
    that is not a path in the state directory) is refused, and nothing is written there."""
    env = {"AGEX_POSTGRES_URL": database}
    for var in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "AGEX_STATE_URL"):
        env[var] = ""
    server = start(env=env)
    host = connect_host(provider="http", url=server.url, token=server.token)
    register_plugin(ElsewhereStorage())
    config = connect_state(type="versioned", storage=storage, path="/anything")
    agent = Agent(host=host, llm=scripted("note = 1", "task_success(note)"), state=config)

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError, match="400") as refused:
        job()
    assert 'use storage="disk"' in str(refused.value)
    with psycopg.connect(database) as db:
        made = db.execute("SELECT to_regclass('agex_kv') IS NOT NULL").fetchall()[0][0]
    assert not made, "the server made tables in a database it was never given"


def test_a_notification_the_listener_cannot_read_does_not_end_its_listening(
    ascii_database,
) -> None:
    from agex_state_postgres.signals import Channel

    channel = Channel("agex_replicas", ascii_database)
    got: list[dict] = []
    channel.listen(got.append)
    try:
        assert channel.wait_listening(10)
        with psycopg.connect(ascii_database, autocommit=True) as db:
            db.pgconn.exec_(b"NOTIFY agex_replicas, E'\\xff'")
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            if channel.wait_listening(1):
                channel.send({"kind": "after"})
            time.sleep(0.2)
        assert got[:1] == [{"kind": "after"}], "the replica stopped listening"
    finally:
        channel.close()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://agex:Zm9v/YmFy+cXV4@db.internal:5432/agex",  # a base64 password
        "postgresql://agex:Qx7k/Wq9z@db.internal/agex",
        "postgres://agex:a/b@c@db.internal/agex",
        # an unencoded '@': libpq splits at the first, and the rest reads as the host
        "postgresql://agex:hunter@2024@db.internal/agex",
        "postgresql://agex:s3cr@t-pw@[::1]:5432/agex",
        # a '/' then an '@' after a '?': a host parameter holding a piece of the password
        "postgresql://agex:pw/xy?host=zz@db.internal/agex",
    ],
)
def test_a_password_with_an_unencoded_slash_is_never_shown(url) -> None:
    """libpq would read such a URL's user as the host, and pieces of its password as the
    port and database, and messages naming the database would show them."""
    from agex.errors import AgexError
    from agex_state_postgres.place import Place

    secret = url.split("://agex:", 1)[1].rsplit("@", 1)[0]
    pieces = [p for p in re.split(r"[+/@?=]", secret) if len(p) >= 2 and p not in ("host", "db")]
    with pytest.raises(AgexError) as refused:
        Place.find(url, "$AGEX_STATE_URL")
    assert "percent-encoded" in refused.value.message
    for piece in pieces:
        assert piece not in str(refused.value)


def test_a_place_has_no_password_in_its_repr_and_is_never_pickled() -> None:
    from agex_state_postgres.place import Place
    from agex_state_postgres.storage import PostgresStorage

    url = "postgresql://agex:hunter2secret@db.internal:5432/agex"
    place = Place.find(url, "--state-url")
    assert "hunter2secret" not in repr(place)
    assert "hunter2secret" not in repr(PostgresStorage("p", url=url))
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(place)
    with pytest.raises(TypeError, match="not pickled"):
        pickle.dumps(PostgresStorage("p", url=url))


def test_the_servers_first_environment_holds_no_secret(start, database) -> None:
    """/proc/<pid>/environ shows the environment a process started with, whatever it did to
    os.environ since, to every process of its user."""
    server = start(env={"AGEX_STATE_URL": database}, state_dir=False)
    assert server.process is not None
    block = Path(f"/proc/{server.process.pid}/environ").read_bytes()
    assert password(database).encode() not in block
    assert server.token.encode() not in block
