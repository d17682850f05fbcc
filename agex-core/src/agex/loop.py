"""The ReAct loop: ask the model, run its code, feed back what happened, until the code
calls ``task_success``, ``task_fail`` or ``task_clarify``.

Async at its core, so one process can hold many runs waiting on models; the sandbox work of
each step runs in a worker thread. The caller's session and event sink travel in a context
variable, so a sub-agent called from agent code inherits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from agex.errors import (
    SandboxTimeout,
    SessionInUse,
    StateConflict,
    StateIntegrityError,
    StateLoadError,
    TaskCancelled,
    TaskClarify,
    TaskFail,
    TaskTimeout,
)
from agex.events import (
    ActionEvent,
    CancelledEvent,
    ClarifyEvent,
    ConflictEvent,
    ErrorEvent,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
    bound_text,
)
from agex.llm import split_reply
from agex.protocols import LLM, AgentLike, Invocation, Message, Sink, StateConfig
from agex.runtime import SIGNALS, Fetch, Runtime, Step
from agex.state.live import live_session
from agex.state.pickling import AgentStateSerializer
from agex.state.turn import LEASE, MAX_RETRIES, Turn
from agex.state.versioned import Entry, VersionedState
from agex.stores import LOCAL, Stores

#: Longest printed output or error fed back to the model in one message. Events carry more
#: (up to ``EVENT_TEXT_LIMIT``): the model's context is the scarcer of the two.
FEEDBACK_LIMIT = 8000


class Caller(NamedTuple):
    """The run whose agent code is running in this context: what a sub-agent it calls
    inherits (its session, its sink for events, the storages its state lives in), and the
    event loop the sub-agent runs on."""

    session: str
    sink: Sink
    loop: asyncio.AbstractEventLoop | None
    stores: Stores
    #: In a worker process: hands a sub-agent's call to the supervisor, which runs it.
    relay: Callable[[Any, dict[str, Any]], Any] | None = None


caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("agex_caller", default=None)


def inherited_stores() -> Stores:
    """The storages of the run calling from here (a sub-agent's state lives where its
    caller's does: on a server, inside its state directory), or this process's."""
    inherited = caller.get()
    return LOCAL if inherited is None else inherited.stores


class Executor(Protocol):
    """What runs a run's agent code for the loop: in this process (:class:`InProcess`), or
    in a confined worker process (``agex.isolation``)."""

    #: Whether it runs agent code in a worker process: what it serializes is then loaded only
    #: in one (see ``VersionedState.raw``).
    isolated: bool

    async def load(self, index: dict[str, Entry], fetch: Fetch, timeout: float | None) -> None:
        """The session's variables as its head commit lists them: those the task's code
        needs are read through ``fetch`` (see ``Runtime.load``)."""

    async def step(self, code: str, timeout: float | None) -> Step:
        """One step's code, what it changed (serialized), and task_success's value checked
        (``Step.value``: the value itself in this process, its outcome from a worker)."""
        ...

    async def seed(self, timeout: float | None) -> Step:
        """Give a new session its state's ``init`` (see ``Runtime.seed``): the variables
        (``Step.seeded``), serialized as a step's changes for versioned state."""
        ...

    def cancel(self) -> None:
        """Stop the step running now, from the event loop."""


class InProcess:
    """Agent code in this process, in a worker thread per step."""

    isolated = False

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def load(self, index: dict[str, Entry], fetch: Fetch, timeout: float | None) -> None:
        self.runtime.load(index, fetch)

    async def step(self, code: str, timeout: float | None) -> Step:
        return await asyncio.to_thread(self.runtime.step, code, timeout)

    async def seed(self, timeout: float | None) -> Step:
        return await asyncio.to_thread(self.runtime.seed, timeout)

    def cancel(self) -> None:
        self.runtime.scope.cancel()


async def run_loop(invocation: Invocation, sink: Sink, stores: Stores = LOCAL) -> Any:
    """Run ``invocation``'s task to its end, its agent code in this process: return its value
    or raise its outcome. Events and model output go to ``sink``; versioned state lives in
    the storages of ``stores``, and so does that of the sub-agents the task calls."""
    agent: AgentLike = invocation.agent
    kind = agent.state_config.type
    token = caller.set(Caller(invocation.session, sink, asyncio.get_running_loop(), stores))
    try:
        with contextlib.ExitStack() as stack:
            namespace = None
            if kind == "live":
                namespace = stack.enter_context(live_session(agent.name, invocation.session))
                _refresh(namespace, agent, invocation.arguments)
            attempt = 0
            while True:
                runtime = Runtime(
                    invocation.task,
                    invocation.arguments,
                    versioned=kind == "versioned",
                    namespace=namespace,
                )
                manifest = runtime.manifest()
                try:
                    return await drive(
                        InProcess(runtime),
                        manifest,
                        agent.resolved_llm(),
                        sink,
                        invocation.session,
                        _state(agent.state_config, invocation, stores),
                    )
                except StateConflict as exc:
                    if not await again(exc, manifest, sink, invocation.session, attempt):
                        return ABANDONED
                    attempt += 1
    finally:
        caller.reset(token)


def _refresh(namespace: dict[str, Any], agent: AgentLike, arguments: dict[str, Any]) -> None:
    """A live session's namespace for this agent's run. Another agent of this name may have
    left its registrations there: only variables carry over, and this agent's
    registrations and builtins are put back."""
    for name in namespace.pop(INJECTED, ()):
        namespace.pop(name, None)
    namespace.update(agent.sandbox.namespace(arguments, builtins=SIGNALS))
    namespace[INJECTED] = set(agent.policy.names)


class _Abandoned:
    """What a run that gave up on its session returns (the task then returns None)."""

    def __repr__(self) -> str:
        return "ABANDONED"


ABANDONED = _Abandoned()


async def again(
    conflict: StateConflict, manifest: dict[str, Any], sink: Sink, session: str, attempt: int
) -> bool:
    """After a task lost its session to another (``attempt`` runs so far): whether to run it
    again from the new state; False: it gives up quietly; else ``conflict`` is raised. An
    event says which."""
    policy, most = manifest["on_conflict"], min(manifest["max_conflict_retries"], MAX_RETRIES)
    if isinstance(conflict, SessionInUse) or policy == "fail":
        raise conflict
    if policy != "abandon" and attempt >= most:
        raise conflict
    action = "abandon" if policy == "abandon" else "retry"
    await sink.event(
        ConflictEvent(
            agent_name=manifest["agent"],
            session=session,
            step=0,
            action=action,
            attempt=attempt + 1,
            message=str(conflict),
        )
    )
    return action == "retry"


def _state(config: StateConfig, invocation: Invocation, stores: Stores) -> VersionedState | None:
    if config.type != "versioned":
        return None
    return versioned(stores, config, invocation.agent.name, invocation.session)


def versioned(stores: Stores, config: StateConfig, agent: str, session: str) -> VersionedState:
    """The versioned state of ``agent`` in ``session``, in the storage ``config`` names."""
    return VersionedState(stores.storage(config), AgentStateSerializer(), agent, session)


#: The key under which a live namespace remembers which names the sandbox put there.
INJECTED = "_agex_registered"


async def drive(
    executor: Executor,
    manifest: dict[str, Any],
    llm: LLM,
    sink: Sink,
    session: str,
    state: VersionedState | None,
) -> Any:
    """The loop itself, on the side that holds the model, the storage and the caller's
    callbacks: ask the model, have ``executor`` run the code, commit, feed back. Returns
    the last step's ``value``, or raises the task's outcome.

    With versioned state each step is a commit of this run, and the session moves to the
    run's last one only when the agent answers (success, fail or clarify): a run that ends
    otherwise leaves the session as it found it. A task called by the user first waits for
    its session's turn (``on_conflict="wait"``), one for all the agents' state in that
    session, which it keeps renewed; a task called from its code runs in that turn (or, on
    another storage, races: waiting there could wait on its own caller), and may not run on
    its caller's own session of its own agent."""
    if state is None:
        return await _drive(executor, manifest, llm, sink, session, state)
    held = _held.get()
    store = id(state.storage)
    if (store, state.head_key) in held:
        raise SessionInUse(
            f"task {manifest['task']} runs on session {session!r} of {manifest['agent']!r}, "
            "which the task calling it is running on: give it another session"
        )
    token = _held.set(held | {(store, state.head_key)})
    turn = keeper = None
    try:
        if manifest["on_conflict"] == "wait" and not held:
            turn = state.turn()
            waited = 0.0
            while not await asyncio.to_thread(turn.take):
                pause = turn.pause(waited)
                await asyncio.sleep(pause)
                waited += pause
            keeper = asyncio.ensure_future(_keep(turn))
        return await _drive(executor, manifest, llm, sink, session, state)
    finally:
        _held.reset(token)
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)  # no renewal in flight
        if turn is not None:
            await asyncio.to_thread(turn.give)


