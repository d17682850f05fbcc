"""The trusted side of an isolated run: the loop here (the model, the storage, the events),
the agent code in a worker process (:mod:`agex.isolation.worker`).

Nothing a client shipped or agent code shaped is loaded here: the payload goes to the
worker as bytes, the worker answers with plain data (checked field by field before use),
state values cross as bytes this side stores without loading (and reads for the worker when
its code comes to need them), and the task's value comes back as an outcome (JSON, or a
pickle only the caller's restricted loader opens).

A step's time limit is the worker's own, and this side kills the worker shortly after it,
which also ends long calls into C; cancelling kills it at once; a worker that dies ends
only its run, with an :class:`~agex.errors.IsolationError` saying how.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from agex import plugins
from agex.errors import IsolationError, SandboxTimeout, StateConflict, StateLoadError
from agex.events import bound_text
from agex.isolation import channel, stronger
from agex.isolation.pool import Spec, Worker, WorkerGone, pool

if TYPE_CHECKING:
    from agex.isolation.settings import Isolation
from agex.loop import again, drive, versioned
from agex.protocols import LLM, Sink
from agex.remote.envelope import MAX_NESTING, Envelope, Refused
from agex.remote.outcome import ABANDONED_OUTCOME, failure
from agex.runtime import Fetch, Step
from agex.state.turn import CONFLICTS, MAX_RETRIES
from agex.state.versioned import Entry, Facts, Shown
from agex.stores import Stores

#: Seconds a worker gets past a time limit to report it itself before it is killed.
GRACE = 1.0
_SIGNALS = (None, "success", "fail", "clarify")
_STOPS = (None, "timeout", "cancelled")
_VALUE = ("kind", "json", "pickle")
#: Most names the recorded reach of the values of one step may hold, together; past it
#: they are recorded as unknown (a task that needs one then loads every variable).
MAX_REACH = 10_000
#: Longest variable name a worker may report.
MAX_NAME = 256
_HINTS = {
    "signal SIGSEGV": "it crashed in C code (SIGSEGV)",
    "signal SIGKILL": "it was killed (SIGKILL), most likely for running out of memory",
    "signal SIGXCPU": "it used up its CPU time limit (SIGXCPU)",
    "signal SIGXFSZ": "it wrote past its file size limit (SIGXFSZ)",
    "signal SIGABRT": "it aborted (SIGABRT)",
}

Call = Callable[[str, bytes], Awaitable[dict[str, Any]]]


class Isolated:
    """The loop's executor for agent code in ``worker``; ``call`` runs the sub-agents its
    code calls (the name its agent registered one under, and the task it shipped) and
    returns their outcome."""

    isolated = True

    def __init__(self, worker: Worker, call: Call, limit: int = channel.MAX_FRAME) -> None:
        self.worker, self.call = worker, call
        #: Largest frame read from the worker: no more than it can hold in its memory.
        self.limit = limit
        self._sending = asyncio.Lock()
        self._calls: set[asyncio.Task[None]] = set()
        self._starting: str | None = None  # the agent of a start not yet answered
        self._fetch: Fetch | None = None  # the stored variables the worker may ask for
        self._fetched: set[str] = set()  # ... each once: it loads each at most once
        self._stored = 0  # how many variables the session holds

    async def start(self, envelope: Envelope, payload: bytes, wait: bool = True) -> Any:
        """Load the task in the worker; its manifest. Without ``wait`` (the caller knows the
        manifest), the request goes out and its answer is checked before the next one's:
        the worker loads the task while the model is asked for the first step."""
        header = {
            "op": "start",
            "agent": envelope.agent,
            "session": envelope.session,
            "serializer": envelope.serializer,
            "versioned": envelope.state.type == "versioned",
            "limit": self.limit,
        }
        if not wait:
            async with self._sending:
                await channel.asend(self.worker.sock, header, [payload])
            self._starting = envelope.agent
            return None
        reply, _ = await self._request(header, [payload], None)
        return _manifest(_expect(reply, "started"), envelope.agent)

    async def load(self, index: dict[str, Entry], fetch: Fetch, timeout: float | None) -> None:
        self._fetch, self._stored = fetch, len(index)
        # A blob, not the header: the index grows with the session, the header may not.
        listed = json.dumps({name: entry.record() for name, entry in index.items()}).encode()
        header = {"op": "load", "timeout": timeout}
        try:
            reply, _ = await self._request(header, [listed], timeout)
        except _Overdue:
            raise SandboxTimeout("loading the state ran past the timeout") from None
        if reply.get("op") == "failed" and _kind(reply) == "SandboxTimeout":
            raise SandboxTimeout("loading the state ran past the timeout")
        _expect(_loaded(reply), "loaded")

    async def step(self, code: str, timeout: float | None) -> Step:
        return await self._ran({"op": "step", "code": code, "timeout": timeout}, timeout)

    async def seed(self, timeout: float | None) -> Step:
        return await self._ran({"op": "seed", "timeout": timeout}, timeout)

    async def _ran(self, header: dict[str, Any], timeout: float | None) -> Step:
        """What the worker ran for ``header`` (a step, or the session's seeding)."""
        try:
            reply, blobs = await self._request(header, [], timeout)
        except _Overdue:
            return Step(stopped="timeout", where="(the worker was stopped)")
        return _step(_expect(_loaded(reply), "ran"), blobs)

    def cancel(self) -> None:
        asyncio.get_running_loop().run_in_executor(None, self.worker.end)

    def close(self) -> None:
        """Stop the sub-agent calls in flight, and end the worker: its run is over, and
        nobody waits to hear how it ended."""
        for call in self._calls:
            call.cancel()
        self.worker.discard()

    async def _request(
        self, header: dict[str, Any], blobs: list[bytes], timeout: float | None
    ) -> channel.Frame:
        """Send ``header`` and wait for the answer, running the sub-agents the worker asks
        for meanwhile; past ``timeout`` (and the grace), the worker is killed."""
        sock = self.worker.sock
        try:
            async with self._sending:
                await channel.asend(sock, header, blobs)
            async with asyncio.timeout(None if timeout is None else timeout + GRACE):
                if self._starting is not None:  # the answer to a start sent earlier
                    agent, self._starting = self._starting, None
                    started, _ = await channel.arecv(sock, self.limit)
                    _manifest(_expect(started, "started"), agent)
                while True:
                    reply, out = await channel.arecv(sock, self.limit)
                    if reply.get("op") == "fetch":
                        await self._send_fetched(reply)
                        continue
                    if reply.get("op") != "call":
                        return reply, out
                    if self._calls:  # its code waits for each answer: one call at a time
                        raise channel.BadFrame("a second sub-agent call before an answer")
                    task = asyncio.ensure_future(self._answer(reply, out))
                    self._calls.add(task)
                    task.add_done_callback(self._calls.discard)
        except TimeoutError:
            await self.worker.aend()
            raise _Overdue from None
        except (OSError, channel.BadFrame, UnicodeDecodeError) as exc:
            status = await self.worker.aend(exiting=isinstance(exc, channel.ChannelClosed))
            if isinstance(exc, channel.BadFrame):
                raise IsolationError(
                    f"the worker broke the protocol ({exc}); it was stopped"
                ) from None
            raise IsolationError(_ended(status)) from None

    async def _send_fetched(self, request: dict[str, Any]) -> None:
        """The stored variables the worker's code needs: only the session's, as the commit
        the run started from holds them (read and checked here), each at most once (a
        worker asking again only makes this side read and check it again)."""
        names = request.get("names")
        if (
            self._fetch is None
            or not isinstance(names, list)
            or len(names) > self._stored
            or not all(isinstance(n, str) and len(n) <= MAX_NAME for n in names)
        ):
            raise channel.BadFrame("a fetch before the state was loaded, or naming no variables")
        wanted = list(dict.fromkeys(n for n in names if n not in self._fetched))
        blobs = await asyncio.to_thread(self._fetch, wanted)
        self._fetched.update(blobs)
        async with self._sending:
            await channel.asend(
                self.worker.sock, {"op": "fetched", "names": list(blobs)}, [*blobs.values()]
            )

    async def _answer(self, request: dict[str, Any], blobs: list[bytes]) -> None:
        number, name = request.get("call"), request.get("name")
        try:
            if not isinstance(name, str) or len(blobs) != 1:
                raise IsolationError("a sub-agent call names the sub-agent and ships its task")
            outcome = await self.call(name, blobs[0])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = failure(exc)
        answer = {"op": "answer", "call": number, "outcome": outcome}
        async with self._sending:
            with contextlib.suppress(OSError):  # the worker is gone: nobody to tell
                await channel.asend(self.worker.sock, answer)


class _Overdue(Exception):
    """The worker did not answer within its time limit and the grace; it was killed."""


class Run:
    """One task run with its agent code in a worker: ``await run()`` returns the outcome of
    a value (unsealed), or raises the run's exception.

    Everything about the run comes from ``envelope`` (from the caller), never from the
    worker: the model (``llm``, or the envelope's configuration built here), the state, and
    the sub-agents its code may call (``tasks``: the caller's own, where the caller is this
    process; else as the envelope declares them). ``model`` is the model the loop used.
    """

    def __init__(
        self,
        envelope: Envelope,
        payload: bytes,
        sink: Sink,
        *,
        stores: Stores,
        spec: Spec,
        llm: LLM | None = None,
        tasks: dict[str, Any] | None = None,
        depth: int = 0,
        manifest: dict[str, Any] | None = None,
        isolation: Isolation | None = None,
    ) -> None:
        self.envelope, self.payload, self.sink = envelope, payload, sink
        self.stores, self.spec = stores, spec
        self.model: LLM | None = llm
        self.tasks, self.depth = tasks, depth
        #: The run as the loop sees it, when the caller could make it from its own objects.
        self.manifest = manifest
        #: Where sub-agents a caller declared (rather than this process's own) may go.
        self.isolation = isolation

    async def __call__(self) -> dict[str, Any]:
        attempt = 0
        while True:
            try:
                return await self._attempt()
            except StateConflict as exc:
                assert self.manifest is not None  # known once a worker has started
                if not await again(exc, self.manifest, self.sink, self.envelope.session, attempt):
                    return ABANDONED_OUTCOME
                attempt += 1

    async def _attempt(self) -> dict[str, Any]:
        envelope = self.envelope
        try:
            worker = await pool().take(self.spec)
        except WorkerGone as exc:
            raise IsolationError(f"no worker process could be started: {exc.status}") from None
        memory = self.spec.memory_mb
        limit = channel.MAX_FRAME if memory is None else min(memory << 20, channel.MAX_FRAME)
        executor = Isolated(worker, self._subagent, limit)
        try:
            manifest = self.manifest
            if manifest is None:
                manifest = self.manifest = await executor.start(envelope, self.payload)
            else:
                await executor.start(envelope, self.payload, wait=False)
            if self.model is None:
                self.model = _model(envelope.llm, envelope.agent, self.isolation)
            state = None
            if envelope.state.type == "versioned":
                state = versioned(self.stores, envelope.state, envelope.agent, envelope.session)
            outcome: dict[str, Any] = await drive(
                executor, manifest, self.model, self.sink, envelope.session, state
            )
            return outcome
        finally:
            executor.close()

    async def _subagent(self, name: str, payload: bytes) -> Any:
        """The sub-agent this run's agent registered as ``name``, called from its code with
        the task it shipped: its loop here, its code in a worker of its own (at least as
        confined as this one), or on its own remote host."""
        try:
            envelope = self.envelope.delegate(name, self.envelope.session)
        except KeyError:
            raise IsolationError(f"the agent registered no sub-agent named {name!r}") from None
        if self.depth >= MAX_NESTING:
            raise IsolationError(f"sub-agents call sub-agents more than {MAX_NESTING} deep")
        sink = Sink(self.sink.on_event, None)
        own = None if self.tasks is None else self.tasks.get(name)
        host = self.envelope.delegates[name].host
        if host.get("provider") == "local":
            level = stronger(self.spec.level, envelope.isolation or "none")
            memory = min(envelope.memory_mb or self.spec.memory_mb or 0, self.spec.memory_mb or 0)
            spec = replace(self.spec, level=level, memory_mb=memory or self.spec.memory_mb)
            run = Run(
                envelope,
                payload,
                sink,
                stores=self.stores,
                spec=spec,
                llm=None if own is None else own.agent.resolved_llm(),
                tasks=None if own is None else registered(own.agent),
                depth=self.depth + 1,
                isolation=self.isolation,
            )
            try:
                return await run()
            except Exception as exc:
                return failure(exc, run.model)
        if own is not None:
            remote = own.agent.host
        else:  # declared by a client: only to the servers this one was told of
            if self.isolation is None:
                raise IsolationError("sub-agents on other hosts are not allowed here")
            try:
                self.isolation.remote(host)
            except Refused as exc:
                raise IsolationError(str(exc)) from None
            options = dict(host)
            remote = plugins.create("host", options.pop("provider"), **options)
        shipped = getattr(remote, "arun_shipped", None)
        if shipped is None:
            raise IsolationError(
                f"host {host.get('provider')!r} cannot run a sub-agent for an isolated run; "
                "give the sub-agent a local or http host"
            )
        # The agent, where this side has it (its own, not a client's): what a host that
        # installs the agent's needs where it runs reads them from.
        agent = None if own is None else own.agent
        outcome: dict[str, Any] = await shipped(envelope, payload, sink, agent=agent)
        return outcome


def inspect(blobs: dict[str, bytes], timeout: float = 30.0) -> dict[str, Any]:
    """Stored variables a worker wrote, loaded in a worker of this process's strongest
    isolation and back through the restricted loader (``Any``: plain data and standard
    value types); StateLoadError naming a variable that cannot come back."""
    from agex.isolation import strongest
    from agex.remote import values

    spec = Spec(level=strongest())
    worker = pool().template.fork(spec)
    try:
        worker.sock.setblocking(True)
        header = {"op": "inspect", "names": list(blobs), "timeout": timeout}
        channel.send(worker.sock, header, list(blobs.values()))
        limit = min((spec.memory_mb or 1024) << 20, channel.MAX_FRAME)
        reply, pickles = channel.recv(worker.sock, limit, time.monotonic() + timeout + GRACE)
    except (OSError, channel.BadFrame) as exc:
        raise StateLoadError(f"the state could not be read in a worker process: {exc}") from None
    finally:
        worker.end()
    found = reply.get("values") if reply.get("op") == "inspected" else None
    if not isinstance(found, dict) or found.keys() != blobs.keys():
        raise StateLoadError("the worker reading the state answered wrongly")
    out: dict[str, Any] = {}
    for name, outcome in found.items():
        if isinstance(outcome, dict) and outcome.get("kind") == "shown":
            out[name] = Shown(_text(outcome.get("type"), 200), _text(outcome.get("text"), 500))
            continue
        if isinstance(outcome, dict) and "json_blob" in outcome:
            try:
                out[name] = json.loads(pickles[outcome["json_blob"]])
                continue
            except (TypeError, IndexError, ValueError, RecursionError):
                raise StateLoadError(f"the worker sent variable {name!r} wrongly") from None
        try:
            out[name] = values.loads(pickles[outcome["blob"]], Any)
        except Exception as exc:
            why = _text(outcome.get("message"), 500) if isinstance(outcome, dict) else ""
            why = why or f"{type(exc).__name__}: {exc}"
            raise StateLoadError(
                f"variable {name!r} cannot be read here: {why}. Only plain data and standard "
                "value types cross from a worker; read it in a task"
            ) from None
    return out


def registered(agent: Any) -> dict[str, Any]:
    """The sub-agents ``agent`` registered, by name: its own task objects."""
    found = {}
    for name, value in agent.policy.names.items():
        task = getattr(value, "__agex_task__", None)
        if task is not None:
            found[name] = task
    return found


def _model(config: Any, agent: str, isolation: Isolation | None = None) -> LLM:
    """The model the caller says the agent uses, built here by its provider (with this
    side's keys, sent only where ``isolation`` allows); the agent's default model when it
    names none."""
    from agex import llm as models

    if config is None:
        return models.create()
    endpoint = None if isolation is None else isolation.model(config, f"agent {agent!r}")
    options = dict(config)
    provider = options.pop("provider", None)
    if not isinstance(provider, str):
        raise IsolationError(f"the model of agent {agent!r} does not name its provider")
    try:
        built: LLM = plugins.create("llm", provider, **options)
    except Exception as exc:
        raise IsolationError(
            f"the model of agent {agent!r} (provider {provider!r}) cannot be built here: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    if isolation is not None:
        isolation.hold(built, endpoint, f"agent {agent!r}")
    return built


# -- what a worker says, checked ----------------------------------------------------------


def _expect(reply: dict[str, Any], op: str) -> dict[str, Any]:
    if reply.get("op") == op:
        return reply
    if reply.get("op") == "failed":
        raise IsolationError(
            f"in the worker: {_kind(reply)}: {_text(_outcome(reply).get('message'))}"
        )
    raise IsolationError(f"the worker answered {str(reply.get('op'))[:40]!r}, not {op!r}")


def _loaded(reply: dict[str, Any]) -> dict[str, Any]:
    """``reply``, unless it says a stored variable could not be loaded."""
    if reply.get("op") == "failed" and _kind(reply) == "StateLoadError":
        raise StateLoadError(_text(_outcome(reply).get("message"), 2000))
    return reply


def _outcome(reply: dict[str, Any]) -> dict[str, Any]:
    outcome = reply.get("outcome")
    return outcome if isinstance(outcome, dict) else {}


def _kind(reply: dict[str, Any]) -> str:
    return _text(_outcome(reply).get("type"), 100)


def _text(value: Any, limit: int = 20_000) -> str:
    return bound_text(value if isinstance(value, str) else "", limit)


def _manifest(reply: dict[str, Any], agent: str) -> dict[str, Any]:
    manifest = reply.get("manifest")
    ok = (
        isinstance(manifest, dict)
        and manifest.get("agent") == agent
        and all(isinstance(manifest.get(k), str) for k in ("task", "system", "user", "returns"))
        and isinstance(manifest.get("inputs"), dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in manifest["inputs"].items())
        and (manifest.get("llm") is None or isinstance(manifest.get("llm"), dict))
        and type(manifest.get("max_iterations")) is int
        and manifest["max_iterations"] >= 1
        and (manifest.get("timeout") is None or type(manifest.get("timeout")) in (int, float))
        and manifest.get("on_conflict") in CONFLICTS
        and type(manifest.get("max_conflict_retries")) is int
        and 0 <= manifest["max_conflict_retries"] <= MAX_RETRIES
        and (manifest.get("setup") is None or isinstance(manifest.get("setup"), str))
        and type(manifest.get("init", False)) is bool
    )
    if not ok:
        raise IsolationError("the worker described the run wrongly; it was stopped")
    assert isinstance(manifest, dict)
    manifest["inputs"] = {_text(k, 200): _text(v, 500) for k, v in manifest["inputs"].items()}
    if manifest["timeout"] is not None and not manifest["timeout"] > 0:
        raise IsolationError("the worker described the run wrongly; it was stopped")
    return manifest


def _step(reply: dict[str, Any], blobs: list[bytes]) -> Step:
    """A step as the worker reports it, every field checked for its type and bounded."""
    signal, stopped = reply.get("signal"), reply.get("stopped")
    changes, skipped = reply.get("changes"), reply.get("skipped")
    outcome, facts = reply.get("outcome"), reply.get("facts")
    seeded = reply.get("seeded", {})
    if (
        signal not in _SIGNALS
        or stopped not in _STOPS
        or not isinstance(changes, dict)
        or not isinstance(skipped, dict)
        or not isinstance(facts, dict)
        or not isinstance(seeded, dict)
        or len(seeded) > MAX_REACH
        or not (outcome is None or _value_outcome(outcome))
    ):
        raise IsolationError("the worker reported a step wrongly; it was stopped")
    step = Step(
        output=_text(reply.get("output")),
        error=None if reply.get("error") is None else _text(reply.get("error")),
        signal=signal,
        message=_text(reply.get("message")),
        stopped=stopped,
        where=_text(reply.get("where"), 200),
        skipped={_name(k): _text(v, 1000) for k, v in skipped.items()},
        refused=None if reply.get("refused") is None else _text(reply.get("refused")),
        shown=reply.get("shown"),
        # Only what a value's outcome holds: no model, no MAC of the worker's making.
        value=None if outcome is None else {k: outcome[k] for k in _VALUE if k in outcome},
        seeded={_name(k): _text(v, 200) for k, v in seeded.items()},
    )
    used: set[int] = set()
    reach = 0
    for name, index in changes.items():
        if index is None:
            step.changes[_name(name)] = None
        elif type(index) is int and 0 <= index < len(blobs) and index not in used:
            used.add(index)
            step.changes[_name(name)] = blobs[index]
            step.facts[name] = known = _facts(facts.get(name))
            reach += len(known.reach or ()) + len(known.classes)
            if reach > MAX_REACH:
                step.facts[name] = Facts(known.type)
        else:
            raise IsolationError("the worker reported a step wrongly; it was stopped")
    if signal == "success" and step.refused is None and step.stopped is None and outcome is None:
        raise IsolationError("the worker reported a step wrongly; it was stopped")
    return step


def _facts(facts: Any) -> Facts:
    """What the worker says of a value it serialized: a type's name, and names its code
    mentions (so used only to choose which variables to load for a worker)."""
    if not isinstance(facts, dict):
        raise IsolationError("the worker reported a step wrongly; it was stopped")
    kind, reach, classes = facts.get("type"), facts.get("reach"), facts.get("classes")
    if (
        not isinstance(kind, str)
        or not isinstance(reach, list)
        or not isinstance(classes, list)
        or len(classes) > MAX_REACH
        or not all(isinstance(c, str) and c.isalnum() and len(c) <= 64 for c in classes)
    ):
        raise IsolationError("the worker reported a step wrongly; it was stopped")
    if len(reach) > MAX_REACH:
        return Facts(kind[:200], None, frozenset(classes))
    if not all(isinstance(n, str) and n.isidentifier() and len(n) <= MAX_NAME for n in reach):
        raise IsolationError("the worker reported a step wrongly; it was stopped")
    return Facts(kind[:200], frozenset(reach), frozenset(classes))


def _name(name: Any) -> str:
    if (
        not isinstance(name, str)
        or not name.isidentifier()
        or len(name) > MAX_NAME
        or name.startswith(("__", "_agex"))
    ):
        raise IsolationError("the worker named a variable wrongly; it was stopped")
    return name


def _value_outcome(outcome: Any) -> bool:
    if not isinstance(outcome, dict) or outcome.get("kind") != "result":
        return False
    return ("json" in outcome) != isinstance(outcome.get("pickle"), str)


def _ended(status: str) -> str:
    hint = _HINTS.get(status, status)
    return (
        f"the worker process running the task's code ended: {hint}. Only this run ended; "
        "versioned state stays at its last commit"
    )
