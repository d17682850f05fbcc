"""Events stay small whatever agent code or the model does: every text an event carries is
cut to EVENT_TEXT_LIMIT with a note of how much was cut, while the task's outcome (the
value returned, the message of TaskFail or TaskClarify) reaches the caller whole."""

import json
import re

import pytest

from agex import Agent, TaskClarify, TaskFail, connect_llm
from agex.events import (
    EVENT_TEXT_LIMIT,
    ActionEvent,
    ClarifyEvent,
    ErrorEvent,
    Event,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
    bound_text,
)

#: Far past the bound: a message of this size must never reach an event.
HUGE = 5_000_000
#: An event of one text field, in JSON: the text, plus the other fields.
ONE_FIELD = EVENT_TEXT_LIMIT + 1_000
BASE = {"agent_name": "a", "session": "s", "step": 1, "commit": "c1"}
NOTE = re.compile(r"\n\[\.\.\. ([\d,]+) characters cut \.\.\.\]\n")


def block(code: str, thinking: str = "Thinking.") -> str:
    return f"{thinking}\n```python\n{code}\n```"


class Recording:
    """The scripted model, keeping the messages it was sent: what the agent was fed back."""

    def __init__(self, *replies: str) -> None:
        self.llm = connect_llm(provider="scripted", responses=list(replies))
        self.sent: list[list[dict]] = []

    async def stream(self, messages):
        self.sent.append([dict(m) for m in messages])
        async for piece in self.llm.stream(messages):
            yield piece


def run(*replies: str, returns=int):
    """Run a task on the scripted replies: its events, and the model's record."""
    llm = Recording(*replies)
    agent = Agent(llm=llm)

    def job():
        """Do the job."""

    job.__annotations__["return"] = returns
    task = agent.task(job)
    seen: list[Event] = []
    return task, seen, llm


def cut_of(text: str) -> tuple[int, int]:
    """How many characters of ``text`` are kept around its note, and how many the note says
    were cut."""
    (count,) = NOTE.findall(text)
    return len(NOTE.sub("", text)), int(count.replace(",", ""))


def only(seen: list[Event], kind: type[Event]) -> Event:
    (event,) = [e for e in seen if type(e) is kind]
    return event


