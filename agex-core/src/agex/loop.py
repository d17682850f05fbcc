"""The ReAct loop: ask the model, run its code, feed back what happened, until the code
calls ``task_success``, ``task_fail`` or ``task_clarify``.

Async at its core, so one process can hold many runs waiting on models; the sandbox work of
each step runs in a worker thread. The caller's session and event sink travel in a context
variable, so a sub-agent called from agent code inherits them.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import TYPE_CHECKING, Any

from agex.coercion import conform
from agex.errors import (
    SandboxCancelled,
    SandboxTimeout,
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
    jsonable,
)
from agex.llm import Message, split_reply
from agex.prompt import system_message, task_message, truncate
from agex.sandbox import CancelScope, Signal
from agex.state.live import live_namespace

if TYPE_CHECKING:
    from agex.hosts import Invocation, Sink

#: Longest printed output or error fed back to the model in one message.
FEEDBACK_LIMIT = 8000

#: (session, sink) of the loop whose agent code is running in this context, if any.
caller: contextvars.ContextVar[tuple[str, Sink] | None] = contextvars.ContextVar(
    "agex_caller", default=None
)


class TaskSuccess(Signal):
    pass


class TaskFailSignal(Signal):
    pass


class TaskClarifySignal(Signal):
    pass


def _task_success(value: Any = None) -> None:
    """Finish the task with ``value``."""
    raise TaskSuccess.issue(value)


def _task_fail(message: str) -> None:
    """Give up, saying why."""
    raise TaskFailSignal.issue(str(message))


def _task_clarify(message: str) -> None:
    """Stop and ask the caller a question."""
    raise TaskClarifySignal.issue(str(message))


SIGNALS = {
    "task_success": _task_success,
    "task_fail": _task_fail,
    "task_clarify": _task_clarify,
}


async def run_loop(invocation: Invocation, sink: Sink) -> Any:
    agent, task, session = invocation.agent, invocation.task, invocation.session
    llm = agent.resolved_llm()
    sandbox = agent.sandbox
    if agent.state_config.type == "live":
        namespace = live_namespace(agent.name, session)
        namespace.update(sandbox.namespace(invocation.arguments, builtins=SIGNALS))
    else:
        namespace = sandbox.namespace(invocation.arguments, builtins=SIGNALS)

    def emit(cls: Any, step: int, **fields: Any) -> None:
        sink.event(cls(agent_name=agent.name, session=session, step=step, **fields))

    deadline = None if agent.timeout is None else time.monotonic() + agent.timeout
    messages: list[Message] = [
        {"role": "system", "content": system_message(agent, task)},
        {"role": "user", "content": task_message(task, invocation.arguments)},
    ]
    emit(
        TaskStartEvent,
        0,
        task_name=task.name,
        inputs={k: truncate(repr(v), 500) for k, v in invocation.arguments.items()},
    )
    token = caller.set((session, sink))
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
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                result = await asyncio.to_thread(
                    sandbox.run, code, namespace, timeout=remaining, cancel=scope
                )
            except SandboxTimeout as exc:
                if exc.output:
                    emit(OutputEvent, step, text=exc.output)
                raise TaskTimeout(f"{task.name} ran past its {agent.timeout:g}s timeout") from None
            except SandboxCancelled:
                emit(CancelledEvent, step)
                raise TaskCancelled(f"{task.name} was cancelled") from None
            if result.output:
                emit(OutputEvent, step, text=result.output)
            feedback = [truncate(result.output, FEEDBACK_LIMIT)] if result.output else []
            signal = result.signal
            if isinstance(signal, TaskSuccess):
                value = signal.args[0] if signal.args else None
                try:
                    value = conform(value, task.returns, "the value given to task_success")
                except TypeError as exc:
                    error = f"TypeError: {exc}"
                    emit(ErrorEvent, step, error=error)
                    feedback.append(
                        error + f"\nThe task returns {task.returns_text}; fix the "
                        "value and call task_success again."
                    )
                else:
                    emit(SuccessEvent, step, result=jsonable(value))
                    return value
            elif isinstance(signal, TaskFailSignal):
                emit(FailEvent, step, message=signal.args[0])
                raise TaskFail(signal.args[0])
            elif isinstance(signal, TaskClarifySignal):
                emit(ClarifyEvent, step, message=signal.args[0])
                raise TaskClarify(signal.args[0])
            elif result.error is not None:
                emit(ErrorEvent, step, error=result.error)
                feedback.append(truncate(result.error, FEEDBACK_LIMIT))
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


async def _ask(llm: Any, messages: list[Message], sink: Sink, deadline: float | None) -> str:
    pieces: list[str] = []

    async def collect() -> None:
        async for piece in llm.stream(messages):
            pieces.append(piece)
            sink.token(piece)

    if deadline is None:
        await collect()
    else:
        try:
            await asyncio.wait_for(collect(), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise TaskTimeout("the task ran past its timeout waiting for the model") from None
    return "".join(pieces)
