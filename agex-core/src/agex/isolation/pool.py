"""The supervisor's side of worker processes: the template that forks them, and a warm pool
of workers already confined and waiting, so a run does not wait for one to start.

One :class:`Pool` per process (:func:`pool`), started on first use. Workers are confined as
their :class:`Spec` says; the pool keeps a few ready for each spec it was recently asked
for, and makes more in a thread of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agex.isolation import channel

#: Workers kept ready per spec at the least; more after a burst (see Pool).
WARM = 2
#: Seconds between sweeps of ended workers' scratch directories.
SWEEP = 1.0
#: Seconds over which the most workers in use at once says how many to keep ready.
RECENT = 60.0
#: Environment variables a template (and so every worker) inherits; nothing else.
_ENV_KEPT = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")


@dataclass(frozen=True)
class Spec:
    """How a worker is confined (see ``agex.isolation.confine``)."""

    level: str = "kernel"
    memory_mb: int | None = 1024
    cpu_seconds: int | None = None
    network: bool = False
    #: Paths workers may read besides Python and its packages ...
    readable: tuple[str, ...] = ()
    #: ... and paths they must not, even where those would be (a state directory).
    hidden: tuple[str, ...] = ()

    def message(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "limits": {"memory_mb": self.memory_mb, "cpu_seconds": self.cpu_seconds},
            "network": self.network,
            "readable": list(self.readable),
            "hidden": list(self.hidden),
        }


class WorkerGone(Exception):
    """The worker process ended; ``status`` says how."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Worker:
    """One confined worker process, ready for one run."""

    pid: int
    sock: socket.socket
    layers: dict[str, str]
    template: Template
    ended: str | None = field(default=None)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Called once when the worker ends (the pool counts the workers in use).
    released: Any = None

    def _release(self) -> None:
        released, self.released = self.released, None
        if released is not None:
            released()

    def end(self, exiting: bool = False) -> str:
        """Kill the worker (if it still runs; ``exiting``: give one whose channel closed a
        moment to finish dying) and say how it ended. Idempotent."""
        with self.lock:
            if self.ended is None:
                self.sock.close()
                self.ended = self.template.end(self.pid, exiting)
                self._release()
            return self.ended

    def alive(self) -> bool:
        """Whether a ready worker still waits: one that ended has its channel closed (a
        ready worker never writes first)."""
        import select

        try:
            return not select.select([self.sock], [], [], 0)[0]
        except (OSError, ValueError):
            return False

    def discard(self) -> None:
        """End a worker whose run is over, without waiting to hear how it ended."""
        with self.lock:
            if self.ended is None:
                self.sock.close()
                self.template.end(self.pid, reply=False)
                self.ended = "discarded"
                self._release()

    async def aend(self, exiting: bool = False) -> str:
        if self.ended is not None:
            return self.ended
        return await asyncio.to_thread(self.end, exiting)


#: How the template starts: with this process's import path, then agex's template module.
_START = (
    "import runpy, sys; sys.path[:] = sys.argv[2:]; "
    "runpy.run_module('agex.isolation.template', run_name='__main__')"
)


class Template:
    """The fork server (``agex.isolation.template``), in a process of its own."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT}
        self.scratch = tempfile.mkdtemp(prefix="agex-scratch-")
        os.chmod(self.scratch, 0o711)  # workers' own directories inside it, not a listing
        # Where ended workers' directories go to be deleted: apart from theirs, and held
        # open, so that nothing a worker does turns the deleting towards other files.
        self.trash = tempfile.mkdtemp(prefix="agex-trash-")
        self._trash = os.open(self.trash, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        path = [p for p in sys.path if p]
        self.process = subprocess.Popen(
            # -I: nothing of the environment; agex is found where this process found it
            # (not only in site-packages: on PYTHONPATH, as in a Modal container).
            [sys.executable, "-I", "-c", _START, str(theirs.fileno()), *path],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal is the supervisor's to handle
        )
        theirs.close()
        self.control = ours
        self.lock = threading.Lock()
        self._ending: queue.SimpleQueue[int] = queue.SimpleQueue()
        threading.Thread(target=self._end_queued, name="agex-end", daemon=True).start()
        threading.Thread(target=self._sweep, name="agex-sweep", daemon=True).start()
        self._send({"scratch": self.scratch, "trash": self.trash})

    def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        socket.send_fds(self.control, [data], fds or [])

    def _ask(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        with self.lock:
            self._send(message, fds)
            reply = self.control.recv(1 << 16)
        if not reply:
            raise WorkerGone("the template process is gone")
        answer: dict[str, Any] = json.loads(reply)
        return answer

    def fork(self, spec: Spec) -> Worker:
        """A new worker, confined and ready (blocks until it says so)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            reply = self._ask({"op": "fork", "spec": spec.message()}, [theirs.fileno()])
        finally:
            theirs.close()
        worker = Worker(reply["pid"], ours, {}, self)
        try:
            header, _ = channel.recv(ours, limit=1 << 16)
        except (OSError, channel.BadFrame):
            raise WorkerGone(f"the worker did not start ({worker.end()})") from None
        if header.get("op") != "ready":
            worker.end()
            raise WorkerGone(f"the worker could not confine itself: {header.get('outcome')}")
        worker.layers = header["layers"]
        ours.setblocking(False)
        return worker

    def end(self, pid: int, exiting: bool = False, reply: bool = True) -> str:
        """End a worker; how it ended. Without ``reply``, only queued: whoever calls (an
        event loop) never waits for the template, which may be busy forking."""
        if not reply:
            self._ending.put(pid)
            return "ended"
        try:
            return str(self._ask({"op": "end", "pid": pid, "exiting": exiting})["status"])
        except (OSError, WorkerGone):
            return "gone (the template process is gone)"

    def _sweep(self) -> None:
        """Delete what ended workers left in their scratch directories, away from the
        template (which forks) and from whoever ends workers."""
        import shutil

        while self.process.poll() is None:
            time.sleep(SWEEP)
            with contextlib.suppress(OSError):
                for name in os.listdir(self._trash):
                    shutil.rmtree(name, ignore_errors=True, dir_fd=self._trash)

    def _end_queued(self) -> None:
        while True:
            pid = self._ending.get()
            try:
                with self.lock:
                    self._send({"op": "end", "pid": pid, "reply": False})
            except OSError:
                return  # the template is gone, and its workers with it

    def close(self) -> None:
        self.control.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.rmtree(self.trash, ignore_errors=True)


