"""`agex serve` in its default isolation: every run's agent code in a confined worker.

"Assume the agent escaped": a registered function runs in the worker with the rights agent
code would have after escaping the in-process sandbox. What it tries must be stopped there,
and whatever one run does to its worker must end only that run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from agex import Agent, TaskTimeout, connect_host, connect_llm, connect_state
from agex.errors import RemoteExecutionError
from agex.isolation import strongest

pytestmark = pytest.mark.skipif(strongest() != "kernel", reason="needs kernel isolation here")

SECRET_ENV = "AGEX_TEST_SERVER_SECRET"


def block(code: str) -> str:
    return f"Thinking.\n```python\n{code}\n```"


def remote(server: Any, *codes: str, **options: Any) -> Agent:
    host = connect_host(provider="http", url=server.url, token=server.token)
    llm = connect_llm(provider="scripted", responses=[block(c) for c in codes])
    return Agent(host=host, llm=llm, **options)


def attempt(what: str, target: str = "") -> str:
    """What an escaped agent would try on the server, and how it ended."""
    import subprocess

    try:
        if what == "program":
            subprocess.run(["/bin/sh", "-c", f"echo ran > {target}"], check=True)
        elif what == "tcp":
            host, port = target.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=2).close()
        elif what == "write":
            with open(target, "w") as f:
                f.write("escaped")
        elif what == "read":
            with open(target, "rb") as f:
                return f"read {len(f.read())} bytes"
        elif what == "list":
            return f"listed {os.listdir(target)}"
        elif what == "environ":
            return "env: " + repr(os.environ.get(SECRET_ENV))
        return "done"
    except Exception as exc:
        return f"stopped: {type(exc).__name__}"


def escape(server: Any, what: str, target: str = "") -> str:
    agent = remote(server, f"task_success(attempt({what!r}, {target!r}))")
    agent.fn(attempt)

    @agent.task
    def go() -> str:
        """Try."""

    result: str = go()
    return result


@pytest.fixture
def secret_server(make_server) -> Any:
    return make_server(env={SECRET_ENV: "planted-in-the-server"})


def test_escaped_code_on_a_server_reaches_nothing_of_the_server(secret_server, tmp_path) -> None:
    server = secret_server
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    host, port = listener.getsockname()
    marker = tmp_path / "ran"
    state_file = server.state_dir / "other-clients-state.db"
    state_file.write_text("secret")
    assert escape(server, "program", str(marker)) == "stopped: PermissionError"
    assert escape(server, "tcp", f"{host}:{port}").startswith("stopped:")
    assert escape(server, "write", str(tmp_path / "out")) == "stopped: PermissionError"
    assert escape(server, "read", str(server.directory / "token")) == "stopped: PermissionError"
    assert escape(server, "read", str(state_file)) == "stopped: PermissionError"
    assert escape(server, "list", str(server.state_dir)) == "stopped: PermissionError"
    assert escape(server, "environ") == "env: None"
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    with pytest.raises(TimeoutError):
        listener.accept()
    listener.close()


def crash() -> None:
    """A crash in C code."""
    import ctypes

    ctypes.string_at(0)


def spin() -> int:
    """A long call into C."""
    return len(str(10 ** (10**8)))


class Stubborn:
    def __reduce_ex__(self, protocol: int) -> Any:
        while True:
            pass


def stubborn() -> Stubborn:
    return Stubborn()


def test_one_runs_crash_hang_or_bomb_ends_only_that_run(make_server) -> None:
    server = make_server()
    state = connect_state(type="versioned", storage="disk", path="/kept")
    steady = remote(server, "n = 1\nprint(n)", "sleep(1.5)\nn = 2\ntask_success(n)")
    steady.fn(time.sleep, name="sleep")

    @steady.task
    async def count() -> int:
        """Count."""

    keeper = remote(server, "kept = 'before'\nprint(kept)", "crash()", name="keeper", state=state)
    keeper.fn(crash)

    @keeper.task
    async def keep() -> str:
        """Keep, then crash."""

    hanger = remote(server, "spin()", timeout=1.0)
    hanger.fn(spin)

    @hanger.task
    async def hang() -> int:
        """Hang in C."""

    bomber = remote(server, "x = 'a' * (8 * 1024 ** 3)", "task_success('survived')")

    @bomber.task
    async def bomb() -> str:
        """Bomb."""

    refuser = remote(server, "task_success(stubborn())", timeout=1.0)
    refuser.fn(stubborn)

    @refuser.task
    async def pickle_forever() -> object:
        """Return something that never finishes pickling."""

    health: list[float] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            started = time.monotonic()
            assert httpx.get(f"{server.url}/v1/health", timeout=5).status_code == 200
            health.append(time.monotonic() - started)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()

    async def together() -> list[Any]:
        calls = (count.arun(), keep.arun(), hang.arun(), bomb.arun(), pickle_forever.arun())
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        counted, crashed, hung, bombed, pickled = asyncio.run(together())
    finally:
        done.set()
        poller.join()
    assert counted == 2  # the run beside them all finished, with its right result
    assert isinstance(crashed, RemoteExecutionError)
    assert "SIGSEGV" in str(crashed)
    assert isinstance(hung, TaskTimeout)
    assert bombed == "survived"  # the memory limit met the bomb in its own worker
    assert isinstance(pickled, TaskTimeout)
    assert max(health) < 1.0  # the server answered throughout
    # The crashed run left the session as it found it (its steps are recorded, not kept),
    # and the session runs on.
    reader = remote(
        server,
        "try:\n    kept\nexcept NameError:\n    task_success('as it was')",
        name="keeper",
        state=state,
    )

    @reader.task
    def read() -> str:
        """Read."""

    assert read() == "as it was"


def test_a_worker_past_its_cpu_time_ends_its_run_saying_so(make_server) -> None:
    server = make_server("--max-cpu-seconds", "1")
    agent = remote(server, "spin()")
    agent.fn(spin)

    @agent.task
    def burn() -> int:
        """Burn."""

    with pytest.raises(RemoteExecutionError, match="CPU time limit"):
        burn()


def test_a_server_refuses_agents_that_ask_for_less_isolation(make_server) -> None:
    server = make_server("--isolation", "kernel")
    agent = remote(server, "task_success(1)", isolation="none")

    @agent.task
    def one() -> int:
        """One."""

    with pytest.raises(RemoteExecutionError, match="isolation 'kernel' or stronger"):
        one()
    more = remote(server, "task_success(1)", isolation="kernel", max_memory_mb=100_000)

    @more.task
    def greedy() -> int:
        """One."""

    with pytest.raises(RemoteExecutionError, match="allows at most 2048"):
        greedy()


def test_the_server_says_which_layers_are_on(make_server) -> None:
    server = make_server()
    log = server.log.read_text()
    assert "isolation kernel: agent code runs in confined worker processes" in log
    for layer in ("seccomp: on", "landlock: on", "limits: on", "environment: on"):
        assert layer in log
    none = make_server("--isolation", "none")
    assert "WARNING: --isolation none" in none.log.read_text()


def test_a_server_sends_sub_agents_only_to_the_servers_it_was_told_of(make_server) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    elsewhere = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = make_server(env={"AGEX_SERVER_TOKEN": "a-token-for-other-servers"})
    specialist = Agent(
        name="far",
        host=connect_host(provider="http", url=elsewhere),
        llm=connect_llm(provider="scripted", responses=[block("task_success(1)")]),
    )

    @specialist.task
    def far() -> int:
        """Far."""

    boss = remote(server, "task_success(far())")
    boss.fn(far)

    @boss.task
    def ask() -> int:
        """Ask."""

    with pytest.raises(RemoteExecutionError, match="sends sub-agents only to the agex servers"):
        ask()
    with pytest.raises(TimeoutError):
        listener.accept()  # the server's token went nowhere
    listener.close()


def test_a_model_configuration_of_megabytes_travels_in_the_envelope(make_server) -> None:
    """The server builds the model from the envelope, never from the shipped task: a
    scripted model's long replies travel there."""
    server = make_server()
    reply = "t" * 1_000_000 + "\n```python\ntask_success(1)\n```"
    host = connect_host(provider="http", url=server.url, token=server.token)
    agent = Agent(host=host, llm=connect_llm(provider="scripted", responses=[reply]))

    @agent.task
    def one() -> int:
        """One."""

    tokens = []
    assert one(on_token=tokens.append) == 1
    assert "".join(tokens) == reply