# -- the bound itself ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, EVENT_TEXT_LIMIT, EVENT_TEXT_LIMIT + 1, HUGE])
def test_bound_text_fits_the_limit_and_counts_the_cut(size) -> None:
    text = "a" * (size // 2) + "b" * (size - size // 2)
    shown = bound_text(text)
    assert len(shown) <= EVENT_TEXT_LIMIT
    if size <= EVENT_TEXT_LIMIT:
        assert shown == text
    else:
        kept, cut = cut_of(shown)
        assert kept + cut == size
        assert shown.startswith("a")  # both ends are kept
        assert shown.endswith("b")
        assert bound_text(shown) == shown


def test_bound_text_needs_room_for_its_note() -> None:
    with pytest.raises(ValueError, match="give at least 100"):
        bound_text("x" * 1000, 10)


# -- events made directly, or rebuilt from JSON ---------------------------------------------


OVERSIZED = [
    (TaskStartEvent, {"task_name": "t", "inputs": {"x": "i" * HUGE}}),
    (TaskStartEvent, {"task_name": "t" * HUGE, "inputs": {}}),
    (ActionEvent, {"thinking": "t" * HUGE, "code": "c" * HUGE}),
    (OutputEvent, {"text": "o" * HUGE}),
    (ErrorEvent, {"error": "e" * HUGE}),
    (SuccessEvent, {"result": "r" * HUGE}),
    (FailEvent, {"message": "f" * HUGE}),
    (ClarifyEvent, {"message": "q" * HUGE}),
]


@pytest.mark.parametrize(("kind", "fields"), OVERSIZED, ids=lambda v: getattr(v, "__name__", ""))
def test_oversized_fields_are_cut_when_an_event_is_made(kind, fields) -> None:
    for event in [
        kind(**BASE, **fields),
        Event.from_dict({"type": kind.__name__, **BASE, **fields}),
    ]:
        text = event.to_json()
        assert len(text) < 2 * EVENT_TEXT_LIMIT + 1_000
        assert "characters cut" in text
        # Cut once, a bounded event is its own JSON round trip: cutting again changes nothing.
        assert Event.from_json(text) == event


def test_every_base_field_is_bounded() -> None:
    big = "n" * HUGE
    event = OutputEvent(agent_name=big, session=big, step=1, commit=big, text=big)
    assert len(event.to_json()) < 4 * EVENT_TEXT_LIMIT + 1_000


def test_events_within_the_bound_are_kept_exactly() -> None:
    text = "é" * EVENT_TEXT_LIMIT
    result = {"rows": [{"name": "x" * 5_000, "n": 3}], "ok": True}
    for event in [
        OutputEvent(**BASE, text=text),
        SuccessEvent(**BASE, result=result),
        TaskStartEvent(**BASE, task_name="t", inputs={"a": "x" * 10_000, "b": "y" * 9_000}),
    ]:
        assert Event.from_json(event.to_json()) == event
    assert OutputEvent(**BASE, text=text).text == text
    assert SuccessEvent(**BASE, result=result).result == result


def test_a_large_result_keeps_its_structure_with_its_strings_cut() -> None:
    event = SuccessEvent(**BASE, result={"summary": "s" * HUGE, "count": 3, "tags": ["a", "b"]})
    assert event.result["count"] == 3
    assert event.result["tags"] == ["a", "b"]
    kept, cut = cut_of(event.result["summary"])
    assert kept + cut == HUGE
    assert len(event.to_json()) < ONE_FIELD


def test_a_result_too_large_in_structure_is_shown_as_its_json_cut() -> None:
    event = SuccessEvent(**BASE, result=list(range(1_000_000)))
    assert isinstance(event.result, str)
    assert event.result.startswith("[0, 1, 2, ")
    assert event.result.endswith("999998, 999999]")
    assert "characters cut" in event.result
    assert len(event.to_json()) < ONE_FIELD


def test_many_inputs_are_cut_to_fit_with_a_note() -> None:
    inputs = {f"arg{i}": "v" * 1_000 for i in range(200)}
    event = TaskStartEvent(**BASE, task_name="t", inputs=inputs)
    assert event.inputs["..."] == "151 more inputs not shown"
    assert len(event.to_json()) < ONE_FIELD
    assert Event.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("kind", "fields", "fix"),
    [
        (OutputEvent, {"text": ["x" * HUGE]}, r"pass str\(\.\.\.\) of it"),
        (TaskStartEvent, {"task_name": "t", "inputs": ["x"]}, r"pass \{name: repr\(value\)\}"),
        (TaskStartEvent, {"task_name": "t", "inputs": {"x": 1}}, r"pass str\(\.\.\.\) of it"),
        (SuccessEvent, {"result": object()}, r"pass agex\.events\.jsonable\(value\)"),
    ],
)
def test_fields_that_are_not_text_are_refused(kind, fields, fix) -> None:
    with pytest.raises(TypeError, match=fix):
        kind(**BASE, **fields)


# -- through the loop -------------------------------------------------------------------------


def test_a_huge_exception_message_is_cut_in_the_event_and_the_feedback() -> None:
    size = 50_000_000
    task, seen, llm = run(block(f'raise ValueError("x" * {size:_})'), block("task_success(7)"))
    assert task(on_event=seen.append) == 7
    error = only(seen, ErrorEvent)
    assert len(error.to_json()) < ONE_FIELD
    assert error.error.startswith("Traceback (most recent call last):\n  line 1, in <module>\n")
    message = error.error.split("ValueError: ", 1)[1].removesuffix("\n")
    kept, cut = cut_of(message)
    assert kept + cut == size
    # The model was shown the same traceback (it fits its feedback limit whole).
    feedback = llm.sent[1][-1]["content"]
    assert feedback == error.error
    assert len(json.dumps(llm.sent[1])) < ONE_FIELD


