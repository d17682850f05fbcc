"""A task: an ordinary function whose signature and docstring are the spec. Calling it
runs the agent's loop on its host; async functions give an awaitable task."""

from __future__ import annotations

import ast
import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
import inspect
import textwrap
import threading
import typing
from collections.abc import Callable
from typing import Any

from agex.coercion import conform
from agex.errors import CallDenied
from agex.loop import caller
from agex.protocols import AgentLike, Invocation, Sink, check_session
from agex.sandbox.ownership import agent_code_in
from agex.state.turn import CONFLICTS, MAX_RETRIES

_runners = threading.local()


class Task:
    def __init__(
        self,
        agent: AgentLike,
        func: Callable[..., Any],
        on_conflict: str = "wait",
        max_conflict_retries: int = 3,
        *,
        primer: str | None = None,
        setup: str | None = None,
    ) -> None:
        if on_conflict not in CONFLICTS:
            raise ValueError(
                f"on_conflict must be one of {', '.join(map(repr, CONFLICTS))}, got {on_conflict!r}"
            )
        if type(max_conflict_retries) is not int or not 0 <= max_conflict_retries <= MAX_RETRIES:
            raise ValueError(
                f"max_conflict_retries must be a whole number from 0 to {MAX_RETRIES}, got "
                f"{max_conflict_retries!r}"
            )
        self.on_conflict, self.max_conflict_retries = on_conflict, max_conflict_retries
        if not inspect.isfunction(func) or func.__name__ == "<lambda>":
            raise TypeError(
                f"@task takes a function defined with def, got {type(func).__name__}: its "
                "signature and docstring are the task's spec"
            )
        owner = getattr(func, "__agex_fn_of__", None)
        if owner is not None:
            raise TypeError(
                f"{func.__name__} is registered with {owner}.fn below @task: stack "
                f"@{owner}.fn above the other agent's @task, so the task is what gets registered"
            )
        if primer is None and not inspect.getdoc(func):
            raise TypeError(
                f"task {func.__name__} needs a docstring (the agent's instructions), or "
                'its instructions given as @agent.task("what to do")'
            )
        _require_empty_body(func)
        #: The agent's instructions for this task, as the model reads them: the string given
        #: to ``@agent.task("...")``, else the docstring (which is then the caller's
        #: documentation too).
        self.primer: str = primer if primer is not None else inspect.getdoc(func) or ""
        #: Code run in the sandbox before the first step (see ``check_setup``).
        self.setup = None if setup is None else check_setup(setup, func.__name__)
        #: The ``agex.agent.Agent`` whose task this is (typed loosely: that module imports
        #: this one).
        self.agent: Any = agent
        clash = sorted(RESERVED & set(inspect.signature(func).parameters))
        if clash:
            raise TypeError(
                f"task {func.__name__} cannot have parameters named {', '.join(clash)}: those "
                "names are how a call passes the session and the callbacks"
            )
        self.func = func
        self.name = func.__name__
        self.signature = inspect.signature(func)
        self._hints: dict[str, Any] | None = None
        self._hints_error: str | None = None
        self._resolve_hints()
        self.is_async = inspect.iscoroutinefunction(func)
        functools.update_wrapper(self, func)

    def _resolve_hints(self) -> dict[str, Any]:
        """The type hints, resolved now or, for names defined after the task, at its first
        call; never silently left unchecked."""
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.func)
            except Exception as exc:
                self._hints_error = f"{type(exc).__name__}: {exc}"
                return {}
        return self._hints

    @property
    def hints(self) -> dict[str, Any]:
        hints = self._resolve_hints()
        if self._hints is None:
            raise TypeError(
                f"the type hints of task {self.name} cannot be resolved ({self._hints_error});"
                " define the types they name at module level"
            )
        return {k: v for k, v in hints.items() if k != "return"}

    @property
    def returns(self) -> Any:
        self.hints  # noqa: B018 - raises if the hints cannot be resolved
        return (self._hints or {}).get("return", Any)

    @property
    def returns_text(self) -> str:
        returns = self.returns
        return getattr(returns, "__name__", None) or repr(returns)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The arguments by name, checked against the type hints."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}(): {exc}") from None
        bound.apply_defaults()
        hints = self.hints
        return {
            name: conform(value, hints.get(name, Any), f"argument {name!r} of {self.name}")
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

        return await self._start(self.bind(args, kwargs), session, on_event, on_token)

    async def _start(
        self,
        arguments: dict[str, Any],
        session: str | None,
        on_event: Callable[..., Any] | None,
        on_token: Callable[[str], Any] | None,
    ) -> Any:
        inherited = caller.get()
        if session is None:
            session = inherited.session if inherited else "default"
        check_session(session)
        if on_event is None and inherited is not None:
            on_event = inherited.sink.on_event  # a sub-agent's events reach its caller
        sink = Sink(on_event, on_token)
        return await self.agent.host.arun(Invocation(self.agent, self, arguments, session), sink)

    def cancel(self, session: str = "default") -> int:
        """Stop this agent's runs in ``session``, wherever its host runs them, at the next
        step; their callers get TaskCancelled, and versioned state stays at its last commit.
        Returns how many runs were stopped."""
        check_session(session)
        cancelled: int = self.agent.host.cancel(self.agent, session)
        return cancelled

    def as_function(self) -> Callable[..., Any]:
        """What agent code calls when this task is registered with another agent: a plain
        function, so the Task, its agent and its model client stay out of reach, and the
        session and callbacks are the caller's, not the agent's to choose."""

        def call(*args: Any, **kwargs: Any) -> Any:
            chosen = sorted(RESERVED & kwargs.keys())
            if chosen:
                raise TypeError(f"{self.name}() takes no {', '.join(chosen)} from agent code")
            return self._from_agent_code(args, kwargs)

        call.__name__ = call.__qualname__ = self.name
        call.__doc__ = self.func.__doc__ or self.primer
        call.__signature__ = self.signature  # type: ignore[attr-defined]
        # Where the caller runs the loop apart from the agent code (isolation), it finds
        # the sub-agent it declared by this.
        call.__agex_task__ = self  # type: ignore[attr-defined]
        return call

    def __repr__(self) -> str:
        return f"<task {self.name} of agent {self.agent.name!r}>"

    def _from_agent_code(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run this task for agent code running in a sandbox worker thread: on the calling
        run's event loop, waiting in short slices so the caller's time limit or
        cancellation can interrupt the wait, and then cancel this task too."""
        inherited = caller.get()
        if inherited is None:
            return self(*args, **kwargs)
        session, sink, loop = inherited.session, inherited.sink, inherited.loop
        # Checked here, under the calling run's time limit: the event loop must never run
        # the caller's code (its __iter__, __eq__, __repr__).
        arguments = self.bind(args, kwargs)
        _plain_across(arguments, f"the arguments of {self.name}()")
        if inherited.relay is not None:  # in a worker process: the supervisor runs it
            result = inherited.relay(self, arguments)
            _plain_across({"result": result}, f"the result of {self.name}()")
            return result
        assert loop is not None
        run = self._start(arguments, session, sink.on_event, None)
        future = asyncio.run_coroutine_threadsafe(run, loop)
        try:
            while not future.done():
                concurrent.futures.wait([future], timeout=0.05)
        except BaseException:
            future.cancel()
            raise
        result = future.result()
        _plain_across({"result": result}, f"the result of {self.name}()")
        return result


def _plain_across(values: dict[str, Any], what: str) -> None:
    """Values crossing from one agent's sandbox to another's carry no agent code: code one
    agent wrote would otherwise run with the other's registrations (once stored in its
    versioned state, its functions are bound to that agent's namespace), or in the event
    loop that runs both."""
    for name, value in values.items():
        found = agent_code_in(value)
        if found is not None:
            raise CallDenied(
                f"{what}: {name} carries code an agent wrote (a {type(found).__name__}); pass "
                "plain data (numbers, strings, lists, dicts, the registered classes) between "
                "agents"
            )


def check_primer(primer: object) -> str:
    """The instructions given to ``@agent.task("...")``, if they are some."""
    if not isinstance(primer, str):
        raise TypeError(
            "@agent.task takes the task's instructions (a string) or the function itself; "
            f"got {type(primer).__name__}"
        )
    if not primer.strip():
        raise ValueError(
            '@agent.task("...") was given empty instructions: say what the agent should do, '
            "or leave them out and write a docstring"
        )
    return primer.strip()


def check_setup(setup: object, task: str) -> str:
    """Setup code as a task keeps it: a string that parses as Python and leaves ending the
    task to the agent."""
    if not isinstance(setup, str):
        raise TypeError(
            f"the setup of task {task} must be Python code in a string, got {type(setup).__name__}"
        )
    source = textwrap.dedent(setup).strip("\n")
    if not source.strip():
        raise ValueError(f"the setup of task {task} is empty: leave setup= out")
    try:
        tree = ast.parse(source, f"<setup of {task}>")
    except SyntaxError as exc:
        raise ValueError(
            f"the setup of task {task} is not valid Python: {exc.msg} (line {exc.lineno}); "
            "fix the code given to setup="
        ) from None
    ending = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in _ENDINGS})
    if ending:
        raise ValueError(
            f"the setup of task {task} calls {', '.join(ending)}: setup prepares the task, "
            "and only the agent's code ends it; leave those calls out of setup="
        )
    return source


_ENDINGS = frozenset({"task_success", "task_fail", "task_clarify"})

#: Keyword arguments of a task call that are the caller's, never the task's own parameters.
RESERVED = frozenset({"session", "on_event", "on_token"})


def _run_sync(coroutine: Any) -> Any:
    """Run the loop to completion from synchronous code, reusing this thread's runner."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = True
    context = contextvars.copy_context()
    if not running:
        runner = getattr(_runners, "runner", None)
        if runner is None:
            runner = _runners.runner = asyncio.Runner()
            atexit.register(runner.close)
        return runner.run(coroutine, context=context)
    # Called from inside a running event loop (a notebook): run it on a thread of its own.
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
            "the code), and its instructions say what to do"
        )
