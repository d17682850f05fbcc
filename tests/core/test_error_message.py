"""``.message`` is the text an error was raised with, as given: what agent code passed to
``task_fail`` or ``task_clarify``, with nothing added. It stays so however the error
travels: raised in this process, pickled (a Modal container, a worker), or sent through the
outcome codec (a worker process, a server)."""

from __future__ import annotations

import inspect
import json
import pickle
from typing import Any

import cloudpickle
import pytest

from agex import Agent, connect_llm, errors, remote
from agex.hosts import Invocation
from agex.isolation import strongest
from agex.remote.outcome import TYPED

#: A message that decoration or a careless codec would change: quotes, braces, a percent
#: sign, non-ASCII, several lines, and surrounding blanks.
MESSAGE = "  no rows for 'Zürich' {city}\n100% sure: ask \"which year?\"  "


def scripted(*codes: str, **options: Any) -> Any:
    replies = [f"Step.\n```python\n{code}\n```" for code in codes]
    return connect_llm(provider="scripted", responses=replies, **options)


def job_of(agent: Agent) -> Any:
    @agent.task
    def job() -> int:
        """Job."""

    return job


# -- raised where the loop runs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("builtin", "error"), [("task_fail", errors.TaskFail), ("task_clarify", errors.TaskClarify)]
)
def test_fail_and_clarify_carry_what_agent_code_passed(builtin: str, error: type) -> None:
    job = job_of(Agent(llm=scripted(f"{builtin}({MESSAGE!r})")))
    with pytest.raises(error) as caught:
        job()
    assert caught.value.message == MESSAGE


def test_a_message_that_is_not_a_string_is_its_text() -> None:
    job = job_of(Agent(llm=scripted("task_fail(404)")))
    with pytest.raises(errors.TaskFail) as caught:
        job()
    assert caught.value.message == "404"


def test_a_timeout_says_which_limit() -> None:
    job = job_of(Agent(llm=scripted("x = 1"), max_iterations=1))
    with pytest.raises(errors.TaskTimeout) as caught:
        job()
    assert "max_iterations" in caught.value.message
    assert caught.value.message == str(caught.value)


@pytest.mark.usefixtures("ship_test_module")
@pytest.mark.skipif(strongest() == "none", reason="no worker processes here")
@pytest.mark.parametrize(
    ("builtin", "error"), [("task_fail", errors.TaskFail), ("task_clarify", errors.TaskClarify)]
)
def test_the_message_is_the_same_when_agent_code_runs_in_a_worker(
    builtin: str, error: type
) -> None:
    job = job_of(Agent(isolation=strongest(), llm=scripted(f"{builtin}({MESSAGE!r})")))
    with pytest.raises(error) as caught:
        job()
    assert caught.value.message == MESSAGE


# -- pickled -----------------------------------------------------------------------------


def made(cls: type[errors.AgexError]) -> errors.AgexError:
    """An instance of ``cls``, raised with MESSAGE where its constructor takes one."""
    special: dict[type, errors.AgexError] = {
        errors.UnknownProviderError: errors.UnknownProviderError("host", "nope", MESSAGE),
        errors.ProviderNotInstalledError: errors.ProviderNotInstalledError(
            "host", "modal", "agex-host-modal", 'pip install "agex-core[modal]"'
        ),
        errors.DuplicateProviderError: errors.DuplicateProviderError("host", "x", ["a", "b"]),
        errors.ProviderOptionError: errors.ProviderOptionError(
            "host", "http", MESSAGE, missing=["url"], accepted=["url", "token"]
        ),
        errors.CodeRejected: errors.CodeRejected(MESSAGE, 3, "import os"),
        errors.RemoteExecutionError: errors.RemoteExecutionError(
            MESSAGE, remote_traceback="Traceback (most recent call last):\n  boom\n"
        ),
    }
    return special.get(cls) or cls(MESSAGE)


ERRORS = sorted(
    (
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.AgexError)
    ),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("cls", ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_keeps_its_message_through_a_pickle(cls: type, dumps: Any) -> None:
    error = made(cls)
    loaded = pickle.loads(dumps(error))
    assert type(loaded) is cls
    assert loaded.message == error.message
    assert str(loaded) == str(error)


def test_the_message_of_a_remote_error_leaves_out_its_traceback() -> None:
    error = made(errors.RemoteExecutionError)
    assert error.message == MESSAGE
    assert str(error).startswith(MESSAGE)
    assert "boom" in str(error)
    assert "boom" not in error.message


def test_a_decorated_error_keeps_its_text_as_shown() -> None:
    # CodeRejected shows where: its message is that text, and ``reason`` the bare reason.
    error = made(errors.CodeRejected)
    assert error.message == str(error)
    assert error.message.startswith("line 3: ")
    assert error.reason == MESSAGE


# -- through the outcome codec -----------------------------------------------------------


def settled(outcome: dict[str, Any]) -> Any:
    """The exception the caller raises for ``outcome``, after a trip through JSON."""
    agent = Agent()
    job = job_of(agent)
    try:
        remote.settle(json.loads(json.dumps(outcome)), Invocation(agent, job, {}, "s"), "k")
    except errors.AgexError as exc:
        return exc
    raise AssertionError(f"an error outcome settled without raising: {outcome}")


@pytest.mark.parametrize("name", TYPED)
def test_a_typed_error_arrives_as_its_type_with_its_message(name: str) -> None:
    error = getattr(errors, name)(MESSAGE)
    arrived = settled(remote.failure(error))
    assert type(arrived) is type(error)
    assert arrived.message == MESSAGE
    assert str(arrived) == str(error)


def test_any_other_error_arrives_as_a_remote_execution_error_naming_it() -> None:
    try:
        raise LookupError(MESSAGE)
    except LookupError as exc:
        arrived = settled(remote.failure(exc))
    assert type(arrived) is errors.RemoteExecutionError
    assert arrived.message == f"LookupError: {MESSAGE}"
    assert arrived.remote_type == "LookupError"
    assert "raise LookupError(MESSAGE)" in arrived.remote_traceback


def test_the_far_side_cannot_pick_an_error_type_outside_the_typed_ones() -> None:
    # IsolationError is an agex error too, but not one the codec raises as itself: the far
    # side names types, and only those in TYPED are built here.
    for name in ("IsolationError", "SystemExit", "__class__", "KeyboardInterrupt"):
        outcome = {"kind": "error", "type": name, "message": MESSAGE, "traceback": "tb"}
        arrived = settled(outcome)
        assert type(arrived) is errors.RemoteExecutionError
        assert arrived.remote_type == name


def test_a_remote_error_relayed_again_does_not_carry_its_traceback_in_its_message() -> None:
    # A sub-agent's RemoteExecutionError sent on by its caller's run: the traceback travels
    # as the traceback, not folded into the message.
    outcome = remote.failure(made(errors.RemoteExecutionError))
    assert outcome["message"] == MESSAGE
    assert "boom" in outcome["traceback"]
