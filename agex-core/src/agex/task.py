"""A task: an ordinary function whose signature and docstring are the spec. Calling it
runs the agent's loop on its host; async functions give an awaitable task."""

from __future__ import annotations

import ast
import asyncio
import contextvars
import functools
import inspect
import textwrap
import threading
import typing
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agex.coercion import conform
from agex.hosts import Invocation, Sink

if TYPE_CHECKING:
    from agex.agent import Agent

_runners = threading.local()


class Task:
    def __init__(self, agent: Agent, func: Callable[..., Any]) -> None:
        owner = getattr(func, "__agex_fn_of__", None)
        if owner is not None:
            raise TypeError(
                f"{func.__name__} is registered with {owner}.fn below @task: stack "
                f"@{owner}.fn above the other agent's @task, so the task is what gets registered"
            )
        if not inspect.getdoc(func):
            raise TypeError(
                f"task {func.__name__} needs a docstring: it is the agent's instructions"
            )
        _require_empty_body(func)
        self.agent = agent
        self.func = func
        self.name = func.__name__
        self.signature = inspect.signature(func)
        try:
            hints = typing.get_type_hints(func)
        except Exception:
            hints = dict(getattr(func, "__annotations__", {}))
        self.returns = hints.pop("return", Any)
        self.hints = hints
        self.returns_text = getattr(self.returns, "__name__", None) or repr(self.returns)
        self.is_async = inspect.iscoroutinefunction(func)
        functools.update_wrapper(self, func)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by name, checked against the type hints."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        return {
            name: conform(value, self.hints.get(name, Any), f"argument {name!r} of {self.name}")
            for name, value in bound.arguments.items()
        }

    def __call__(
        self,
        *args: Any,
        session: str | None = None,
        on_event: Callable[..., Any] | None = None,
        on_token: Callable[[str], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        run = self.arun(*args, session=session, on_event=on_event, on_token=on_token, **kwargs)
        return run if self.is_async else _run_sync(run)

    async def arun(
        self,
        *args: Any,
        session: str | None = None,
        on_event: Callable[..., Any] | None = None,
        on_token: Callable[[str], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        from agex.loop import caller

        arguments = self.bind(args, kwargs)
        inherited = caller.get()
        if session is None:
            session = inherited[0] if inherited else "default"
        if not isinstance(session, str) or not session:
            raise ValueError(f"session must be a non-empty string, got {session!r}")
        if on_event is None and inherited is not None:
            on_event = inherited[1].on_event  # a sub-agent's events reach its caller
        sink = Sink(on_event, on_token)
        return await self.agent.host.arun(Invocation(self.agent, self, arguments, session), sink)

    def as_function(self) -> Callable[..., Any]:
        """What agent code calls when this task is registered with another agent: a plain
        function, so the Task, its agent and its model client stay out of reach."""

        def call(*args: Any, **kwargs: Any) -> Any:
            return self(*args, **kwargs)

        call.__name__ = call.__qualname__ = self.name
        call.__doc__ = self.func.__doc__
        call.__signature__ = self.signature  # type: ignore[attr-defined]
        return call

    def __repr__(self) -> str:
        return f"<task {self.name} of agent {self.agent.name!r}>"


def _run_sync(coroutine: Any) -> Any:
    """Run the loop to completion from synchronous code, reusing this thread's runner."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        runner = getattr(_runners, "runner", None)
        if runner is None:
            runner = _runners.runner = asyncio.Runner()
        return runner.run(coroutine)
    # Called from inside a running event loop (a notebook): run it on a thread of its own.
    context = contextvars.copy_context()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = context.run(asyncio.run, coroutine)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, name="agex-task")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _require_empty_body(func: Callable[..., Any]) -> None:
    try:
        source = textwrap.dedent(inspect.getsource(func))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return  # no source to read (defined in a REPL): nothing to check
    node = next(
        (
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == func.__name__
        ),
        None,
    )
    if node is None:
        return
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    harmless = all(
        isinstance(s, ast.Pass)
        or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
        or (isinstance(s, ast.Raise) and "NotImplementedError" in ast.dump(s))
        for s in body
    )
    if not harmless:
        raise TypeError(
            f"task {func.__name__} has a body; a task's body stays empty (the agent writes "
            "the code), and its docstring says what to do"
        )