#: The sessions the tasks of this call chain run on (a sub-agent's task inherits them), by
#: their storage and head.
_held: contextvars.ContextVar[frozenset[tuple[int, str]]] = contextvars.ContextVar(
    "agex_sessions_held", default=frozenset()
)


async def _finished(state: VersionedState, start: str | None, last: str, run: str) -> None:
    """Move the session to the run's last commit. Once the head has moved the task is done:
    a cancel arriving meanwhile waits for the move, and is dropped if it was made."""
    moving = asyncio.ensure_future(asyncio.to_thread(state.finish, start, last, run))
    try:
        await asyncio.shield(moving)
    except asyncio.CancelledError:
        await moving  # raises StateConflict if it was not made: then the cancel is moot
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()


async def _keep(turn: Turn) -> None:
    """Renew the turn while the run holds it; a renewal the storage failed is tried again
    (the lease outlasts a few of them)."""
    while True:
        try:
            if not await asyncio.to_thread(turn.renew):
                return
            pause = LEASE / 3
        except Exception:
            pause = 1.0
        await asyncio.sleep(pause)


async def _drive(
    executor: Executor,
    manifest: dict[str, Any],
    llm: LLM,
    sink: Sink,
    session: str,
    state: VersionedState | None,
) -> Any:
    agent, task = manifest["agent"], manifest["task"]
    run = uuid.uuid4().hex
    timeout, max_iterations = manifest["timeout"], manifest["max_iterations"]
    commit: str | None = None
    start: str | None = None  # the commit the task's state is read from

    async def emit(cls: Any, step: int, **fields: Any) -> None:
        await sink.event(cls(agent_name=agent, session=session, step=step, commit=commit, **fields))

    async def halt(done: Any, step: int, during: str) -> None:
        """End the run if ``done`` (seeding, setup or a step) was stopped: its time ran out
        (what it printed is shown first), or it was cancelled."""
        if done.stopped == "timeout":
            if done.output:
                await emit(OutputEvent, step, text=done.output)
            raise TaskTimeout(f"{task} ran past its {_limit(timeout)}timeout{during}")
        if done.stopped == "cancelled":
            await emit(CancelledEvent, step)
            raise TaskCancelled(f"{task} was cancelled")

    async def save(changes: Any, record: list[dict[str, Any]], facts: Any) -> None:
        """Commit one step of this run (seeding, setup, or the agent's code): what it
        changed, and what it did."""
        nonlocal commit
        assert state is not None
        committed = await asyncio.to_thread(
            functools.partial(
                state.commit_serialized,
                changes,
                record,
                commit,
                shaped=executor.isolated,
                facts=facts,
                task=run,
            )
        )
        commit = committed.id

    deadline = None if timeout is None else time.monotonic() + timeout
    messages: list[Message] = [
        {"role": "system", "content": manifest["system"]},
        {"role": "user", "content": manifest["user"]},
    ]
    try:
        if state is not None:
            start = await asyncio.to_thread(state.head)
            index = await asyncio.to_thread(state.tree, start)

            def fetch(names: list[str]) -> dict[str, bytes]:
                return state.fetch(index, names, start, shaped=executor.isolated)

            try:
                await executor.load(index, fetch, timeout)
            except SandboxTimeout:
                raise TaskTimeout(
                    f"loading the state of session {session!r} ran past the timeout"
                ) from None
            except StateLoadError as exc:
                raise _unloadable(exc, session, start) from None
            messages[1]["content"] = _kept(index, manifest["inputs"]) + manifest["user"]
            commit = start  # what the task starts from, as its first event says
        await emit(TaskStartEvent, 0, task_name=task, inputs=manifest["inputs"])
        # Step 0, before the model is asked: a new session's init, then the task's setup.
        # Neither counts against max_iterations. A session is new when no run has used it:
        # a versioned one without a commit (asked here), a live one that no run held before
        # this one (the runtime knows, see Runtime.seed), and every ephemeral task's.
        if start is None and manifest.get("init"):
            try:
                seeded = await executor.seed(_remaining(deadline))
            except StateLoadError as exc:
                raise StateLoadError(f"{exc} (session {session!r})") from None
            await halt(seeded, 0, f" {seeded.where}")
            if state is not None and seeded.changes:
                await save(
                    seeded.changes, [{"step": 0, "init": sorted(seeded.seeded)}], seeded.facts
                )
            for name, why in seeded.skipped.items():
                await emit(ErrorEvent, 0, error=_unsaved(name, why))
            kept = {k: v for k, v in seeded.seeded.items() if k not in seeded.skipped}
            messages[1]["content"] = _listed(kept, STARTS_WITH) + messages[1]["content"]
        setup = manifest.get("setup")
        if setup:
            try:
                done = await executor.step(setup, _remaining(deadline))
            except StateLoadError as exc:
                raise _unloadable(exc, session, start) from None
            await halt(done, 0, " in setup" + (f" {done.where}" if done.where else ""))
            error = done.error
            if done.signal is not None:  # through some alias: check_setup refuses the names
                error = f"setup called task_{done.signal}: only the agent's code ends the task"
            if state is not None:
                ran = {"step": 0, "setup": True, "code": setup, "output": done.output}
                await save(done.changes, [{**ran, "error": error}], done.facts)
            notes = [_unsaved(name, why) for name, why in done.skipped.items()]
            if done.output:
                await emit(OutputEvent, 0, text=done.output)
            for note in notes if error is None else [*notes, error]:
                await emit(ErrorEvent, 0, error=note)
            messages[1]["content"] += _setup_seen(setup, done.output, error, notes)
        for step in range(1, max_iterations + 1):
            reply = await _ask(llm, messages, sink, deadline)
            thinking, code = split_reply(reply)
            messages.append({"role": "assistant", "content": reply})
            await emit(ActionEvent, step, thinking=thinking, code=code or "")
            if code is None:
                messages.append(
                    {
                        "role": "user",
                        "content": "Your reply had no ```python block."
                        " Reply with reasoning and exactly one python block.",
                    }
                )
                continue
            try:
                done = await executor.step(code, _remaining(deadline))
            except StateLoadError as exc:
                raise _unloadable(exc, session, start) from None
            await halt(done, step, f" {done.where}" if done.where else "")
            feedback = [bound_text(done.output, FEEDBACK_LIMIT)] if done.output else []
            if state is not None:
                record = [{"step": step, "code": code, "output": done.output, "error": done.error}]
                await save(done.changes, record, done.facts)
                for name, why in done.skipped.items():
                    note = _unsaved(name, why)
                    await emit(ErrorEvent, step, error=note)
                    feedback.append(bound_text(note, FEEDBACK_LIMIT))
            if done.output:
                await emit(OutputEvent, step, text=done.output)
            answered = done.signal is not None and (done.signal != "success" or not done.refused)
            if answered and state is not None and commit is not None:
                await _finished(state, start, commit, run)
            if done.signal == "success":
                if done.refused is None:
                    await emit(SuccessEvent, step, result=done.shown)
                    return done.value
                await emit(ErrorEvent, step, error=done.refused)
                feedback.append(
                    bound_text(done.refused, FEEDBACK_LIMIT)
                    + f"\nThe task returns {manifest['returns']}; fix the "
                    "value and call task_success again."
                )
            elif done.signal == "fail":
                await emit(FailEvent, step, message=done.message)
                raise TaskFail(done.message)
            elif done.signal == "clarify":
                await emit(ClarifyEvent, step, message=done.message)
                raise TaskClarify(done.message)
            elif done.error is not None:
                await emit(ErrorEvent, step, error=done.error)
                feedback.append(bound_text(done.error, FEEDBACK_LIMIT))
            messages.append(
                {
                    "role": "user",
                    "content": "\n".join(feedback)
                    or "(no output) Continue; call task_success(...) when done.",
                }
            )
        raise TaskTimeout(f"{task} found no result in {max_iterations} steps (max_iterations)")
    except asyncio.CancelledError:
        # Cancelled by the caller (task.cancel(), wait_for, Ctrl-C in a sync call): stop the
        # step's code too, then let asyncio's cancellation run its course.
        executor.cancel()
        await emit(CancelledEvent, 0)
        raise


