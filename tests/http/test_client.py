"""The http host on the client side: what it refuses before sending, what it never sends,
and the version handshake."""

from __future__ import annotations

import threading

import pytest

from agex import Agent, RemoteExecutionError, connect_host, connect_llm, connect_state
from agex.hosts import Invocation
from agex.remote import shipping
from agex.remote.shipping import NotSerializableError, ship
from agex.serializers import CloudpickleSerializer
from agex.testing.host import scripted


def host(server=None, **options):
    url = server.url if server is not None else "http://agent-server:8000"
    token = server.token if server is not None else None
    return connect_host(provider="http", url=url, token=token, **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "agent-server:8000"}, "http:// or https://"),
        ({"url": "ftp://agent-server"}, "http:// or https://"),
        ({"url": 8000}, "must be a string"),
        ({"url": "http://a:1", "timeout": 0}, "positive number"),
        ({"url": "http://a:1", "token": ""}, "non-empty string"),
    ],
)
def test_bad_options_are_refused_clearly(options, message) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        connect_host(provider="http", **options)


def test_state_the_server_cannot_reach_is_refused_at_agent_creation() -> None:
    memory = connect_state(type="versioned", storage="memory")
    with pytest.raises(ValueError, match="Remote execution requires disk-based state"):
        Agent(host=host(), state=memory)
    with pytest.raises(ValueError, match="live state"):
        Agent(name="a", host=host(), state=connect_state(type="live", storage="memory"))
    Agent(host=host(), state=connect_state(type="ephemeral"))
    Agent(host=host(), state=connect_state(type="versioned", storage="disk", path="/s"))


def test_what_cannot_be_sent_is_named(server) -> None:
    agent = Agent(host=host(server), llm=scripted("task_success(1)"))

    @agent.task
    def job(lock: object) -> int:
        """Job."""

    with pytest.raises(NotSerializableError, match=r"argument 'lock' \(lock\)"):
        job(threading.Lock())

    class Holder:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def peek(self) -> int:
            return 1

    agent.fn(Holder().peek, name="peek")

    @agent.task
    def other() -> int:
        """Other."""

    with pytest.raises(NotSerializableError, match="registration 'peek' of agent 'agent'"):
        other()


def test_no_token_and_no_api_key_travel(monkeypatch: pytest.MonkeyPatch) -> None:
    openai = pytest.importorskip("openai")
    assert openai
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key")
    agent = Agent(
        host=connect_host(provider="http", url="http://a:1", token="very-secret-token"),
        llm=connect_llm("openai", model="gpt-4o-mini"),
    )

    @agent.task
    def job() -> int:
        """Job."""

    data = ship(Invocation(agent, job, {}, "default"), CloudpickleSerializer())
    assert b"very-secret-token" not in data
    assert b"sk-very-secret-key" not in data
    assert agent.host.token == "very-secret-token"  # the client keeps it


def test_a_version_mismatch_fails_before_the_run(server, monkeypatch) -> None:
    agent = Agent(
        host=host(server),
        state=connect_state(type="versioned", storage="disk", path="/never"),
        llm=scripted("task_success(1)"),
    )

    @agent.task
    def job() -> int:
        """Job."""

    agent.warmup()  # same versions: the handshake passes
    real = shipping.versions()
    monkeypatch.setattr(shipping, "versions", lambda: {**real, "python": "3.99"})
    with pytest.raises(RemoteExecutionError, match=r"python '3.99' on the client") as caught:
        job()
    assert "409" in str(caught.value)
    with pytest.raises(RemoteExecutionError, match="versions differ"):
        agent.warmup()
    assert not (server.state_dir / "never").exists()
    assert agent.llm.position == 0  # the model was never asked


def test_a_missing_token_says_how_to_give_one(server) -> None:
    agent = Agent(host=connect_host(provider="http", url=server.url), llm=scripted("x = 1"))

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError, match="AGEX_SERVER_TOKEN"):
        job()


def test_the_token_can_come_from_the_environment(server, monkeypatch) -> None:
    monkeypatch.setenv("AGEX_SERVER_TOKEN", server.token)
    agent = Agent(
        host=connect_host(provider="http", url=server.url), llm=scripted("task_success(2)")
    )

    @agent.task
    def job() -> int:
        """Job."""

    assert job() == 2


def test_an_unreachable_server_fails_clearly() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    agent = Agent(
        host=connect_host(provider="http", url=f"http://127.0.0.1:{port}"), llm=scripted("x = 1")
    )

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError, match=f"127.0.0.1:{port}.*could not get it back"):
        job()
