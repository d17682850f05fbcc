"""A client with a server's token chooses its model's ``base_url`` and ``key_env``; the
server (the trusted process holding the keys) builds that model with its own keys. It calls
a model only at its provider's default endpoint, with the provider's own key variables, or
at an endpoint its operator allowed (``--model-endpoint URL[=KEY_VAR]``), sending there the
one variable allowed, or no key.

Threat model (docs/security.md, "Who is trusted"): a client with the token is trusted to
*use* the server, not with the server's secrets. Each refused case checks that nothing went
out; each allowed case checks what did.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agex import Agent, connect_host, connect_llm
from agex.errors import AgexError

#: The servers here build every provider's client: they run where all the SDKs are
#: installed (nox -s "tests(all)").
for _sdk in ("openai", "anthropic", "google.genai"):
    pytest.importorskip(_sdk, reason=f"{_sdk} is not installed")

SERVER_OPENAI_KEY = "sk-server-owned-openai-key-0123456789abcdef"
#: Not a model key at all: a billing provider's key that the server also holds.
SERVER_BILLING_KEY = "billing-secret-0123456789abcdef0123"
#: The key the operator allowed at an endpoint.
ENDPOINT_KEY = "endpoint-key-0123456789abcdef0123456"
#: What an internal service (reachable from the server's network only) answers.
INTERNAL_SECRET = "INTERNAL-ONLY: db password is hunter2"
ALLOW = "--model-endpoint"


@contextmanager
def internal_service() -> Iterator[tuple[list[dict[str, Any]], str]]:
    """A service on the server's network that records what it is sent and answers 403
    with a body holding something only the server's network should see."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append({"path": self.path, "headers": headers})
            data = json.dumps({"error": {"message": INTERNAL_SECRET, "type": "x"}}).encode()
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield seen, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _agent(server, llm, name: str = "exfil") -> Agent:
    host = connect_host(provider="http", url=server.url, token=server.token)
    return Agent(name=name, host=host, llm=llm, max_iterations=1)


def _run(server, llm) -> BaseException:
    agent = _agent(server, llm)

    @agent.task("Anything.")
    def job() -> int: ...

    with pytest.raises(AgexError) as caught:
        job()
    return caught.value


def _sent(seen: list[dict[str, Any]]) -> str:
    return " ".join(json.dumps(r["headers"]) for r in seen)


def _refused(error: BaseException) -> None:
    """The refusal says how to allow the endpoint."""
    assert "answered 403" in str(error), f"{type(error).__name__}: {error}"
    assert "--model-endpoint" in str(error), f"{type(error).__name__}: {error}"


@pytest.fixture
def keyed_server(make_server, monkeypatch):
    for name in ("OPENAI_API_KEY", "BILLING_API_KEY"):
        monkeypatch.delenv(name, raising=False)  # the client holds no key at all
    return make_server(
        env={"OPENAI_API_KEY": SERVER_OPENAI_KEY, "BILLING_API_KEY": SERVER_BILLING_KEY}
    )


PROVIDERS = [
    ("openai", "OPENAI_API_KEY", "/v1"),
    ("anthropic", "ANTHROPIC_API_KEY", ""),
    ("gemini", "GEMINI_API_KEY", ""),
]


@pytest.mark.parametrize(("provider", "variable", "suffix"), PROVIDERS)
def test_server_model_key_is_not_sent_to_a_base_url_the_client_chose(
    make_server, monkeypatch, provider, variable, suffix
) -> None:
    monkeypatch.delenv(variable, raising=False)  # the client holds no key at all
    server = make_server(env={variable: SERVER_OPENAI_KEY})
    with internal_service() as (seen, url):
        error = _run(server, connect_llm(provider, model="m", base_url=url + suffix, max_retries=0))
    assert not seen, "the server called the client's base_url"
    _refused(error)


