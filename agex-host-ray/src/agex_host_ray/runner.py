"""What runs on the cluster: a runner, a Ray actor that runs shipped tasks, many at once, each
one's messages yielded while it runs (a Ray streaming generator).

A run's loop (the model's calls, state, sub-agents) runs here on asyncio, as on an agex
server; the agent's code runs in a confined worker process at the strongest isolation the
node offers, so it reaches neither Ray (its sockets, its object store, the cluster's token)
nor what this worker's environment holds.

Messages travel in batches, each one JSON text: a list of ``[kind, data]``, as
``agex.remote.messages`` writes them (events, model output, and the outcome last), of the
kinds the caller listens to; an empty list after :data:`BEAT` seconds without one, so that
the caller can tell a quiet run from a node that stopped answering. One Ray item costs
about the same whatever it carries: a batch takes what was written since the last.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import ray

#: Seconds without a message after which a run says it is alive.
BEAT = 2.0
#: Calls that must not wait behind a full runner's runs (``cancel``, ``ready``) have
#: places of their own.
CONTROL = "control"
CONTROLS = 4
#: Where Ray unpacks a runtime environment's code on a node.
RUNTIME = "/runtime_resources/"


class Runner:
    """A runner exits when it has had no run for ``scaledown`` seconds, so that the
    resources it holds (a GPU, say) go back to the cluster."""

    def __init__(self, scaledown: float) -> None:
        self.scaledown = scaledown
        self.running = 0
        self.idle_since = time.monotonic()
        #: What stops each run (and the event loop it waits on), by agent and session:
        #: ``cancel``, which Ray runs on another thread and loop, sets them.
        self.stops: dict[tuple[str, str], set[tuple[asyncio.AbstractEventLoop, Any]]] = {}
        #: Runs whose caller stopped them before they began here (their call was on its
        #: way): each stops as it begins. By run id, with when it was asked.
        self.stopped: dict[str, float] = {}
        self.runs: dict[str, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self.lock = threading.Lock()
        self._reaper: asyncio.Task[None] | None = None

    @ray.method(concurrency_group=CONTROL)
    async def ready(self, pins: list[str]) -> dict[str, Any]:
        """Where this runner is, how agent code is confined here, and which of ``pins``
        (``name==version``) this node lacks; once confined workers are ready to start (the
        template started, a warm worker forked). The caller asks it first."""
        if self._reaper is None:  # on the actor's own event loop
            self._reaper = asyncio.create_task(self._reap())
        isolation = _isolation()
        layers: dict[str, str] = {}
        if isolation.level != "none":
            from agex.isolation.pool import pool

            spec = isolation.spec(None, None, "this Ray worker")
            layers = await asyncio.to_thread(pool().prepare, spec)
        node = ray.get_runtime_context().get_node_id()
        return {
            "node": node,
            "isolation": isolation.level,
            "layers": layers,
            "lacking": [pin for pin in pins if not _installed(pin)],
        }

    async def run(
        self, envelope: dict[str, Any], payload: bytes, wants: list[str]
    ) -> AsyncIterator[str]:
        """The shipped task, run by ``agex.remote``; its messages of the kinds in ``wants``
        ("event", "tokens") and its outcome, as they come."""
        from agex.remote import Envelope, Refused, batches
        from agex.remote.messages import ENDS
        from agex.remote.outcome import failure

        self.running += 1
        try:
            try:
                checked = Envelope.from_json(envelope)
            except Refused as refused:
                refusal = RuntimeError(f"the Ray worker refused the task: {refused}")
                yield _text([("error", failure(refusal))])
                return
            stop = asyncio.Event()
            key = (checked.agent, checked.session)
            mine = (asyncio.get_running_loop(), stop)
            with self.lock:
                self.stops.setdefault(key, set()).add(mine)
                if self.stopped.pop(checked.run, None) is not None:
                    stop.set()
                self.runs[checked.run] = mine
            kinds = {*wants, *ENDS}
            found = batches(checked, payload, isolation=_isolation(), stop=stop, keepalive=BEAT)
            try:
                async for batch in found:
                    sent = [(m.kind, m.data) for m in batch if m.kind in kinds]
                    if sent or not batch:  # an empty batch: the beat
                        yield _text(sent)
            finally:
                await found.aclose()
                with self.lock:
                    runs = self.stops.get(key, set())
                    runs.discard(mine)
                    if not runs:
                        self.stops.pop(key, None)
                    self.runs.pop(checked.run, None)
        finally:
            self.running -= 1
            self.idle_since = time.monotonic()

    @ray.method(concurrency_group=CONTROL)
    async def stop(self, run: str) -> None:
        """Stop one run, which its caller no longer follows: now, or as it begins here."""
        now = time.monotonic()
        with self.lock:
            found = self.runs.get(run)
            if found is None:
                for old in [r for r, when in self.stopped.items() if now - when > 3600]:
                    del self.stopped[old]
                self.stopped[run] = now
        if found is not None:
            found[0].call_soon_threadsafe(found[1].set)

    @ray.method(concurrency_group=CONTROL)
    async def cancel(self, agent: str, session: str) -> int:
        """Stop this runner's runs of ``agent`` in ``session``; how many there were. Each
        ends with TaskCancelled, which its caller receives."""
        with self.lock:
            runs = [run for run in self.stops.get((agent, session), ()) if not run[1].is_set()]
        for loop, stop in runs:
            loop.call_soon_threadsafe(stop.set)
        return len(runs)  # runs already stopping are not counted again

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(min(self.scaledown / 4, 30.0))
            if not self.running and time.monotonic() - self.idle_since > self.scaledown:
                # Ends it once this call returns: an exit Ray reports as intended.
                ray.get_runtime_context().current_actor.__ray_terminate__.remote()
                return


def _installed(pin: str) -> bool:
    import importlib.metadata

    name, _, version = pin.partition("==")
    try:
        return importlib.metadata.version(name) == version
    except importlib.metadata.PackageNotFoundError:
        return False


def _text(messages: list[tuple[str, Any]]) -> str:
    return json.dumps(messages, separators=(",", ":"))


def _isolation() -> Any:
    """As on an agex server: agent code runs in a confined worker, at the strongest level
    this node offers. This process can reach the whole cluster; agent code must not.

    Agent code may read what is on this process's ``sys.path``, and Ray puts its caller's
    working directory and script folder there (on the caller's machine, the user's project,
    ``.env`` files and all). Only Python's own folders, its site-packages and the code Ray
    unpacked for this runner stay readable: every other entry, and the working directory,
    is hidden. The agent's own code does not need them: it travels in the runtime
    environment.
    """
    import os
    import site
    import sys

    from agex.isolation import strongest
    from agex.isolation.settings import Isolation

    safe = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    safe += site.getsitepackages()

    def kept(path: str) -> bool:
        path = os.path.abspath(path)
        unpacked = RUNTIME in path  # py_modules and working_dir, as Ray unpacked them
        return unpacked or any(path == s or path.startswith(s.rstrip("/") + "/") for s in safe)

    hidden = [entry for entry in dict.fromkeys([*sys.path, os.getcwd()]) if entry]
    return Isolation(
        level=strongest(),
        hidden=tuple(os.path.abspath(entry) for entry in hidden if not kept(entry)),
        # Sub-agents with ray hosts of their own run on this cluster, as their own runners.
        hosts=("ray",),
    )
