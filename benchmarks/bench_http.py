"""The http host against a real `agex serve` on loopback, three figures:

1. per-task overhead of http over the local host, for a 3-step scripted task (assign, print,
   task_success): medians of interleaved runs after warm-up. Goal: at most 5 ms.
2. 200 concurrent 3-step tasks, each model reply taking 0.2 s, from one client process on
   one server: wall time against the ideal 0.6 s. Goal: at most 1.3x the ideal.
   And 500 such tasks at once, again and again in one event loop, as a long-running program
   would send them: each burst finds the connections the one before left (a client that
   keeps too few reconnects in bursts). Goal: at most 1.5x the ideal.
3. token streaming: one scripted reply of 200,000 one-character tokens, received by the
   client's on_token. Goal: at least 20,000 tokens/s.

agex 0.12.4's figures are measured in its own environment in the same run when that
environment has its server extras (fastapi, uvicorn, sse-starlette, httpx, cloudpickle);
otherwise its published figures are printed, labelled as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
from measure import ME, PEER, interleaved, report, run_peer
from three_steps import STEPS, per_task, replies

from agex import Agent, connect_host, connect_llm

RUNS, WARMUP = 60, 15
CROWD, DELAY, ROUNDS = 200, 0.2, 3
BURST, BURST_ROUNDS = 500, 5
#: Wall time at most this many times the ideal: a crowd per event loop, bursts in one.
GOALS = {CROWD: 1.3, BURST: 1.5}
STREAM_TOKENS, STREAM_RUNS = 200_000, 3

PUBLISHED_HTTP, PUBLISHED_LOCAL = 0.043, 0.0136
PUBLISHED_CROWD, PUBLISHED_CROWD_SIZE = 5.8, 48
PEER_EXTRAS = "import fastapi, uvicorn, sse_starlette, httpx, cloudpickle, agex.server"

# agex 0.12.4 runs each step in a fresh namespace; its memory between steps is cache[...].
# Its dummy model cycles through its replies, and its server starts the model afresh.
PEER_PER_TASK = """
import json, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
from agex import Agent, connect_host, connect_llm
from agex.agent.emissions import PythonEmission
from agex.llm.core import LLMResponse
given = json.loads(sys.stdin.read())
codes = ['cache["x"] = 21', 'print(cache["x"])', 'task_success(cache["x"] * 2)']
def task(**options):
    responses = [LLMResponse(emissions=[PythonEmission(code=c, thinking="Step.")])
                 for c in codes]
    agent = Agent(primer="You are helpful.",
                  llm=connect_llm(provider="dummy", responses=responses), **options)
    @agent.task
    def answer() -> int:
        '''Find the answer.'''
        pass
    return answer
cases = {"local": task(), "http": task(host=connect_host(provider="http", url=given["url"]))}
samples = {name: [] for name in cases}
for i in range(given["warmup"] + given["runs"]):
    for name, answer in cases.items():
        t = time.perf_counter()
        if answer() != 42:
            raise SystemExit("wrong answer")
        if i >= given["warmup"]:
            samples[name].append(time.perf_counter() - t)
print(json.dumps({name: statistics.median(v) for name, v in samples.items()}))
"""

# Its reference server, its dummy model taking as long per reply as ours: asleep on the
# event loop for async tasks, in the worker thread for sync ones.
PEER_SERVE = """
import asyncio, sys, time
import uvicorn
from agex.llm.dummy_client import Dummy
port, delay = int(sys.argv[1]), float(sys.argv[2])
stream = Dummy.complete_stream
def complete_stream(self, *args, **kwargs):
    time.sleep(delay)
    yield from stream(self, *args, **kwargs)
async def acomplete_stream(self, *args, **kwargs):
    await asyncio.sleep(delay)
    for token in stream(self, *args, **kwargs):
        yield token
Dummy.complete_stream, Dummy.acomplete_stream = complete_stream, acomplete_stream
uvicorn.run("agex.server:app", host="127.0.0.1", port=port, log_level="warning")
"""

PEER_CROWD = """
import asyncio, json, sys, time, warnings
warnings.filterwarnings("ignore")
from agex import Agent, connect_host, connect_llm
from agex.agent.emissions import PythonEmission
from agex.llm.core import LLMResponse
given = json.loads(sys.stdin.read())
codes = ['cache["x"] = 21', 'print(cache["x"])', 'task_success(cache["x"] * 2)']
host = connect_host(provider="http", url=given["url"])
def task():
    responses = [LLMResponse(emissions=[PythonEmission(code=c, thinking="Step.")])
                 for c in codes]
    agent = Agent(primer="You are helpful.",
                  llm=connect_llm(provider="dummy", responses=responses), host=host)
    @agent.task
    async def answer() -> int:
        '''Find the answer.'''
        pass
    return answer
async def crowd(size):
    calls = [task() for _ in range(size)]
    start = time.perf_counter()
    results = await asyncio.gather(*(call() for call in calls))
    elapsed = time.perf_counter() - start
    if results != [42] * size:
        raise SystemExit("wrong answers")
    return elapsed
