"""The server's defences, probed on a real `agex serve`: the token on every endpoint, body
limits, envelope checks before anything is deserialized, state confinement, session names,
the loopback rule, TLS, authenticated results, and a schema-driven fuzz run."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pickle
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agex import Agent, RemoteExecutionError, connect_host, connect_state, plugins
from agex.hosts import Invocation
from agex.remote import outcome, ship, versions
from agex.testing.host import scripted
from agex_host_http import wire

API = wire.API
#: Endpoints reachable without the token.
EXPECTED_PUBLIC = {"/v1/health", "/openapi.json"}


# -- helpers ---------------------------------------------------------------------------


def remote(server: Any, llm: Any, state: Any = None, **agent_options: Any) -> Agent:
    host = connect_host(provider="http", url=server.url, token=server.token)
    return Agent(host=host, llm=llm, state=state, **agent_options)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_id() -> str:
    return secrets.token_urlsafe(12)


def envelope(**changes: Any) -> dict[str, Any]:
    """A run envelope the server accepts, with ``changes`` applied."""
    valid: dict[str, Any] = {
        "agent": "agent",
        "session": "s",
        "state": {"type": "ephemeral"},
        "serializer": "cloudpickle",
        "timeout": 30,
        "versions": versions(),
    }
    valid.update(changes)
    return valid


class Plant:
    """Loading this object's pickle writes ``marker``: the proof that a payload was loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "unpickled"))


def hostile(marker: Path, padding: int = 0) -> bytes:
    """A pickle that writes ``marker`` when loaded, after ``padding`` bytes of filler."""
    return pickle.dumps((b"\0" * padding, Plant(marker)), protocol=pickle.HIGHEST_PROTOCOL)


def run_error(response: httpx.Response) -> str:
    """The message of the error a run's event stream ended with."""
    data = response.text.split("event: error\ndata: ", 1)[1].split("\n", 1)[0]
    return str(json.loads(data)["message"])


def post_run(
    server: Any, body: bytes | Any, headers: dict[str, str] | None = None, **options: Any
) -> httpx.Response:
    return httpx.post(
        f"{server.url}{API}/runs/{run_id()}",
        content=body,
        headers=server.headers if headers is None else headers,
        timeout=60,
        **options,
    )


def assert_healthy(server: Any) -> None:
    assert httpx.get(f"{server.url}/v1/health", timeout=10).status_code == 200


def assert_runs_tasks(server: Any) -> None:
    """A normal task still runs on the server."""
    agent = remote(server, scripted("task_success(6 * 7)"))

    @agent.task
    def answer() -> int:
        """The answer."""

    assert answer() == 42


def concrete(path: str) -> str:
    """A schema path with its parameters filled in."""
    return re.sub(r"\{[^}/]+\}", "probe_run_0001", path)


def operations(server: Any) -> list[tuple[str, str, dict[str, Any]]]:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    found = [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete", "head", "options")
    ]
    assert len(found) >= 6
    return found


def model(code: str) -> dict[str, Any]:
    """The configuration of a model that replies with ``code``: the envelope carries it
    (the server never takes the model from the shipped task)."""
    return dict(scripted(code).config())


def shipped_task(server: Any, code: str = "task_success(1)") -> bytes:
    agent = remote(server, scripted(code))

    @agent.task
    def job() -> int:
        """Job."""

    return ship(Invocation(agent, job, {}, "s"), plugins.create("serializer", "cloudpickle"))


