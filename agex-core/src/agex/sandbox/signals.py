"""Control flow that agent code cannot catch, and the run each signal belongs to.

The loop's ``task_success`` and friends raise a :class:`Signal`; so do timeouts and
cancellation. Agent ``except`` clauses are rewritten to re-raise signals, and every signal
records itself on the current run when created, so even one swallowed by a context manager's
``__exit__`` still ends the run.
"""

from __future__ import annotations

import threading
from typing import Any

#: ``this_thread.run`` is the run executing agent code in this thread, if any.
this_thread = threading.local()


def current_run() -> Any:
    """The run executing agent code in this thread, or None."""
    return getattr(this_thread, "run", None)


class Signal(BaseException):
    """Ends the agent's code; subclass it for outcomes such as success or failure.

    Host code raises one made with :meth:`issue`. One made any other way (by agent code that
    got hold of the class) still stops the code, but is not obeyed as an outcome.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._trusted = False
        run = current_run()
        if run is not None:
            run.signals.append(self)

    @classmethod
    def issue(cls, *args: Any) -> Signal:
        """A signal the run will obey."""
        signal = cls(*args)
        signal._trusted = True
        return signal

    @property
    def trusted(self) -> bool:
        return self._trusted


class Interrupt(Signal):
    """Raised asynchronously in the thread running agent code."""


class TimeoutInterrupt(Interrupt):
    pass


class CancelInterrupt(Interrupt):
    pass


class OutsideRun(RuntimeError):
    """Agent cleanup code was about to run after its run ended (a generator closed by the
    garbage collector, say), where no time limit would stop it."""


def raise_pending() -> None:
    """First statement of every ``finally`` block, ``except`` clause, ``__exit__`` and
    generator start in agent code: once a signal has been raised, no cleanup of the agent's
    may replace it with another exception, or loop; and none runs outside a run."""
    run = current_run()
    if run is None:
        raise OutsideRun("agent code runs only while its task runs")
    if run.signals:
        raise run.signals[0]


def reraise_signals(exc: BaseException) -> None:
    """First statement of every ``except`` clause in agent code."""
    raise_pending()
    if isinstance(exc, Signal):
        raise exc
    if isinstance(exc, BaseExceptionGroup):
        signals = exc.subgroup(lambda e: isinstance(e, Signal))
        if signals is not None:
            leaf: BaseException = signals
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            raise leaf


class _Exits:
    """Wraps the context manager of an agent ``with`` statement: its ``__exit__`` still runs,
    but cannot suppress a signal by returning True."""

    __slots__ = ("_cm", "_exit", "_type")

    def __init__(self, cm: Any) -> None:
        self._cm, self._type = cm, type(cm)

    def _missing(self, asynchronous: bool) -> TypeError:
        return TypeError(
            f"'{self._type.__name__}' object does not support the "
            f"{'asynchronous ' if asynchronous else ''}context manager protocol"
        )

    def __enter__(self) -> Any:
        try:
            enter, self._exit = self._type.__enter__, self._type.__exit__
        except AttributeError:
            raise self._missing(False) from None
        return enter(self._cm)

    def __exit__(self, *exc: Any) -> bool:
        raise_pending()  # once a signal is out, the agent's cleanup does not run
        suppress = self._exit(self._cm, *exc)
        return bool(suppress) and not _signalled(exc[1])

    async def __aenter__(self) -> Any:
        try:
            enter, self._exit = self._type.__aenter__, self._type.__aexit__
        except AttributeError:
            raise self._missing(True) from None
        return await enter(self._cm)

    async def __aexit__(self, *exc: Any) -> bool:
        raise_pending()
        suppress = await self._exit(self._cm, *exc)
        return bool(suppress) and not _signalled(exc[1])


def _signalled(exc: BaseException | None) -> bool:
    run = current_run()
    return isinstance(exc, Signal) or (run is not None and bool(run.signals))


def exits_cannot_swallow_signals(cm: Any) -> Any:
    return _Exits(cm)
