"""The documentation's examples, run as written against a real `agex serve`.

Each example runs in a fresh Python process, as a user's script would. The examples name
their servers ``agent-server:8000`` and ``server:8000``. The test's server listens on port
8000 of a loopback address of its own (127.x.y.z), and in the example's process both names
resolve to that address, as an /etc/hosts entry would; nothing else about the example
changes. The server is the one the http tests use (tests/http/conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]

_spec = importlib.util.spec_from_file_location(
    "agex_e2e_http_server", ROOT / "tests" / "http" / "conftest.py"
)
assert _spec is not None
assert _spec.loader is not None
_http = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_http)

#: The server names the examples use, and the port they give.
EXAMPLE_SERVERS = (("agent-server", 8000), ("server", 8000))
PORT = 8000


class Server(_http.Server):
    """`agex serve` on ``address``:``port`` instead of 127.0.0.1."""

    def __init__(self, directory: Path, token: str | None, address: str, port: int) -> None:
        super().__init__(directory, token, "--host", address)
        self.address = address
        self.port = port

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}"


REPORT = "@@report "

HARNESS = '''\
import json as _json


def _map_hosts(names, address):
    """Resolve the examples' server names to ``address``, like /etc/hosts."""
    import socket

    lookup = socket.getaddrinfo

    def getaddrinfo(host, service, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        try:
            known = (name, int(service)) in names
        except (TypeError, ValueError):
            known = False
        if known:
            return lookup(address, service, *args, **kwargs)
        return lookup(host, service, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


_map_hosts({names!r}, {address!r})
del _map_hosts


def reply(code):
    """One scripted model reply: a thought, then the code to run."""
    return "I will do it in one step.\\n```python\\n" + code + "\\n```"


def report(**values):
    print({marker!r} + _json.dumps(values), flush=True)

'''


@dataclass
class Outcome:
    report: dict[str, Any]
    stdout: str


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """`agex serve` on port 8000 of a loopback address of its own, with a token and its own
    state directory."""
    for attempt in range(5):
        directory = tmp_path / f"server{attempt}"
        directory.mkdir()
        address = "127.{}.{}.{}".format(*(random.randint(1, 254) for _ in range(3)))
        candidate = Server(directory, secrets.token_urlsafe(24), address, PORT)
        try:
            started = candidate.start()
        except RuntimeError:  # that address's port is taken: try another
            candidate.stop()
            continue
        break
    else:
        pytest.fail("could not start agex serve on any loopback address")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def run_example(server: Any, tmp_path: Path) -> Callable[..., Outcome]:
    """Run code blocks, in order, as one script in a fresh Python process whose name lookup
    sends the examples' servers to ``server``; the client's token comes from
    AGEX_SERVER_TOKEN. Returns what the script passed to ``report(...)``, and its output."""
    counter = iter(range(1_000_000))

    def run(*blocks: str) -> Outcome:
        harness = HARNESS.format(names=set(EXAMPLE_SERVERS), address=server.address, marker=REPORT)
        script = tmp_path / f"example{next(counter)}.py"
        script.write_text(harness + "\n".join(textwrap.dedent(b) for b in blocks))
        env = {**os.environ, "AGEX_SERVER_TOKEN": server.token}
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env.pop(proxy, None)
            env.pop(proxy.lower(), None)
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            pytest.fail(
                f"the example failed (exit {done.returncode}):\n{done.stderr}\n"
                f"--- output:\n{done.stdout}\n--- server log:\n{server.log.read_text()}"
            )
        reports = [line for line in done.stdout.splitlines() if line.startswith(REPORT)]
        assert len(reports) == 1, done.stdout
        return Outcome(json.loads(reports[0][len(REPORT) :]), done.stdout)

    return run