def raw_status(server: Any, request: bytes) -> int:
    """The status line of the server's answer to a hand-written HTTP request."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return int(reply.split(b" ", 2)[1])


# -- the token -------------------------------------------------------------------------


def test_every_operation_needs_the_token(server) -> None:
    problems = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path, _ in operations(server):
            if path in EXPECTED_PUBLIC:
                continue
            url = concrete(path)
            missing = client.request(method, url)
            if missing.status_code != 401:
                problems.append(f"{method} {path} without a token: {missing.status_code}")
            elif not missing.headers.get("www-authenticate", "").startswith("Bearer"):
                problems.append(f"{method} {path}: 401 without a Bearer WWW-Authenticate")
            for wrong in (
                f"Bearer {server.token}x",
                f"Bearer {server.token[:-1]}",
                f"Bearer {secrets.token_urlsafe(24)}",
                "Bearer",
                f"Basic {server.token}",
                f"Token {server.token}",
                server.token,
            ):
                answer = client.request(method, url, headers={"authorization": wrong})
                if answer.status_code != 403:
                    problems.append(f"{method} {path} with {wrong[:12]!r}: {answer.status_code}")
            right = client.request(method, url, headers=server.headers)
            if right.status_code in (401, 403) or right.status_code >= 500:
                problems.append(f"{method} {path} with the token: {right.status_code}")
        version = f"{API}/version"
        for given in (
            f"bearer {server.token}",
            f"BEARER {server.token}",
            f"Bearer  {server.token}",
        ):
            if client.get(version, headers={"authorization": given}).status_code != 200:
                problems.append(f"{given[:9]!r}... refused")
        for elsewhere in (
            {"params": {"token": server.token}},
            {"cookies": {"token": server.token}},
            {"headers": {"x-token": server.token}},
        ):
            if httpx.get(f"{server.url}{version}", **elsewhere).status_code != 401:
                problems.append(f"a token in {next(iter(elsewhere))} was taken")
    assert not problems, "\n".join(problems)


def test_only_health_and_the_schema_are_public(server) -> None:
    from agex_host_http.server.app import PUBLIC

    assert set(PUBLIC) == EXPECTED_PUBLIC
    found = operations(server)
    declared_public = {path for _, path, op in found if not op.get("security")}
    assert declared_public == EXPECTED_PUBLIC - {"/openapi.json"}
    probed = {concrete(path) for _, path, _ in found} | {
        "/openapi.json",
        "/docs",
        "/redoc",
        "/docs/oauth2-redirect",
        "/",
        "/v1",
        "/v1/health/",
        "/v1/version/",
        "//v1/version",
        "/v1/nope",
    }
    answered = set()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for path in probed:
            for method in ("GET", "POST", "DELETE", "OPTIONS"):
                if client.request(method, path).status_code != 401:
                    answered.add(path)
        assert answered == EXPECTED_PUBLIC
        assert client.get("/v1/health").json() == {"status": "ok"}
        assert client.get("/docs", headers=server.headers).status_code == 404  # no docs UI


def test_a_huge_hostile_body_is_never_loaded_without_the_token_or_with_other_versions(
    server, tmp_path
) -> None:
    marker = tmp_path / "planted"
    padding = 8 * 1024 * 1024
    body = wire.request_body(envelope(), hostile(marker, padding))
    token = server.token
    refusals = [
        ({}, 401),
        ({"authorization": f"Bearer {token}-wrong"}, 403),
        ({"authorization": f"Basic {token}"}, 403),
    ]
    for headers, status in refusals:
        response = post_run(server, body, headers=headers)
        assert response.status_code == status, headers
        assert "token" in response.json()["detail"]
    other = {**versions(), "agex": "0.0.0-other"}
    body = wire.request_body(envelope(versions=other), hostile(marker, padding))
    response = post_run(server, body)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert "versions differ" in detail
    assert "'0.0.0-other' on the client" in detail
    assert_healthy(server)
    assert not marker.exists()


def test_envelope_refusals_come_before_the_task_is_loaded(server, tmp_path) -> None:
    real = versions()
    disk = {"type": "versioned", "storage": "disk"}
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("agex version", {"versions": {**real, "agex": "0.0.0"}}, 409),
        ("python version", {"versions": {**real, "python": "2.7"}}, 409),
        ("cloudpickle version", {"versions": {**real, "cloudpickle": "0.1"}}, 409),
        ("no versions", {"versions": None}, 409),
        ("versions as a list", {"versions": list(real.values())}, 409),
        ("no session", {"session": None}, 422),
        ("session not a string", {"session": 5}, 422),
        ("session with a newline", {"session": "a\nb"}, 422),
        ("session too long", {"session": "x" * 201}, 422),
        ("negative timeout", {"timeout": -1}, 422),
        ("boolean timeout", {"timeout": True}, 422),
        ("string timeout", {"timeout": "10"}, 422),
        ("huge timeout", {"timeout": 1e12}, 422),
        ("serializer not a string", {"serializer": ["cloudpickle"]}, 422),
        ("unknown serializer", {"serializer": "no-such-serializer"}, 400),
        ("no state", {"state": None}, 422),
        ("state not an object", {"state": "ephemeral"}, 422),
        ("unknown state type", {"state": {"type": "remote"}}, 422),
        ("live state", {"state": {"type": "live"}}, 400),
        ("memory storage", {"state": {**disk, "storage": "memory", "path": "p"}}, 400),
        ("disk without a path", {"state": disk}, 400),
        ("path not a string", {"state": {**disk, "path": ["p"]}}, 422),
        ("unknown storage", {"state": {**disk, "storage": "no-such-storage", "path": "p"}}, 400),
        ("escaping path", {"state": {**disk, "path": "../outside"}}, 403),
    ]
    problems = []
    for index, (label, changes, status) in enumerate(cases):
        marker = tmp_path / f"planted-{index}"
        response = post_run(server, wire.request_body(envelope(**changes), hostile(marker)))
        if response.status_code != status:
            problems.append(f"{label}: {response.status_code} {response.text[:200]}")
        if marker.exists():
            problems.append(f"{label}: the payload was loaded before the refusal")
    assert not problems, "\n".join(problems)

    # The probe is live: loading it plants the marker, here and on the server once the
    # envelope is good (and then the payload is refused as not being a task).
    local = tmp_path / "local"
    pickle.loads(hostile(local))
    assert local.read_text() == "unpickled"
    # The server itself never loads it: its worker process does, where writing the marker
    # is refused, and the run ends with that error.
    marker = tmp_path / "loaded-by-server"
    response = post_run(server, wire.request_body(envelope(), hostile(marker)))
    assert response.status_code == 200
    assert "could not be loaded: PermissionError" in run_error(response)
    assert not marker.exists()
    assert_healthy(server)


# -- bodies ----------------------------------------------------------------------------


def test_body_length_is_checked_before_the_body_is_read(make_server, tmp_path) -> None:
    server = make_server("--max-body", "4096")
    marker = tmp_path / "planted"
    body = wire.request_body(envelope(), hostile(marker, padding=8192))
    wrong = {"authorization": "Bearer wrong"}

    # Too large: 413, after the token check.
    assert post_run(server, b"x" * 4097).status_code == 413
    assert post_run(server, b"x" * 10_000_000).status_code == 413
    assert post_run(server, b"x" * 4096).status_code == 400  # within the limit: read
    assert post_run(server, body).status_code == 413
    assert post_run(server, body, headers=wrong).status_code == 403
    cancel = httpx.post(
        f"{server.url}{API}/cancel",
        json={"agent": "a" * 3000, "session": "s" * 3000},
        headers=server.headers,
    )
    assert cancel.status_code == 413

    # No length: 411.
    def chunks(data: bytes) -> Any:
        yield data[:10]
        yield data[10:]

    small = wire.request_body(envelope(), hostile(marker))
    chunked = post_run(server, chunks(small))
    assert chunked.status_code == 411
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    assert post_run(server, chunks(small), headers=wrong).status_code == 403
    cancel = httpx.post(f"{server.url}{API}/cancel", content=chunks(b"{}"), headers=server.headers)
    assert cancel.status_code == 411

    # A length that is not a number: 400.
    for length in (b"abc", b"-1", b"1e3", b"0x10"):
        request = (
            b"POST " + API.encode() + b"/runs/probe_run_0001 HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"Authorization: Bearer " + server.token.encode() + b"\r\n"
            b"Content-Length: " + length + b"\r\n"
            b"Connection: close\r\n\r\nabc"
        )
        assert raw_status(server, request) == 400, length

    assert not marker.exists()
    assert_healthy(server)

    # A client whose task is too large for the server hears why.
    agent = remote(server, scripted("task_success(len(text))"))

    @agent.task
    def measure(text: str) -> int:
        """Measure."""

    with pytest.raises(RemoteExecutionError, match="413"):
        measure("x" * 5000)


def test_malformed_run_bodies_get_400_and_the_server_carries_on(server, tmp_path) -> None:
    good = wire.request_body(envelope(), b"").rstrip(b"\n")
    cases: list[tuple[str, bytes, int, str]] = [
        ("empty body", b"", 400, "a line of JSON"),
        ("no newline", good, 400, "a line of JSON"),
        ("envelope not JSON", b"{not json\n" + pickle.dumps(1), 400, "not valid JSON"),
        ("envelope not UTF-8", b"\xff\xfe\xfd\n" + pickle.dumps(1), 400, "not valid JSON"),
        ("envelope a list", b"[1, 2]\n" + pickle.dumps(1), 400, "JSON object"),
        ("envelope a string", b'"envelope"\n' + pickle.dumps(1), 400, "JSON object"),
        ("envelope null", b"null\n" + pickle.dumps(1), 400, "JSON object"),
        (
            "envelope over its limit",
            b'{"pad": "' + b"x" * wire.ENVELOPE_LIMIT + b'"}\n' + pickle.dumps(1),
            400,
            "over the",
        ),
    ]
    problems = []
    for label, body, status, says in cases:
        response = post_run(server, body)
        detail = response.json().get("detail", "") if response.status_code < 500 else ""
        if response.status_code != status or says not in str(detail):
            problems.append(f"{label}: {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)
    # A good envelope with a payload that is no task: the run starts, and its worker (never
    # the server) finds out and says so.
    payloads: list[tuple[str, bytes, str]] = [
        ("no task", b"", "could not be loaded"),
        ("garbage task", os.urandom(2000), "could not be loaded"),
        ("truncated pickle", pickle.dumps({"task": 1})[:-3], "could not be loaded"),
        ("a pickled int", pickle.dumps(7), "not an agex task"),
        ("a dict without a task", pickle.dumps({"x": 1}), "not an agex task"),
        ("a task that is not a Task", pickle.dumps({"task": "job", "arguments": {}}), "not an"),
        ("a pickle naming a missing module", b"cno_such_module_anywhere\nf\n(tR.", "could not"),
    ]
    for label, payload, says in payloads:
        response = post_run(server, good + b"\n" + payload)
        if response.status_code != 200 or says not in run_error(response):
            problems.append(f"{label}: {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)
    assert_healthy(server)
    assert_runs_tasks(server)


def test_a_deeply_nested_envelope_is_400_not_500(server) -> None:
    """JSON nesting deep enough to exhaust the parser's recursion is still a malformed
    envelope, within the envelope's limit."""
    for line in (b"[" * 50_000, b'{"a":' * 10_000, b'{"session": ' + b"[" * 30_000):
        response = post_run(server, line + b"\n" + pickle.dumps(1))
        assert response.status_code == 400, (line[:12], response.status_code, response.text)
    assert_healthy(server)


