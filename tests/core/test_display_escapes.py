"""Text that the far side, the model or agent code shaped is shown, never obeyed: events from
the wire are checked before they are shown, every line the terminal gets is made visible,
format characters (Trojan Source) are escaped in the terminal, HTML and Markdown alike, and
an agex error prints its message inert while ``.message`` keeps it exact."""

from __future__ import annotations

import asyncio
import io
import json
import pickle
from typing import Any

import pytest

from agex import (
    Agent,
    RemoteExecutionError,
    TaskClarify,
    TaskFail,
    connect_llm,
    connect_state,
    pprint_events,
    pprint_tokens,
    view,
)
from agex.errors import LLMError
from agex.events import (
    ActionEvent,
    ClarifyEvent,
    ConflictEvent,
    ErrorEvent,
    Event,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
)
from agex.printable import visible
from agex.protocols import Sink
from agex.remote.outcome import deliver

ESCAPES = "\x1b]0;owned\x07\x1b[2J"  # retitle the terminal, clear the screen
#: Bidirectional embeddings, overrides and isolates: what "Trojan Source" hides code with.
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
#: Zero-width and other invisible format characters.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\U000e0041"
VERBOSITIES = ["brief", "normal", "verbose"]
WHO = {"agent_name": "a", "session": "s"}


def _printed(event: Event, verbosity: str, color: bool = False) -> str:
    out = io.StringIO()
    pprint_events(event, verbosity=verbosity, stream=out, color=color)
    return out.getvalue()


#: Characters that act on a terminal or a reader rather than print.
ACTING = set("\x1b\x07\u2028\u2029" + BIDI + INVISIBLE)


def _acting(text: str) -> list[str]:
    """The characters in ``text`` that would act on a terminal or a reader."""
    return [c for c in text if c in ACTING]


# -- events from the wire --------------------------------------------------------------------


@pytest.mark.parametrize("verbosity", VERBOSITIES)
def test_an_events_step_from_the_wire_cannot_drive_the_terminal(verbosity: str) -> None:
    """Events arrive as JSON from the far side (an agex server, a Modal container; over
    plain http, anyone on the path). ``step`` has no converter or validator, so a string
    goes through, and pprint_events prints it raw in the title of every verbosity."""
    data = {
        "type": "OutputEvent",
        "agent_name": "a",
        "session": "s",
        "step": ESCAPES,
        "timestamp": 1.0,
        "commit": None,
        "text": "hi",
    }
    try:
        event = Event.from_json(json.dumps(data))
    except (TypeError, ValueError):
        return  # refused as malformed: safe
    assert "\x1b" not in _printed(event, verbosity)


def _wire(**change: Any) -> str:
    data = {"type": "ConflictEvent", **WHO, "step": 1, "timestamp": 1.0, "commit": None}
    data |= {"action": "retry", "attempt": 1, "message": "moved on"}
    return json.dumps({**data, **change})


@pytest.mark.parametrize(
    ("change", "error", "says"),
    [
        ({"step": ESCAPES}, TypeError, "step is a whole number (an int), not str"),
        ({"step": True}, TypeError, "step is a whole number (an int), not bool"),
        ({"step": 1.5}, TypeError, "not float"),
        ({"step": -1}, ValueError, "step is 0 or more, not -1"),
        ({"timestamp": "1.0"}, TypeError, "timestamp is seconds since the epoch"),
        ({"timestamp": False}, TypeError, "not bool"),
        ({"timestamp": 1e300}, ValueError, "before the year 10000"),
        ({"timestamp": -5}, ValueError, "from 0"),
        ({"timestamp": 10**400}, ValueError, "before the year 10000"),
        ({"step": -(10**400)}, ValueError, "step is 0 or more"),
        ({"commit": 7}, TypeError, "must be a str, not int"),
        ({"agent_name": ["a"]}, TypeError, "must be a str, not list"),
        ({"session": None}, TypeError, "must be a str, not NoneType"),
        ({"message": {"x": 1}}, TypeError, "must be a str, not dict"),
        ({"attempt": "2"}, TypeError, "attempt is a whole number (an int), not str"),
        ({"attempt": True}, TypeError, "not bool"),
        ({"action": "reboot"}, ValueError, "'retry', 'abandon'"),
        ({"extra": 1}, TypeError, "extra"),
        ({"type": "Event"}, ValueError, "not an agex event type"),
    ],
)
def test_an_event_with_a_field_of_another_type_is_refused(
    change: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error, match=None) as caught:
        Event.from_json(_wire(**change))
    assert says in str(caught.value)


def test_timestamps_may_be_whole_and_round_trip_as_floats() -> None:
    event = Event.from_json(_wire(timestamp=7))
    assert type(event.timestamp) is float
    assert event.timestamp == 7.0
    assert Event.from_json(event.to_json()) == event


