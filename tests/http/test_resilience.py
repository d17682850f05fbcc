"""What happens when things go wrong mid-run: the server dies, the connection drops, the
caller cancels or goes away."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time

import httpx
import pytest

from agex import (
    Agent,
    RemoteExecutionError,
    TaskCancelled,
    connect_host,
    connect_state,
)
from agex.testing.host import scripted
from agex_host_http import transport


def disk(path: str = "/runs") -> object:
    return connect_state(type="versioned", storage="disk", path=path)


def remote(server, llm, url: str | None = None, **options) -> Agent:
    host = connect_host(provider="http", url=url or server.url, token=server.token)
    return Agent(host=host, llm=llm, **options)


def server_side(server, name: str, path: str = "/runs") -> Agent:
    """A local agent that reads the server's copy of a remote agent's state."""
    local_path = str(server.state_dir / path.lstrip("/"))
    return Agent(name=name, state=connect_state(type="versioned", storage="disk", path=local_path))


def in_thread(call, *args, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = call(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


class Proxy:
    """A TCP relay between client and server whose connections can be cut at will."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            with self.lock:
                self.sockets += [downstream, upstream]
            threading.Thread(
                target=self._pump, args=(downstream, upstream, True), daemon=True
            ).start()
            threading.Thread(
                target=self._pump, args=(upstream, downstream, False), daemon=True
            ).start()

    def _pump(self, source: socket.socket, target: socket.socket, request: bool) -> None:
        first = True
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            if request and first:
                with self.lock:
                    self.requests.append(data[:2048])
                first = False
            try:
                target.sendall(data)
            except OSError:
                return

    def sever(self) -> None:
        """Cut every open connection, both ways, as a network failure would."""
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.sever()


def test_dropped_stream_resumes_without_loss_or_duplicates(server) -> None:
    proxy = Proxy(server.port)
    steps = [f"n = {i}\nprint('step', n)" for i in range(5)] + ["task_success(n)"]
    agent = remote(server, scripted(*steps, delay=0.15, chunk_size=4), url=proxy.url)
    events, tokens = [], []

    def on_event(event) -> None:
        events.append(event)
        if len(events) == 4:  # mid-run: cut the connection under the client
            proxy.sever()

    @agent.task
    def run() -> int:
        """Run."""

    try:
        assert run(on_event=on_event, on_token=tokens.append) == 4
    finally:
        proxy.close()

    # The stream was picked up again from where it broke.
    assert len(proxy.requests) >= 2
    assert proxy.requests[0].startswith(b"POST /v1/runs/")
    resumed = proxy.requests[1].lower()
    assert resumed.startswith(b"get /v1/runs/")
    assert b"last-event-id:" in resumed
    # Every event once, in order; every token once.
    kinds = [(type(e).__name__, e.step) for e in events]
    assert kinds == [("TaskStartEvent", 0)] + [
        pair for step in range(1, 6) for pair in (("ActionEvent", step), ("OutputEvent", step))
    ] + [("ActionEvent", 6), ("SuccessEvent", 6)]
    assert "".join(tokens) == "".join(agent.llm.responses)


def test_server_killed_mid_run_fails_promptly_and_leaves_the_session_as_it_was(
    server,
) -> None:
    committed = threading.Event()
    agent = remote(
        server,
        # Step 2 spins before it assigns: the kill lands while it runs.
        scripted("a = 1", "for _ in range(10**9):\n    pass\nb = 2", "task_success(b)", delay=0.3),
        state=disk(),
        name="victim",
    )

    def on_event(event) -> None:
        if event.commit is not None:
            committed.set()

    @agent.task
    def job() -> int:
        """Job."""

    thread, box = in_thread(job, session="s", on_event=on_event)
    assert committed.wait(20)
    killed = time.monotonic()
    server.kill()
    thread.join(30)
    assert isinstance(box.get("error"), RemoteExecutionError), box
    assert time.monotonic() - killed < 10  # tried to reconnect, then gave up

    server.start()
    state = server_side(server, "victim").state("s")
    assert state.values() == {}  # the killed task did not finish: nothing of it is kept ...
    assert [c.completed for c in state.history(unfinished=True)] == [
        False
    ]  # ... its first step recorded


