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


class Runner:
    """A runner exits when it has had no run for ``scaledown`` seconds, so that the
    resources it holds (a GPU, say) go back to the cluster."""

    def __init__(self, scaledown: float, secret: str) -> None:
        self.scaledown = scaledown
        #: Given by the process that made this runner, and asked of every run: a runner is
        #: a named actor any driver of the cluster can find, and runs with its owner's keys.
        self.secret = secret
        self.running = 0
        self.idle_since = time.monotonic()
        #: What stops each run, by agent and session: ``cancel`` sets them.
        self.stops: dict[tuple[str, str], set[asyncio.Event]] = {}
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
        self, envelope: dict[str, Any], payload: bytes, wants: list[str], secret: str
    ) -> AsyncIterator[str]:
        """The shipped task, run by ``agex.remote``; its messages of the kinds in ``wants``
        ("event", "tokens") and its outcome, as they come. Only for the process that made
        this runner (``secret``)."""
        import hmac

        from agex.remote import Envelope, Refused, batches
        from agex.remote.messages import ENDS
        from agex.remote.outcome import failure

        self.running += 1
        try:
            try:
                if not hmac.compare_digest(str(secret).encode(), self.secret.encode()):
                    raise Refused(403, "this runner runs tasks for the process that made it")
                checked = Envelope.from_json(envelope)
            except Refused as refused:
                refusal = RuntimeError(f"the Ray worker refused the task: {refused}")
                yield _text([("error", failure(refusal))])
                return
            stop = asyncio.Event()
            key = (checked.agent, checked.session)
            self.stops.setdefault(key, set()).add(stop)
            kinds = {*wants, *ENDS}
            found = batches(checked, payload, isolation=_isolation(), stop=stop, keepalive=BEAT)
            try:
                async for batch in found:
                    sent = [(m.kind, m.data) for m in batch if m.kind in kinds]
                    if sent or not batch:  # an empty batch: the beat
                        yield _text(sent)
            finally:
                await found.aclose()
                runs = self.stops.get(key, set())
                runs.discard(stop)
                if not runs:
                    self.stops.pop(key, None)
        finally:
            self.running -= 1
            self.idle_since = time.monotonic()

    @ray.method(concurrency_group=CONTROL)
    async def cancel(self, agent: str, session: str) -> int:
        """Stop this runner's runs of ``agent`` in ``session``; how many there were. Each
        ends with TaskCancelled, which its caller receives."""
        found = [stop for stop in self.stops.get((agent, session), ()) if not stop.is_set()]
        for stop in found:
            stop.set()
        return len(found)  # runs already stopping are not counted again

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

    Ray puts its caller's working directory on a worker's ``sys.path`` (on the caller's
    machine, the user's project, ``.env`` files and all), and agent code may read what is on
    the path: that folder is hidden from it. The agent's own code does not need it: it
    travels in the runtime environment.
    """
    import os
    import sys

    from agex.isolation import strongest
    from agex.isolation.settings import Isolation

    here = os.getcwd()
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    # Hiding a folder hides the path entries at or above it; what lies below it (a
    # virtualenv in the project) stays readable. Only a folder inside Python is kept.
    in_python = any(here == path or here.startswith(path.rstrip("/") + "/") for path in python)
    return Isolation(
        level=strongest(),
        hidden=() if in_python else (here,),
        # Sub-agents with ray hosts of their own run on this cluster, as their own runners.
        hosts=("ray",),
    )
