"""A 3-step scripted task (assign, transform, task_success) on the local host: median wall
time per task. Goal: at most 2 ms. agex 0.12.4's figure on the same scenario is measured in
its own environment in the same run, when installed."""

from __future__ import annotations

import statistics
import time

from measure import PEER, report, run_peer

from agex import Agent, connect_llm

RUNS, WARMUP = 200, 20
STEPS = ["x = 21", "y = x * 2", "task_success(y)"]

# agex 0.12.4 runs each step in a fresh namespace; its memory between steps is cache[...].
PEER_DRIVER = """
import json, statistics, time, warnings
warnings.filterwarnings("ignore")
from agex import Agent, connect_llm
from agex.agent.emissions import PythonEmission
from agex.llm.core import LLMResponse
RUNS, WARMUP = 30, 3
codes = ['cache["x"] = 21', 'cache["y"] = cache["x"] * 2', 'task_success(cache["y"])']
responses = [LLMResponse(emissions=[PythonEmission(code=c, thinking="Step.")])
             for _ in range(RUNS + WARMUP) for c in codes]
agent = Agent(primer="You are helpful.", llm=connect_llm(provider="dummy", responses=responses))
@agent.task
def answer() -> int:
    '''Find the answer.'''
    pass
times = []
for i in range(RUNS + WARMUP):
    t = time.perf_counter()
    if answer() != 42:
        raise SystemExit("wrong answer")
    if i >= WARMUP:
        times.append(time.perf_counter() - t)
print(json.dumps({"median": statistics.median(times)}))
"""


def ours() -> float:
    replies = [f"Step.\n```python\n{code}\n```" for code in STEPS] * (RUNS + WARMUP)
    agent = Agent(
        primer="You are helpful.", llm=connect_llm(provider="scripted", responses=replies)
    )

    @agent.task
    def answer() -> int:
        """Find the answer."""

    times = []
    for i in range(RUNS + WARMUP):
        start = time.perf_counter()
        if answer() != 42:
            raise SystemExit("wrong answer")
        if i >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peer() -> float | None:
    figures = run_peer(PEER, PEER_DRIVER, "agex 0.12.4")
    return None if figures is None else float(figures["median"])


def main() -> None:
    mine = ours()
    theirs = peer()
    lines = [("agex, local host", f"{mine * 1000:.2f} ms per task")]
    if theirs is None:
        lines.append(("agex 0.12.4", "not installed"))
    else:
        lines.append(("agex 0.12.4, same scenario", f"{theirs * 1000:.2f} ms per task"))
        lines.append(("agex 0.12.4 / ours", f"{theirs / mine:.1f}x"))
    lines.append(("goal", "<= 2 ms per task"))
    report(f"3-step scripted task, median of {RUNS}", lines)


if __name__ == "__main__":
    main()
