"""`agex serve` keeping clients' state in PostgreSQL (``--state-url`` / AGEX_STATE_URL):
what it says at start, what it refuses, and where the database's password never goes."""

from __future__ import annotations

import importlib.util
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from agex import Agent, RemoteExecutionError, connect_host, connect_state, hookimpl
from agex.isolation import strongest
from agex.testing.host import scripted

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location(
    "agex_server_state_http_server", ROOT / "tests" / "http" / "conftest.py"
)
assert _spec is not None
assert _spec.loader is not None
_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_http)


class DatabaseServer(_http.Server):
    """`agex serve` with its database in AGEX_STATE_URL (or on its command line)."""

    def __init__(self, directory: Path, url: str, *extra: str, env: dict | None = None) -> None:
        super().__init__(
            directory, secrets.token_urlsafe(24), *extra, env={"AGEX_STATE_URL": url, **(env or {})}
        )
        self.keeps_state_dir = False


@pytest.fixture
def make_server(tmp_path: Path) -> Any:
    started: list[DatabaseServer] = []

    def make(url: str, *extra: str, env: dict | None = None) -> DatabaseServer:
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        server = DatabaseServer(directory, url, *extra, env=env)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture(autouse=True)
def _send_test_modules_by_value(ship_test_module: None) -> None:
    """This module's functions run on the server, where it is not importable."""