def test_runs_are_followed_by_id_and_a_second_start_never_loads_its_body(server, tmp_path) -> None:
    chosen = run_id()
    body = wire.request_body(
        envelope(llm=model("task_success(11)")), shipped_task(server, "task_success(11)")
    )
    url = f"{server.url}{API}/runs/{chosen}"
    first = httpx.post(url, content=body, headers=server.headers, timeout=60)
    assert first.status_code == 200
    assert '"kind": "result", "json": 11' in first.text
    marker = tmp_path / "planted"
    other = wire.request_body(envelope(), hostile(marker))
    again = httpx.post(url, content=other, headers=server.headers, timeout=60)
    assert again.status_code == 200
    assert again.text == first.text
    assert not marker.exists()
    for bad in ("short", "x" * 65, "has space1", "dots.dots.dots", "semi;colon1"):
        response = httpx.post(f"{server.url}{API}/runs/{bad}", content=body, headers=server.headers)
        assert response.status_code in (404, 422), bad

    events = f"{url}/events"
    for last in (b"abc", b"-1", b"1.5", b"1" * 19, b"1 2", "\u0663".encode()):
        response = httpx.get(events, headers={**server.headers, "last-event-id": last})
        assert response.status_code == 400, last
    replay = httpx.get(events, headers={**server.headers, "last-event-id": "3"})
    assert replay.status_code == 200
    assert replay.text.startswith("id: 4\n")
    assert '"kind": "result", "json": 11' in replay.text