def test_task_cancel_stops_the_remote_run_at_once(server) -> None:
    agent = remote(
        server,
        scripted("a = 1", "while True:\n    pass", "task_success(a)", delay=0.2),
        state=disk(),
        name="spinner",
    )
    running = threading.Event()

    @agent.task
    def job() -> int:
        """Job."""

    def on_event(event) -> None:
        if type(event).__name__ == "ActionEvent" and event.step == 2:
            running.set()

    thread, box = in_thread(job, session="c", on_event=on_event)
    assert running.wait(20)
    time.sleep(0.2)  # the step's code is spinning on the server
    assert job.cancel("c") == 1
    thread.join(10)
    assert isinstance(box.get("error"), TaskCancelled), box
    assert job.cancel("c") == 0  # nothing left running there
    state = server_side(server, "spinner").state("c")
    assert state.values() == {}  # the cancelled task left the session as it was
    assert [c.completed for c in state.history(unfinished=True)] == [False]


def test_cancelling_the_call_cancels_the_run(server) -> None:
    agent = remote(server, scripted(*["n = 1"] * 30, delay=0.2), name="slow")

    @agent.task
    async def job() -> int:
        """Job."""

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(job(session="w"), 0.5)

    asyncio.run(main())
    answer = httpx.post(
        f"{server.url}/v1/cancel",
        json={"agent": "slow", "session": "w"},
        headers=server.headers,
    )
    assert answer.json() == {"cancelled": 0}  # the client's cancel already stopped it


def test_a_run_nobody_follows_is_cancelled_after_the_grace_period(
    make_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_server("--detach-grace", "0.5")

    async def vanish(self, run_id: str) -> None:
        """A client that dies says nothing."""

    monkeypatch.setattr(transport.Server, "cancel_run", vanish)
    steps = ["n = 0"] + ["n += 1"] * 40
    agent = remote(server, scripted(*steps, delay=0.1), state=disk(), name="orphan")

    @agent.task
    async def job() -> int:
        """Job."""

    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(job(session="o"), 0.6)

    asyncio.run(main())
    time.sleep(1.5)  # the grace period passes; the server cancels the run
    state = server_side(server, "orphan").state("o")
    settled = len(state.history(unfinished=True))
    time.sleep(1.0)
    assert 0 < len(state.history(unfinished=True)) == settled < 40


def test_a_client_that_leaves_while_the_model_thinks_is_noticed_at_once(make_server) -> None:
    """Nothing is sent while the model thinks (the next keep-alive is seconds away), yet the
    server notices the closed connection, and the detach grace starts then."""
    from agex import plugins
    from agex import remote as core
    from agex.hosts import Invocation
    from agex_host_http import wire

    server = make_server("--detach-grace", "0.3")
    agent = remote(server, scripted("task_success(1)", delay=30))

    @agent.task
    def job() -> int:
        """Job."""

    invocation = Invocation(agent, job, {}, "s")
    envelope = dataclasses.replace(core.Envelope.of(invocation, timeout=60), run="leaving_run_01")
    payload = core.ship(invocation, plugins.create("serializer", "cloudpickle"))
    url = f"{server.url}{wire.API}/runs/{envelope.run}"
    body = wire.request_body(envelope.to_json(), payload)
    with httpx.stream("POST", url, content=body, headers=server.headers, timeout=10) as response:
        assert response.status_code == 200
        assert next(response.iter_lines()).startswith("id: 1")  # the run started
    time.sleep(1.5)  # the grace period passes, long before the model answers
    cancel = httpx.post(f"{url}/cancel", headers=server.headers, timeout=10)
    assert cancel.json() == {"cancelled": 0}  # already cancelled by the server
    events = httpx.get(f"{url}/events", headers=server.headers, timeout=10)
    assert "TaskCancelled" in events.text


def test_runs_go_through_the_proxy_the_environment_names(server, monkeypatch) -> None:
    relay = Proxy(server.port)  # a relay passes a proxy's requests on unchanged
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", relay.url)
    monkeypatch.setenv("http_proxy", relay.url)
    agent = remote(server, scripted("task_success(5)"))

    @agent.task
    def job() -> int:
        """Job."""

    try:
        assert job() == 5
    finally:
        relay.close()
    assert any(r.startswith(f"POST {server.url}/v1/runs/".encode()) for r in relay.requests)
