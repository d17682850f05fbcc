"""Agent code in confined worker processes, against agent code in this process:

1. the 3-step scripted task (assign, print, task_success) on the local host, in-process and
   isolated (a warm worker per task, "process" and "kernel"): medians of interleaved runs.
   Goal: at most 3 ms per isolated task. agex 0.12.4's isolation="process" and "kernel" on
   the same task are measured in its own environment in the same run, when installed.
2. 200 concurrent 3-step tasks, each model reply taking 0.2 s, on one `agex serve` in its
   default isolation (every run in a worker): wall time against the ideal 0.6 s (goal: at
   most 1.6x) once the server has seen such a crowd (its pool keeps as many workers ready
   as were taken lately; the first crowd's figure is printed too), and what the server,
   its template and its workers hold in memory while the runs are in flight, per run
   (proportional set size over the idle server; goal: at most 15 MB).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench_http import CROWD, DELAY, ROUNDS, agex_server, crowd_round, tasks, together
from measure import PEER, report, run_peer
from three_steps import STEPS, replies

from agex import Agent, connect_host, connect_llm
from agex.isolation import LEVELS, check, strongest

RUNS, WARMUP = 60, 10
#: Seconds between crowds.
PAUSE = 4.0
GOAL_TASK, GOAL_CROWD, GOAL_MEMORY = 0.003, 1.6, 15.0

# agex 0.12.4 runs each step in a fresh namespace; its memory between steps is cache[...].
PEER_DRIVER = """
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
from agex import Agent, connect_llm
from agex.agent.emissions import PythonEmission
from agex.llm.core import LLMResponse
RUNS, WARMUP = 20, 3
codes = ['cache["x"] = 21', 'print(cache["x"])', 'task_success(cache["x"] * 2)']
out = {}
for level in ("none", "process", "kernel"):
    responses = [LLMResponse(emissions=[PythonEmission(code=c, thinking="Step.")])
                 for _ in range(RUNS + WARMUP) for c in codes]
    try:
        agent = Agent(primer="You are helpful.", isolation=level,
                      llm=connect_llm(provider="dummy", responses=responses))
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
        out[level] = statistics.median(times)
    except BaseException as exc:  # its task outcomes are BaseExceptions
        out[level] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
print(json.dumps(out))
"""


def available(level: str) -> str | None:
    """None when this machine gives ``level``, else why not."""
    try:
        check(level)
    except ValueError as exc:
        return str(exc)
    return None


def per_task() -> dict[str, float]:
    """Median seconds per 3-step task, by isolation, interleaved after a warm-up."""
    levels = [level for level in LEVELS if available(level) is None]
    cases = {}
    for level in levels:
        llm = connect_llm(provider="scripted", responses=replies(STEPS) * (RUNS + WARMUP))
        agent = Agent(primer="You are helpful.", isolation=level, llm=llm)

        @agent.task
        def answer() -> int:
            """Find the answer."""

        cases[level] = answer
    samples: dict[str, list[float]] = {level: [] for level in levels}
    for i in range(RUNS + WARMUP):
        for level, answer in cases.items():
            start = time.perf_counter()
            if answer() != 42:
                raise SystemExit("wrong answer")
            if i >= WARMUP:
                samples[level].append(time.perf_counter() - start)
            # A worker per task: the pool makes the next one while the caller is elsewhere,
            # as between the tasks of a real program.
            time.sleep(0.005)
    return {level: statistics.median(values) for level, values in samples.items()}


def pss_kb(pid: int) -> int:
    """Proportional set size of a process and everything it started, in KiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                todo += [int(c) for c in children]
        except OSError:
            continue
    return total


def server_pid(port: str) -> int:
    """The `agex serve` process listening on ``port``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in command and port.encode() in command:
            return int(proc.name)
    raise RuntimeError("the server process was not found")


def crowd_memory(url: str, token: str) -> tuple[float, float, float]:
    """Wall time of the first crowd on the isolated server (a pool sized for a few runs),
    the median of those after it (a pool sized by the crowd before), and the memory per run
    in flight (MB)."""
    host = connect_host(provider="http", url=url, token=token)
    crowd_round(host, 20)  # warm-up
    time.sleep(PAUSE)
    pid = server_pid(url.rsplit(":", 1)[1])
    idle = pss_kb(pid)
    first = crowd_round(host, CROWD)
    walls, peaks = [], []
    for _ in range(ROUNDS):
        time.sleep(PAUSE)  # the pool gets ready for the next crowd, as between real ones
        peak = [0]
        done = threading.Event()

        def sample(peak: list[int] = peak, done: threading.Event = done) -> None:
            while not done.wait(0.05):
                peak[0] = max(peak[0], pss_kb(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            walls.append(asyncio.run(together(tasks(host, CROWD))))
        finally:
            done.set()
            sampler.join()
        peaks.append(peak[0])
    return first, statistics.median(walls), (statistics.median(peaks) - idle) / 1024 / CROWD


def main() -> None:
    ours = per_task()
    theirs = run_peer(PEER, PEER_DRIVER, "agex 0.12.4 with isolation")
    with (
        tempfile.TemporaryDirectory(prefix="agex-bench-isolation-") as tmp,
        agex_server(Path(tmp)) as (url, token),
    ):
        first, wall, memory = crowd_memory(url, token)
    ideal = len(STEPS) * DELAY
    lines = [
        (f"agex, isolation={level!r}", f"{seconds * 1000:.2f} ms per task")
        for level, seconds in ours.items()
    ]
    lines += [
        (f"agex, isolation={level!r}", f"unavailable here: {str(why)[:120]}...")
        for level in LEVELS
        if (why := available(level)) is not None
    ]
    for level in ("process", "kernel"):
        if level in ours:
            extra = ours[level] - ours["none"]
            verdict = "meets" if ours[level] <= GOAL_TASK else "MISSES"
            lines.append(
                (
                    f"  {level}: a worker per task",
                    f"{extra * 1000:+.2f} ms over in-process; {verdict} the goal of "
                    f"{GOAL_TASK * 1000:.0f} ms",
                )
            )
    if isinstance(theirs, dict):
        for level, value in theirs.items():
            shown = f"{value * 1000:.2f} ms per task" if isinstance(value, float) else value
            lines.append((f"agex 0.12.4, isolation={level!r}", shown))
    else:
        lines.append(("agex 0.12.4", "not installed here"))
    report("Isolation: the 3-step task on the local host", lines)
    ratio = wall / ideal
    report(
        f"{CROWD} concurrent 3-step tasks ({DELAY:g} s replies) on agex serve, default "
        f"isolation ({strongest()})",
        [
            (
                "wall time",
                f"{wall:.2f} s = {ratio:.2f}x the ideal {ideal:.1f} s; "
                f"{'meets' if ratio <= GOAL_CROWD else 'MISSES'} the goal of {GOAL_CROWD}x",
            ),
            (
                "the first crowd",
                f"{first:.2f} s = {first / ideal:.2f}x (the pool still sized for a few runs)",
            ),
            (
                "memory per run in flight",
                f"{memory:.1f} MB (server, template and workers, PSS over idle); "
                f"{'meets' if memory <= GOAL_MEMORY else 'MISSES'} the goal of {GOAL_MEMORY:g} MB",
            ),
        ],
    )


if __name__ == "__main__":
    main()