def test_a_last_event_id_of_non_ascii_digits_is_400_not_500(server) -> None:
    """Header bytes are read as Latin-1, where superscript digits count as digits for
    str.isdigit() but not for int()."""
    chosen = run_id()
    body = wire.request_body(envelope(llm=model("task_success(1)")), shipped_task(server))
    started = httpx.post(
        f"{server.url}{API}/runs/{chosen}", content=body, headers=server.headers, timeout=60
    )
    assert started.status_code == 200
    url = f"{server.url}{API}/runs/{chosen}/events"
    for last in (b"\xb2", b"1\xb3", b"\xb9"):
        response = httpx.get(url, headers={**server.headers, "last-event-id": last}, timeout=10)
        assert response.status_code == 400, (last, response.status_code, response.text)
    assert_healthy(server)


# -- state paths -----------------------------------------------------------------------


def escaping_paths(server: Any, outside: Path) -> list[str]:
    outside.mkdir(exist_ok=True)
    (server.state_dir / "escape").symlink_to(outside, target_is_directory=True)
    return [
        "../x",
        "/../../etc",
        "a/../../b",
        "..",
        "/..",
        "//../x",
        "escape",
        "escape/inner",
        "a/../escape/inner",
    ]


def test_state_paths_outside_the_state_dir_are_refused(server, tmp_path) -> None:
    outside = tmp_path / "outside"
    paths = escaping_paths(server, outside)
    problems = []
    for index, path in enumerate(paths):
        marker = tmp_path / f"planted-{index}"
        state = {"type": "versioned", "storage": "disk", "path": path}
        response = post_run(server, wire.request_body(envelope(state=state), hostile(marker)))
        if response.status_code != 403 or "state directory" not in response.json()["detail"]:
            problems.append(f"{path!r}: {response.status_code} {response.text[:200]}")
        if marker.exists():
            problems.append(f"{path!r}: the payload was loaded")
    assert not problems, "\n".join(problems)

    for path in paths:
        state = connect_state(type="versioned", storage="disk", path=path)
        agent = remote(server, scripted("task_success(1)"), state=state)

        @agent.task
        def job() -> int:
            """Job."""

        with pytest.raises(RemoteExecutionError, match="403") as caught:
            job()
        assert "the server's state directory" in str(caught.value)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "b").exists()


