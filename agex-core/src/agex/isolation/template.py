"""The template: a small, clean process that forks workers.

Started by a supervisor as a fresh interpreter (``python -m agex.isolation.template``),
with no threads, no secrets in its environment and nothing of the supervisor's memory, it
imports what a worker needs once and then forks a worker per request: a worker starts in
about a millisecond, already holding agex, and never a copy of a multi-threaded server.

It answers on one ``SOCK_SEQPACKET`` socket, a JSON message per packet: ``fork`` (the
worker's end of its channel arrives with the request) and ``end`` (kill a worker, saying how
it ended unless ``reply`` is false; ``exiting``: one whose channel closed, given a moment to
finish dying first). Workers are reaped as they end. When the supervisor goes away, it
kills its workers and exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any

#: What a worker needs, imported once here rather than in every worker.
PRELOAD = (
    "agex.agent",
    "agex.isolation.confine",
    "agex.isolation.worker",
    "agex.loop",
    "agex.remote.envelope",
    "agex.remote.outcome",
    "agex.remote.shipping",
    "agex.remote.values",
    "agex.sandbox.tracebacks",
    "agex.sandbox.watchdog",
    "agex.state.pickling",
    "cloudpickle",
)
MAX_MESSAGE = 1 << 20


def main(fd: int) -> None:
    control = socket.socket(fileno=fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when it ends
    setup = json.loads(control.recv(MAX_MESSAGE))  # the import path came on the command line
    root = setup["scratch"]
    warmup = _preload()
    children = Children(os.open(setup["trash"], os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
    signal.signal(signal.SIGCHLD, lambda *_: children.reap())
    try:
        _serve(control, root, warmup, children)
    except OSError:
        pass  # the supervisor went away mid-request: nobody left to answer
    finally:
        for pid in list(children.running):
            children.end(pid, 0.0)
        shutil.rmtree(root, ignore_errors=True)  # the supervisor may be gone without a word


def _serve(control: socket.socket, root: str, warmup: bytes, children: Children) -> None:
    while True:
        data, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
        if not data:
            return
        request = json.loads(data)
        if request["op"] == "fork":
            scratch = tempfile.mkdtemp(prefix="agex-worker-", dir=root)
            pid = os.fork()
            if pid == 0:
                _child(control, fds[0], request["spec"], scratch, warmup, children.trash)
            os.close(fds[0])
            children.running[pid] = scratch
            control.send(json.dumps({"pid": pid}).encode())
        else:  # end
            status = children.end(request["pid"], 1.0 if request.get("exiting") else 0.0)
            if request.get("reply", True):
                control.send(json.dumps({"status": status}).encode())


class Children:
    """The workers forked, reaped as they end (on SIGCHLD, between requests), and how the
    last ones ended, for a supervisor that asks."""

    def __init__(self, trash: int) -> None:
        #: The supervisor's trash directory, held open: a worker cannot swap it for a link.
        self.trash = trash
        self.running: dict[int, str] = {}  # pid -> scratch directory
        self.ended: dict[int, str] = {}

    def reap(self) -> None:
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._gone(pid, describe(status))

    def end(self, pid: int, wait: float) -> str:
        """Kill a worker if it still runs (after ``wait`` seconds, for one on its way out);
        how it ended ("stopped": by us)."""
        deadline = time.monotonic() + wait
        while pid in self.running and time.monotonic() < deadline:
            time.sleep(0.002)
            self.reap()
        if pid in self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self._gone(pid, "stopped")
        return self.ended.get(pid, "gone")

    def _gone(self, pid: int, status: str) -> None:
        scratch = self.running.pop(pid, None)
        if scratch is not None:
            # Deleting what a worker left can take long (it may have made a million files):
            # out of the way here, where every fork waits; the supervisor sweeps the trash.
            with contextlib.suppress(OSError):
                os.rename(scratch, str(pid), dst_dir_fd=self.trash)
        self.ended[pid] = status
        if len(self.ended) > 4096:  # only recent endings are asked about
            del self.ended[next(iter(self.ended))]


def _preload() -> bytes:
    """Import what workers need; the task each worker runs once to warm itself up."""
    import importlib

    from agex import plugins

    for name in PRELOAD:
        importlib.import_module(name)
    # Finding the providers reads every distribution's entry points: once, here.
    plugins.create("serializer", "cloudpickle")
    plugins.resolve("host", "local")
    plugins.resolve("llm", "scripted")
    # What the kernel offers is asked once, here: workers inherit the answers.
    from agex.isolation import confine, landlock

    confine.kernel_unavailable()
    with contextlib.suppress(OSError):
        landlock.abi_version()
    warmup = _warmup_task()
    gc.collect()
    gc.freeze()  # objects inherited by workers stay shared: the collector leaves them be
    return warmup


def _warmup_task() -> bytes:
    """A small shipped task. A fresh worker's first run pays for everything done once per
    process (lazy imports, caches, its watchdog thread, pages copied on first write): a
    worker runs this one while it waits in the pool, so a real run does not. Workers load
    agents by name through pickle anyway; so does this."""
    import importlib

    from agex.protocols import Invocation
    from agex.remote.shipping import ship
    from agex.serializers import CloudpickleSerializer

    agent_module = importlib.import_module("agex.agent")
    scripted = importlib.import_module("agex.llm.scripted")
    agent = agent_module.Agent(name="warmup", llm=scripted.ScriptedLLM(responses=["..."]))
    task = agent.task(_warmup)
    return ship(Invocation(agent, task, {"n": 1}, "warmup"), CloudpickleSerializer())


def _warmup(n: int) -> int:
    """Warm up."""
    raise NotImplementedError  # a task's body: the agent writes the code


def _child(
    control: socket.socket,
    fd: int,
    spec: dict[str, Any],
    scratch: str,
    warmup: bytes,
    trash: int,
) -> None:
    code = 0
    try:
        control.close()
        os.close(trash)  # a handle on every ended worker's scratch: not the agent's to list
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):  # nothing a worker writes reaches the supervisor's logs
            os.dup2(null, target)
        os.close(null)
        from agex.isolation.worker import serve

        serve(socket.socket(fileno=fd), spec, scratch, warmup)
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def describe(status: int) -> str:
    """How a worker that ended by itself ended, in words."""
    if os.WIFEXITED(status):
        return f"exited with status {os.WEXITSTATUS(status)}"
    number = os.WTERMSIG(status)
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return f"signal {name}"


if __name__ == "__main__":
    main(int(sys.argv[1]))