@pytest.mark.parametrize(("provider", "variable", "suffix"), PROVIDERS)
def test_an_allowed_endpoint_gets_its_own_key_and_never_the_providers(
    make_server, monkeypatch, provider, variable, suffix
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with internal_service() as (seen, url):
        server = make_server(
            ALLOW,
            f"{url + suffix}=ENDPOINT_API_KEY",
            env={variable: SERVER_OPENAI_KEY, "ENDPOINT_API_KEY": ENDPOINT_KEY},
        )
        _run(server, connect_llm(provider, model="m", base_url=url + suffix, max_retries=0))
    assert seen, "the server called the endpoint it was told of"
    sent = _sent(seen)
    assert ENDPOINT_KEY in sent, "the endpoint's own key was sent there"
    assert SERVER_OPENAI_KEY not in sent, f"the server's {variable} went to the endpoint"


def test_key_env_cannot_make_the_server_send_a_non_model_secret(keyed_server) -> None:
    with internal_service() as (seen, url):
        llm = connect_llm(
            "openai", model="m", base_url=url + "/v1", key_env="BILLING_API_KEY", max_retries=0
        )
        error = _run(keyed_server, llm)
    assert SERVER_BILLING_KEY not in _sent(seen), "key_env read BILLING_API_KEY and sent it out"
    assert not seen
    _refused(error)


def test_key_env_cannot_swap_the_key_of_an_allowed_endpoint(make_server, monkeypatch) -> None:
    monkeypatch.delenv("BILLING_API_KEY", raising=False)
    with internal_service() as (seen, url):
        server = make_server(
            ALLOW,
            f"{url}/v1=ENDPOINT_API_KEY",
            env={"ENDPOINT_API_KEY": ENDPOINT_KEY, "BILLING_API_KEY": SERVER_BILLING_KEY},
        )
        llm = connect_llm(
            "openai", model="m", base_url=url + "/v1", key_env="BILLING_API_KEY", max_retries=0
        )
        error = _run(server, llm)
    assert not seen
    assert "'ENDPOINT_API_KEY'" in str(error)
    assert "BILLING_API_KEY" in str(error)


def test_key_env_at_a_default_endpoint_is_only_the_providers_own(keyed_server) -> None:
    llm = connect_llm("openai", model="m", key_env="BILLING_API_KEY", max_retries=0)
    error = _run(keyed_server, llm)
    assert "OPENAI_API_KEY" in str(error)
    assert "BILLING_API_KEY" in str(error)
    _refused(error)


def test_a_server_network_response_does_not_come_back_to_the_client(keyed_server) -> None:
    with internal_service() as (seen, url):
        error = _run(
            keyed_server, connect_llm("openai", model="m", base_url=url + "/v1", max_retries=0)
        )
    assert not seen, "the server made the request from its own network"
    assert INTERNAL_SECRET not in str(error), (
        f"the internal service's answer reached the client: {type(error).__name__}: {error}"
    )


def test_sdks_read_no_other_server_variable_for_a_client_chosen_url(make_server, monkeypatch):
    """key_env's rule is not the only way the trusted process reads its environment for a
    client's model: the anthropic SDK also reads ANTHROPIC_AUTH_TOKEN itself and would send
    it as a bearer token to the base_url. A URL the client chose is refused; at an endpoint
    the operator allowed, only the key allowed there goes."""
    token = "anthropic-auth-token-0123456789abcdef"
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "ANTHROPIC_API_KEY": "unused-by-the-test-0123",
        "ANTHROPIC_AUTH_TOKEN": token,
        "ENDPOINT_API_KEY": ENDPOINT_KEY,
    }
    with internal_service() as (seen, url):
        refused = _run(make_server(env=env), connect_llm("anthropic", model="m", base_url=url))
        assert not seen
        _refused(refused)
        allowed = make_server(ALLOW, f"{url}=ENDPOINT_API_KEY", env=env)
        _run(allowed, connect_llm("anthropic", model="m", base_url=url, max_retries=0))
    sent = _sent(seen)
    assert seen
    assert ENDPOINT_KEY in sent
    assert token not in sent, "ANTHROPIC_AUTH_TOKEN went to the endpoint"


