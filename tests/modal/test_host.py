"""The modal host against the fake Modal: parameters, credentials, deploy on first use, the
two state tiers, the seed's rules for state and sub-agents, and cancelling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agex import Agent, connect_host, connect_state
from agex.errors import RemoteExecutionError
from agex.testing.host import scripted
from agex_host_modal.app import app_name
from agex_host_modal.testing import DICT_TTL, FakeModal

DAY = 24 * 3600.0


def modal_host(**options):
    return connect_host(provider="modal", **{"secrets": "llm-keys", **options})


def counting_agent(host, state=None, steps=1):
    """Each task adds one to ``count`` (kept in versioned state) and returns it."""
    step = "try:\n    count += 1\nexcept NameError:\n    count = 1\ntask_success(count)"
    codes = [step] * steps
    agent = Agent(host=host, state=state, llm=scripted(*codes))

    @agent.task
    def bump() -> int:
        """Bump."""

    return agent, bump


# -- parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"secrets": None}, "needs secrets"),
        ({"secrets": []}, "secret name or a list"),
        ({"secrets": "bad name"}, "each secret must be a Modal name"),
        ({"app": "x" * 65}, "app must be a Modal name"),
        ({"gpu": "A10G:0"}, "asks for 0 GPUs"),
        ({"gpu": 1}, "gpu must be a Modal GPU type"),
        ({"memory": 0}, "memory must be a whole number of MiB"),
        ({"memory": 4096.5}, "memory must be a whole number of MiB"),
        ({"timeout": 0}, "timeout must be a number of seconds"),
        ({"timeout": 24 * 3600}, "at most 86340"),
        ({"scaledown_window": 1}, "from 2 to 3600"),
        ({"scaledown_window": 3601}, "from 2 to 3600"),
        ({"scaledown_window": 30.5}, "from 2 to 3600"),
    ],
)
def test_bad_parameters_are_refused_clearly(options, message):
    with pytest.raises(ValueError, match=message):
        connect_host(provider="modal", **{"secrets": "llm-keys", **options})


def test_secrets_are_required():
    with pytest.raises(ValueError, match="modal secret create"):
        connect_host(provider="modal")


def test_seed_parameters_are_accepted_and_dumped():
    host = modal_host(gpu="A10G", memory=4096, timeout=600.0, scaledown_window=300)
    assert host.dump_config() == {
        "provider": "modal",
        "secrets": ["llm-keys"],
        "app": None,
        "gpu": "A10G",
        "memory": 4096,
        "timeout": 600.0,
        "scaledown_window": 300,
        "preemptible": None,
    }
    assert modal_host(secrets=["a", "b"]).secrets == ("a", "b")


# -- credentials and deploying -----------------------------------------------------------


def test_missing_credentials_fail_before_any_call():
    from agex_host_modal import sdk

    fake = FakeModal(credentials=False)
    try:
        with sdk.use(fake):
            agent, bump = counting_agent(modal_host())
            with pytest.raises(PermissionError, match="modal token new"):
                bump()
            with pytest.raises(PermissionError, match="MODAL_TOKEN_ID"):
                agent.warmup()
        assert fake.deploys == []
        assert fake.calls == 0
    finally:
        fake.close()


def test_first_task_deploys_then_reuses(fake):
    host = modal_host()
    agent, bump = counting_agent(host, steps=2)
    assert bump() == 1
    assert fake.deploys == [app_name(agent, host)]
    assert bump() == 1  # ephemeral: fresh each time
    assert len(fake.deploys) == 1
    assert fake.calls == 2
    # Another process (a new host object) finds the deployed app by its name.
    other = modal_host()
    agent.host = other
    agent.llm = scripted("task_success(7)")
    assert bump() == 7
    assert len(fake.deploys) == 1


def test_the_app_is_named_once_per_definition_of_the_agent(fake, monkeypatch):
    from agex.remote import dependencies
    from agex_host_modal import app

    named = []
    monkeypatch.setattr(
        app,
        "needs",
        lambda agent, tasks=(): named.append(agent) or dependencies.needs(agent, tasks),
    )
    agent, bump = counting_agent(modal_host(), steps=3)
    bump()
    first = len(named)
    bump()
    assert len(named) == first  # naming scans distributions and hashes sources: not per task

    @agent.fn
    def helper() -> int:
        return 1

    bump()
    assert len(named) > first  # a new registration may need another image
    assert len(fake.deploys) == 2


def test_warmup_deploys_ahead_of_the_first_task(fake):
    agent, bump = counting_agent(modal_host())
    agent.warmup()
    assert len(fake.deploys) == 1
    assert fake.calls == 0
    assert bump() == 1
    assert len(fake.deploys) == 1


def test_a_missing_secret_fails_the_deploy_by_name(fake):
    _agent, bump = counting_agent(modal_host(secrets=["llm-keys", "nowhere"]))
    with pytest.raises(RemoteExecutionError, match=r"'nowhere' not found.*modal secret create"):
        bump()


def test_the_secrets_reach_the_container_and_not_agent_code(fake):
    """The model client reads the secrets in the container; agent code runs in a confined
    worker there, whose environment is empty."""
    agent = Agent(host=modal_host(), llm=scripted("task_success(secret())"))
    agent.fn(lambda: os.environ.get("AGEX_TEST_SECRET"), name="secret")

    @agent.task
    def read() -> str | None:
        """Read."""

    assert read() is None
    (container,) = fake.containers
    environment = Path(f"/proc/{container.process.pid}/environ").read_bytes().split(b"\0")
    assert b"AGEX_TEST_SECRET=from-the-secret" in environment


# -- state ---------------------------------------------------------------------------------


def test_live_state_is_refused(fake, tmp_path):
    live = connect_state(type="live", storage="disk", path=str(tmp_path))
    with pytest.raises(ValueError, match="does not support live state"):
        Agent(name="a", host=modal_host(), state=live)


def test_disk_state_needs_a_path(fake):
    with pytest.raises(ValueError, match="needs a path"):
        Agent(host=modal_host(), state=connect_state(type="versioned", storage="disk"))


def test_memory_tier_is_a_dict_per_session_named_from_the_fingerprint(fake):
    agent, bump = counting_agent(
        modal_host(), connect_state(type="versioned", storage="memory"), steps=3
    )
    assert bump() == 1
    assert bump() == 2
    assert bump(session="other") == 1
    prefix = f"agex.{agent.fingerprint[:8]}."
    assert {prefix + "default", prefix + "other"} <= set(fake.dicts)
    history = agent.state().history()  # read from this machine, through Modal's API
    assert len(history) == 2


def test_memory_tier_forgets_after_seven_idle_days_and_reads_keep_it(fake, clock):
    _agent, bump = counting_agent(
        modal_host(), connect_state(type="versioned", storage="memory"), steps=4
    )
    assert bump() == 1
    clock.now += 6 * DAY
    assert bump() == 2  # read within the week: kept, and the clock starts again
    clock.now += 6 * DAY
    assert bump() == 3
    clock.now += DICT_TTL + 1
    assert bump() == 1  # a week and a second untouched: gone


def test_disk_tier_keeps_state_in_a_volume_beyond_the_dict(fake, clock):
    state = connect_state(type="versioned", storage="disk", path="my-agent")
    _agent, bump = counting_agent(modal_host(), state, steps=3)
    assert bump() == 1
    assert bump() == 2
    assert "my-agent" in fake.volumes
    assert "my-agent" in fake.dicts
    assert any(name.startswith("h%2F") for name in fake.volumes["my-agent"])  # committed
    clock.now += 30 * DAY  # the Dict forgot everything; the Volume did not
    assert bump() == 3


def test_each_container_sees_the_volume_as_committed(fake):
    """A new container mounts what the last one committed (commit after each step)."""
    state = connect_state(type="versioned", storage="disk", path="shared")
    first, bump_first = counting_agent(modal_host(), state)
    _second, bump_second = counting_agent(modal_host(), state)
    assert bump_first() == 1
    # Take the second run to a new container by keeping the first one busy.
    fake.apps[app_name(first, first.host)]["run_task"].idle.clear()
    fake.dicts.pop("shared")  # only the Volume can answer now
    assert bump_second() == 2
    assert len(fake.containers) == 2


def test_ephemeral_state_is_fresh_each_task(fake):
    _agent, bump = counting_agent(modal_host(), steps=2)
    assert bump() == 1
    assert bump() == 1
    assert not any(name.startswith("agex.") for name in fake.dicts)


# -- sub-agents ----------------------------------------------------------------------------


def test_a_sub_agent_without_host_runs_in_the_container(fake):
    specialist = Agent(name="specialist", llm=scripted("task_success(data.upper())"))

    @specialist.task
    def process_data(data: str) -> str:
        """Specialist task."""

    orchestrator = Agent(
        name="orchestrator", host=modal_host(), llm=scripted("task_success(process_data('x'))")
    )
    orchestrator.fn(process_data)

    @orchestrator.task
    def run() -> str:
        """Run."""

    assert run() == "X"


def test_no_sub_agent_on_a_modal_host(fake):
    parent = Agent(name="parent")
    child = Agent(name="child", host=modal_host())

    @child.task
    def work() -> int:
        """Work."""

    with pytest.raises(ValueError, match="sub-agents with Modal hosts cannot be registered"):
        parent.fn(work)


@pytest.mark.parametrize("kind", ["versioned", "live"])
def test_no_sub_agent_state_under_a_modal_parent(fake, tmp_path, kind):
    parent = Agent(name="parent", host=modal_host())
    child = Agent(name="child", state=connect_state(type=kind, storage="disk", path=str(tmp_path)))

    @child.task
    def work() -> int:
        """Work."""

    with pytest.raises(ValueError, match=r"cannot have \w+ state yet"):
        parent.fn(work)