def test_a_nul_byte_in_a_state_path_is_refused_not_500(server, tmp_path) -> None:
    marker = tmp_path / "planted"
    state = {"type": "versioned", "storage": "disk", "path": "a\x00b"}
    response = post_run(server, wire.request_body(envelope(state=state), hostile(marker)))
    assert response.status_code in (400, 403, 422), (response.status_code, response.text)
    assert not marker.exists()
    assert_healthy(server)


def test_state_paths_and_session_names_stay_inside_the_state_dir(server, tmp_path) -> None:
    before = {p.name for p in server.directory.iterdir()}
    elsewhere = tmp_path / "absolute"
    inside = {
        "/shared/state": server.state_dir / "shared" / "state",
        "a/../b": server.state_dir / "b",
        str(elsewhere): server.state_dir / elsewhere.relative_to(elsewhere.anchor),
    }
    for path, where in inside.items():
        state = connect_state(type="versioned", storage="disk", path=path)
        agent = remote(server, scripted("task_success(3)"), state=state, name="keeper")

        @agent.task
        def job() -> int:
            """Job."""

        assert job(session="s1") == 3, path
        assert where.is_dir(), path
        assert any(where.iterdir()), path
    assert not elsewhere.exists()
    assert not Path("/shared/state").exists()

    state = connect_state(type="versioned", storage="disk", path="/sessions")
    for session in ("..", "../../escaped", "/etc/passwd", "..\\..\\x", "%2e%2e"):
        agent = remote(server, scripted("task_success(2)"), state=state, name="..")

        @agent.task
        def dotted() -> int:
            """Dotted."""

        assert dotted(session=session) == 2, session
    assert {p.name for p in server.directory.iterdir()} == before
    tops = {"shared", "b", elsewhere.parts[1], "sessions"}
    assert {p.name for p in server.state_dir.iterdir()} == tops


# -- session names ---------------------------------------------------------------------