#: How many of the session's variables the task's prompt lists by name.
LISTED = 100
KEPT = "Variables kept from earlier tasks in this session (use them by name): "
STARTS_WITH = "Variables this session starts with (use them by name): "


def _kept(index: dict[str, Entry], inputs: dict[str, str]) -> str:
    """What the session keeps from earlier tasks, for the prompt: names and types, from the
    commit (nothing is loaded to tell)."""
    types = {n: entry.facts.type for n, entry in index.items() if n not in inputs}
    return _listed(types, KEPT)


def _listed(types: dict[str, str], heading: str) -> str:
    """Variables by name and type, for the prompt."""
    names = sorted(types)
    if not names:
        return ""
    shown = [f"{_shown(n)} ({_type(types[n])})" for n in names[:LISTED]]
    more = f", and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return heading + ", ".join(shown) + more + "\n\n"


def _unsaved(name: str, why: str) -> str:
    return f"State: variable {name!r} could not be saved ({why}); it is gone in later tasks."


def _setup_seen(code: str, output: str, error: str | None, notes: list[str]) -> str:
    """What the model is shown of the task's setup: its code (so it knows the variables it
    made), then what it printed and its error."""
    seen = "\n\nThis setup code already ran (its variables are defined):\n```python\n"
    seen += bound_text(code, FEEDBACK_LIMIT) + "\n```\n"
    if output:
        seen += "It printed:\n" + bound_text(output, FEEDBACK_LIMIT) + "\n"
    if error is not None:
        seen += "It failed:\n" + bound_text(error, FEEDBACK_LIMIT) + "\n"
    if not output and error is None:
        seen += "It printed nothing.\n"
    return seen + "".join(bound_text(note, FEEDBACK_LIMIT) + "\n" for note in notes)


