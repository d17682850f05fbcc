"""Tasks whose agent code runs in a confined worker process (``Agent(isolation=...)`` on
the local host): real worker processes, forked from the template, confined by the kernel.

"Assume the agent escaped": a registered host function runs in the worker with all the
rights agent code would have after an escape from the in-process sandbox, so what it can do
is what an escaped agent can do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time

import pytest

from agex import Agent, TaskCancelled, TaskTimeout, connect_llm, connect_state
from agex.errors import IsolationError
from agex.isolation import strongest

pytestmark = pytest.mark.skipif(strongest() == "none", reason="no worker processes here")
LEVEL = strongest()


def block(code: str) -> str:
    return f"Thinking.\n```python\n{code}\n```"


def scripted(*codes: str, **options):
    return connect_llm(provider="scripted", responses=[block(c) for c in codes], **options)


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_a_task_runs_in_a_worker_and_its_value_comes_back() -> None:
    agent = Agent(
        isolation=LEVEL, llm=scripted("import os\np = Point(1, os.getpid())", "task_success(p)")
    )
    agent.cls(Point)
    agent.module(os, include=["getpid"])

    @agent.task
    def where() -> Point:
        """Say where."""

    events = []
    point = where(on_event=events.append)
    assert isinstance(point, Point)
    assert point.x == 1
    assert point.y != os.getpid()  # the code ran in another process
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "TaskStartEvent",
        "ActionEvent",
        "ActionEvent",
        "SuccessEvent",
    ]


def test_versioned_state_carries_variables_and_functions_across_isolated_tasks() -> None:
    state = connect_state(type="versioned", storage="memory")
    agent = Agent(
        name="iso-state",
        isolation=LEVEL,
        state=state,
        llm=scripted(
            "def twice(v):\n    return 2 * v\ncount = 20\ntask_success(count)",
            "count += 1\ntask_success(twice(count))",
            "task_success(count)",
        ),
    )

    @agent.task
    def bump() -> int:
        """Bump."""

    session = f"s{time.monotonic_ns()}"
    assert bump(session=session) == 20
    assert bump(session=session) == 42
    assert bump(session=session) == 21


def test_the_models_position_and_errors_feed_back_as_in_process() -> None:
    llm = scripted("print('hi')\n1/0", "task_success('done')", "task_success('again')")
    agent = Agent(isolation=LEVEL, llm=llm)

    @agent.task
    def go() -> str:
        """Go."""

    events = []
    assert go(on_event=events.append) == "done"
    errors = [e for e in events if type(e).__name__ == "ErrorEvent"]
    assert "ZeroDivisionError" in errors[0].error
    assert [e.text for e in events if type(e).__name__ == "OutputEvent"] == ["hi\n"]
    assert go() == "again"  # the caller's model moved on


def test_task_fail_and_clarify_arrive_as_themselves() -> None:
    from agex import TaskClarify, TaskFail

    agent = Agent(isolation=LEVEL, llm=scripted("task_fail('no')", "task_clarify('which?')"))

    @agent.task
    def go() -> str:
        """Go."""

    with pytest.raises(TaskFail, match="no"):
        go()
    with pytest.raises(TaskClarify, match="which"):
        go()


def test_a_sub_agent_called_from_a_worker_runs_in_a_worker_of_its_own() -> None:
    specialist = Agent(name="specialist", llm=scripted("import os\ntask_success(os.getpid())"))
    specialist.module(os, include=["getpid"])

    @specialist.task
    def pid() -> int:
        """Your process."""

    boss = Agent(
        name="boss",
        isolation=LEVEL,
        llm=scripted("import os\nmine = os.getpid()\ntask_success([mine, pid()])"),
    )
    boss.module(os, include=["getpid"])
    boss.fn(pid)

    @boss.task
    def both() -> list[int]:
        """Both processes."""

    events = []
    mine, theirs = both(on_event=events.append)
    assert len({mine, theirs, os.getpid()}) == 3
    assert {e.agent_name for e in events} == {"boss", "specialist"}


# -- containment ------------------------------------------------------------------------


def crash() -> None:
    """Crash the process (as C code can)."""
    import ctypes

    ctypes.string_at(0)


def spin_in_c() -> int:
    """A long call into C."""
    return len(str(10 ** (10**8)))


def test_a_crash_ends_only_its_run_with_a_clear_error() -> None:
    agent = Agent(isolation=LEVEL, llm=scripted("crash()"))
    agent.fn(crash)
    calm = Agent(isolation=LEVEL, llm=scripted("sleep(0.5)\ntask_success(7)"))
    calm.fn(time.sleep)

    @agent.task
    def boom() -> int:
        """Boom."""

    @calm.task
    def seven() -> int:
        """Seven."""

    async def both():
        return await asyncio.gather(boom.arun(), seven.arun(), return_exceptions=True)

    crashed, fine = asyncio.run(both())
    assert fine == 7
    assert isinstance(crashed, IsolationError)
    assert "SIGSEGV" in str(crashed)


def test_a_long_call_into_c_is_stopped_at_the_time_limit() -> None:
    agent = Agent(isolation=LEVEL, timeout=1.0, llm=scripted("spin_in_c()"))
    agent.fn(spin_in_c)

    @agent.task
    def spin() -> int:
        """Spin."""

    started = time.monotonic()
    with pytest.raises(TaskTimeout):
        spin()
    assert time.monotonic() - started < 5


def test_a_memory_bomb_meets_the_limit() -> None:
    agent = Agent(
        isolation=LEVEL,
        max_memory_mb=512,
        llm=scripted("x = 'a' * (1024 ** 3)", "task_success('survived')"),
    )

    @agent.task
    def bomb() -> str:
        """Bomb."""

    events = []
    assert bomb(on_event=events.append) == "survived"
    assert any("MemoryError" in getattr(e, "error", "") for e in events)


def test_cancel_kills_the_worker_at_once() -> None:
    agent = Agent(name="iso-cancel", isolation=LEVEL, llm=scripted("spin_in_c()"))
    agent.fn(spin_in_c)

    @agent.task
    def spin() -> int:
        """Spin."""

    threading.Timer(0.5, spin.cancel).start()
    started = time.monotonic()
    with pytest.raises(TaskCancelled):
        spin()
    assert time.monotonic() - started < 3


# -- assume the agent escaped ------------------------------------------------------------

SECRET_ENV = "AGEX_TEST_PLANTED_SECRET"


def attempt(what: str, target: str = "") -> str:
    """What an escaped agent would try, and how it ended."""
    import subprocess

    try:
        if what == "program":
            subprocess.run(["/bin/sh", "-c", f"echo ran > {target}"], check=True)
        elif what == "fork":
            pid = os.fork()
            if pid == 0:
                os._exit(0)
        elif what == "tcp":
            host, port = target.rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=2).close()
        elif what == "write":
            with open(target, "w") as f:
                f.write("escaped")
        elif what == "read":
            with open(target) as f:
                return "read: " + f.read()
        elif what == "environ":
            return "env: " + repr(os.environ.get(SECRET_ENV))
        elif what == "scratch":
            with open("scratch-file", "w") as f:
                f.write("ok")
            return "wrote scratch"
        return "done"
    except Exception as exc:
        return f"stopped: {type(exc).__name__}: {exc}"


def run_attempt(what: str, target: str = "") -> str:
    agent = Agent(isolation=LEVEL, llm=scripted(f"task_success(attempt({what!r}, {target!r}))"))
    agent.fn(attempt)

    @agent.task
    def escape() -> str:
        """Try."""

    result: str = escape()
    return result


def test_escaped_code_cannot_run_a_program(tmp_path) -> None:
    marker = tmp_path / "ran"
    got = run_attempt("program", str(marker))
    assert got.startswith("stopped: PermissionError"), got
    assert not marker.exists()


def test_escaped_code_cannot_start_a_process() -> None:
    assert run_attempt("fork").startswith("stopped: PermissionError")


def test_escaped_code_cannot_reach_the_network() -> None:
    if LEVEL != "kernel":
        pytest.skip("network is closed at isolation kernel")
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    host, port = server.getsockname()
    got = run_attempt("tcp", f"{host}:{port}")
    assert got.startswith("stopped:"), got
    with pytest.raises(TimeoutError):
        server.accept()  # nothing ever connected
    server.close()


def test_escaped_code_cannot_write_outside_its_scratch_or_read_secrets(tmp_path) -> None:
    if LEVEL != "kernel":
        pytest.skip("files are closed at isolation kernel")
    token = tmp_path / "token"
    token.write_text("s3cret")
    outside = tmp_path / "escaped"
    assert run_attempt("write", str(outside)).startswith("stopped: PermissionError")
    assert not outside.exists()
    assert run_attempt("read", str(token)).startswith("stopped: PermissionError")
    assert run_attempt("scratch") == "wrote scratch"


def test_escaped_code_sees_no_secrets_in_its_environment(monkeypatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "planted")
    assert run_attempt("environ") == "env: None"


# -- refused before anything runs ----------------------------------------------------------


def test_live_state_cannot_be_isolated() -> None:
    with pytest.raises(ValueError, match="live state"):
        Agent(name="x", isolation="process", state=connect_state(type="live"))


def test_kernel_isolation_where_it_cannot_be_had_is_refused_at_agent(monkeypatch) -> None:
    from agex.isolation import confine

    monkeypatch.setattr(confine, "kernel_unavailable", lambda: "this system has no seccomp")
    with pytest.raises(ValueError, match='isolation="kernel" cannot be had here: this system'):
        Agent(isolation="kernel")


@pytest.mark.parametrize("bad", ["strong", 1, "Kernel"])
def test_an_unknown_isolation_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="isolation must be one of"):
        Agent(isolation=bad)