def test_json_that_is_no_object_is_refused() -> None:
    for text in ("[1, 2]", '"OutputEvent"', "3"):
        with pytest.raises(TypeError, match="an event is a JSON object, not"):
            Event.from_json(text)


def test_nan_from_the_wire_is_refused() -> None:
    # json.loads takes NaN, which no event carries (to_json refuses it).
    with pytest.raises(ValueError, match="timestamp"):
        Event.from_json(_wire().replace('"timestamp": 1.0', '"timestamp": NaN'))


def test_an_events_inputs_must_be_text() -> None:
    data = {"type": "TaskStartEvent", **WHO, "step": 0, "timestamp": 1.0, "task_name": "t"}
    for inputs in ([["q", "1"]], {"q": 1}, {"q": None}):
        with pytest.raises(TypeError, match=r"inputs|input's value"):
            Event.from_dict({**data, "inputs": inputs})


def _delivered(data: Any) -> list[Event]:
    seen: list[Event] = []
    asyncio.run(deliver("event", data, Sink(on_event=seen.append)))
    return seen


def test_a_malformed_event_from_a_server_ends_the_run_with_a_remote_error() -> None:
    for data in (_wire(step=ESCAPES), _wire(action="x"), "{not json", "[]", '{"type": "Nope"}'):
        with pytest.raises(RemoteExecutionError, match="the server sent a malformed event"):
            _delivered(data)
    (event,) = _delivered(_wire())
    assert isinstance(event, ConflictEvent)
    assert event.attempt == 1


def test_the_malformed_events_error_prints_inert() -> None:
    with pytest.raises(RemoteExecutionError) as caught:
        _delivered(_wire(type=ESCAPES + BIDI))
    assert not _acting(str(caught.value))


# -- every line the terminal gets -------------------------------------------------------------


def _forged(event: Event, **fields: object) -> Event:
    """``event`` with fields no check admits, as a field the checks do not cover yet would
    carry them: the display must not rely on the checks."""
    for name, value in fields.items():
        object.__setattr__(event, name, value)
    return event


@pytest.mark.parametrize("verbosity", VERBOSITIES)
@pytest.mark.parametrize("color", [False, True])
def test_every_line_is_made_visible_whatever_field_composed_it(verbosity: str, color: bool) -> None:
    events = [
        _forged(OutputEvent(**WHO, step=1, text="hi"), step=ESCAPES + BIDI),
        _forged(
            ConflictEvent(**WHO, step=1, action="retry", attempt=1, message="m"), attempt=ESCAPES
        ),
        _forged(SuccessEvent(**WHO, step=1, result=1), result=_Shaped()),
    ]
    for event in events:
        shown = _printed(event, verbosity, color)
        without_colour = shown.replace("\x1b[0m", "")
        for code in ("1", "2", "31", "32", "33", "36"):
            without_colour = without_colour.replace(f"\x1b[{code}m", "")
        assert not _acting(without_colour), (type(event).__name__, shown)
        assert "\\x1b]0;owned" in shown


class _Shaped:
    """A value whose repr is hostile, as a field holding an object would print it."""

    def __repr__(self) -> str:
        return ESCAPES + BIDI


# -- format characters: Trojan Source ----------------------------------------------------------