def _type(name: str) -> str:
    """A type's name as a worker recorded it: shown only when it looks like one."""
    ok = 0 < len(name) <= 100 and all(_plain(part) for part in name.split("."))
    return name if ok else "object"


def _shown(name: str) -> str:
    """A variable's name as the prompt shows it: escaped unless plain, and bounded."""
    return name if _plain(name) and len(name) <= 100 else bound_text(ascii(name), 100)


def _plain(name: str) -> bool:
    return name.isascii() and name.isidentifier()


def _unloadable(exc: StateLoadError, session: str, commit: str | None) -> StateLoadError:
    """``exc`` naming the session, and the commit the run read the variable from."""
    if isinstance(exc, StateIntegrityError):  # it names the commit and the way back
        return StateIntegrityError(f"{exc} (session {session!r})")
    return StateLoadError(
        f"{exc} (session {session!r}, commit {str(commit)[:12]}); move it back with "
        "agent.state(session).revert(...)"
    )


def _limit(timeout: float | None) -> str:
    return "" if timeout is None else f"{timeout:g}s "


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a monotonic time), or None without one."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


async def _ask(llm: LLM, messages: list[Message], sink: Sink, deadline: float | None) -> str:
    pieces: list[str] = []

    async def collect() -> None:
        async for piece in llm.stream(messages):
            pieces.append(piece)
            await sink.token(piece)

    if deadline is None:
        await collect()
    else:
        try:
            await asyncio.wait_for(collect(), _remaining(deadline))
        except TimeoutError:
            raise TaskTimeout("the task ran past its timeout waiting for the model") from None
    return "".join(pieces)