asyncio.run(crowd(8))
print(json.dumps({"wall": asyncio.run(crowd(given["size"]))}))
"""


# -- servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(command: list[str], health: str, log: Path) -> Iterator[None]:
    """A server subprocess, up once ``health`` answers 200; stopped on the way out."""
    env = {k: v for k, v in os.environ.items() if k != "AGEX_SERVER_TOKEN"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited: {log.read_text()[-500:]}")
                with contextlib.suppress(httpx.TransportError):
                    if client.get(health).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log.read_text()[-500:]}")
                time.sleep(0.05)
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def agex_server(directory: Path, *extra: str) -> Iterator[tuple[str, str]]:
    """`agex serve` on a free loopback port with a token (and ``extra`` options): its url
    and token."""
    token = secrets.token_urlsafe(24)
    token_file = directory / "token"
    token_file.write_text(token + "\n")
    port = free_port()
    command = [ME, "-m", "agex", "serve", "--port", str(port), "--log-level", "warning"]
    command += ["--state-dir", str(directory / "state"), "--token-file", str(token_file)]
    command += extra
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/v1/health", directory / "server.log"):
        yield url, token


@contextlib.contextmanager
def peer_server(directory: Path, delay: float | None = None) -> Iterator[str]:
    """agex 0.12.4's reference server (`uvicorn agex.server:app`), its dummy model taking
    ``delay`` seconds per reply when given: its /execute url."""
    assert PEER is not None
    port = free_port()
    if delay is None:
        command = [PEER, "-m", "uvicorn", "agex.server:app", "--port", str(port)]
        command += ["--log-level", "warning"]
    else:
        command = [PEER, "-c", PEER_SERVE, str(port), str(delay)]
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/health", directory / "peer.log"):
        yield f"{url}/execute"


# -- figure 1: per-task overhead -------------------------------------------------------


def per_task_over_http(url: str, token: str) -> dict[str, float]:
    http = connect_host(provider="http", url=url, token=token)
    return per_task({"local": None, "http": http}, RUNS, WARMUP)


# -- figure 2: concurrent tasks --------------------------------------------------------


def tasks(host: object, size: int) -> list[Callable[[], Awaitable[int]]]:
    """``size`` calls of the 3-step task, one agent (and model) each."""
    calls = []
    for _ in range(size):
        llm = connect_llm(provider="scripted", responses=replies(STEPS), delay=DELAY)
        agent = Agent(primer="You are helpful.", host=host, llm=llm)

        @agent.task
        async def answer() -> int:
            """Find the answer."""

        calls.append(answer)
    return calls


async def together(calls: list[Callable[[], Awaitable[int]]]) -> float:
    """Wall time of the calls, all at once."""
    start = time.perf_counter()
    results = await asyncio.gather(*(call() for call in calls))
    elapsed = time.perf_counter() - start
    if results != [42] * len(calls):
        raise SystemExit(f"wrong answers: {sorted(set(map(str, results)))}")
    return elapsed


def crowd_round(host: object, size: int) -> float:
    """Wall time of ``size`` concurrent 3-step tasks, in an event loop of their own."""
    return asyncio.run(together(tasks(host, size)))


def bursts(host: object, size: int, rounds: int) -> float:
    """Median wall time of ``rounds`` bursts of ``size`` concurrent 3-step tasks, one after
    another in one event loop, after an untimed first burst."""
    batches = [tasks(host, size) for _ in range(rounds + 1)]

    async def one_after_another() -> list[float]:
        return [await together(calls) for calls in batches]

    return statistics.median(asyncio.run(one_after_another())[1:])


def crowds(url: str, token: str) -> dict[int, float]:
    """Median wall time of the crowd, and of the bursts."""
    host = connect_host(provider="http", url=url, token=token)
    crowd_round(host, 20)  # warm-up
    crowd = statistics.median(crowd_round(host, CROWD) for _ in range(ROUNDS))
    return {CROWD: crowd, BURST: bursts(host, BURST, BURST_ROUNDS)}


# -- figure 3: token streaming ---------------------------------------------------------


def streamed(host: object | None, tokens: int, runs: int) -> Callable[[], float]:
    """Tokens per second that on_token receives for one reply of ``tokens`` one-character
    tokens (and a short code block), over the whole call."""
    reply = "t" * tokens + "\n```python\ntask_success(1)\n```"
    llm = connect_llm(provider="scripted", responses=[reply] * runs, chunk_size=1)
    agent = Agent(primer="You are helpful.", host=host, llm=llm)

    @agent.task
    def one() -> int:
        """Say one."""

    def once() -> float:
        count = 0

        def on_token(text: str) -> None:
            nonlocal count
            count += 1

        start = time.perf_counter()
        if one(on_token=on_token) != 1:
            raise SystemExit("wrong answer")
        elapsed = time.perf_counter() - start
        if count != len(reply):
            raise SystemExit(f"on_token got {count} tokens of {len(reply)}")
        return count / elapsed

    return once


def streaming(url: str, token: str) -> dict[str, float]:
    """Tokens per second received, by host."""
    http = connect_host(provider="http", url=url, token=token)
    cases = {
        "local": streamed(None, STREAM_TOKENS, STREAM_RUNS + 1),
        "http": streamed(http, STREAM_TOKENS, STREAM_RUNS + 1),
    }
    for case in cases.values():
        case()  # warm-up
    return interleaved(STREAM_RUNS, cases)


# -- the peer --------------------------------------------------------------------------


def peer_has_server() -> bool:
    if not PEER:
        return False
    return subprocess.run([PEER, "-c", PEER_EXTRAS], capture_output=True).returncode == 0


def peer(directory: Path) -> tuple[dict[str, float] | None, float | None]:
    """agex 0.12.4's per-task medians (local and http), and its wall time for the concurrent
    tasks; None for what could not be measured."""
    if not peer_has_server():
        return None, None
    try:
        with peer_server(directory) as url:
            given = json.dumps({"url": url, "runs": RUNS // 2, "warmup": 5})
            per_task = run_peer(PEER, PEER_PER_TASK, "agex 0.12.4 over http", stdin=given)
        with peer_server(directory, DELAY) as url:
            given = json.dumps({"url": url, "size": CROWD})
            crowd = run_peer(PEER, PEER_CROWD, "agex 0.12.4, concurrent tasks", stdin=given)
    except RuntimeError as exc:
        print(f"  (agex 0.12.4's server failed: {str(exc).splitlines()[0]})")
        return None, None
    return per_task, None if crowd is None else float(crowd["wall"])


# -- the report ------------------------------------------------------------------------


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agex-bench-http-") as tmp:
        directory = Path(tmp)
        # Agent code in the server process, as before isolation: what the transport costs.
        # bench_isolation.py measures the server in its default isolation.
        with agex_server(directory, "--isolation", "none") as (url, token):
            ours = per_task_over_http(url, token)
            walls = crowds(url, token)
            rates = streaming(url, token)
        theirs, their_wall = peer(directory)

    overhead = ours["http"] - ours["local"]
    lines = [
        ("agex, local host", f"{ours['local'] * 1000:.2f} ms per task"),
        ("agex, http host", f"{ours['http'] * 1000:.2f} ms per task"),
        ("agex, http overhead", f"{overhead * 1000:.2f} ms per task"),
    ]
    if theirs is not None:
        their_overhead = theirs["http"] - theirs["local"]
        lines.append(
            (
                "agex 0.12.4, same scenario",
                f"{theirs['http'] * 1000:.2f} ms over http, {theirs['local'] * 1000:.2f} ms "
                f"local: {their_overhead * 1000:.2f} ms overhead",
            )
        )
    else:
        lines.append(
            (
                "agex 0.12.4 (published)",
                f"{PUBLISHED_HTTP * 1000:.1f} ms over http, {PUBLISHED_LOCAL * 1000:.1f} ms "
                f"local: {(PUBLISHED_HTTP - PUBLISHED_LOCAL) * 1000:.1f} ms overhead",
            )
        )
    lines.append(("goal", "<= 5 ms overhead per task"))
    report(f"3-step scripted task over http on loopback, median of {RUNS}", lines)

    ideal = len(STEPS) * DELAY
    titles = {
        CROWD: f"{CROWD} concurrent 3-step tasks, {DELAY:g} s per model reply, one server "
        f"(median of {ROUNDS})",
        BURST: f"{BURST} concurrent 3-step tasks, {DELAY:g} s per model reply, one server, "
        f"in bursts from one event loop (median of {BURST_ROUNDS})",
    }
    for size, goal in GOALS.items():
        wall = walls[size]
        lines = [("agex, wall time", f"{wall:.2f} s ({wall / ideal:.2f}x the ideal {ideal:.1f} s)")]
        if size == CROWD and their_wall is not None:
            lines.append(
                (
                    "agex 0.12.4, same scenario (one round)",
                    f"{their_wall:.2f} s ({their_wall / ideal:.2f}x the ideal)",
                )
            )
        elif size == CROWD:
            lines.append(
                (
                    "agex 0.12.4 (published)",
                    f"{PUBLISHED_CROWD:.1f} s for {PUBLISHED_CROWD_SIZE} such tasks",
                )
            )
        lines.append(("goal", f"<= {goal:g}x the ideal ({goal * ideal:.2f} s)"))
        report(titles[size], lines)

    lines = [("agex, http host", f"{rates['http']:,.0f} tokens/s")]
    lines.append(("agex, local host (reference)", f"{rates['local']:,.0f} tokens/s"))
    lines.append(("goal", ">= 20,000 tokens/s over http"))
    report(
        f"token streaming to on_token, {STREAM_TOKENS:,} one-character tokens in one reply, "
        f"median of {STREAM_RUNS}",
        lines,
    )


if __name__ == "__main__":
    main()
