"""docs/hosts.md against the server it describes: its `agex serve` commands start a server,
and its tables of options and endpoints are the server's own."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agex_host_http.serve import serve

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "hosts.md").read_text()


def command_after(sentence: str) -> str:
    (command,) = re.findall(rf"{re.escape(sentence)}\n\n```bash\n(.*?)\n```", DOC)
    return command


def section(title: str) -> str:
    start = DOC.index(f"\n{title}\n")
    end = DOC.find("\n#", start + len(title) + 2)
    return DOC[start : end if end != -1 else len(DOC)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agex() -> list[str]:
    """The `agex` command installed next to this Python."""
    found = shutil.which("agex", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "agex"]


@pytest.mark.parametrize(
    ("sentence", "state_dir"),
    [
        ("Start the agex server:", "agex-state"),
        ("Or with a custom state directory:", "root/srv/agex-state"),
    ],
)
def test_the_server_commands_start_a_server(tmp_path: Path, sentence: str, state_dir: str) -> None:
    """Run as shown, plus a free --port. An absolute --state-dir is taken inside a temporary
    root, so that the test leaves nothing behind."""
    words = shlex.split(command_after(sentence))
    assert words[:2] == ["agex", "serve"]
    arguments = words[2:]
    for i, word in enumerate(arguments[:-1]):
        if word == "--state-dir" and arguments[i + 1].startswith("/"):
            arguments[i + 1] = str(tmp_path / "root" / arguments[i + 1].lstrip("/"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AGEX_SERVER_TOKEN"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*agex(), "serve", *arguments, "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/version", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        assert answer.status_code == 200  # loopback and no token: open to this machine only
        assert answer.json()["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
        where = (tmp_path / state_dir).resolve()
        assert where.is_dir()
        assert (
            f"agex server on http://127.0.0.1:{port}, state in {where}, no token (loopback only)"
            in log.read_text()
        )
    finally:
        process.terminate()
        process.wait(10)


def test_the_options_table_is_agex_serve_s_options() -> None:
    rows = [line for line in section("### Server Setup").splitlines() if line.startswith("| `--")]
    documented = {
        option: row for row in rows for option in re.findall(r"`(--[\w-]+)`", row.split("|")[1])
    }
    options = {p.opts[0]: p for p in serve.params}
    assert documented.keys() == options.keys()
    for name, param in options.items():
        if isinstance(param.default, str | int | float):
            assert str(param.default) in documented[name], name


def test_the_api_table_is_the_server_s_api(server) -> None:
    rows = section("## HTTP API").splitlines()
    documented = {
        (method, path)
        for row in rows
        for method, path in re.findall(r"^\| `(GET|POST) (/v1/\S+)`", row)
    }
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    served = {(method.upper(), path) for path, ops in schema["paths"].items() for method in ops}
    assert documented == served


def test_the_local_example_runs() -> None:
    (block,) = re.findall(
        r"```python\n(.*?)```", section("### Local Execution (Default)"), flags=re.S
    )
    namespace: dict = {}
    exec(block, namespace)
    assert namespace["agent"].host.provider == "local"
