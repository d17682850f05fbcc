"""Run agent code: compile it once through the rewriter, ``exec`` it in a namespace whose
builtins are the sandbox's, capture its prints, stop it on time, report its errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from types import CodeType
from typing import Any

from agex.errors import CallDenied, CodeRejected, SandboxCancelled, SandboxTimeout
from agex.sandbox.guards import Guards
from agex.sandbox.output import Output
from agex.sandbox.ownership import AGENT_FILENAME
from agex.sandbox.policy import Policy
from agex.sandbox.rewrite import compile_agent_code
from agex.sandbox.signals import CancelInterrupt, Interrupt, Signal, TimeoutInterrupt, this_thread

#: Longest agent code compiled, in characters: checking it takes time no timeout covers.
MAX_SOURCE = 100_000


class Program:
    """Agent code, checked and compiled: run it as often as you like."""

    __slots__ = ("code", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.code: CodeType = compile_agent_code(source, AGENT_FILENAME)


_compile = lru_cache(maxsize=256)(Program)


class RunResult:
    """What one run of agent code produced."""

    __slots__ = ("error", "exception", "output", "signal")

    def __init__(
        self, output: str, error: str | None, exception: BaseException | None, signal: Signal | None
    ) -> None:
        self.output = output  #: printed text, capped
        self.error = error  #: the agent-facing traceback, when the code raised
        self.exception = exception  #: the exception itself, for the caller
        self.signal = signal  #: the control signal that ended the code, if any

    def __repr__(self) -> str:
        return f"RunResult(output={self.output!r}, error={self.error!r}, signal={self.signal!r})"


class CancelScope:
    """Hand one to :meth:`Sandbox.run`; ``cancel()`` from any thread stops that run."""

    def __init__(self) -> None:
        self._watch: Any = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        watch = self._watch
        if watch is not None:
            from agex.sandbox.watchdog import watchdog  # ctypes and a thread: only when used

            watchdog().at(time.monotonic(), watch, CancelInterrupt)


class _Run:
    __slots__ = ("output", "signals", "watch")

    def __init__(self, output: Output) -> None:
        self.output = output
        self.signals: list[Signal] = []
        self.watch: Any = None  # held while host code runs for the agent (a live method)


class Sandbox:
    """Runs agent code under a :class:`Policy`.

    The in-process sandbox is defence in depth, not an isolation boundary: it keeps honest
    mistakes and casual escapes out, but isolation comes from the host (a server in a
    container, a Modal container). See docs/security.md.
    """

    def __init__(self, policy: Policy | None = None, *, max_output: int = 20_000) -> None:
        self.policy = policy or Policy()
        self.max_output = max_output
        self.builtins = Guards(self.policy).builtins()

    def compile(self, source: str) -> Program:
        """Check and compile agent code; raises SyntaxError or CodeRejected."""
        if not isinstance(source, str):
            raise TypeError(f"agent code is a string, not {type(source).__name__}")
        if len(source) > MAX_SOURCE:
            raise CodeRejected(
                f"the code is {len(source):,} characters long; the limit is {MAX_SOURCE:,}"
            )
        try:
            return _compile(source)
        except (RecursionError, MemoryError):
            raise CodeRejected("the code is nested too deeply to compile") from None

    def namespace(
        self, variables: Mapping[str, Any] | None = None, builtins: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A fresh namespace: the registered names, ``variables``, and the sandbox's builtins
        plus ``builtins`` (the loop's ``task_success`` and friends)."""
        reserved = [name for name in builtins or () if name.startswith("_agex")]
        if reserved:
            raise ValueError(f"builtins cannot replace the sandbox's own: {reserved}")
        table = {**self.builtins, **builtins} if builtins else self.builtins
        return {
            "__builtins__": table,
            "__name__": "__agent__",
            **self.policy.names,
            **(variables or {}),
        }

    def run(
        self,
        code: str | Program,
        namespace: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        cancel: CancelScope | None = None,
    ) -> RunResult:
        """Run agent code in ``namespace`` (made fresh if omitted), which it updates.

        Errors in the agent's code come back in the result, as the agent should see them;
        running past ``timeout`` seconds raises SandboxTimeout, and ``cancel`` raises
        SandboxCancelled, both with the output so far.
        """
        namespace = self.namespace() if namespace is None else namespace
        table = namespace.setdefault("__builtins__", self.builtins)
        if not isinstance(table, dict) or table.get("_agex_ok") is not True:
            # exec would otherwise run the code against whatever builtins it found there
            raise ValueError(
                "the namespace's __builtins__ are not a sandbox's; make namespaces with "
                "Sandbox.namespace()"
            )
        try:
            program = code if isinstance(code, Program) else self.compile(code)
        except (SyntaxError, CodeRejected, RecursionError, MemoryError, ValueError) as exc:
            return RunResult("", agent_error(exc, code if isinstance(code, str) else ""), exc, None)
        run, fired, outcome, error, _ = self._execute(
            lambda: exec(program.code, namespace), timeout, cancel, program.source
        )
        output = run.output.text()
        if fired is TimeoutInterrupt:
            raise SandboxTimeout(f"agent code ran past its {timeout:g}s time limit", output)
        if fired is CancelInterrupt or (cancel is not None and cancel.cancelled):
            raise SandboxCancelled("agent code was cancelled", output)
        # The first signal recorded on this run wins, even if later code swallowed it; one
        # raised by another run (a sub-agent's, say) is not this run's outcome.
        signal = run.signals[0] if run.signals else None
        if signal is None and isinstance(outcome, Signal):
            outcome = CallDenied("a signal from another run reached this one")
            error = agent_error(outcome, program.source)
        if signal is not None and not signal.trusted:
            forged = CallDenied(
                f"agent code cannot raise {type(signal).__name__} itself; call the function "
                "that finishes the task instead"
            )
            return RunResult(output, agent_error(forged, program.source), forged, None)
        if signal is not None or outcome is None:
            return RunResult(output, None, None, signal)
        return RunResult(output, error, outcome, None)

    def call(
        self,
        func: Callable[..., Any],
        *args: Any,
        timeout: float | None = None,
        cancel: CancelScope | None = None,
    ) -> Any:
        """``func(*args)`` for host code that may run agent code (a value's ``__eq__``,
        ``__repr__``, ``__iter__``...), under the same time limit, cancellation and output
        capture as agent code. Exceptions propagate; a signal raised inside is refused."""
        run, fired, outcome, _, value = self._execute(lambda: func(*args), timeout, cancel, None)
        if fired is TimeoutInterrupt:
            raise SandboxTimeout(f"checking the agent's value ran past {timeout:g}s")
        if fired is CancelInterrupt or (cancel is not None and cancel.cancelled):
            raise SandboxCancelled("cancelled while checking the agent's value")
        if run.signals or isinstance(outcome, Signal):
            raise CallDenied("the value's own methods tried to end the task")
        if outcome is not None:
            raise outcome
        return value

    def _execute(
        self,
        work: Callable[[], Any],
        timeout: float | None,
        cancel: CancelScope | None,
        source: str | None,
    ) -> tuple[Any, ...]:
        """Run ``work`` as agent code runs: this thread's current run set, the watch armed,
        and the watch disarmed again without a Python-level call in between."""
        run = _Run(Output(self.max_output))
        outcome: BaseException | None = None
        error: str | None = None
        value: Any = None
        watch = run.watch = self._watch(timeout, cancel)
        previous = getattr(this_thread, "run", None)
        this_thread.run = run
        try:
            try:
                value = work()
            except (KeyboardInterrupt, SystemExit):
                raise
            except Signal as exc:
                outcome = exc
            except BaseException as exc:
                outcome = exc
                if source is not None:
                    # This may run the agent's __str__: do it while the watch still stands.
                    error = agent_error(exc, source)
        except Interrupt as exc:  # arrived while the error was being formatted
            outcome, error = exc, None
        finally:
            if watch is not None:
                # No Python-level call from here until the watch is inactive; see Watch.
                watch.active = False
                while True:
                    try:
                        watch.disarm()
                        break
                    except Interrupt:
                        continue  # one in flight arrived; no other can follow
                if cancel is not None:
                    cancel._watch = None
            this_thread.run = previous
        fired = watch.fired if watch is not None else None
        if watch is not None and watch.overran():
            fired = TimeoutInterrupt
        return run, fired, outcome, error, value

    @staticmethod
    def _watch(timeout: float | None, cancel: CancelScope | None) -> Any:
        if timeout is None and cancel is None:
            return None
        from agex.sandbox.watchdog import Watch, watchdog  # ctypes and a thread: only when used

        deadline = None if timeout is None else time.monotonic() + timeout
        watch = Watch(threading.get_ident(), deadline)
        if deadline is not None:
            watchdog().at(deadline, watch, TimeoutInterrupt)
        if cancel is not None:
            cancel._watch = watch
            if cancel.cancelled:
                watchdog().at(time.monotonic(), watch, CancelInterrupt)
        return watch


def agent_error(exc: BaseException, source: str) -> str:
    from agex.sandbox.tracebacks import agent_traceback  # loaded by the first error only

    return agent_traceback(exc, source, AGENT_FILENAME)