def test_huge_printed_output_is_cut_with_a_count() -> None:
    task, seen, _ = run(block(f'print("y" * {HUGE})'), block("task_success(1)"))
    assert task(on_event=seen.append) == 1
    output = only(seen, OutputEvent)
    assert len(output.to_json()) < ONE_FIELD
    shown = output.text.count("y")
    note = re.search(r"\[output truncated: ([\d,]+) more characters not shown\]\n$", output.text)
    assert note is not None
    assert shown + int(note[1].replace(",", "")) == HUGE + 1  # print adds a newline


@pytest.mark.parametrize(
    ("call", "raised", "kind"),
    [("task_fail", TaskFail, FailEvent), ("task_clarify", TaskClarify, ClarifyEvent)],
)
def test_a_huge_fail_or_clarify_message_is_cut_in_the_event_only(call, raised, kind) -> None:
    task, seen, _ = run(block(f'{call}("m" * {HUGE})'))
    with pytest.raises(raised) as info:
        task(on_event=seen.append)
    assert str(info.value) == "m" * HUGE  # the caller gets the message whole
    event = only(seen, kind)
    assert len(event.to_json()) < ONE_FIELD
    kept, cut = cut_of(event.message)
    assert kept + cut == HUGE


def test_a_huge_model_reply_is_cut_in_its_action_event() -> None:
    padding = "p" * 30_000  # the code stays under the sandbox's own limit, and runs
    reply = block(f"# {padding}\ntask_success(len({padding!r}))", thinking="t" * HUGE)
    task, seen, _ = run(reply)
    assert task(on_event=seen.append) == 30_000
    action = only(seen, ActionEvent)
    assert len(action.to_json()) < 2 * EVENT_TEXT_LIMIT + 1_000
    assert sum(cut_of(action.thinking)) == HUGE
    assert sum(cut_of(action.code)) == len(f"# {padding}\ntask_success(len({padding!r}))")


def test_a_huge_success_value_reaches_the_caller_whole() -> None:
    task, seen, _ = run(block(f'task_success({{"text": "v" * {HUGE}, "n": 2}})'), returns=dict)
    value = task(on_event=seen.append)
    assert value == {"text": "v" * HUGE, "n": 2}
    success = only(seen, SuccessEvent)
    assert success.result["n"] == 2
    assert sum(cut_of(success.result["text"])) == HUGE
    assert len(success.to_json()) < ONE_FIELD


def test_a_huge_input_is_cut_in_the_task_start_event() -> None:
    agent = Agent(llm=connect_llm(provider="scripted", responses=[block("task_success(len(s))")]))

    @agent.task
    def measure(s: str) -> int:
        """Measure s."""

    seen: list[Event] = []
    assert measure("i" * HUGE, on_event=seen.append) == HUGE
    start = only(seen, TaskStartEvent)
    assert len(start.inputs["s"]) <= 500
    assert "characters cut" in start.inputs["s"]


# -- tracebacks ---------------------------------------------------------------------------


def test_runaway_recursion_shows_the_repeated_frame_once_counted() -> None:
    code = "def down(n):\n    return down(n + 1)\ndown(0)"
    task, seen, _ = run(block(code), block("task_success(1)"))
    assert task(on_event=seen.append) == 1
    error = only(seen, ErrorEvent).error
    assert error.count("  line 2, in down\n") == 3
    assert re.search(r"\[Previous line repeated [\d,]+ more times\]", error)
    assert error.endswith("RecursionError: maximum recursion depth exceeded\n")


def test_a_long_chain_of_exceptions_shows_its_newest() -> None:
    code = (
        "err = None\n"
        "for i in range(1000):\n"
        "    try:\n"
        "        raise ValueError(f'link {i}: ' + 'z' * 5000) from err\n"
        "    except ValueError as caught:\n"
        "        err = caught\n"
        "raise err"
    )
    task, seen, _ = run(block(code), block("task_success(1)"))
    assert task(on_event=seen.append) == 1
    error = only(seen, ErrorEvent)
    assert len(error.to_json()) < ONE_FIELD
    assert error.error.startswith("[... 990 older exceptions of the chain not shown]\n")
    assert "ValueError: link 999: " in error.error
    assert "link 989:" not in error.error
