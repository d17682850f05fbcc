"""How every benchmark here times things: interleaved runs, medians, ratios."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

#: agex 0.12.4's interpreter, in its own virtual environment (set by `nox -s bench`).
PEER = os.environ.get("AGEX_PEER_PYTHON")


def process_seconds(python: str, code: str) -> float:
    """Wall time of a whole `python -c code` process."""
    start = time.perf_counter()
    subprocess.run([python, "-c", code], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def interleaved(runs: int, cases: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Median of each case, the cases taking turns so that machine noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            samples[name].append(case())
    return {name: statistics.median(values) for name, values in samples.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def report(title: str, lines: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"  {label.ljust(width)}  {value}")


ME = sys.executable


def run_peer(python: str | None, code: str, what: str, stdin: str | None = None) -> Any:
    """Run ``code`` in a peer's own interpreter; the JSON on its last line, or None (saying
    why) when the peer is not installed or fails."""
    if not python:
        return None
    out = subprocess.run(
        [python, "-c", code], input=stdin, capture_output=True, text=True, timeout=900
    )
    if out.returncode != 0:
        print(f"  ({what} failed: {out.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])
