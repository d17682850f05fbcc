"""Where the database is, configured wrong: a clear error at first use that names what to
fix; and the password, which never leaves the process that runs the loop, in no message,
configuration, pickle, event or log line."""

from __future__ import annotations

import logging
import pickle
import socket
import traceback
import uuid
from urllib.parse import quote

import cloudpickle
import pytest

from agex import Agent, connect_llm, connect_state, plugins
from agex.errors import StateLoadError, StateWriteError

#: A password a leak cannot hide: spaces and characters a URL must quote.
SECRET = "s3cr€t p@ss/w%rd:" + uuid.uuid4().hex[:8]


def forms(password: str) -> set[str]:
    return {password, quote(password), quote(password, safe="")}


def assert_no_password(exc: BaseException, *passwords: str) -> None:
    """Neither the error nor anything it carries (its cause and context, their arguments,
    the traceback) holds a password, in any of its spellings."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        texts += [str(at), repr(at), repr(at.args)]
        at = at.__cause__ or at.__context__
    for password in passwords:
        for form in forms(password):
            for text in texts:
                assert form not in text


def with_password(url: str, password: str) -> str:
    """``url`` (postgresql://user:pw@host:port/db) with another password."""
    scheme, rest = url.split("://", 1)
    user = rest.split(":", 1)[0]
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest.rsplit('@', 1)[1]}"


def first_use(url: str) -> StateLoadError | StateWriteError:
    """The error of making a storage at ``url`` and using it (a URL libpq would misread is
    refused as the storage is made, which the server does at a state's first use)."""

    def use() -> None:
        storage = plugins.create("storage", "postgres", path="cfg", url=url, timeout=3)
        storage.put_many({"k": b"v"})

    with pytest.raises((StateLoadError, StateWriteError)) as failed:
        use()
    return failed.value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def secret_user(postgres, database):
    """A user whose password is SECRET, who may use that database but not create tables
    in it (PostgreSQL 15 gives no one but the owner CREATE on schema public)."""
    name = f"u_{uuid.uuid4().hex[:10]}"
    postgres.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{SECRET}'")
    dbname = database.rsplit("/", 1)[1]
    postgres.sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database=dbname)
    yield name, f"postgresql://{name}:{quote(SECRET, safe='')}@127.0.0.1:{postgres.port}/{dbname}"
    postgres.sql(f"DROP DATABASE {dbname} WITH (FORCE)", database="postgres")
    postgres.sql(f"CREATE DATABASE {dbname}", database="postgres")  # for the fixture's drop
    postgres.sql(f"DROP ROLE {name}", database="postgres")


# -- bad configuration ---------------------------------------------------------------------


def test_no_such_host(postgres) -> None:
    error = first_use(with_password(postgres.url, SECRET).replace("127.0.0.1", "no-such.invalid"))
    assert "no-such.invalid" in str(error)
    assert "check that the server runs and the host and port" in str(error)
    assert_no_password(error, SECRET, postgres.password)


def test_a_port_nothing_listens_on(postgres) -> None:
    url = with_password(postgres.url, SECRET).replace(f":{postgres.port}/", f":{free_port()}/")
    error = first_use(url)
    assert "check that the server runs and the host and port in the url given" in str(error)
    assert_no_password(error, SECRET, postgres.password)


def test_a_wrong_password(postgres) -> None:
    error = first_use(with_password(postgres.url, SECRET))
    assert "password authentication failed" in str(error)
    assert "check the user and password in the url given" in str(error)
    assert_no_password(error, SECRET, postgres.password)


def test_no_such_database(postgres) -> None:
    error = first_use(postgres.url.rpartition("/")[0] + "/no_such_db")
    assert "no_such_db" in str(error)
    assert "create that database, or name another" in str(error)
    assert_no_password(error, postgres.password)


def test_a_user_that_may_not_create_the_tables(secret_user) -> None:
    _, url = secret_user
    error = first_use(url)
    assert "could not make agex's tables" in str(error)
    assert "permission denied" in str(error)
    assert "have the database's owner make them (docs/state.md)" in str(error)
    assert_no_password(error, SECRET)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://agex:{quote(SECRET, safe='')}@[::1",
        f"postgresql://agex:{quote(SECRET, safe='')}@localhost/db?no_such_option=1",
        f"not a url {SECRET}",
    ],
)
def test_a_malformed_url(url) -> None:
    with pytest.raises(StateLoadError) as failed:
        plugins.create("storage", "postgres", path="cfg", url=url).get("k")
    assert "is not a PostgreSQL connection URL" in str(failed.value)
    assert_no_password(failed.value, SECRET)


