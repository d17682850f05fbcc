"""A worker process's life: confined first, then one run, then gone.

It loads what the client shipped (the task, its agent and registrations, the arguments),
loads the session's variables as steps need them (asking the supervisor for their bytes),
runs each step's code and serializes what changed, checks
the value given to ``task_success`` and encodes it for the caller. It answers its supervisor
over one socket with plain data (see :mod:`agex.isolation.channel`), and asks it to run
the sub-agents its agent code calls: their models, storages and hosts are the supervisor's.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
from collections.abc import Sequence
from typing import Any

from agex.isolation import channel

#: Seconds between checks for a sub-agent's answer: the step's time limit lands in between.
_POLL = 0.05


def serve(sock: socket.socket, spec: dict[str, Any], scratch: str, warmup: bytes) -> None:
    """Confine this process as ``spec`` says, warm it up on the ``warmup`` task, tell the
    supervisor, then serve one run."""
    from agex.isolation.confine import Confinement, confine
    from agex.isolation.limits import Limits

    confinement = Confinement(
        level=spec["level"],
        limits=Limits(**spec["limits"]),
        network=spec.get("network", False),
        readable=tuple(spec.get("readable", ())),
        exclude=tuple(spec.get("hidden", ())),
    )
    os.chdir(scratch)  # files the agent writes land in its own directory
    layers = confine(confinement, scratch)
    _warm(warmup)
    channel.send(sock, {"op": "ready", "layers": layers})
    Worker(sock).serve()


def _warm(payload: bytes) -> None:
    """Run a small task's start and steps here, unconfined by any real run, so that what a
    process pays once (lazy imports, caches, the watchdog thread, pages copied on first
    write) is paid before a run arrives."""
    import contextvars

    def run() -> None:
        worker = Worker(None)  # type: ignore[arg-type]
        worker._start(
            {
                "serializer": "cloudpickle",
                "agent": "warmup",
                "session": "warmup",
                "versioned": True,
            },
            [payload],
        )
        worker._load({"timeout": 5.0}, [b"{}"])
        for code in ("print(n)", "task_success(n)"):
            worker._step({"code": code, "timeout": 5.0}, [])

    contextvars.copy_context().run(run)  # the run's caller context stays its own


class Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.limit = channel.MAX_FRAME
        self.runtime: Any = None
        self.calls = 0

    def serve(self) -> None:
        while True:
            try:  # from the supervisor: as large as the session's state
                header, blobs = channel.take(self.sock)
            except channel.ChannelClosed:
                return
            op = header.get("op")
            try:
                reply, out = getattr(self, f"_{op}")(header, blobs)
            except Exception as exc:
                from agex.remote.outcome import failure

                reply, out = {"op": "failed", "outcome": failure(exc)}, []
            channel.send(self.sock, reply, out)

    def _start(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview]
    ) -> tuple[dict[str, Any], list[bytes]]:
        from agex import plugins
        from agex.loop import Caller, caller
        from agex.protocols import Sink
        from agex.remote.shipping import unship
        from agex.runtime import Runtime

        serializer = plugins.create("serializer", header["serializer"])
        try:
            task, arguments = unship(bytes(blobs[0]), serializer)
        except Exception as exc:
            raise LoadError(
                f"the task could not be loaded: {type(exc).__name__}: {exc}. Whatever the "
                "agent uses must be importable where it runs: install it there"
            ) from None
        if task.agent.name != header["agent"]:
            raise LoadError("the envelope names another agent than the task's")
        self.session = header["session"]
        self.serializer = serializer
        #: The largest frame the supervisor reads from this worker.
        self.limit = int(header.get("limit", channel.MAX_FRAME))
        self.runtime = Runtime(task, arguments, versioned=header["versioned"])
        # Sub-agents this run's code calls go to the supervisor (see Task._from_agent_code).
        caller.set(Caller(self.session, Sink(), None, None, self._relay))  # type: ignore[arg-type]
        return {"op": "started", "manifest": self.runtime.manifest()}, []

    def _load(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview]
    ) -> tuple[dict[str, Any], list[bytes]]:
        from agex.state.versioned import Entry

        listed = json.loads(bytes(blobs[0]))
        index = {name: Entry.parse(record) for name, record in listed.items()}
        self.runtime.load(index, self._fetch)
        return {"op": "loaded"}, []

    def _fetch(self, names: list[str]) -> dict[str, memoryview]:
        """The checked bytes of stored variables, from the supervisor."""
        channel.send(self.sock, {"op": "fetch", "names": names})
        header, blobs = channel.take(self.sock)
        found = header.get("names")
        if header.get("op") != "fetched" or not isinstance(found, list):
            raise ConnectionError("the supervisor answered out of turn")
        return dict(zip(found, blobs, strict=True))

    def _step(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview]
    ) -> tuple[dict[str, Any], list[bytes]]:
        import time

        from agex.errors import SandboxCancelled, SandboxTimeout

        started = time.monotonic()
        timeout = header["timeout"]
        step = self.runtime.step(header["code"], timeout)
        outcome = None
        if step.signal == "success" and step.refused is None and step.stopped is None:
            left = None if timeout is None else max(timeout - (time.monotonic() - started), 0)
            try:
                outcome = self.runtime.sandbox.call(
                    _encode, step.value, self.runtime.task.returns, timeout=left
                )
            except SandboxTimeout:
                step.stopped = "timeout"
            except SandboxCancelled:
                step.stopped = "cancelled"
            except Exception as exc:
                step.refused = (
                    f"the value cannot be sent back: {type(exc).__name__}; return plain data "
                    "or instances of the types the task's return annotation names"
                )
        return self._ran(step, outcome)

    def _seed(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview]
    ) -> tuple[dict[str, Any], list[bytes]]:
        """A new session's init, given to the run's namespace (see ``Runtime.seed``)."""
        return self._ran(self.runtime.seed(header["timeout"]), None)

    def _ran(self, step: Any, outcome: dict[str, Any] | None) -> tuple[dict[str, Any], list[bytes]]:
        """What a step (or the seeding) did, as plain data and the serialized variables."""
        reply = {
            "op": "ran",
            "seeded": step.seeded,
            "output": step.output,
            "error": step.error,
            "signal": step.signal,
            "message": step.message,
            "stopped": step.stopped,
            "where": step.where,
            "shown": step.shown if outcome is not None else None,
            "refused": step.refused,
            "outcome": outcome,
        }
        # What the supervisor reads in one frame: the value first, then the variables.
        size = len(json.dumps(reply)) + (64 << 10)
        if size > self.limit // 2:
            reply["outcome"] = reply["shown"] = None
            reply["refused"] = (
                f"the value is {size:,} bytes as sent back, over the {self.limit // 2:,} a "
                "result may take: return less, or keep it in a variable"
            )
            size = len(json.dumps(reply)) + (64 << 10)
        _within(step.changes, step.skipped, self.limit - size)
        out: list[bytes] = []
        changes: dict[str, int | None] = {}
        facts: dict[str, Any] = {}
        for name, payload in step.changes.items():
            if payload is None:
                changes[name] = None
            else:
                changes[name] = len(out)
                out.append(payload)
                known = step.facts[name]
                facts[name] = {
                    "type": known.type,
                    "reach": sorted(known.reach or ()),
                    "classes": sorted(known.classes),
                }
        reply["changes"], reply["skipped"], reply["facts"] = changes, step.skipped, facts
        return reply, out

    def _inspect(
        self, header: dict[str, Any], blobs: Sequence[bytes | memoryview]
    ) -> tuple[dict[str, Any], list[bytes]]:
        """Stored variables, loaded here and encoded as results are (for a caller reading a
        session's values): each as its outcome; one no result may carry (a function the
        agent defined), as its type and how it prints; or why it cannot be loaded."""
        from agex.sandbox import Sandbox
        from agex.state.pickling import AgentStateSerializer, loading_into

        sandbox = Sandbox()
        namespace = sandbox.namespace()
        serializer = AgentStateSerializer()

        def load(blob: bytes) -> dict[str, Any]:
            from agex.events import bound_text
            from agex.state.versioned import type_name

            with loading_into(namespace):
                value = serializer.loads(blob)
            try:
                return _encode(value, Any)
            except Exception:
                shown = bound_text(str.__str__(repr(value)), 500)
                return {"kind": "shown", "type": type_name(value), "text": shown}

        found: dict[str, Any] = {}
        out: list[bytes] = []
        for name, blob in zip(header["names"], blobs, strict=True):
            try:
                found[name] = sandbox.call(load, blob, timeout=header["timeout"])
            except Exception as exc:
                found[name] = {"kind": "error", "message": f"{type(exc).__name__}: {exc}"}
            # Values as blobs, JSON or pickled: the header stays small.
            if "pickle" in found[name]:
                out.append(base64.b64decode(found[name].pop("pickle")))
                found[name]["blob"] = len(out) - 1
            elif "json" in found[name]:
                out.append(json.dumps(found[name].pop("json")).encode())
                found[name]["json_blob"] = len(out) - 1
        return {"op": "inspected", "values": found}, out

    # -- sub-agents ---------------------------------------------------------------------

    def _relay(self, task: Any, arguments: dict[str, Any]) -> Any:
        """Run a sub-agent's task through the supervisor, which runs the sub-agent this
        run's agent registered under that name (as its caller declared it): its value, or
        its exception."""
        from agex.protocols import Invocation
        from agex.remote.outcome import settle
        from agex.remote.shipping import ship

        registered = self.runtime.agent.policy.names
        name = next(
            (n for n, f in registered.items() if getattr(f, "__agex_task__", None) is task), None
        )
        if name is None:
            raise LookupError(f"{task.name} is not a sub-agent this agent registered")
        invocation = Invocation(task.agent, task, arguments, self.session)
        payload = ship(invocation, self.serializer)
        self.calls += 1
        number = self.calls
        channel.send(self.sock, {"op": "call", "call": number, "name": name}, [payload])
        while not select.select([self.sock], [], [], _POLL)[0]:
            pass  # agent code waits here: its time limit can interrupt the wait
        header, _ = channel.take(self.sock)
        if header.get("op") != "answer" or header.get("call") != number:
            raise ConnectionError("the supervisor answered out of turn")
        return settle(header["outcome"], invocation, None)


def _within(changes: dict[str, bytes | None], skipped: dict[str, str], limit: int) -> None:
    """Leave out the largest values until what the step hands back fits in a frame."""
    while sum(len(v) for v in changes.values() if v is not None) > limit:
        name = max(
            (n for n, v in changes.items() if v is not None), key=lambda n: len(changes[n] or b"")
        )
        size = len(changes[name] or b"")
        changes[name] = None
        skipped[name] = f"{size:,} bytes serialized; a step saves at most {limit:,}"


class LoadError(Exception):
    """The shipped task cannot be loaded in the worker."""


def _encode(value: Any, returns: Any) -> dict[str, Any]:
    """task_success's value as the caller gets it, unsealed (the supervisor seals it)."""
    from agex.remote.outcome import success

    return success(value, returns, None)