class Pool:
    """Ready workers by spec, refilled in the background: as many as were in use at once in
    the last few seconds (at least ``warm``, at most ``most``), so that a burst of runs
    finds workers waiting, as the one before it did."""

    def __init__(self, warm: int = WARM, most: int = 256) -> None:
        self.warm, self.most = warm, most
        self._template: Template | None = None
        self._ready: dict[Spec, deque[Worker]] = {}
        self._busy: dict[Spec, int] = {}  # workers in use now
        self._peaks: dict[Spec, deque[tuple[float, int]]] = {}  # (when, how many in use)
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._filler: threading.Thread | None = None

    @property
    def template(self) -> Template:
        with self._lock:
            if self._template is None or self._template.process.poll() is not None:
                self._template = Template()
            return self._template

    async def take(self, spec: Spec) -> Worker:
        """A ready worker confined as ``spec`` says: a warm one if there is one."""
        with self._lock:
            ready = self._ready.setdefault(spec, deque())
            busy = self._busy[spec] = self._busy.get(spec, 0) + 1
            self._peaks.setdefault(spec, deque()).append((time.monotonic(), busy))
            worker = None
            while ready and worker is None:
                worker = ready.popleft()
                if not worker.alive():
                    worker.discard()  # ended while it waited (killed by someone): not handed out
                    worker = None
            empty = not ready
        if empty:  # else the next ones are made once this run ends: not beside it
            self._refill()
        if worker is None:
            try:
                worker = await asyncio.to_thread(self.template.fork, spec)
            except BaseException:
                self._done(spec)
                raise
        worker.released = lambda: self._done(spec)
        return worker

    def _done(self, spec: Spec) -> None:
        with self._lock:
            self._busy[spec] -= 1
        self._refill()  # a run ended: time to make its successor

    def prepare(self, spec: Spec) -> dict[str, str]:
        """Start the template and warm workers for ``spec`` now (a server at start-up); the
        layers such a worker has."""
        worker = self.template.fork(spec)
        with self._lock:
            self._ready.setdefault(spec, deque()).append(worker)
        self._refill()
        return worker.layers

    def _wants(self, spec: Spec, now: float) -> int:
        """How many ready workers ``spec`` should have: as many as were in use at once
        lately, made while few runs are in flight (making workers takes the CPU the runs
        need); ``warm`` at all times."""
        peaks = self._peaks.setdefault(spec, deque())
        while peaks and peaks[0][0] < now - RECENT:
            peaks.popleft()
        if sum(self._busy.values()) > self.warm:
            return self.warm
        peak = max((n for _, n in peaks), default=0)
        return max(self.warm, min(peak, self.most))

    def _peak(self, spec: Spec) -> int:
        return max((n for _, n in self._peaks.get(spec, ())), default=0)

    def _refill(self) -> None:
        with self._lock:
            if self._filler is None or not self._filler.is_alive():
                self._filler = threading.Thread(target=self._fill, name="agex-pool", daemon=True)
                self._filler.start()
        self._wanted.set()

    def _fill(self) -> None:
        while True:
            self._wanted.wait(RECENT)
            self._wanted.clear()
            while self._top_up():
                pass

    def _top_up(self) -> bool:
        """One round of forking towards what each spec wants (and ending what it no longer
        does); whether any was short."""
        now = time.monotonic()
        with self._lock:
            short = {}
            for spec, ready in list(self._ready.items()):
                wanted = self._wants(spec, now)
                while len(ready) > max(wanted, self._peak(spec)):
                    ready.pop().discard()
                if len(ready) < wanted:
                    short[spec] = wanted - len(ready)
        if not short:
            return False
        for spec in short:  # one at a time: the runs in flight need the CPU more
            try:
                worker = self.template.fork(spec)
            except Exception:
                with self._lock:  # this spec cannot be had: stop trying
                    self._ready.pop(spec, None)
                continue
            with self._lock:
                self._ready.setdefault(spec, deque()).append(worker)
        return True

    def close(self) -> None:
        with self._lock:
            workers = [w for ready in self._ready.values() for w in ready]
            self._ready.clear()
            template, self._template = self._template, None
        for worker in workers:
            worker.end()
        if template is not None:
            template.close()


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """This process's pool of workers."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool()
            atexit.register(_pool.close)
        return _pool
