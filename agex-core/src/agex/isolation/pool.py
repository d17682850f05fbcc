"""The supervisor's side of worker processes: the template that forks them, and a warm pool
of workers already confined and waiting, so a run does not wait for one to start.

One :class:`Pool` per process (:func:`pool`), started on first use. Workers are confined as
their :class:`Spec` says; the pool keeps a few ready for each spec it was recently asked
for, and makes more in a thread of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
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
#: Seconds over which takes count towards how many workers to keep ready.
RECENT = 5.0
#: Workers started at once while the pool fills.
FORKING = 4
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

    def end(self, exiting: bool = False) -> str:
        """Kill the worker (if it still runs; ``exiting``: give one whose channel closed a
        moment to finish dying) and say how it ended. Idempotent."""
        with self.lock:
            if self.ended is None:
                self.sock.close()
                self.ended = self.template.end(self.pid, exiting)
            return self.ended

    def discard(self) -> None:
        """End a worker whose run is over, without waiting to hear how it ended."""
        with self.lock:
            if self.ended is None:
                self.sock.close()
                self.template.end(self.pid, reply=False)
                self.ended = "discarded"

    async def aend(self, exiting: bool = False) -> str:
        if self.ended is not None:
            return self.ended
        return await asyncio.to_thread(self.end, exiting)


class Template:
    """The fork server (``agex.isolation.template``), in a process of its own."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEPT}
        self.scratch = tempfile.mkdtemp(prefix="agex-scratch-")
        os.chmod(self.scratch, 0o711)  # workers' own directories inside it, not a listing
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "agex.isolation.template", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal is the supervisor's to handle
        )
        theirs.close()
        self.control = ours
        self.lock = threading.Lock()
        path = [p for p in sys.path if p]
        self._send({"path": path, "scratch": self.scratch})

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
        message = {"op": "end", "pid": pid, "exiting": exiting, "reply": reply}
        try:
            if not reply:
                with self.lock:
                    self._send(message)
                return "ended"
            return str(self._ask(message)["status"])
        except (OSError, WorkerGone):
            return "gone (the template process is gone)"

    def close(self) -> None:
        self.control.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
        import shutil

        shutil.rmtree(self.scratch, ignore_errors=True)


class Pool:
    """Ready workers by spec, refilled in the background: as many as were taken in the
    last few seconds (at least ``warm``, at most ``most``), so that a burst of runs finds
    workers waiting, as the one before it did."""

    def __init__(self, warm: int = WARM, most: int = 256) -> None:
        self.warm, self.most = warm, most
        self._template: Template | None = None
        self._ready: dict[Spec, deque[Worker]] = {}
        self._taken: dict[Spec, deque[float]] = {}
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
            self._taken.setdefault(spec, deque()).append(time.monotonic())
            worker = ready.popleft() if ready else None
        self._refill()
        if worker is not None:
            return worker
        return await asyncio.to_thread(self.template.fork, spec)

    def prepare(self, spec: Spec) -> dict[str, str]:
        """Start the template and warm workers for ``spec`` now (a server at start-up); the
        layers such a worker has."""
        worker = self.template.fork(spec)
        with self._lock:
            self._ready.setdefault(spec, deque()).append(worker)
        self._refill()
        return worker.layers

    def _wants(self, spec: Spec, now: float) -> int:
        """How many ready workers ``spec`` should have: as many as were taken lately."""
        taken = self._taken.setdefault(spec, deque())
        while taken and taken[0] < now - RECENT:
            taken.popleft()
        return max(self.warm, min(len(taken), self.most))

    def _refill(self) -> None:
        with self._lock:
            if self._filler is None or not self._filler.is_alive():
                self._filler = threading.Thread(target=self._fill, name="agex-pool", daemon=True)
                self._filler.start()
        self._wanted.set()

    def _fill(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(FORKING, thread_name_prefix="agex-fork") as forking:
            while True:
                self._wanted.wait(RECENT)
                self._wanted.clear()
                while self._top_up(forking):
                    pass

    def _top_up(self, forking: Any) -> bool:
        """One round of forking towards what each spec wants (and ending what it no longer
        does); whether any was short."""
        now = time.monotonic()
        with self._lock:
            short = {}
            for spec, ready in list(self._ready.items()):
                wanted = self._wants(spec, now)
                while len(ready) > wanted:
                    ready.pop().discard()
                if len(ready) < wanted:
                    short[spec] = min(wanted - len(ready), FORKING)
        if not short:
            return False
        jobs = [
            (s, forking.submit(self.template.fork, s)) for s, n in short.items() for _ in range(n)
        ]
        for spec, job in jobs:
            try:
                worker = job.result()
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