BAD_SESSIONS = [
    "",
    "a\nb",
    "\n",
    "a\rb",
    "tab\there",
    "nul\x00",
    "esc\x1b[2J",
    "bell\x07",
    "rtl\u202eoverride",
    "line\u2028separator",
    "x" * 201,
]


def test_bad_session_names_get_422_raw(server, tmp_path) -> None:
    problems = []
    for index, session in enumerate(BAD_SESSIONS):
        marker = tmp_path / f"planted-{index}"
        body = wire.request_body(envelope(session=session), hostile(marker))
        response = post_run(server, body)
        if response.status_code != 422 or "session" not in response.json()["detail"]:
            problems.append(f"{session[:20]!r}: {response.status_code} {response.text[:200]}")
        if marker.exists():
            problems.append(f"{session[:20]!r}: the payload was loaded")
    assert not problems, "\n".join(problems)
    longest = post_run(server, wire.request_body(envelope(session="x" * 200), b"garbage"))
    assert longest.status_code == 200  # a good name: the run starts, and fails on the payload
    assert "could not be loaded" in run_error(longest)
    cancel = httpx.post(
        f"{server.url}{API}/cancel",
        json={"agent": "a", "session": "x" * 201},
        headers=server.headers,
    )
    assert cancel.status_code == 422


def test_bad_session_names_are_refused_by_the_client_before_sending() -> None:
    nowhere = connect_host(provider="http", url=f"http://127.0.0.1:{free_port()}", token="t")
    agent = Agent(host=nowhere, llm=scripted("task_success(1)"))

    @agent.task
    def job() -> int:
        """Job."""

    for session in BAD_SESSIONS:
        with pytest.raises(ValueError, match="session") as caught:
            job(session=session)
        assert not isinstance(caught.value, RemoteExecutionError)
        with pytest.raises(ValueError, match="session"):
            job.cancel(session)


# -- the loopback rule -----------------------------------------------------------------


def without_token_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "AGEX_SERVER_TOKEN"}


def refused_serves(
    tmp_path: Path, runs: list[tuple[list[str], dict[str, str]]]
) -> list[tuple[int, str, Path]]:
    """Run `agex serve` with each set of arguments, all at once; each must exit by itself
    within seconds. Returns each one's exit code, stderr and state directory."""
    processes = []
    for index, (arguments, env) in enumerate(runs):
        state_dir = tmp_path / f"refused-state-{index}"
        command = [sys.executable, "-m", "agex", "serve", "--port", str(free_port())]
        command += ["--state-dir", str(state_dir), *arguments]
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        processes.append((process, state_dir))
    results = []
    try:
        for process, state_dir in processes:
            _, stderr = process.communicate(timeout=20)
            results.append((process.returncode, stderr, state_dir))
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_a_non_loopback_bind_without_a_token_is_refused(tmp_path) -> None:
    env = without_token_env()
    hosts = ["0.0.0.0", "::", "agex-server"]
    runs = [(["--host", host], env) for host in hosts]
    runs.append((["--host", "0.0.0.0"], {**env, "AGEX_SERVER_TOKEN": ""}))
    started = time.monotonic()
    results = refused_serves(tmp_path, runs)
    assert time.monotonic() - started < 20
    for (arguments, _), (code, stderr, state_dir) in zip(runs, results, strict=True):
        assert code != 0, arguments
        assert "without a token" in stderr, stderr
        assert "--token-file" in stderr
        assert not state_dir.exists()  # refused before the app was built


def test_a_non_loopback_bind_with_a_token_file_starts_and_needs_the_token(make_server) -> None:
    server = make_server("--host", "0.0.0.0")
    assert "0.0.0.0" in server.command()
    assert httpx.get(f"{server.url}/v1/health").status_code == 200
    assert httpx.get(f"{server.url}{API}/version").status_code == 401
    assert httpx.get(f"{server.url}{API}/version", headers=server.headers).status_code == 200
    server.stop()
    assert server.process is not None
    assert server.process.returncode is not None


