"""The modal host's cost on the caller's side, per task: shipping the agent, finding the
deployed function, and following its stream, for a 3-step scripted task. Modal itself
cannot be reached from a benchmark, so the function runs in the in-process fake
(``agex_host_modal.testing``): the figure is what agex adds around Modal's own latency, which
a real deployment adds on top. The container runs agent code in a confined worker at the
strongest isolation it has, so the local host's agent runs at that level too: the difference
is the modal host's. Goal: at most 5 ms over the local host, as for http.

Also printed: what naming the app costs (scanning the installed distributions and hashing
local sources). It is paid once per definition of the agent, not per task, so it shows only
in the first task's figure. agex 0.12.4's modal host needs the Modal cloud, so it has no
figure here.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from measure import report
from three_steps import per_task

from agex import Agent, connect_host, connect_llm
from agex.isolation import strongest
from agex_host_modal import sdk
from agex_host_modal.app import app_name
from agex_host_modal.testing import FakeModal

RUNS, WARMUP = 60, 10


def naming(host: Any) -> float:
    llm = connect_llm("scripted", responses=["x"])
    agent = Agent(primer="You are helpful.", host=host, llm=llm)
    times = []
    for _ in range(10):
        start = time.perf_counter()
        app_name(agent, host)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    fake = FakeModal(secrets={"llm-keys": {}}, containers="thread")
    try:
        with sdk.use(fake):
            host = connect_host(provider="modal", secrets="llm-keys")
            level = strongest()  # what the container runs agent code at
            times = per_task({"local": None, "modal": host}, RUNS, WARMUP, {"local": level})
            named = naming(host)
    finally:
        fake.close()
    lines = [
        (f"agex, local host (isolation {level})", f"{times['local'] * 1000:.2f} ms per task"),
        ("agex, modal host (fake Modal)", f"{times['modal'] * 1000:.2f} ms per task"),
        ("agex, modal overhead", f"{(times['modal'] - times['local']) * 1000:.2f} ms per task"),
        ("naming the app (once per agent)", f"{named * 1000:.1f} ms"),
        ("goal (as for the http host)", "<= 5 ms overhead per task"),
    ]
    report(f"3-step scripted task on the modal host, caller's side, median of {RUNS}", lines)


if __name__ == "__main__":
    main()