def test_workers_never_read_the_state_directory_or_where_the_server_started(tmp_path) -> None:
    """Where `python -m agex serve` starts is on its sys.path (and where a .env lives)."""
    from agex_host_http.server.app import isolating

    hidden = isolating(None, tmp_path).hidden
    assert str(tmp_path) in hidden
    assert os.getcwd() in hidden


def test_a_task_on_a_server_reads_only_the_variables_its_code_reaches(server) -> None:
    """Shown by damage: an untouched variable whose stored value is broken does not stop
    a task that never names it; the task that names it is told which variable it was."""
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    from agex_state_disk.storage import DiskStorage

    state = connect_state(type="versioned", storage="disk", path="/lazy")
    agent = remote(
        server,
        "big = list(range(50_000))\nsmall = 1\ntask_success(0)",
        "small += 1\ntask_success(small)",
        "task_success(len(big))",
        name="lazy",
        state=state,
    )

    @agent.task
    def job() -> int:
        """Job."""

    assert job() == 0
    storage = DiskStorage(server.state_dir / "lazy")
    try:
        stored = VersionedState(storage, CloudpickleSerializer(), "lazy", "default")
        blob = stored.tree(stored.head())["big"].blob
        storage.put_many({"b/" + blob: b"damaged"})
    finally:
        storage.close()
    assert job() == 2
    with pytest.raises(RemoteExecutionError, match="StateIntegrityError: variable 'big'"):
        job()


def test_a_task_on_a_server_that_loses_its_session_may_give_up(server) -> None:
    from agex.events import ConflictEvent
    from agex.serializers import CloudpickleSerializer
    from agex.state.versioned import VersionedState
    from agex_state_disk.storage import DiskStorage

    agent = Agent(
        host=connect_host(provider="http", url=server.url, token=server.token),
        llm=connect_llm(
            provider="scripted",
            responses=[block("n = 1"), block("task_success(n)")],
            delay=0.5,  # the other writer commits while the model thinks
        ),
        name="giver",
        state=connect_state(type="versioned", storage="disk", path="/giving"),
    )

    @agent.task(on_conflict="abandon")
    def job() -> int:
        """Job."""

    def other_writer_finishes_first(event) -> None:
        if type(event).__name__ == "ActionEvent" and event.step == 1:
            storage = DiskStorage(server.state_dir / "giving")
            try:
                VersionedState(storage, CloudpickleSerializer(), "giver", "default").commit(
                    {"other": 1}
                )
            finally:
                storage.close()
        seen.append(event)

    seen: list = []
    assert job(on_event=other_writer_finishes_first) is None
    assert [e.action for e in seen if isinstance(e, ConflictEvent)] == ["abandon"]
