"""The seed page's examples (docs: host configuration) with provider="ray": which state the
ray host takes, callbacks as events stream, hierarchical agents, warmup, async tasks, and
how a task's outcome and other failures reach the caller."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from agex import (
    Agent,
    TaskCancelled,
    TaskClarify,
    TaskFail,
    TaskTimeout,
    connect_host,
    connect_llm,
    connect_state,
    pprint_events,
    pprint_tokens,
)
from agex.errors import RemoteExecutionError
from agex.testing.host import scripted


@pytest.fixture
def host(ray_cluster):
    """One configuration for the whole file: its runs share runners."""
    return connect_host(provider="ray", address=ray_cluster.address)


def _replies(*codes: str) -> list[str]:
    return [f"Step {i}.\n```python\n{code}\n```" for i, code in enumerate(codes, 1)]


#: The seed's remote example, with provider="ray" and a state the ray host takes.
SEED_RAY = """
from agex import Agent, connect_host, connect_state

host = connect_host(
provider="ray",
num_cpus=1, # Optional: CPUs a run holds
memory=512, # Optional: Memory in MB
timeout=600.0, # Optional: Execution timeout
scaledown_window=300, # Optional: Idle seconds before a runner ends
)
state = connect_state(type="versioned", storage="disk", path=SHARED)
agent = Agent(
primer="You are helpful.",
host=host,
state=state,
)

@agent.task
def summarize(text: str) -> str:
    \"\"\"Summarize the text in one sentence.\"\"\"


agent.warmup()
result = summarize("Ray runs the whole loop remotely.")
"""


def test_seed_example_with_provider_ray(ray_cluster, tmp_path):
    """As written, with a scripted model and a shared folder for the state's path."""
    namespace = {"SHARED": str(tmp_path / "my-agent")}
    code = SEED_RAY.replace('primer="You are helpful.",', 'primer="You are helpful.", llm=LLM,')
    namespace["LLM"] = scripted("task_success('short')")
    exec(compile(code, "<seed>", "exec"), namespace)
    assert namespace["result"] == "short"
    assert namespace["agent"].host.dump_config()["memory"] == 512


# -- State requirements ------------------------------------------------------------------


def test_versioned_memory_state_is_refused_at_agent(host):
    """As the seed's HTTP example: memory storage has no place every node shares."""
    state = connect_state(type="versioned", storage="memory")
    with pytest.raises(ValueError, match="memory storage") as caught:
        Agent(primer="You are helpful.", host=host, state=state)
    said = str(caught.value)
    assert 'storage="postgres"' in said
    assert 'storage="disk"' in said
    assert 'type="ephemeral"' in said


def test_live_state_is_refused(host, tmp_path):
    with pytest.raises(ValueError, match="needs a path"):  # as the seed's line says
        connect_state(type="live", storage="disk")
    state = connect_state(type="live", storage="disk", path=str(tmp_path / "live"))
    with pytest.raises(ValueError, match="does not support live state") as caught:
        Agent(name="live-agent", host=host, state=state)
    assert 'storage="postgres"' in str(caught.value)


def test_disk_state_with_a_relative_path_is_refused(host):
    state = connect_state(type="versioned", storage="disk", path="my-agent")
    with pytest.raises(ValueError, match="absolute path that every node") as caught:
        Agent(host=host, state=state)
    assert "'my-agent'" in str(caught.value)


def _remembers(host, state) -> list[int]:
    """Two tasks in one session, then one in another: what each returned."""
    agent = Agent(
        primer="You are helpful.",
        host=host,
        state=state,
        llm=connect_llm(
            "scripted",
            responses=_replies(
                "try:\n    count += 1\nexcept NameError:\n    count = 1\ntask_success(count)"
            )
            * 3,
        ),
    )

    @agent.task
    def bump() -> int:
        """Add one to the count."""

    session = f"seed-{uuid.uuid4().hex[:8]}"
    return [bump(session=session), bump(session=session), bump(session=session + "-other")]


def test_ephemeral_state_starts_fresh_every_task(host):
    assert _remembers(host, connect_state(type="ephemeral")) == [1, 1, 1]


def test_disk_state_on_a_shared_absolute_path_is_kept(host, tmp_path):
    """The test cluster's nodes are this machine: a temporary folder is shared by all."""
    state = connect_state(type="versioned", storage="disk", path=str(tmp_path / "state"))
    assert _remembers(host, state) == [1, 2, 1]
    assert any((tmp_path / "state").iterdir())  # written by the runner, where it said


def test_postgres_state_is_kept(ray_cluster, postgres, monkeypatch):
    monkeypatch.setenv("AGEX_POSTGRES_URL", postgres.url)
    host = connect_host(
        provider="ray",
        address=ray_cluster.address,
        runtime_env={"env_vars": {"AGEX_POSTGRES_URL": postgres.url}},
    )
    state = connect_state(
        type="versioned", storage="postgres", path=f"tests/seed-{uuid.uuid4().hex[:8]}"
    )
    assert _remembers(host, state) == [1, 2, 1]


# -- Callbacks ---------------------------------------------------------------------------


def test_pprint_callbacks_print_what_streams(host, capsys):
    agent = Agent(host=host, llm=scripted("print('hello from the cluster')", "task_success(2)"))

    @agent.task
    def my_task(query: str) -> int:
        """Process query."""

    assert my_task("hello", on_event=pprint_events, on_token=pprint_tokens) == 2
    printed = capsys.readouterr().out
    assert "hello from the cluster" in printed
    assert "task_success(2)" in printed  # the model's tokens


