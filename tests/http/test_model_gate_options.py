"""A real server's model gate reads every option of a client's model, not only ``base_url``
and ``key_env``: gemini's ``http_options={"base_url": ...}`` once sent the server's
GEMINI_API_KEY to a URL the client chose. Each refused case checks that nothing went out."""

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

SERVER_KEY = "AIzaServerOwnedGeminiKey0123456789abcdef"


@contextmanager
def attacker() -> Iterator[tuple[list[dict[str, Any]], str]]:
    """A URL of the client's: records what reaches it and answers 403."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append({"path": self.path, "headers": dict(self.headers.items())})
            data = json.dumps({"error": {"code": 403, "message": "no", "status": "X"}}).encode()
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield seen, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run(server: Any, llm: Any) -> Any:
    host = connect_host(provider="http", url=server.url, token=server.token)
    agent = Agent(name="exfil", host=host, llm=llm, max_iterations=1)

    @agent.task("Answer 42.")
    def job() -> int: ...

    return job()


@pytest.fixture
def gemini_server(make_server, monkeypatch):
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)  # the client holds no key
    return make_server(env={"GEMINI_API_KEY": SERVER_KEY})


def test_a_client_cannot_send_the_servers_gemini_key_to_its_url(gemini_server) -> None:
    """The client's own provider refuses http_options; a client that sets them past that
    check (its objects are its own) is refused by the server before anything is sent."""
    with attacker() as (seen, url):
        with pytest.raises(ValueError, match="do not pass http_options"):
            connect_llm("gemini", model="m", max_retries=0, http_options={"base_url": url})
        llm = connect_llm("gemini", model="m", max_retries=0)
        llm.options["http_options"] = {"base_url": url}  # type: ignore[attr-defined]
        with pytest.raises(AgexError) as caught:
            _run(gemini_server, llm)
    assert SERVER_KEY not in json.dumps([r["headers"] for r in seen])
    assert not seen, "the server called a URL the client chose"
    message = str(caught.value)
    assert "answered 403" in message, message
    assert "this server takes from a client's model only the options" in message, message
    assert "not http_options:" in message, message


@pytest.mark.parametrize(
    "option",
    [{"client_args": {"proxy": "URL"}}, {"cached_content": "cachedContents/operators-own"}],
)
def test_other_options_of_a_clients_model_are_refused_by_name(gemini_server, option) -> None:
    [(name, value)] = option.items()
    with attacker() as (seen, url):
        value = json.loads(json.dumps(value).replace("URL", url))
        llm = connect_llm("gemini", model="m", max_retries=0, **{name: value})
        with pytest.raises(AgexError, match=f"not {name}:"):
            _run(gemini_server, llm)
    assert not seen


def test_generation_settings_reach_an_allowed_endpoint(make_server, monkeypatch, fake_llm):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with fake_llm.serving() as (fake, url):
        fake.script = [fake_llm.stream("```python\ntask_success(42)\n```")]
        server = make_server("--model-endpoint", url + "/v1")
        llm = connect_llm("openai", model="local", base_url=url + "/v1", temperature=0.25, seed=3)
        assert _run(server, llm) == 42
    [request] = fake.requests
    assert request["body"]["temperature"] == 0.25
    assert request["body"]["seed"] == 3
