"""Tasks whose agent code runs in a confined worker process (``Agent(isolation=...)`` on
the local host): real worker processes, forked from the template, confined by the kernel.

"Assume the agent escaped": a registered host function runs in the worker with all the
rights agent code would have after an escape from the in-process sandbox, so what it can do
is what an escaped agent can do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import signal
import socket
import threading
import time

import pytest

from agex import Agent, TaskCancelled, TaskTimeout, connect_llm, connect_state
from agex.errors import IsolationError, StateLoadError
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
        elif what == "memfd":
            os.memfd_create("hidden")
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
        Agent(name="x", isolation=LEVEL, state=connect_state(type="live"))


def test_kernel_isolation_where_it_cannot_be_had_is_refused_at_agent(monkeypatch) -> None:
    from agex import isolation
    from agex.isolation import confine

    monkeypatch.setattr(confine, "kernel_unavailable", lambda: "this system has no seccomp")
    isolation._available.cache_clear()
    monkeypatch.setattr(isolation, "_available", isolation._available.__wrapped__)
    with pytest.raises(ValueError, match='isolation="kernel" cannot be had here: this system'):
        Agent(isolation="kernel")


@pytest.mark.parametrize("bad", ["strong", 1, "Kernel"])
def test_an_unknown_isolation_is_refused(bad) -> None:
    with pytest.raises(ValueError, match="isolation must be one of"):
        Agent(isolation=bad)


# -- the worker cannot steer the trusted side -----------------------------------------------


def speak(frames: list, wait: bool = True) -> str:
    """Escaped code talking to the supervisor over the worker's own channel: ``frames`` of
    (header, blobs) sent as they are; the first answer, described."""
    from agex.isolation import channel

    sock = socket.socket(fileno=os.dup(channel_fd()))
    sock.setblocking(True)
    # All in one write: the supervisor reads them back to back.
    sock.sendall(
        b"".join(b"".join(channel.encode(h, [b.encode() for b in bs])) for h, bs in frames)
    )
    if not wait:
        time.sleep(5)
        return "no answer"
    answer, _ = channel.recv(sock)
    return str(answer.get("outcome", {}).get("message"))


def channel_fd() -> int:
    """The worker's socket to its supervisor, as escaped code finds it."""
    import stat

    for fd in range(3, 64):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                return fd
        except OSError:
            continue
    raise LookupError("no socket")


def run_speaking(frames: list, wait: bool = True, **options) -> str:
    agent = Agent(
        isolation=LEVEL, llm=scripted(f"task_success(speak({frames!r}, {wait!r}))"), **options
    )
    agent.fn(speak)

    @agent.task
    def escape() -> str:
        """Try."""

    result: str = escape()
    return result


def test_a_worker_can_only_call_the_sub_agents_its_caller_declared() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    host = {"provider": "http", "url": url}  # ignored: hosts come from the caller
    call = {"op": "call", "call": 1, "name": "nope", "host": host, "envelope": {"agent": "x"}}
    said = run_speaking([(call, ["payload"])])
    assert "registered no sub-agent named 'nope'" in said
    with pytest.raises(TimeoutError):
        listener.accept()  # the caller never went anywhere
    listener.close()


def test_a_second_call_before_an_answer_ends_the_run() -> None:
    call = {"op": "call", "call": 1, "name": "nope"}
    with pytest.raises(IsolationError, match="broke the protocol"):
        run_speaking([(call, ["p"]), ({**call, "call": 2}, ["p"])], wait=False)


def test_a_frame_larger_than_the_workers_memory_is_refused_before_it_is_read() -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    agent = Agent(isolation=LEVEL, max_memory_mb=128, llm=scripted("task_success(boast())"))
    agent.fn(boast)

    @agent.task
    def big() -> str:
        """Boast."""

    with pytest.raises(IsolationError, match="broke the protocol"):
        big()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 100 * 1024  # KiB: nothing near the announced size was allocated


def boast() -> str:
    """Announce a frame of 1 GiB, send 12 bytes."""
    import struct

    os.write(channel_fd(), struct.pack("!QI", 1 << 30, 10))
    time.sleep(5)
    return "no"


def test_state_an_isolated_run_wrote_is_never_loaded_in_this_process(tmp_path) -> None:
    marker = tmp_path / "ran-in-the-caller"
    state = connect_state(type="versioned", storage="memory")
    agent = Agent(
        name=f"iso-shaped-{time.monotonic_ns()}",
        isolation=LEVEL,
        state=state,
        llm=scripted("count = 3\nbad = plant()\ntask_success(count)"),
    )
    agent.fn(functools.partial(plant, str(marker)), name="plant")

    @agent.task
    def keep() -> int:
        """Keep."""

    assert keep() == 3
    # Read back through a worker, as results are: loading ran its code there, where it could
    # not start a program, and nothing here.
    assert agent.state().values()["count"] == 3
    assert not marker.exists()
    # An agent of that name without isolation refuses to load it in this process.
    plain = Agent(name=agent.name, state=state, llm=scripted("task_success(count)"))

    @plain.task
    def again() -> int:
        """Again."""

    with pytest.raises(StateLoadError, match="written by agent code in an isolated worker"):
        again()
    assert not marker.exists()


