"""The ray host on a local Ray cluster that this script starts (and stops), two figures:

1. per-task overhead of the ray host over the local host, for a 3-step scripted task
   (assign, print, task_success): medians of interleaved runs once the runner is warm. The
   runner runs agent code in a confined worker at the strongest isolation the node offers,
   so the local host's agent runs at that level too: the difference is the ray host's.
   Goal: at most 20 ms. The first task of a fresh agent (which starts the runner: its
   actor, its runtime environment, its workers' template) is printed once, for information.
   For context, the same task on an `agex serve` on loopback (its default isolation).
2. 50 concurrent 3-step tasks, each model reply taking 0.2 s, on one ray host, after a
   first round that starts the runner: wall time against the ideal 0.6 s. Goal: at most
   1.5x the ideal. Beside it, the same crowd on the local host with agent code confined as
   on the runner, taking turns with it: what the confined workers cost on this machine,
   which the ray host pays too.

agex 0.12.4 has no Ray host, so no peer figure here.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bench_http import DELAY, agex_server, together
from measure import interleaved, report
from three_steps import STEPS, replies, timed_task

from agex import Agent, connect_host, connect_llm
from agex.isolation import strongest

RUNS, WARMUP = 30, 5
CROWD, ROUNDS = 50, 5
GOAL_TASK, GOAL_CROWD = 0.020, 1.5
#: The local cluster's CPUs: one runner holds one.
CPUS = 4


def per_task(ray_host: object, url: str, token: str, level: str) -> tuple[dict[str, float], float]:
    """Median seconds per task on each host after warm-up, and the ray host's first task
    (the runner starting)."""
    http = connect_host(provider="http", url=url, token=token)
    total = RUNS + WARMUP + 1
    cases = {
        "local": timed_task(None, total, level),
        "ray": timed_task(ray_host, total),
        "ray, following events and tokens": timed_task(ray_host, total, listen=True),
        "http": timed_task(http, total),
    }
    cold = cases["ray"]()
    for _ in range(WARMUP):
        for case in cases.values():
            case()
    return interleaved(RUNS, cases), cold


def crowd(host: object | None, size: int, isolation: str | None = None) -> float:
    """Wall time of ``size`` concurrent 3-step tasks, one agent each, in an event loop of
    their own."""
    calls = []
    for _ in range(size):
        llm = connect_llm(provider="scripted", responses=replies(STEPS), delay=DELAY)
        agent = Agent(primer="You are helpful.", host=host, llm=llm, isolation=isolation)

        @agent.task
        async def answer() -> int:
            """Find the answer."""

        calls.append(answer)
    return asyncio.run(together(calls))


def crowds(ray_host: object, level: str) -> tuple[float, dict[str, float]]:
    """Wall time of the first crowd on the ray host (the runner starting), and the medians
    of the later ones on the ray host and, for reference, on the local host with agent
    code confined as on the runner (what this machine's confined workers cost), taking
    turns."""
    first = crowd(ray_host, CROWD)
    crowd(None, CROWD, level)  # the local pool learns how many workers such a crowd takes
    cases = {"ray": lambda: crowd(ray_host, CROWD), "local": lambda: crowd(None, CROWD, level)}
    return first, interleaved(ROUNDS, cases)


def main() -> None:
    import ray

    level = strongest()  # what the runner runs agent code at
    # "local": a cluster of its own, even where another one runs on this machine.
    ray.init(address="local", num_cpus=CPUS, include_dashboard=False, logging_level="WARNING")
    try:
        # A host of each configuration gets runners of its own: the crowd's are not warmed
        # by the single tasks.
        with (
            tempfile.TemporaryDirectory(prefix="agex-bench-ray-") as tmp,
            agex_server(Path(tmp)) as (url, token),
        ):
            times, cold = per_task(connect_host(provider="ray"), url, token, level)
        first, walls = crowds(connect_host(provider="ray", concurrency=CROWD), level)
    finally:
        ray.shutdown()

    overhead = times["ray"] - times["local"]
    met = "met" if overhead <= GOAL_TASK else "NOT met"
    lines = [
        (f"agex, local host (isolation {level})", f"{times['local'] * 1000:.2f} ms per task"),
        ("agex, ray host", f"{times['ray'] * 1000:.2f} ms per task"),
        ("agex, ray overhead", f"{overhead * 1000:.2f} ms per task"),
        (
            "agex, ray overhead, following events and tokens",
            f"{(times['ray, following events and tokens'] - times['local']) * 1000:.2f} ms",
        ),
        ("agex, http host on loopback (context)", f"{times['http'] * 1000:.2f} ms per task"),
        ("agex, ray host's first task (runner start)", f"{cold * 1000:.0f} ms, once"),
        ("goal", f"<= {GOAL_TASK * 1000:.0f} ms overhead per task: {met}"),
    ]
    report(
        f"3-step scripted task on the ray host, local cluster of {CPUS} CPUs, median of {RUNS}",
        lines,
    )

    ideal = len(STEPS) * DELAY
    ratio = walls["ray"] / ideal
    met = "met" if ratio <= GOAL_CROWD else "NOT met"
    lines = [
        (
            "agex, ray host, wall time",
            f"{walls['ray']:.2f} s ({ratio:.2f}x the ideal {ideal:.1f} s)",
        ),
        (
            f"agex, local host (isolation {level}, reference)",
            f"{walls['local']:.2f} s ({walls['local'] / ideal:.2f}x)",
        ),
        (
            "agex, ray host, first round (runner start)",
            f"{first:.2f} s ({first / ideal:.2f}x), once",
        ),
        ("goal", f"<= {GOAL_CROWD:g}x the ideal ({GOAL_CROWD * ideal:.2f} s): {met}"),
    ]
    report(
        f"{CROWD} concurrent 3-step tasks, {DELAY:g} s per model reply, one ray host "
        f"(median of {ROUNDS})",
        lines,
    )


if __name__ == "__main__":
    main()
