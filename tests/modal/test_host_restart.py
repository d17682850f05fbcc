"""Modal may stop a container and run its input again from the start in another (it preempts
containers). A task's input started a second time is not run again: the caller gets a clear
RemoteExecutionError, nothing of the task is repeated, and the session stays where it was."""

from __future__ import annotations

import pytest

from agex import Agent, connect_host, connect_state
from agex.errors import RemoteExecutionError
from agex.events import ActionEvent, TaskStartEvent
from agex.testing.host import scripted


def counting(steps):
    """``count()`` runs the scripted steps in versioned state (the memory tier)."""
    agent = Agent(
        host=connect_host(provider="modal", secrets="llm-keys"),
        state=connect_state(type="versioned", storage="memory"),
        llm=scripted(*steps),
    )

    @agent.task
    def count() -> int:
        """Count."""

    return agent, count


# after=0: preempted as it yields its first message, whose restart outcome reaches the caller;
# after=4: preempted after a step committed, the caller skips the new container's outcome
# (it already had message 1) and finds it in the control Dict.
@pytest.mark.parametrize(("after", "seen"), [(0, []), (4, [TaskStartEvent, ActionEvent])])
def test_a_restarted_input_is_not_run_again(fake, after, seen):
    agent, count = counting(["x = 1", "task_success(x)", "x = 10", "y = 2", "task_success(x+y)"])
    assert count() == 1
    history = [commit.id for commit in agent.state().history()]

    fake.preempt(after=after)
    events = []
    with pytest.raises(RemoteExecutionError, match="a second time") as raised:
        count(on_event=events.append)
    assert raised.value.remote_type == "Restarted"
    assert "Run the task again" in str(raised.value)
    assert "state is unchanged" in str(raised.value)
    assert [type(event) for event in events] == seen  # nothing shown twice
    assert fake.calls == 2
    assert [commit.id for commit in agent.state().history()] == history
    assert agent.state().values() == {"x": 1}

    assert count() == 12  # run again, it runs from the start
    assert agent.state().values() == {"x": 10, "y": 2}


def test_an_input_not_preempted_runs_once_and_leaves_no_restart(fake):
    from agex_host_modal import remote

    _agent, count = counting(["task_success(3)"])
    assert count() == 3
    control = fake.dicts[remote.CONTROL]
    assert not any(str(key).startswith("restarted/") for key in control)
    assert sum(str(key).startswith("start/") for key in control) == 1