def test_events_and_tokens_arrive_while_the_run_goes_on(host):
    """With a model that takes a while per step, the first step's action and tokens reach
    the caller before the run ends on the cluster (the success event's own timestamp, made
    there: the nodes share this machine's clock)."""
    llm = connect_llm(
        "scripted", responses=_replies("x = 1", "y = x + 1", "task_success(y)"), delay=1.0
    )
    agent = Agent(host=host, llm=llm)
    arrived: list[tuple[float, object]] = []
    token_times: list[float] = []

    @agent.task
    def slow() -> int:
        """Slow."""

    def on_event(event):
        arrived.append((time.time(), event))

    assert slow(on_event=on_event, on_token=lambda _: token_times.append(time.time())) == 2
    kinds = [type(e).__name__ for _, e in arrived]
    assert kinds == ["TaskStartEvent", "ActionEvent", "ActionEvent", "ActionEvent", "SuccessEvent"]
    ended = arrived[-1][1].timestamp
    first_action_arrived = arrived[1][0]
    assert first_action_arrived < ended
    assert token_times[0] < ended
    assert len(token_times) >= 3


# -- Hierarchical agents -----------------------------------------------------------------


def test_orchestrator_on_ray_runs_its_specialist_in_the_same_runner(host, tmp_path, monkeypatch):
    """The specialist has no host: it runs in the orchestrator's runner on the cluster (not
    in this process, and in no runner of its own), in the orchestrator's session, with its
    own state."""
    from agex.hosts.local import LocalHost
    from agex_host_ray import cluster

    orchestrator = Agent(
        name="orchestrator",
        host=host,
        state=connect_state(type="versioned", storage="disk", path=str(tmp_path / "orch")),
        llm=scripted("result = process_data('abc')", "task_success(result)"),
    )
    specialist = Agent(
        name="specialist",
        state=connect_state(type="versioned", storage="disk", path=str(tmp_path / "spec")),
        llm=scripted("mine = data.upper()", "task_success(mine)"),
    )

    @orchestrator.fn
    @specialist.task
    def process_data(data: str) -> str:
        """Specialist task."""

    @orchestrator.task
    def orchestrate() -> str:
        """Orchestrate."""

    async def not_here(self, invocation, sink):
        raise AssertionError(f"{invocation.agent.name} ran in the calling process")

    session = f"seed-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(LocalHost, "arun", not_here)
    started_before = sum(len(r) for r in cluster._runners.values())
    names: list[str] = []
    assert orchestrate(session=session, on_event=lambda e: names.append(e.agent_name)) == "ABC"
    assert sum(len(r) for r in cluster._runners.values()) <= started_before + 1
    assert "specialist" in names  # its events streamed back with the orchestrator's
    monkeypatch.undo()

    # Each agent's state, in the session the specialist inherited, holds what it made.
    def names(agent: Agent) -> set[str]:
        state = agent.state(session)
        return set(state.tree(state.head()))

    assert "mine" in names(specialist)
    assert "mine" not in names(orchestrator)
    assert "result" in names(orchestrator)
    assert not specialist.state("another").head()


# -- Warmup, async -----------------------------------------------------------------------


def test_warmup_starts_the_runner_the_next_task_uses(ray_cluster):
    from agex_host_ray import cluster

    host = connect_host(provider="ray", address=ray_cluster.address, concurrency=7)
    agent = Agent(primer="You are helpful.", host=host, llm=scripted("task_success('short')"))

    @agent.task
    def summarize(text: str) -> str:
        """Summarize the text in one sentence."""

    def mine() -> list[cluster.Runner]:
        return [r for key, rs in cluster._runners.items() if ", 7, " in key for r in rs]

    assert mine() == []
    agent.warmup()
    (warm,) = mine()
    assert warm.started.is_set()
    assert warm.where is not None
    assert warm.running == 0
    assert summarize("Ray runs the whole loop remotely.") == "short"
    assert mine() == [warm]


def test_an_async_task_is_awaited(host):
    agent = Agent(host=host, llm=scripted("task_success(x * 2)"))

    @agent.task
    async def double(x: int) -> int:
        """Double x."""

    async def both():
        return await asyncio.gather(double(2), double(3))

    agent.llm = connect_llm("scripted", responses=_replies("task_success(x * 2)") * 2)
    assert sorted(asyncio.run(both())) == [4, 6]


# -- Outcomes and failures ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "raised", "said"),
    [
        ("task_fail('no data')", TaskFail, "no data"),
        ("task_clarify('which year?')", TaskClarify, "which year?"),
        ("while True:\n    pass", TaskTimeout, None),
    ],
)
def test_task_outcomes_arrive_as_themselves(host, code, raised, said):
    agent = Agent(host=host, llm=scripted(code), timeout=1.0)

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(raised) as caught:
        job()
    assert type(caught.value) is raised
    if said is not None:
        assert caught.value.message == said


def test_a_cancelled_task_raises_task_cancelled(host):
    agent = Agent(host=host, llm=scripted("while True:\n    pass"))
    spinning = threading.Event()
    box: dict[str, BaseException] = {}

    @agent.task
    def spin() -> int:
        """Spin."""

    def work():
        try:
            spin(session="seed-cancel", on_event=lambda e: spinning.set())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    assert spinning.wait(60)
    deadline = time.monotonic() + 30
    while spin.cancel("seed-cancel") == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    thread.join(60)
    assert type(box.get("error")) is TaskCancelled


def test_another_failure_is_a_remote_execution_error_with_its_traceback(host):
    """The model runs out of replies on the cluster: not an outcome of the task."""
    agent = Agent(host=host, llm=scripted("x = 1"))

    @agent.task
    def job() -> int:
        """Job."""

    with pytest.raises(RemoteExecutionError) as caught:
        job()
    error = caught.value
    assert error.remote_type == "ScriptExhausted"
    assert "Traceback" in error.remote_traceback
    assert "scripted.py" in error.remote_traceback
    assert "Remote traceback:" in str(error)