def test_a_port_that_is_no_number(postgres) -> None:
    error = first_use(with_password(postgres.url, SECRET).replace(f":{postgres.port}/", ":x/"))
    assert "port" in str(error)
    assert_no_password(error, SECRET)


def test_a_wrong_password_in_the_environment_is_named_there(postgres, monkeypatch) -> None:
    monkeypatch.setenv("AGEX_POSTGRES_URL", with_password(postgres.url, SECRET))
    error = first_use(None)
    assert "check the user and password in $AGEX_POSTGRES_URL" in str(error)
    assert_no_password(error, SECRET, postgres.password)


def test_a_wrong_password_in_libpq_variables(postgres, monkeypatch) -> None:
    monkeypatch.delenv("AGEX_POSTGRES_URL", raising=False)
    for var, value in {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(postgres.port),
        "PGUSER": "agex",
        "PGDATABASE": "agex",
        "PGPASSWORD": SECRET,
    }.items():
        monkeypatch.setenv(var, value)
    error = first_use(None)
    assert "libpq's environment" in str(error)
    assert "check the user and password" in str(error)
    assert_no_password(error, SECRET, postgres.password)


def test_an_agent_task_reports_bad_configuration_at_its_first_use(postgres, monkeypatch) -> None:
    monkeypatch.setenv("AGEX_POSTGRES_URL", with_password(postgres.url, SECRET))
    agent = Agent(
        name="cfg",
        state=connect_state(type="versioned", storage="postgres", path="team/cfg"),
        llm=connect_llm(provider="scripted", responses=["```python\ntask_success(1)\n```"]),
    )

    @agent.task
    def one() -> int:
        """One."""

    with pytest.raises((StateLoadError, StateWriteError)) as failed:
        one()
    assert "check the user and password in $AGEX_POSTGRES_URL" in str(failed.value)
    assert_no_password(failed.value, SECRET, postgres.password)


# -- the password stays where it is --------------------------------------------------------


def test_the_password_is_in_no_configuration_pickle_event_or_log(
    postgres, database, monkeypatch, caplog
) -> None:
    dbname = database.rsplit("/", 1)[1]
    name = f"u_{uuid.uuid4().hex[:10]}"
    postgres.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{SECRET}'")
    postgres.sql(f"GRANT CREATE ON SCHEMA public TO {name}", database=dbname)
    url = f"postgresql://{name}:{quote(SECRET, safe='')}@127.0.0.1:{postgres.port}/{dbname}"
    monkeypatch.setenv("AGEX_POSTGRES_URL", url)
    caplog.set_level(logging.DEBUG)
    config = connect_state(type="versioned", storage="postgres", path="team/secret")
    code = "x = 41\nprint('hello')\ntask_success(x + 1)"
    agent = Agent(
        name="secret",
        state=config,
        llm=connect_llm(provider="scripted", responses=[f"```python\n{code}\n```"]),
    )

    @agent.task
    def answer() -> int:
        """Answer."""

    events: list = []
    assert answer(session="s", on_event=events.append) == 42
    storage = plugins.create("storage", "postgres", path="team/secret")
    shown = [
        repr(config),
        str(config),
        repr(pickle.dumps(config)),
        repr(cloudpickle.dumps(agent)),
        repr(storage),
        str(storage.place),
        repr(events),
        repr(cloudpickle.dumps(events)),
        repr(agent.state("s").history()),
        caplog.text,
    ]
    assert events
    for text in shown:
        for form in forms(SECRET):
            assert form not in text
    assert name in repr(storage)  # it does say where
    storage.close()
    postgres.sql(f"DROP DATABASE {dbname} WITH (FORCE)", database="postgres")
    postgres.sql(f"CREATE DATABASE {dbname}", database="postgres")
    postgres.sql(f"DROP ROLE {name}", database="postgres")
