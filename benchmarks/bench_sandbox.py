"""The sandbox's cost on plain computation: a snippet run with native ``exec`` and in the
sandbox, side by side in one process, median ratio. Goal: at most 1.3x.

Peers, where their interpreters are given (``nox -s bench`` installs them): agex 0.12.4's
sandbox (sandtrap) and smolagents' LocalPythonExecutor, each measured against native exec in
its own process by the same driver.
"""

from __future__ import annotations

import os
import statistics
import time

from measure import PEER, report, run_peer

from agex.sandbox import Sandbox
from agex.sandbox.runner import Program

SNIPPET = """\
def f(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
data = [f(2000) for _ in range(50)]
d = {}
for i in range(20000):
    d[str(i)] = i
result = sum(data) + len(d)
"""
EXPECTED = 219950
WARMUP, ROUNDS = 2, 15

# Runs in a peer's own interpreter: ``setup`` defines peer() -> (seconds, result).
DRIVER = """
import json, statistics, sys, time
from importlib.metadata import version
src = sys.stdin.read()
{setup}
def native():
    g = {{}}
    t = time.perf_counter()
    exec(compile(src, "<native>", "exec"), g)
    return time.perf_counter() - t, g["result"]
times = {{"native": [], "peer": []}}
for i in range({rounds}):
    for name, fn in (("native", native), ("peer", peer)):
        seconds, result = fn()
        if result != {expected}:
            raise SystemExit(f"{{name}} computed {{result!r}}")
        if i >= {warmup}:
            times[name].append(seconds)
print(json.dumps({{"version": version(DIST), "native": statistics.median(times["native"]),
                  "peer": statistics.median(times["peer"])}}))
"""

PEERS = {
    "agex 0.12.4 (sandtrap)": (
        PEER,
        """
import sandtrap
DIST = "sandtrap"
def peer():
    box = sandtrap.sandbox(sandtrap.Policy(), isolation="none")
    t = time.perf_counter()
    out = box.exec(src)
    seconds = time.perf_counter() - t
    if out.error is not None:
        raise SystemExit(repr(out.error))
    return seconds, out.namespace.get("result")
""",
    ),
    "smolagents LocalPythonExecutor": (
        os.environ.get("AGEX_SMOLAGENTS_PYTHON"),
        """
from smolagents.local_python_executor import LocalPythonExecutor
DIST = "smolagents"
def peer():
    ex = LocalPythonExecutor(additional_authorized_imports=[])
    ex.send_variables({})
    ex.send_tools({})  # installs the base builtins (range, str, sum, len)
    t = time.perf_counter()
    ex(src)
    return time.perf_counter() - t, ex.state.get("result")
""",
    ),
}


def check(result: object, error: str | None) -> None:
    if error is not None or result != EXPECTED:
        raise SystemExit(f"the snippet computed {result!r}: {error}")


def ours() -> tuple[float, float, float]:
    """Medians of native exec, the sandbox compiling afresh, and the sandbox reusing the
    compiled program; each sandbox run gets a fresh namespace."""
    sandbox = Sandbox()
    cached = sandbox.compile(SNIPPET)

    def native() -> float:
        namespace: dict = {}
        t = time.perf_counter()
        exec(compile(SNIPPET, "<native>", "exec"), namespace)
        seconds = time.perf_counter() - t
        check(namespace["result"], None)
        return seconds

    def sandboxed(program_of) -> float:
        namespace = sandbox.namespace()
        t = time.perf_counter()
        result = sandbox.run(program_of(), namespace)
        seconds = time.perf_counter() - t
        check(namespace.get("result"), result.error)
        return seconds

    cases = {
        "native": native,
        "fresh": lambda: sandboxed(lambda: Program(SNIPPET)),
        "cached": lambda: sandboxed(lambda: cached),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for i in range(WARMUP + ROUNDS):
        for name, case in cases.items():
            seconds = case()
            if i >= WARMUP:
                samples[name].append(seconds)
    med = {name: statistics.median(values) for name, values in samples.items()}
    return med["native"], med["fresh"], med["cached"]


def peer(python: str, setup: str) -> dict | None:
    driver = DRIVER.format(setup=setup, rounds=WARMUP + ROUNDS, warmup=WARMUP, expected=EXPECTED)
    figures: dict | None = run_peer(python, driver, "peer", stdin=SNIPPET)
    return figures


def main() -> None:
    native, fresh, cached = ours()
    lines = [
        ("native exec", f"{native * 1000:.2f} ms"),
        ("agex sandbox, compiling each run", f"{fresh * 1000:.2f} ms  = {fresh / native:.2f}x"),
        ("agex sandbox, program reused", f"{cached * 1000:.2f} ms  = {cached / native:.2f}x"),
    ]
    for name, (python, setup) in PEERS.items():
        if not python:
            lines.append((name, "not installed"))
            continue
        figures = peer(python, setup)
        if figures:
            ratio = figures["peer"] / figures["native"]
            lines.append((f"{name} {figures['version']}", f"{ratio:.2f}x its native exec"))
    lines.append(("goal", "agex sandbox <= 1.3x native"))
    report(f"sandbox overhead on the benchmark snippet, median of {ROUNDS}", lines)


if __name__ == "__main__":
    main()
