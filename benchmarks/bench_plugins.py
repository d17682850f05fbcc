"""`import agex` as a whole process, and the first provider resolution with every plugin
installed. Goals: import at most 60 ms; resolution at most 30 ms."""

from __future__ import annotations

import json
import subprocess

from measure import ME, PEER, interleaved, ms, process_seconds, report

RUNS = 21
FIRST_RESOLVE = """
import json, time
t = time.perf_counter()
from agex import plugins
plugins.resolve("storage", "memory")
first = time.perf_counter() - t
t = time.perf_counter()
for _ in range(1000):
    plugins.resolve("storage", "memory")
warm = (time.perf_counter() - t) / 1000
print(json.dumps([first, warm, len(plugins.states())]))
"""


def first_resolve() -> tuple[float, float, int]:
    out = subprocess.run([ME, "-c", FIRST_RESOLVE], capture_output=True, text=True, check=True)
    first, warm, count = json.loads(out.stdout)
    return first, warm, count


def main() -> None:
    cases = {
        "python -c pass": lambda: process_seconds(ME, "pass"),
        "import agex": lambda: process_seconds(ME, "import agex"),
    }
    if PEER:
        cases["import agex (0.12.4)"] = lambda: process_seconds(PEER, "import agex")
    medians = interleaved(RUNS, cases)
    lines = [(name, ms(value)) for name, value in medians.items()]
    over = medians["import agex"] - medians["python -c pass"]
    lines.append(("import agex, over bare python", ms(over)))
    if PEER:
        ratio = medians["import agex (0.12.4)"] / medians["import agex"]
        lines.append(("agex 0.12.4 / ours", f"{ratio:.1f}x"))
    else:
        lines.append(("agex 0.12.4", "not installed"))
    lines.append(("goal", "import agex <= 60 ms"))
    report(f"python -c 'import agex', whole process, median of {RUNS}", lines)

    results = [first_resolve() for _ in range(RUNS)]
    firsts = sorted(r[0] for r in results)
    warms = sorted(r[1] for r in results)
    plugins_seen = results[0][2]
    report(
        f"first provider resolution with every plugin installed ({plugins_seen} plugins), "
        f"median of {RUNS} processes",
        [
            ("first resolve (scan, load, collect)", ms(firsts[RUNS // 2])),
            ("each later resolve", f"{warms[RUNS // 2] * 1e6:.1f} us"),
            ("agex 0.12.4", "no plugin system to compare"),
            ("goal", "first resolve <= 30 ms"),
        ],
    )


if __name__ == "__main__":
    main()