class Planted:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def plant(marker: str) -> Planted:
    return Planted(marker)


def test_plain_values_an_isolated_run_wrote_can_be_read_back() -> None:
    state = connect_state(type="versioned", storage="memory")
    agent = Agent(
        name=f"iso-read-{time.monotonic_ns()}",
        isolation=LEVEL,
        state=state,
        llm=scripted(
            "count = 3\nnames = ['a', 'b']\ntask_success(count)",
            "class Mine:\n    pass\np = Mine()\ntask_success(0)",
        ),
    )

    @agent.task
    def keep() -> int:
        """Keep."""

    keep()
    assert agent.state().values() == {"count": 3, "names": ["a", "b"]}
    with contextlib.suppress(Exception):
        keep()  # stores an instance of the agent's class, then runs out of replies
    values = agent.state().values()  # a class no annotation names does not cross ...
    assert values["count"] == 3
    assert repr(values["p"]).startswith("<Mine: <")  # ... it is shown as what it is
    assert values["Mine"].type == "type"


def test_escaped_code_cannot_make_memory_no_limit_counts() -> None:
    if LEVEL != "kernel":
        pytest.skip("memfd is refused at isolation kernel")
    assert run_attempt("memfd").startswith("stopped: PermissionError")


def test_a_ready_worker_that_died_is_not_handed_out() -> None:
    import signal

    from agex.isolation.pool import pool
    from agex.isolation.settings import LOCAL

    spec = LOCAL.spec(LEVEL, None)
    agent = Agent(isolation=LEVEL, llm=scripted("task_success(5)", "task_success(6)"))

    @agent.task
    def five() -> int:
        """Five."""

    assert five() == 5  # the pool has workers ready for this spec now
    time.sleep(0.5)
    ready = list(pool()._ready.get(spec, ()))
    assert ready
    for worker in ready:
        os.kill(worker.pid, signal.SIGKILL)  # as an escaped agent at "process" could
    time.sleep(0.2)
    assert five() == 6


def test_a_large_value_an_isolated_run_wrote_reads_back() -> None:
    state = connect_state(type="versioned", storage="memory")
    agent = Agent(
        name=f"iso-large-{time.monotonic_ns()}",
        isolation=LEVEL,
        state=state,
        llm=scripted("big = 'a' * (20 * 1024 * 1024)\ntask_success(1)"),
    )

    @agent.task
    def keep() -> int:
        """Keep."""

    keep()
    assert len(agent.state().values()["big"]) == 20 * 1024 * 1024


def litter(count: int) -> int:
    """Leave many files in the worker's scratch directory."""
    for i in range(count):
        with open(f"f{i}", "w"):
            pass
    return count


def _holds(folder: str) -> bool:
    """Whether ``folder`` holds anything; one being swept away as we look holds nothing."""
    try:
        with os.scandir(folder) as listing:
            return any(listing)
    except FileNotFoundError:
        return False


def test_what_a_worker_leaves_is_swept_after_its_run() -> None:
    from agex.isolation.pool import pool

    agent = Agent(isolation=LEVEL, llm=scripted("task_success(litter(5000))"))
    agent.fn(litter)

    @agent.task
    def leave() -> int:
        """Leave files."""

    template = pool().template
    assert leave() == 5000
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        left = os.listdir(template.trash) + [
            d for d in os.listdir(template.scratch) if _holds(os.path.join(template.scratch, d))
        ]
        if not left:
            break
        time.sleep(0.2)
    assert not left  # nothing of the run is left behind: neither in trash nor in scratch


def _children(pid: int) -> set[int]:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            found.update(int(child) for child in f.read().split())
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_a_worker_dies_with_its_template_even_while_agent_code_spins() -> None:
    """A template killed outright (as a host that ends its process's children does) takes
    its workers with it: agent code spinning in one would otherwise run on, past every limit
    its supervisor kept."""
    from agex.isolation.pool import pool

    agent = Agent(name="iso-orphan", isolation=LEVEL, llm=scripted("spin_in_c()"))
    agent.fn(spin_in_c)
    acting = threading.Event()

    @agent.task
    def spin() -> int:
        """Spin."""

    def work() -> None:
        with contextlib.suppress(BaseException):
            spin(on_event=lambda e: acting.set() if type(e).__name__ == "ActionEvent" else None)

    template = pool().template.process.pid
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert acting.wait(30)
    workers = _children(template)
    assert workers
    os.kill(template, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, workers))
    spin.cancel()
    thread.join(30)
