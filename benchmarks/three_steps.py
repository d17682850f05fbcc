"""The 3-step scripted task (assign, print, task_success) that the host benchmarks time on
each host, side by side."""

from __future__ import annotations

import time
from collections.abc import Callable

from measure import interleaved

from agex import Agent, connect_llm

STEPS = ["x = 21", "print(x)", "task_success(x * 2)"]


def replies(codes: list[str]) -> list[str]:
    return [f"Step.\n```python\n{code}\n```" for code in codes]


def timed_task(
    host: object | None, calls: int, isolation: str | None = None, listen: bool = False
) -> Callable[[], float]:
    """One call of the 3-step task per call of the result, timed; ``calls`` calls at most.
    ``listen``: the call follows events and tokens (callbacks that do nothing)."""
    llm = connect_llm(provider="scripted", responses=replies(STEPS) * calls)
    agent = Agent(primer="You are helpful.", host=host, llm=llm, isolation=isolation)

    @agent.task
    def answer() -> int:
        """Find the answer."""

    def once() -> float:
        start = time.perf_counter()
        heard = {"on_event": _ignore, "on_token": _ignore} if listen else {}
        if answer(**heard) != 42:
            raise SystemExit("wrong answer")
        return time.perf_counter() - start

    return once


def _ignore(_: object) -> None:
    return None


def per_task(
    hosts: dict[str, object | None],
    runs: int,
    warmup: int,
    isolation: dict[str, str] | None = None,
) -> dict[str, float]:
    """Median seconds per task on each host (its agent at ``isolation[name]``, if given),
    after ``warmup`` calls each, interleaved."""
    levels = isolation or {}
    cases = {
        name: timed_task(host, runs + warmup, levels.get(name)) for name, host in hosts.items()
    }
    for _ in range(warmup):
        for case in cases.values():
            case()
    return interleaved(runs, cases)