def test_an_sdk_error_never_carries_the_servers_key_to_the_client(make_server, monkeypatch):
    """explain() puts the SDK's exception text into the LLMError, which travels typed to the
    client. httpx/h11 refuse a key holding a line break with "Illegal header value
    b'<the key>'", and google-genai's path lets that reach explain(): the text is scrubbed
    of the key, line by line, even at an endpoint the operator allowed."""
    secret = "AIzaSyServerOwned0123456789\nsecond-line-of-the-secret"
    monkeypatch.delenv("MULTILINE_API_KEY", raising=False)
    with internal_service() as (_seen, url):
        refused = _run(
            make_server(env={"MULTILINE_API_KEY": secret}),
            connect_llm(
                "gemini", model="m", base_url=url, key_env="MULTILINE_API_KEY", max_retries=0
            ),
        )
        _refused(refused)
        server = make_server(ALLOW, f"{url}=MULTILINE_API_KEY", env={"MULTILINE_API_KEY": secret})
        error = _run(
            server,
            connect_llm(
                "gemini", model="m", base_url=url, key_env="MULTILINE_API_KEY", max_retries=0
            ),
        )
    assert "second-line-of-the-secret" not in str(error), f"{type(error).__name__}: {error}"
    assert "AIzaSyServerOwned" not in str(error), f"{type(error).__name__}: {error}"
    assert "***" in str(error), f"the error still says what went wrong: {error}"


# -- allowed endpoints, end to end ------------------------------------------------------


def _answer(server, llm, name: str = "gated") -> int:
    agent = _agent(server, llm, name)

    @agent.task("Answer 42.")
    def answer() -> int: ...

    return answer()


def test_an_allowed_endpoint_with_its_key_runs_the_task(make_server, monkeypatch, fake_llm) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(42)\n```")]
        server = make_server(
            ALLOW,
            f"{url}/v1/=LOCAL_API_KEY",  # a trailing slash is the same endpoint
            env={"LOCAL_API_KEY": ENDPOINT_KEY, "OPENAI_API_KEY": SERVER_OPENAI_KEY},
        )
        llm = connect_llm("openai", model="local", base_url=url + "/v1", key_env="LOCAL_API_KEY")
        assert _answer(server, llm) == 42
    [request] = fake.requests
    assert request["headers"]["authorization"] == f"Bearer {ENDPOINT_KEY}"


def test_a_keyless_endpoint_gets_no_key(make_server, monkeypatch, fake_llm) -> None:
    """Allowed from the environment variable (no command line), with no key variable: the
    server's OPENAI_API_KEY, which the openai provider would read, is not sent."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(42)\n```")]
        server = make_server(
            env={
                "AGEX_MODEL_ENDPOINTS": f"http://127.0.0.1:1/v1, {url}/v1",
                "OPENAI_API_KEY": SERVER_OPENAI_KEY,
            }
        )
        assert _answer(server, connect_llm("openai", model="local", base_url=url + "/v1")) == 42
    [request] = fake.requests
    assert "authorization" not in request["headers"]
    assert SERVER_OPENAI_KEY not in json.dumps(request["headers"])


def test_a_keyless_endpoint_is_refused_to_a_provider_that_always_sends_a_key(make_server):
    with internal_service() as (seen, url):
        server = make_server(ALLOW, url, env={"ANTHROPIC_API_KEY": SERVER_OPENAI_KEY})
        error = _run(server, connect_llm("anthropic", model="m", base_url=url))
    assert not seen
    assert "needs one" in str(error)
    _refused(error)


@pytest.mark.parametrize("isolation", ["kernel", "none"])
def test_a_declared_sub_agent_is_held_to_the_same_endpoints(make_server, isolation) -> None:
    """A sub-agent the client declares runs on the server, isolated or in its process, and
    its model is built there with the server's keys: the same gate."""
    from agex.isolation import strongest

    if isolation != "none" and strongest() == "none":
        pytest.skip("no isolation on this machine")
    with internal_service() as (seen, url):
        server = make_server("--isolation", isolation, env={"OPENAI_API_KEY": SERVER_OPENAI_KEY})
        specialist = Agent(
            name="specialist",
            llm=connect_llm("openai", model="m", base_url=url + "/v1", max_retries=0),
        )

        @specialist.task("Anything.")
        def lookup() -> int: ...

        boss = _agent(
            server, connect_llm("scripted", responses=["```python\ntask_success(lookup())\n```"])
        )
        boss.fn(lookup)

        @boss.task("Ask the specialist.")
        def ask() -> int: ...

        with pytest.raises(AgexError) as caught:
            ask()
    assert not seen
    _refused(caught.value)


def test_a_bad_model_endpoint_stops_the_server_with_what_to_fix(make_server) -> None:
    with pytest.raises(RuntimeError, match="holds a user name or password"):
        make_server(ALLOW, "https://user:pw@models.example/v1=X_API_KEY")