def password(url: str) -> str:
    found = urlsplit(url).password
    assert found
    return found


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`agex serve` that is expected to stop at start."""
    environment = {k: v for k, v in os.environ.items() if k != "AGEX_STATE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agex", "serve", "--port", str(_http.free_port()), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def remote(server: Any, llm: Any, **options: Any) -> Agent:
    host = connect_host(provider="http", url=server.url, token=server.token)
    return Agent(host=host, llm=llm, **options)


def test_the_server_says_where_state_is_and_makes_the_tables(make_server, database) -> None:
    server = make_server(database)
    log = server.log.read_text()
    database_name = database.rpartition("/")[2]
    assert f"state in PostgreSQL database {database_name} on 127.0.0.1" in log
    assert "from $AGEX_STATE_URL" in log
    assert password(database) not in log
    assert "WARNING: the password" not in log
    with psycopg.connect(database) as db:
        assert db.execute("SELECT version FROM agex_schema").fetchall() == [(1,)]


def test_a_password_on_the_command_line_gets_a_warning_naming_the_variable(
    tmp_path, database
) -> None:
    directory = tmp_path / "cli"
    directory.mkdir()
    server = _http.Server(directory, secrets.token_urlsafe(24), "--state-url", database)
    server.keeps_state_dir = False
    server.env.pop("AGEX_STATE_URL", None)
    try:
        server.start()
    finally:
        server.stop()
    log = server.log.read_text()
    assert "set AGEX_STATE_URL instead" in log
    assert "from --state-url" in log
    assert password(database) not in log


def test_without_the_postgres_storage_the_server_does_not_start(database) -> None:
    done = serve(env={"AGEX_STATE_URL": database, "AGEX_DISABLE_PLUGINS": "agex-state-postgres"})
    assert done.returncode != 0
    assert 'pip install "agex-core[postgres]"' in done.stderr
    assert password(database) not in done.stderr + done.stdout


def test_a_state_dir_and_a_state_url_together_are_refused(tmp_path, database) -> None:
    done = serve("--state-dir", str(tmp_path / "s"), env={"AGEX_STATE_URL": database})
    assert done.returncode != 0
    assert "not both" in done.stderr


def test_a_database_it_cannot_use_stops_it_at_start_saying_why(postgres, database) -> None:
    wrong = database.replace(password(database), "not-the-password")
    done = serve(env={"AGEX_STATE_URL": wrong})
    assert done.returncode != 0
    assert "check the user and password in $AGEX_STATE_URL" in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout

    closed = f"postgresql://agex:{password(database)}@127.0.0.1:{_http.free_port()}/agex"
    done = serve(env={"AGEX_STATE_URL": closed})
    assert done.returncode != 0
    assert "check that the server runs" in done.stderr
    assert password(database) not in done.stderr + done.stdout


def test_paths_stay_names_inside_the_database(make_server, database) -> None:
    server = make_server(database)
    for path in ("../outside", "/shared/../../etc", ".agex/server", "/.agex/server/runs"):
        agent = remote(
            server,
            scripted("task_success(1)"),
            state=connect_state(type="versioned", storage="disk", path=path),
        )

        @agent.task
        def job() -> int:
            """Job."""

        with pytest.raises(RemoteExecutionError, match="403") as refused:
            job()
        assert password(database) not in str(refused.value)
    with psycopg.connect(database) as db:
        stores = {store for (store,) in db.execute("SELECT DISTINCT store FROM agex_kv")}
    assert not any(".." in store or store.startswith(".agex/server/") for store in stores)


def test_disk_and_postgres_name_the_same_state_there(make_server, database) -> None:
    server = make_server(database)
    writer = remote(
        server,
        scripted("note = 'kept'", "task_success(note)"),
        state=connect_state(type="versioned", storage="disk", path="/shared/state"),
        name="n",
    )
    reader = remote(
        server,
        scripted("task_success(note)"),
        state=connect_state(type="versioned", storage="postgres", path="shared/state"),
        name="n",
    )

    @writer.task
    def write() -> str:
        """Write."""

    @reader.task
    def read() -> str:
        """Read."""

    assert write(session="s") == "kept"
    assert read(session="s") == "kept"
    # And a local agent with the same database and path reads it, as docs/hosts.md says.
    os.environ["AGEX_POSTGRES_URL"] = database
    try:
        local = Agent(
            name="n", state=connect_state(type="versioned", storage="postgres", path="shared/state")
        )
        assert local.state("s").values()["note"] == "kept"
    finally:
        del os.environ["AGEX_POSTGRES_URL"]


def environment_of_the_worker(secret: str) -> list[str]:
    """Runs in the worker: the names of the variables that say where the database is, and
    of those whose value holds its password."""
    names = [name for name in ("AGEX_STATE_URL", "AGEX_POSTGRES_URL") if name in os.environ]
    names += [name for name, value in os.environ.items() if secret in value]
    try:
        with open("/proc/self/environ", "rb") as initial:
            if secret.encode() in initial.read():
                names.append("/proc/self/environ")
    except OSError:  # unreadable there: nothing to leak through it either
        pass
    return names


@pytest.mark.skipif(strongest() == "none", reason="no worker isolation on this machine")
def test_the_database_url_never_reaches_a_worker(make_server, database) -> None:
    server = make_server(database, env={"AGEX_POSTGRES_URL": database})
    secret = password(database)
    agent = remote(
        server,
        scripted(f"task_success(environment_of_the_worker({secret!r}))"),
        state=connect_state(type="versioned", storage="disk", path="/shared/state"),
    )
    agent.fn(environment_of_the_worker)

    @agent.task
    def look() -> list[str]:
        """Look."""

    assert look() == []
    assert secret not in server.log.read_text()


def test_a_run_started_while_the_database_is_down_fails_clearly(make_server) -> None:
    local = pytest.importorskip("agex_state_postgres.local")
    own = local.LocalServer(fsync=False)
    try:
        own.start()
        server = make_server(own.url)
        state = connect_state(type="versioned", storage="disk", path="/shared/state")
        first = remote(server, scripted("kept = 3", "task_success(kept)"), state=state, name="k")

        @first.task
        def keep() -> int:
            """Keep."""

        assert keep(session="s") == 3
        own.stop()
        down = remote(server, scripted("task_success(kept)"), state=state, name="k")

        @down.task
        def read() -> int:
            """Read."""

        with pytest.raises(RemoteExecutionError, match="503") as refused:
            read(session="s")
        assert "was not started" in str(refused.value)
        assert own.password not in str(refused.value)
        own.start()
        assert read(session="s") == 3  # the same call, once the database is back
        assert own.password not in server.log.read_text()
    finally:
        own.remove()


class ElsewhereStorage:
    """A storage this client has and the server does not: state kept anywhere but the
    database."""

    @hookimpl
    def agex_register_storages(self, registry: Any) -> None:
        registry.register("elsewhere", lambda path=None: None)


def test_storages_kept_elsewhere_are_refused(make_server, database, register_plugin) -> None:
    register_plugin(ElsewhereStorage())
    server = make_server(database)
    agent = remote(
        server,
        scripted("task_success(1)"),
        state=connect_state(type="versioned", storage="elsewhere", path="team/state"),
    )

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError, match="400") as refused:
        job()
    assert "replicas share" in str(refused.value)
    assert 'storage="disk"' in str(refused.value)
