"""The remote-execution core every remote host runs on: the envelope, the far side's run,
its messages and the outcome codec, in one process."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agex import Agent, TaskCancelled, TaskClarify, TaskFail, TaskTimeout, plugins, remote
from agex.errors import RemoteExecutionError
from agex.hosts import Invocation, Sink
from agex.state.config import StateConfig
from agex.testing.host import Measured, scripted

SERIALIZER = plugins.create("serializer", "cloudpickle")


def shipped(*codes: str, name: str = "agent", **options: Any) -> tuple[remote.Envelope, bytes]:
    agent = Agent(name=name, llm=scripted(*codes), **options)
    agent.cls(Measured)

    @agent.task
    def job(x: int) -> Any:
        """Job."""

    invocation = Invocation(agent, job, {"x": 1}, "s")
    envelope = remote.Envelope.of(invocation, timeout=30.0)
    return remote.Envelope.from_json(json.loads(json.dumps(envelope.to_json()))), remote.ship(
        invocation, SERIALIZER
    )


async def messages(envelope: remote.Envelope, payload: bytes, **options: Any) -> list[Any]:
    return [message async for message in remote.stream(envelope, payload, **options)]


# -- the envelope ----------------------------------------------------------------------


def test_the_envelope_round_trips_as_plain_json() -> None:
    envelope, _ = shipped("task_success(1)")
    again = remote.Envelope.from_json(json.loads(json.dumps(envelope.to_json())))
    assert again == envelope
    assert again.state == StateConfig("ephemeral", None, None)


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"versions": {"python": "2.7", "agex": "0", "cloudpickle": "0"}}, 409, "differ"),
        ({"versions": None}, 409, "which versions"),
        ({"session": ""}, 422, "session"),
        ({"session": "a\nb"}, 422, "printable"),
        ({"agent": 3}, 422, "agent"),
        ({"agent": "a\x00b"}, 422, "printable"),
        ({"state": {"type": "versioned", "storage": "disk", "path": "p" * 1001}}, 422, "path"),
        ({"timeout": -1}, 422, "timeout"),
        ({"timeout": True}, 422, "timeout"),
        ({"timeout": float("nan")}, 422, "timeout"),
        ({"serializer": ["x"]}, 422, "serializer"),
        ({"state": {"type": "forever"}}, 422, "state"),
        ({"state": {"type": "versioned", "storage": None}}, 422, "storage"),
        ({"state": {"type": "versioned", "storage": "disk", "path": ""}}, 422, "path"),
        ({"run": "x" * 65}, 422, "run"),
    ],
)
def test_a_bad_envelope_is_refused_with_what_is_wrong(
    change: dict[str, Any], status: int, words: str
) -> None:
    envelope, _ = shipped("task_success(1)")
    with pytest.raises(remote.Refused, match=words) as refused:
        remote.Envelope.from_json({**envelope.to_json(), **change})
    assert refused.value.status == status


def test_versions_are_checked_before_anything_else() -> None:
    with pytest.raises(remote.Refused) as refused:
        remote.Envelope.from_json({"session": "", "versions": {}})
    assert refused.value.status == 409


# -- the far side ----------------------------------------------------------------------


def test_a_shipped_task_streams_its_events_and_tokens_then_its_outcome() -> None:
    envelope, payload = shipped("n = 40\nprint(n)", "task_success(n + x + 1)")
    got = asyncio.run(messages(envelope, payload))
    kinds = [m.kind for m in got]
    assert kinds[-1] == "result"
    assert got[-1].data["json"] == 42
    events = [json.loads(m.data)["type"] for m in got if m.kind == "event"]
    assert events == ["TaskStartEvent", "ActionEvent", "OutputEvent", "ActionEvent", "SuccessEvent"]
    assert [m.id for m in got] == list(range(1, len(got) + 1))
    assert "".join(t for m in got if m.kind == "tokens" for t in m.data).startswith("Step 1.")
    assert got[-1].data["model"]["position"] == 2  # the model as the run left it


def test_setting_stop_cancels_the_run_and_its_outcome_still_arrives() -> None:
    envelope, payload = shipped("while True:\n    pass")

    async def main() -> list[Any]:
        stop = asyncio.Event()
        out = []
        async for message in remote.stream(envelope, payload, stop=stop):
            out.append(message)
            if message.kind == "event" and "ActionEvent" in message.data:
                stop.set()
        return out

    got = asyncio.run(asyncio.wait_for(main(), 30))
    assert got[-1].kind == "error"
    assert got[-1].data["type"] == "TaskCancelled"


def test_a_payload_that_cannot_load_yields_only_its_error() -> None:
    envelope, _ = shipped("task_success(1)")
    got = asyncio.run(messages(envelope, b"not a pickle"))
    assert [m.kind for m in got] == ["error"]
    assert got[0].data["type"] == "Refused"
    assert "could not be loaded" in got[0].data["message"]


def test_a_payload_for_another_agent_is_refused() -> None:
    envelope, payload = shipped("task_success(1)", name="other")
    mine = remote.Envelope.from_json({**envelope.to_json(), "agent": "agent"})
    got = asyncio.run(messages(mine, payload))
    assert got[-1].data["type"] == "Refused"


def test_the_envelopes_time_limit_ends_the_run_as_a_task_timeout() -> None:
    envelope, payload = shipped("while True:\n    pass")
    limited = remote.Envelope.from_json({**envelope.to_json(), "timeout": 0.5})
    got = asyncio.run(asyncio.wait_for(messages(limited, payload), 30))
    assert got[-1].data["type"] == "TaskTimeout"
    assert "host's 0.5s timeout" in got[-1].data["message"]


# -- the outbox ------------------------------------------------------------------------


def test_model_output_nobody_has_read_travels_as_one_message() -> None:
    outbox = remote.Outbox()
    for piece in "abc":
        outbox.write_token(piece)
    first = outbox.read()
    outbox.write_token("d")  # "abc" was read: a message of its own
    outbox.finish(remote.failure(TaskFail("no")))
    outbox.write_token("late")  # after the outcome: nothing
    assert [(m.kind, m.data) for m in first] == [("tokens", ["a", "b", "c"])]
    rest = outbox.read(first[-1].id)
    assert [m.kind for m in rest] == ["tokens", "error"]
    assert rest[0].data == ["d"]


def test_a_bounded_outbox_tells_a_late_reader_what_it_lost() -> None:
    outbox = remote.Outbox(limit=5)
    for i in range(30):
        outbox.publish("event", str(i))
    lost = outbox.read(0)
    assert isinstance(lost, remote.Lost)
    assert lost.last == 30
    assert outbox.read(29) == [remote.Message(30, "event", "29")]


# -- the caller's side -----------------------------------------------------------------


def call(returns: Any = Any, agent: Agent | None = None) -> Invocation:
    """A call of a task whose return annotation is ``returns``."""
    agent = agent or Agent()

    def job() -> None:
        """Job."""

    job.__annotations__["return"] = returns
    return Invocation(agent, agent.task(job), {}, "s")


def settle(
    outcome: dict[str, Any], key: str = "k", agent: Agent | None = None, returns: Any = Any
) -> Any:
    return remote.settle(outcome, call(returns, agent), key)


@pytest.mark.parametrize("error", [TaskFail("a"), TaskClarify("b"), TaskTimeout("c")])
def test_task_outcomes_are_raised_as_themselves(error: Exception) -> None:
    with pytest.raises(type(error), match=str(error)):
        settle(json.loads(json.dumps(remote.failure(error))))


def test_a_cancelled_run_raises_task_cancelled() -> None:
    with pytest.raises(TaskCancelled):
        settle(remote.failure(TaskCancelled("stop")))


def test_other_errors_are_remote_execution_errors_with_the_traceback() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        outcome = remote.failure(exc)
    with pytest.raises(RemoteExecutionError) as caught:
        settle(outcome)
    assert caught.value.remote_type == "KeyError"
    assert "missing" in (caught.value.remote_traceback or "")


def test_values_json_carries_exactly_go_as_json_and_others_signed() -> None:
    plain = {"a": [1, 2.5, None, True, "x"]}
    assert remote.success(plain, Any, "k") == {"kind": "result", "json": plain}
    cases: list[tuple[Any, Any]] = [
        ((1, 2), tuple[int, int]),
        ({1: "a"}, dict[int, str]),
        (float("nan"), float),
        (Measured("m", (1, 2)), Measured),
        ([Measured("a", (1, 1)), None], list[Measured | None]),
        ([[[[]]]] * 2, Any),
    ]
    for value, returns in cases:
        outcome = json.loads(json.dumps(remote.success(value, returns, "k")))
        got = settle(outcome, returns=returns)
        assert got == value or (value != value and got != got)
    nested: Any = []
    for _ in range(100):
        nested = [nested]
    assert "pickle" in remote.success(nested, Any, "k")
    with pytest.raises(RemoteExecutionError, match="HMAC"):
        settle(remote.success((1,), Any, "k"), key="other")


def test_the_caller_continues_with_the_model_as_the_run_left_it() -> None:
    agent = Agent(llm=scripted("task_success(1)", "task_success(2)"))
    ran = scripted("task_success(1)", "task_success(2)")
    ran.position = 1
    settle(remote.success(1, Any, "k", ran), agent=agent)
    assert agent.llm.position == 1
    model = agent.llm
    hostile = {**ran.config(), "position": 2, "responses": ["task_success(evil)"], "delay": 9}
    settle({"kind": "result", "json": 1, "model": hostile}, agent=agent)
    assert agent.llm is model  # the same object, moved on
    assert (model.position, model.responses[0], model.delay) == (
        2,
        "Step 1.\n```python\ntask_success(1)\n```",
        0.0,
    )
    settle({"kind": "result", "json": 1, "model": {**hostile, "position": "9"}}, agent=agent)
    assert model.position == 2  # a value of another type is ignored
    other = {**ran.config(), "provider": "elsewhere", "position": 0}
    settle({"kind": "result", "json": 1, "model": other}, agent=agent)
    assert model.position == 2  # another provider's config is not the caller's model


def test_deliver_hands_events_and_tokens_to_the_callbacks() -> None:
    seen: list[Any] = []
    sink = Sink(seen.append, seen.append)
    envelope, payload = shipped("task_success(5)")
    got = asyncio.run(messages(envelope, payload))

    async def deliver_all() -> list[Any]:
        return [await remote.deliver(m.kind, m.data, sink) for m in got]

    outcomes = asyncio.run(deliver_all())
    assert outcomes[-1] == got[-1].data
    assert all(o is None for o in outcomes[:-1])
    assert any(isinstance(item, str) for item in seen)
    assert type(seen[0]).__name__ == "TaskStartEvent"


def test_a_result_that_does_not_fit_the_annotation_is_refused() -> None:
    with pytest.raises(RemoteExecutionError, match="does not fit"):
        settle({"kind": "result", "json": "not a number"}, returns=int)
    with pytest.raises(RemoteExecutionError, match="does not fit"):
        settle(remote.success((1, 2), Any, "k"), returns=Measured)
    assert settle({"kind": "result", "json": [1, 2]}, returns=tuple[int, int]) == (1, 2)


def test_a_mac_that_is_not_ascii_is_refused_like_any_wrong_mac() -> None:
    outcome = remote.success((1,), Any, "k")
    with pytest.raises(RemoteExecutionError, match="HMAC"):
        settle({**outcome, "mac": "é" * 64})
