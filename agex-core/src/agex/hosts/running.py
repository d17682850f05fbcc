"""The runs in progress in this process, by agent name and session, so that
``task.cancel(session)`` can stop them from any thread (the local host, and the agex server
for the runs it holds)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any

from agex.errors import TaskCancelled


class _Run:
    __slots__ = ("cancelled", "loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Future[Any]) -> None:
        self.loop, self.task, self.cancelled = loop, task, False

    def cancel(self) -> None:
        self.cancelled = True
        with contextlib.suppress(RuntimeError):  # its loop has closed: the run is over
            self.loop.call_soon_threadsafe(self.task.cancel)


class RunTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], set[_Run]] = {}

    async def run(self, agent_name: str, session: str, work: Coroutine[Any, Any, Any]) -> Any:
        """Run ``work`` as a cancellable run of this agent in this session. Cancelled through
        :meth:`cancel`, it raises TaskCancelled; cancelled by its caller, it stays asyncio's
        CancelledError."""
        inner = asyncio.ensure_future(work)
        run = _Run(asyncio.get_running_loop(), inner)
        key = (agent_name, session)
        with self._lock:
            self._runs.setdefault(key, set()).add(run)
        try:
            return await inner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if run.cancelled and (current is None or not current.cancelling()):
                raise TaskCancelled(
                    f"agent {agent_name!r} was cancelled in session {session!r}"
                ) from None
            raise
        finally:
            with self._lock:
                runs = self._runs.get(key)
                if runs is not None:
                    runs.discard(run)
                    if not runs:
                        del self._runs[key]

    def cancel(self, agent_name: str, session: str) -> int:
        """Stop every run of this agent in this session; returns how many there were."""
        with self._lock:
            runs = list(self._runs.get((agent_name, session), ()))
        for run in runs:
            run.cancel()
        return len(runs)

    def count(self) -> int:
        with self._lock:
            return sum(len(r) for r in self._runs.values())


#: The runs of this process.
RUNS = RunTable()
