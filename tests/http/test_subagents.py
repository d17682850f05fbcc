"""Sub-agents of a remote agent: without a host they run on the server, in-process; with
their own HTTP host they make their own call from the server. The session is inherited."""

from __future__ import annotations

import secrets

from agex import Agent, connect_host, connect_state
from agex.testing.host import scripted


def test_a_sub_agent_without_a_host_runs_on_the_server(server) -> None:
    orchestrator = Agent(
        name="orchestrator",
        host=connect_host(provider="http", url=server.url, token=server.token),
        state=connect_state(type="versioned", storage="disk", path="/state"),
        llm=scripted("task_success(process_data('abc'))"),
    )
    specialist = Agent(
        name="specialist",
        llm=scripted("import os\ntask_success(data.upper() + ':' + str(os.getppid()))"),
    )
    specialist.module("os", include=["getppid"])

    @orchestrator.fn
    @specialist.task
    def process_data(data: str) -> str:
        """Specialist task."""

    @orchestrator.task
    def run() -> str:
        """Delegate."""

    events = []
    result = run(session="shared", on_event=events.append)
    text, pid = result.split(":")
    assert text == "ABC"
    assert server.forked(int(pid))  # it ran on the server, in one of its workers
    specialists = [e for e in events if e.agent_name == "specialist"]
    assert [type(e).__name__ for e in specialists][-1] == "SuccessEvent"
    assert {e.session for e in events} == {"shared"}


def test_a_sub_agent_with_its_own_http_host_calls_its_own_server(make_server) -> None:
    gpu = make_server()
    # The orchestrator's server reaches the GPU server with the token in its environment:
    # tokens never travel inside agents.
    cpu = make_server(
        "--remote", gpu.url, env={"AGEX_SERVER_TOKEN": gpu.token}, token=secrets.token_urlsafe(16)
    )
    orchestrator = Agent(
        name="orchestrator",
        host=connect_host(provider="http", url=cpu.url, token=cpu.token),
        llm=scripted("task_success(crunch(3))"),
    )
    specialist = Agent(
        name="cruncher",
        host=connect_host(provider="http", url=gpu.url),
        state=connect_state(type="versioned", storage="disk", path="/gpu-state"),
        llm=scripted("import os\nresult = n * n\ntask_success([result, os.getppid()])"),
    )
    specialist.module("os", include=["getppid"])

    @orchestrator.fn
    @specialist.task
    def crunch(n: int) -> list[int]:
        """Square n on the GPU box."""

    @orchestrator.task
    def run() -> list[int]:
        """Delegate."""

    events = []
    value, pid = run(session="job-7", on_event=events.append)
    assert value == 9
    assert gpu.forked(pid)
    assert (gpu.state_dir / "gpu-state").is_dir()  # its state is on its own server
    assert not (cpu.state_dir / "gpu-state").exists()
    crunched = [e for e in events if e.agent_name == "cruncher"]
    assert crunched
    assert {e.session for e in crunched} == {"job-7"}
