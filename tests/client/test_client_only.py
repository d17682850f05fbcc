"""`pip install "agex-core[http]"` is the client: it calls a server and brings none of the
server stack. Everything a client does works here up to the network, and `agex serve` says
what to install instead of failing on an import."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from typing import Any

import pytest
from packaging.requirements import Requirement

from agex import (
    Agent,
    ProviderNotInstalledError,
    RemoteExecutionError,
    connect_host,
    connect_state,
    hookimpl,
    plugins,
)
from agex import __version__ as agex_version
from agex.testing.host import scripted

SERVER_INSTALL = 'pip install "agex-core[server]"'


def server_extra() -> list[Requirement]:
    """What agex-host-http's `server` extra requires on this platform."""
    found = []
    for line in metadata.requires("agex-host-http") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        # Of the extra (not required without it), and for this platform.
        if marker and marker.evaluate({"extra": "server"}) and not marker.evaluate({"extra": ""}):
            found.append(requirement)
    return found


def test_the_server_extra_is_declared() -> None:
    assert {r.name for r in server_extra()} >= {"fastapi", "uvicorn", "httptools"}


def test_nothing_of_the_server_extra_is_installed() -> None:
    installed = []
    for requirement in server_extra():
        try:
            metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue
        installed.append(requirement.name)
    assert installed == [], "the http client alone should not install the server stack"


@pytest.mark.parametrize("module", ["fastapi", "uvicorn"])
def test_the_server_modules_do_not_import(module: str) -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module)


# -- the host, up to the network ------------------------------------------------------


def test_connect_host_makes_the_http_host() -> None:
    host = connect_host(provider="http", url="http://agent-server:8000/", timeout=30)
    assert host.provider == "http"
    assert host.dump_config() == {
        "provider": "http",
        "url": "http://agent-server:8000",
        "timeout": 30.0,
        "serializer": "cloudpickle",
    }
    with pytest.raises(ValueError, match="http:// or https://"):
        connect_host(provider="http", url="agent-server:8000")


def http_host() -> Any:
    return connect_host(provider="http", url="http://agent-server:8000")


def test_agent_state_rules() -> None:
    with pytest.raises(ValueError, match="Remote execution requires disk-based state"):
        Agent(host=http_host(), state=connect_state(type="versioned", storage="memory"))
    with pytest.raises(ValueError, match="live state"):
        Agent(name="a", host=http_host(), state=connect_state(type="live", storage="memory"))
    Agent(host=http_host(), state=connect_state(type="ephemeral"))
    Agent(host=http_host(), state=connect_state(type="versioned", storage="disk", path="/s"))


class Shelf:
    """A storage of a plugin this environment knows nothing else about."""

    @hookimpl
    def agex_register_storages(self, registry: Any) -> None:
        registry.register("shelf", dict)


def test_any_storage_with_a_path_is_accepted(register_plugin) -> None:
    register_plugin(Shelf(), name="shelf")
    Agent(host=http_host(), state=connect_state(type="versioned", storage="shelf", path="s"))
    with pytest.raises(ValueError, match="Remote execution requires disk-based state"):
        Agent(host=http_host(), state=connect_state(type="versioned", storage="shelf"))


class Refusing(BaseHTTPRequestHandler):
    """Something that is not an agex server: it records each request and refuses it."""

    seen: list[dict[str, Any]]

    def _refuse(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("authorization"),
                "envelope": body.partition(b"\n")[0],
            }
        )
        answer = json.dumps({"detail": "not an agex server"}).encode()
        self.send_response(409)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (Refusing,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_task_is_shipped_and_sent(refusing) -> None:
    url, seen = refusing
    agent = Agent(
        name="shipped",
        host=connect_host(provider="http", url=url, token="secret"),
        llm=scripted("task_success(1)"),
    )

    @agent.task
    def job(x: int) -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError, match="answered 409: not an agex server"):
        job(1)
    (request,) = seen
    assert request["method"] == "POST"
    assert request["path"].startswith("/v1/runs/")
    assert request["authorization"] == "Bearer secret"
    assert isinstance(json.loads(request["envelope"]), dict)


def test_warmup_asks_the_server(refusing) -> None:
    url, seen = refusing
    agent = Agent(host=connect_host(provider="http", url=url))
    with pytest.raises(RemoteExecutionError, match="answered 409"):
        agent.warmup()
    assert [r["path"] for r in seen] == ["/v1/version"]


def test_an_unreachable_server_fails_clearly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once closed
    agent = Agent(host=connect_host(provider="http", url=f"http://127.0.0.1:{port}"))
    with pytest.raises(RemoteExecutionError, match=f"cannot reach the agex server at .*:{port}"):
        agent.warmup()


# -- agex serve -----------------------------------------------------------------------


def test_the_serve_factory_says_what_to_install() -> None:
    with pytest.raises(ProviderNotInstalledError) as info:
        plugins.create("command", "serve")
    assert isinstance(info.value, ImportError)
    assert info.value.install == SERVER_INSTALL
    assert SERVER_INSTALL in str(info.value)


def agex(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("agex", path=os.path.dirname(sys.executable))
    assert exe, "the agex console script is installed next to the interpreter"
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("args", [(), ("--port", "8000"), ("--help",)])
def test_agex_serve_says_what_to_install(args: tuple[str, ...]) -> None:
    result = agex("serve", *args)
    assert result.returncode != 0
    assert SERVER_INSTALL in result.stderr
    assert "Traceback" not in result.stderr


def test_agex_help_says_what_to_install() -> None:
    result = agex("--help")
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.split()[:1] == ["serve"]]
    assert "unavailable" in line
    assert SERVER_INSTALL in line


def test_agex_plugins_still_lists_the_client() -> None:
    result = agex("plugins")
    assert result.returncode == 0, result.stderr
    rows = [row.split()[:5] for row in result.stdout.splitlines()]
    assert ["host", "http", "agex-host-http", agex_version, "ok"] in rows
