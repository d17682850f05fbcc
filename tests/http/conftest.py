"""A real `agex serve` in a subprocess, on a free loopback port, with its own state
directory and token; and test modules sent by value, since the server cannot import them."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One `agex serve` process; ``restart()`` brings it back on the same port and state."""

    def __init__(self, directory: Path, token: str | None, *extra: str, env: dict | None = None):
        self.directory = directory
        self.state_dir = directory / "state"
        self.token = token
        self.extra = extra
        self.env = {k: v for k, v in os.environ.items() if k != "AGEX_SERVER_TOKEN"}
        self.env.update(env or {})
        self.port = free_port()
        self.scheme = "http"
        self.log = directory / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        #: Whether it is given --state-dir (not when it keeps state in a database).
        self.keeps_state_dir = True

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.token is None else {"authorization": f"Bearer {self.token}"}

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "agex", "serve", "--port", str(self.port)]
        if self.keeps_state_dir:
            command += ["--state-dir", str(self.state_dir)]
        command += ["--log-level", "warning"]
        if self.token is not None:
            token_file = self.directory / "token"
            token_file.write_text(self.token + "\n")
            command += ["--token-file", str(token_file)]
        return command + list(self.extra)

    def forked(self, parent: int) -> bool:
        """Whether a process whose parent is ``parent`` is one of this server's workers:
        forked by its template, which the server started."""
        assert self.process is not None
        stat = Path(f"/proc/{parent}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid

    def start(self, verify: str | bool = True) -> Server:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"agex serve exited:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1, verify=verify).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"agex serve did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> Server:
        self.kill()
        return self.start()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Start servers (with a token unless told otherwise); all are stopped afterwards."""
    started: list[Server] = []

    def make(
        *extra: str, token: str | None = "", env: dict | None = None, scheme: str = "http"
    ) -> Server:
        directory = tmp_path / f"server{len(started)}"
        directory.mkdir()
        chosen = secrets.token_urlsafe(24) if token == "" else token
        server = Server(directory, chosen, *extra, env=env)
        server.scheme = scheme  # "https" when extra passes --ssl-certfile/--ssl-keyfile
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


@pytest.fixture(autouse=True)
def _send_test_modules_by_value(ship_test_module: None) -> None:
    """Test modules are not importable on the server."""


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch, server: Server) -> Server:
    """The client reads the server's token from AGEX_SERVER_TOKEN."""
    monkeypatch.setenv("AGEX_SERVER_TOKEN", server.token or "")
    return server