def test_an_empty_token_file_is_refused(tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n")
    [(code, stderr, _)] = refused_serves(
        tmp_path, [(["--host", "0.0.0.0", "--token-file", str(token_file)], without_token_env())]
    )
    assert code != 0
    assert "empty" in stderr


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, Path]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    for index, blob in enumerate(issued.cert_chain_pems):
        blob.write_to_path(str(files["cert"]), append=index > 0)
    issued.private_key_pem.write_to_path(str(files["key"]))
    return files


def test_a_task_runs_over_tls(make_server, tls_files, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files["ca"]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server = make_server(
        "--ssl-certfile",
        str(tls_files["cert"]),
        "--ssl-keyfile",
        str(tls_files["key"]),
        scheme="https",
    )
    assert server.url.startswith("https://")
    agent = remote(server, scripted("task_success((1, 'over tls'))"))

    @agent.task
    def pair() -> tuple[int, str]:
        """A pair."""

    assert pair() == (1, "over tls")  # a pickled result, checked against its MAC
    agent.warmup()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/v1/health", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/v1/health", trust_env=False, timeout=5)

    monkeypatch.delenv("SSL_CERT_FILE")  # a client that does not trust the CA
    untrusting = remote(server, scripted("task_success(1)"))
    with pytest.raises(RemoteExecutionError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.warmup()


def test_tls_needs_both_the_certificate_and_the_key(tmp_path, tls_files) -> None:
    runs = [
        (["--ssl-certfile", str(tls_files["cert"])], without_token_env()),
        (["--ssl-keyfile", str(tls_files["key"])], without_token_env()),
    ]
    for code, stderr, _ in refused_serves(tmp_path, runs):
        assert code != 0
        assert "TLS needs both" in stderr


# -- authenticated results -------------------------------------------------------------


def mac(token: str, data: bytes) -> str:
    return hmac.new(token.encode(), data, hashlib.sha256).hexdigest()


def settle(message: dict[str, Any], key: str, returns: Any = Any) -> Any:
    """The value of a result message, as the client takes it for a task returning
    ``returns``."""
    agent = Agent(llm=scripted("task_success(1)"))

    def job() -> None:
        """Job."""

    job.__annotations__["return"] = returns
    invocation = Invocation(agent, agent.task(job), {}, "s")
    return outcome.settle({"kind": "result", **message}, invocation, key)


def test_a_result_with_a_wrong_mac_is_not_loaded(tmp_path) -> None:
    token = secrets.token_urlsafe(24)
    marker = tmp_path / "planted"
    data = hostile(marker)
    encoded = base64.b64encode(data).decode()
    right = mac(token, data)
    tampered = [
        {"pickle": encoded, "mac": mac("another token", data)},
        {"pickle": encoded, "mac": mac(token, data + b"x")},
        {"pickle": encoded, "mac": mac("", data)},
        {"pickle": encoded, "mac": right[:-1] + ("0" if right[-1] != "0" else "1")},
        {"pickle": encoded, "mac": right[:32]},
        {"pickle": encoded, "mac": right.upper()},
        {"pickle": encoded, "mac": ""},
        {"pickle": encoded, "mac": None},
        {"pickle": encoded, "mac": 0},
        {"pickle": encoded},
        {"pickle": encoded + "!", "mac": right},
        {"pickle": None, "mac": right},
        {"mac": right},
    ]
    for message in tampered:
        with pytest.raises(RemoteExecutionError, match=r"HMAC|malformed"):
            settle(message, token)
    assert not marker.exists()
    with pytest.raises(RemoteExecutionError, match="HMAC"):
        settle({"pickle": encoded, "mac": right}, token + "x")
    assert not marker.exists()


def test_a_result_with_the_right_mac_loads_only_the_annotated_types(tmp_path) -> None:
    token = secrets.token_urlsafe(24)
    value = {"when": (2024, 1), "tags": {"a", "b"}, "raw": b"\x00\xff"}
    message = outcome.success(value, dict[str, Any], token)
    assert set(message) == {"kind", "pickle", "mac"}
    assert settle(message, token) == value
    assert outcome.success({"plain": [1, "x", None]}, Any, token) == {
        "kind": "result",
        "json": {"plain": [1, "x", None]},
    }
    marker = tmp_path / "planted"
    data = hostile(marker)
    signed = {"pickle": base64.b64encode(data).decode(), "mac": mac(token, data)}
    refused = r"refused: the value holds pathlib\.Path\.write_text"
    with pytest.raises(RemoteExecutionError, match=refused):
        settle(signed, token)  # signed with the right key, and still not loaded
    assert not marker.exists()
    pickle.loads(data)
    assert marker.exists()  # the probe is live


# -- schema-driven fuzzing -------------------------------------------------------------


def test_no_operation_answers_with_a_server_error(server, tmp_path) -> None:
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json"]
    command += ["--checks", "not_a_server_error,ignored_auth"]
    command += ["--header", f"Authorization: Bearer {server.token}"]
    command += ["--max-examples", "50", "--request-timeout", "10"]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert f"Tested: {len(operations(server))}" in done.stdout, done.stdout[-3000:]
    assert_healthy(server)


def test_following_a_run_the_server_does_not_have_is_404(server) -> None:
    response = httpx.get(f"{server.url}{API}/runs/{run_id()}/events", headers=server.headers)
    assert response.status_code == 404
    assert "has no run" in response.json()["detail"]


# -- slow clients ----------------------------------------------------------------------


def test_connections_that_send_no_head_or_a_slow_one_are_closed(make_server) -> None:
    server = make_server("--head-timeout", "0.5")
    silent = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
    trickle = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    started = time.monotonic()
    cut = False
    for byte in b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" * 10:  # a byte every 50 ms
        try:
            trickle.sendall(bytes([byte]))
        except OSError:  # the server closed it
            cut = True
            break
        time.sleep(0.05)
    assert cut
    for sock in silent:
        with contextlib.suppress(ConnectionResetError):
            assert sock.recv(1024) == b""  # closed by the server
        sock.close()
    trickle.close()
    assert time.monotonic() - started < 8
    assert_healthy(server)
    # A client that sends its head in time is served, on a kept-alive connection too.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while not reply.endswith(b'{"status":"ok"}'):
                reply += sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 200")
            time.sleep(0.7)  # longer than the head timeout, between requests: allowed


def test_a_body_that_does_not_arrive_in_time_gets_408(make_server) -> None:
    server = make_server("--body-timeout", "0.5")
    head = (
        f"POST {API}/runs/{run_id()} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Length: 1000\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b"{")
        started = time.monotonic()
        reply = b""
        while chunk := sock.recv(4096):  # the server closes the connection after it
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert b"in time" in reply
        assert time.monotonic() - started < 5
    response = httpx.post(
        f"{server.url}{API}/cancel",
        json={"agent": "a", "session": "s"},
        headers=server.headers,
        timeout=10,
    )
    assert response.json() == {"cancelled": 0}  # a body sent in time is read as before


def test_bytes_between_requests_do_not_hold_a_connection_open(make_server) -> None:
    server = make_server("--head-timeout", "0.5")
    # A stray line end after an answer, and the rest of a body the 401 did not wait for.
    probes = [
        (b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", b"\r\n"),
        (f"POST {API}/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode(), b"{"),
    ]
    for request, extra in probes:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(request)
            time.sleep(0.2)
            started = time.monotonic()
            with contextlib.suppress(OSError):
                sock.sendall(extra)
                while sock.recv(4096):  # the answer, then the close
                    pass
            assert time.monotonic() - started < 5, request


def test_a_last_event_id_past_the_end_of_a_run_is_400(server) -> None:
    chosen = run_id()
    body = wire.request_body(
        envelope(llm=model("task_success(3)")), shipped_task(server, "task_success(3)")
    )
    url = f"{server.url}{API}/runs/{chosen}"
    assert httpx.post(url, content=body, headers=server.headers, timeout=60).status_code == 200
    events = f"{url}/events"
    for last, status in (("1", 200), ("99", 400)):
        response = httpx.get(events, headers={**server.headers, "last-event-id": last}, timeout=10)
        assert response.status_code == status, last
    assert "past" in response.json()["detail"]


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads /proc")
def test_the_server_raises_its_open_file_limit(make_server) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        server = make_server()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    limits = Path(f"/proc/{server.process.pid}/limits").read_text().splitlines()
    (line,) = [line for line in limits if line.startswith("Max open files")]
    assert int(line.split()[3]) > 256  # the soft limit, raised towards the hard one