def test_bidi_controls_in_model_code_are_shown_not_obeyed() -> None:
    """Trojan Source: bidirectional controls make the code a reader sees differ from the
    code that runs; the display neutralises C0/C1 controls but not these."""
    code = 'access = "user\u202e \u2066# admin?\u2069 \u2066"'
    event = ActionEvent(agent_name="a", session="s", step=1, thinking="", code=code)
    for shown in (_printed(event, "normal"), event._repr_html_(), event._repr_markdown_()):
        assert not any(c in shown for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _hostile_events(text: str) -> list[Event]:
    return [
        TaskStartEvent(**WHO, step=0, task_name=f"t{text}", inputs={f"k{text}": f"v{text}"}),
        ActionEvent(**WHO, step=1, thinking=f"why{text}", code=f"x = '{text}'"),
        OutputEvent(**WHO, step=1, text=f"out{text}"),
        ErrorEvent(**WHO, step=1, error=f"Traceback\nValueError: {text}"),
        SuccessEvent(**WHO, step=1, result={f"k{text}": [f"v{text}"]}),
        SuccessEvent(**WHO, step=1, result=f"plain{text}"),
        FailEvent(**WHO, step=1, message=f"no{text}"),
        ClarifyEvent(**WHO, step=1, message=f"which{text}"),
        ConflictEvent(**WHO, step=1, action="retry", attempt=1, message=f"moved{text}"),
    ]


@pytest.mark.parametrize(
    "event", _hostile_events(BIDI + INVISIBLE + ESCAPES), ids=lambda e: type(e).__name__
)
def test_format_characters_are_escaped_in_terminal_html_and_markdown(event: Event) -> None:
    for verbosity in VERBOSITIES:
        shown = _printed(event, verbosity)
        assert not _acting(shown), verbosity
        if verbosity != "brief" or not isinstance(event, ConflictEvent):  # brief: no message
            assert "\\u202e" in shown, verbosity
    for shown in (event._repr_html_(), event._repr_markdown_()):
        assert not _acting(shown)
        assert "\\u202e" in shown.replace("\\\\", "\\")


def test_tokens_show_format_characters_as_escapes() -> None:
    out = io.StringIO()
    pprint_tokens(f"x = 1{BIDI}{INVISIBLE}\n", stream=out)
    assert not _acting(out.getvalue())
    assert out.getvalue().startswith("x = 1\\u202a\\u202b")
    assert out.getvalue().endswith("\\U000e0041\n")


def test_a_history_and_a_view_escape_format_characters() -> None:
    code = f"note = 'ok{BIDI}'\nprint(note)"
    agent = Agent(
        name="bidi",
        primer=f"Be kind.{BIDI}",
        state=connect_state(type="versioned", storage="memory"),
        llm=connect_llm(
            provider="scripted",
            responses=[f"```python\n{code}\n```", "```python\ntask_success(1)\n```"],
        ),
    )

    @agent.task
    def run() -> int:
        """Run."""

    assert run() == 1
    state = agent.state()
    history = state.history()
    for shown in (
        history._repr_html_(),
        history._repr_markdown_(),
        str(view(agent)),
        view(agent)._repr_html_(),
        view(agent)._repr_markdown_(),
        str(view(state)),
        view(state)._repr_html_(),
        view(state)._repr_markdown_(),
    ):
        assert not _acting(shown)
    assert "\\u202e" in str(view(agent))
    assert "\\u202e" in history._repr_html_()


# -- what visible shows -----------------------------------------------------------------------


def test_visible_keeps_text_and_layout_and_escapes_what_acts() -> None:
    plain = "Grüße, 世界 🙂\n\tline two \u2013 \u201cquoted\u201d caf\u00e9"
    assert visible(plain) == plain
    assert visible("a\u202eb\x1bc\x9bd\u2028e\rf") == "a\\u202eb\\x1bc\\x9bd\\u2028e\\x0df"
    assert visible("tag\U000e0041") == "tag\\U000e0041"


def test_visible_is_idempotent() -> None:
    once = visible(ESCAPES + BIDI + INVISIBLE + "\ud800")
    assert visible(once) == once


def test_a_lone_surrogate_is_escaped_so_any_stream_can_write_it() -> None:
    event = OutputEvent(**WHO, step=1, text="half \ud83d of a pair")
    shown = _printed(event, "normal")
    shown.encode("utf-8")  # would raise UnicodeEncodeError on a raw surrogate
    assert "\\ud83d" in shown


# -- agex errors -------------------------------------------------------------------------------


def test_a_task_fail_message_cannot_drive_the_terminal() -> None:
    """Agent code chooses task_fail's message; an uncaught TaskFail prints str(exc) on the
    user's terminal (Python's own traceback printer), escapes and all. ``.message`` may
    keep the exact text; what the exception prints should not obey it."""
    code = f"task_fail({'no data' + ESCAPES!r})"
    agent = Agent(llm=connect_llm(provider="scripted", responses=[f"```python\n{code}\n```"]))

    @agent.task
    def lookup() -> str:
        """Look it up."""

    with pytest.raises(TaskFail) as caught:
        lookup()
    assert "\x1b" not in str(caught.value)


def test_a_task_clarify_question_prints_inert_and_keeps_its_message() -> None:
    question = f"which one?{BIDI}{ESCAPES}"
    code = f"task_clarify({question!r})"
    agent = Agent(llm=connect_llm(provider="scripted", responses=[f"```python\n{code}\n```"]))

    @agent.task
    def pick() -> str:
        """Pick."""

    with pytest.raises(TaskClarify) as caught:
        pick()
    assert caught.value.message == question
    assert not _acting(str(caught.value))
    assert str(caught.value) == visible(question)


@pytest.mark.parametrize("kind", [TaskFail, TaskClarify, LLMError])
def test_errors_print_inert_and_pickle_their_exact_message(kind: type[Exception]) -> None:
    text = f"bad{ESCAPES}{BIDI}\nsecond line\tend"
    error = kind(text)
    assert error.message == text  # type: ignore[attr-defined]
    assert str(error) == visible(text)
    assert "second line\tend" in str(error)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is kind
    assert again.message == text
    assert str(again) == visible(text)


def test_a_remote_errors_traceback_prints_inert() -> None:
    error = RemoteExecutionError(
        f"ValueError: {ESCAPES}", remote_traceback=f"Traceback\n  {BIDI}\nValueError"
    )
    assert not _acting(str(error))
    assert "Remote traceback:\nTraceback\n  \\u202a" in str(error)
    assert error.remote_traceback == f"Traceback\n  {BIDI}\nValueError"
