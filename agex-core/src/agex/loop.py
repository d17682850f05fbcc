"""The ReAct loop: ask the model, run its code, feed back what happened, until the code
calls ``task_success``, ``task_fail`` or ``task_clarify``.

Async at its core, so one process can hold many runs waiting on models; the sandbox work of
each step runs in a worker thread. The caller's session and event sink travel in a context
variable, so a sub-agent called from agent code inherits them.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from typing import Any, NamedTuple

from agex.coercion import conform
from agex.errors import (
    AgexError,
    CallDenied,
    SandboxCancelled,
    SandboxTimeout,
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
    ErrorEvent,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
    bound_text,
    jsonable,
)
from agex.llm import split_reply
from agex.prompt import system_message, task_message
from agex.protocols import LLM, AgentLike, Invocation, Message, Sink, TaskLike
from agex.sandbox import CancelScope, Signal
from agex.state.live import live_session
from agex.state.recorder import StepRecorder
from agex.stores import LOCAL, Stores

#: Longest printed output or error fed back to the model in one message. Events carry more
#: (up to ``EVENT_TEXT_LIMIT``): the model's context is the scarcer of the two.
FEEDBACK_LIMIT = 8000
#: Longest repr of an input shown in a ``TaskStartEvent``.
INPUT_LIMIT = 500


class Caller(NamedTuple):
    """The run whose agent code is running in this context: what a sub-agent it calls
    inherits (its session, its sink for events, the storages its state lives in), and the
    event loop the sub-agent runs on."""

    session: str
    sink: Sink
    loop: asyncio.AbstractEventLoop
    stores: Stores


caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("agex_caller", default=None)


def inherited_stores() -> Stores:
    """The storages of the run calling from here (a sub-agent's state lives where its
    caller's does: on a server, inside its state directory), or this process's."""
    inherited = caller.get()
    return LOCAL if inherited is None else inherited.stores


class TaskSuccess(Signal):
    pass


class TaskFailSignal(Signal):
    pass


class TaskClarifySignal(Signal):
    pass


def _settle(value: Any, annotation: Any) -> tuple[Any, Any]:
    """The value as the task's return annotation wants it, and how events show it."""
    value = conform(value, annotation, "the value given to task_success")
    return value, jsonable(value)


def _plain_error(exc: Exception) -> str:
    """An exception from checking a value, described without running any of its code."""
    if type(exc) is TypeError or isinstance(exc, AgexError):  # messages agex wrote
        return f"{type(exc).__name__}: {str.__str__(exc.args[0]) if exc.args else ''}"
    return f"{type(exc).__name__} raised while checking the value given to task_success"


def _task_success(value: Any = None) -> None:
    """Finish the task with ``value``."""
    raise TaskSuccess.issue(value)


def _task_fail(message: str) -> None:
    """Give up, saying why."""
    raise TaskFailSignal.issue(str.__str__(str(message)))


def _task_clarify(message: str) -> None:
    """Stop and ask the caller a question."""
    raise TaskClarifySignal.issue(str.__str__(str(message)))


SIGNALS = {
    "task_success": _task_success,
    "task_fail": _task_fail,
    "task_clarify": _task_clarify,
}


async def run_loop(invocation: Invocation, sink: Sink, stores: Stores = LOCAL) -> Any:
    """Run ``invocation``'s task to its end: return its value or raise its outcome. Events
    and model output go to ``sink``; versioned state lives in the storages of ``stores``,
    and so does that of the sub-agents the task calls."""
    agent: AgentLike = invocation.agent
    session = invocation.session
    if agent.state_config.type == "versioned":
        recorder = StepRecorder(agent, session, stores.storage(agent.state_config))
        namespace = agent.sandbox.namespace(builtins=SIGNALS)
        # Loading can run the agent's own methods (a stored set hashes its items): under
        # the agent's time limit, and no signal raised there is obeyed.
        try:
            await asyncio.to_thread(
                agent.sandbox.call, recorder.load_into, namespace, timeout=agent.timeout
            )
        except SandboxTimeout:
            raise TaskTimeout(
                f"loading the state of session {session!r} ran past the timeout"
            ) from None
        except CallDenied as exc:
            raise StateLoadError(
                f"loading the state of session {session!r} failed: {exc}; "
                "move it back with agent.state(session).revert(...)"
            ) from None
        namespace.update(invocation.arguments)
        return await _run(invocation, sink, stores, namespace, recorder)
    if agent.state_config.type != "live":
        namespace = agent.sandbox.namespace(invocation.arguments, builtins=SIGNALS)
        return await _run(invocation, sink, stores, namespace)
    with live_session(agent.name, session) as namespace:
        # Another agent of this name may have left its registrations here: only variables
        # carry over, and this agent's registrations and builtins are put back.
        for name in namespace.pop(INJECTED, ()):
            namespace.pop(name, None)
        fresh = agent.sandbox.namespace(invocation.arguments, builtins=SIGNALS)
        namespace.update(fresh)
        namespace[INJECTED] = set(agent.policy.names)
        return await _run(invocation, sink, stores, namespace)


#: The key under which a live namespace remembers which names the sandbox put there.
INJECTED = "_agex_registered"


async def _run(
    invocation: Invocation,
    sink: Sink,
    stores: Stores,
    namespace: dict[str, Any],
    recorder: StepRecorder | None = None,
) -> Any:
    agent: AgentLike = invocation.agent
    task: TaskLike = invocation.task
    session = invocation.session
    llm = agent.resolved_llm()
    sandbox = agent.sandbox
    commit: str | None = None

    def emit(cls: Any, step: int, **fields: Any) -> None:
        sink.event(cls(agent_name=agent.name, session=session, step=step, commit=commit, **fields))

    deadline = None if agent.timeout is None else time.monotonic() + agent.timeout
    messages: list[Message] = [
        {"role": "system", "content": system_message(agent, task)},
        {"role": "user", "content": task_message(task, invocation.arguments)},
    ]
    emit(
        TaskStartEvent,
        0,
        task_name=task.name,
        inputs={k: bound_text(repr(v), INPUT_LIMIT) for k, v in invocation.arguments.items()},
    )
    token = caller.set(Caller(session, sink, asyncio.get_running_loop(), stores))
    scope = CancelScope()
    try:
        for step in range(1, agent.max_iterations + 1):
            reply = await _ask(llm, messages, sink, deadline)
            thinking, code = split_reply(reply)
            messages.append({"role": "assistant", "content": reply})
            emit(ActionEvent, step, thinking=thinking, code=code or "")
            if code is None:
                messages.append(
                    {
                        "role": "user",
                        "content": "Your reply had no ```python block."
                        " Reply with reasoning and exactly one python block.",
                    }
                )
                continue
            settled: tuple[Any, Any] | Exception | None = None
            try:
                if recorder is None:
                    result, settled = await asyncio.to_thread(
                        _run_and_settle, sandbox, code, namespace, task.returns, deadline, scope
                    )
                else:  # the state is committed before the value is checked
                    result = await asyncio.to_thread(
                        sandbox.run, code, namespace, timeout=_remaining(deadline), cancel=scope
                    )
            except SandboxTimeout as exc:
                if exc.output:
                    emit(OutputEvent, step, text=exc.output)
                raise TaskTimeout(f"{task.name} ran past its {agent.timeout:g}s timeout") from None
            except SandboxCancelled:
                emit(CancelledEvent, step)
                raise TaskCancelled(f"{task.name} was cancelled") from None
            feedback = [bound_text(result.output, FEEDBACK_LIMIT)] if result.output else []
            if recorder is not None:
                # Serializing can run the agent's own methods: under its time limit too.
                remaining = _remaining(deadline)
                record = [
                    {"step": step, "code": code, "output": result.output, "error": result.error}
                ]
                try:
                    committed = await asyncio.to_thread(
                        sandbox.call,
                        functools.partial(
                            recorder.commit, sandbox.compile(code).code, namespace, record
                        ),
                        timeout=remaining,
                        cancel=scope,
                    )
                except SandboxTimeout:
                    raise TaskTimeout(f"{task.name} ran past its timeout saving state") from None
                commit = committed.id
                for name, why in committed.skipped.items():
                    note = (
                        f"State: variable {name!r} could not be saved ({why}); it is gone "
                        "in later tasks."
                    )
                    emit(ErrorEvent, step, error=note)
                    feedback.append(bound_text(note, FEEDBACK_LIMIT))
            if result.output:
                emit(OutputEvent, step, text=result.output)
            signal = result.signal
            if isinstance(signal, TaskSuccess):
                try:
                    if settled is None:
                        settled = await asyncio.to_thread(
                            _check, sandbox, signal, task.returns, deadline, scope
                        )
                    if isinstance(settled, Exception):
                        raise settled
                    value, shown = settled
                except SandboxTimeout:
                    raise TaskTimeout(f"{task.name} ran past its timeout") from None
                except SandboxCancelled:
                    emit(CancelledEvent, step)
                    raise TaskCancelled(f"{task.name} was cancelled") from None
                except Exception as exc:
                    error = _plain_error(exc)
                    emit(ErrorEvent, step, error=error)
                    feedback.append(
                        bound_text(error, FEEDBACK_LIMIT)
                        + f"\nThe task returns {task.returns_text}; fix the "
                        "value and call task_success again."
                    )
                else:
                    emit(SuccessEvent, step, result=shown)
                    return value
            elif isinstance(signal, TaskFailSignal):
                emit(FailEvent, step, message=signal.args[0])
                raise TaskFail(signal.args[0])
            elif isinstance(signal, TaskClarifySignal):
                emit(ClarifyEvent, step, message=signal.args[0])
                raise TaskClarify(signal.args[0])
            elif result.error is not None:
                emit(ErrorEvent, step, error=result.error)
                feedback.append(bound_text(result.error, FEEDBACK_LIMIT))
            messages.append(
                {
                    "role": "user",
                    "content": "\n".join(feedback)
                    or "(no output) Continue; call task_success(...) when done.",
                }
            )
        raise TaskTimeout(
            f"{task.name} found no result in {agent.max_iterations} steps (max_iterations)"
        )
    except asyncio.CancelledError:
        # Cancelled by the caller (task.cancel(), wait_for, Ctrl-C in a sync call): stop the
        # step's code too, then let asyncio's cancellation run its course.
        scope.cancel()
        emit(CancelledEvent, 0)
        raise
    finally:
        caller.reset(token)


def _check(
    sandbox: Any,
    signal: TaskSuccess,
    annotation: Any,
    deadline: float | None,
    scope: CancelScope,
) -> tuple[Any, Any] | Exception:
    """The value given to task_success as the task returns it, and as events show it; or
    why it is not right. Checking it can run the agent's own methods (__eq__, __iter__,
    __repr__): in a worker thread, under the same time limit as its code."""
    value = signal.args[0] if signal.args else None
    try:
        settled: tuple[Any, Any] = sandbox.call(
            _settle, value, annotation, timeout=_remaining(deadline), cancel=scope
        )
    except Exception as exc:
        return exc
    return settled


def _run_and_settle(
    sandbox: Any,
    code: str,
    namespace: dict[str, Any],
    annotation: Any,
    deadline: float | None,
    scope: CancelScope,
) -> tuple[Any, tuple[Any, Any] | Exception | None]:
    """A step's code and, when it calls task_success, the check of its value: one trip to a
    worker thread rather than two, when no state is committed between them."""
    result = sandbox.run(code, namespace, timeout=_remaining(deadline), cancel=scope)
    if not isinstance(result.signal, TaskSuccess):
        return result, None
    return result, _check(sandbox, result.signal, annotation, deadline, scope)


def _remaining(deadline: float | None) -> float | None:
    """Seconds left before ``deadline`` (a monotonic time), or None without one."""
    return None if deadline is None else max(deadline - time.monotonic(), 0.0)


async def _ask(llm: LLM, messages: list[Message], sink: Sink, deadline: float | None) -> str:
    pieces: list[str] = []

    async def collect() -> None:
        async for piece in llm.stream(messages):
            pieces.append(piece)
            sink.token(piece)

    if deadline is None:
        await collect()
    else:
        try:
            await asyncio.wait_for(collect(), _remaining(deadline))
        except TimeoutError:
            raise TaskTimeout("the task ran past its timeout waiting for the model") from None
    return "".join(pieces)
