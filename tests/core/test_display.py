"""pprint_events and pprint_tokens: verbosities, colour, width, stream, and the options'
errors; text from the model never drives the terminal."""

from __future__ import annotations

import functools
import io

import pytest

from agex import Agent, connect_llm, pprint_events, pprint_tokens
from agex.events import (
    ActionEvent,
    ErrorEvent,
    Event,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
)

WHO = {"agent_name": "demo", "session": "s1"}


def run_events() -> list[Event]:
    return [
        TaskStartEvent(**WHO, step=0, task_name="job", inputs={"q": "'hi'", "n": "3"}),
        ActionEvent(**WHO, step=1, thinking="Count.", code="x = 1\nprint(x)"),
        OutputEvent(**WHO, step=1, text="1\n"),
        ErrorEvent(**WHO, step=2, error="Traceback (most recent call last):\nValueError: bad"),
        SuccessEvent(**WHO, step=3, result={"a": [1, 2]}, commit="c0ffee" * 4, timestamp=0.0),
    ]


def printed(events: object, **options: object) -> str:
    out = io.StringIO()
    pprint_events(events, stream=out, **options)  # type: ignore[arg-type]
    return out.getvalue()


def test_brief_is_one_line_per_event_with_its_gist() -> None:
    lines = printed(run_events(), verbosity="brief", width=100).splitlines()
    assert lines == [
        "demo . step 0 . taskstart: job(q='hi', n=3)",
        "demo . step 1 . action: x = 1  [+1 lines]",
        "demo . step 1 . output: 1",
        "demo . step 2 . error: ValueError: bad",
        "demo . step 3 . success: {'a': [1, 2]}",
    ]


def test_brief_lines_are_cut_to_the_width() -> None:
    long = OutputEvent(**WHO, step=1, text="y" * 500)
    (line,) = printed(long, verbosity="brief", width=40).splitlines()
    assert len(line) == 40
    assert line.endswith("y...")


def test_normal_shows_titled_blocks() -> None:
    out = printed(run_events(), width=60)
    assert "-- demo . step 0 . taskstart " in out
    assert "  job(q='hi', n=3)  session=s1" in out
    assert "  Count.\n  | x = 1\n  | print(x)\n" in out
    assert "  ValueError: bad" in out
    assert "  result: {'a': [1, 2]}" in out
    assert "1970" not in out
    assert "commit" not in out
    assert all(len(line) <= 60 for line in out.splitlines())


def test_verbose_adds_time_session_commit_and_an_input_a_line() -> None:
    out = printed(run_events(), verbosity="verbose", width=100)
    assert "  1970-01-01 00:00:00 UTC  session=s1  commit=" + "c0ffee" * 4 in out
    assert "  task job\n    q = 'hi'\n    n = 3\n" in out
    assert out.count("session=s1") == len(run_events())
    assert "  | print(x)" in out


def test_one_event_or_any_iterable_of_them() -> None:
    one = printed(run_events()[2], verbosity="brief")
    assert one == "demo . step 1 . output: 1\n"
    assert printed(iter(run_events()), verbosity="brief") == printed(
        run_events(), verbosity="brief"
    )
    assert printed([]) == ""


def test_long_lines_wrap_to_the_width() -> None:
    out = printed(OutputEvent(**WHO, step=1, text="word " * 60), width=40)
    assert len(out.splitlines()) > 5
    assert all(len(line) <= 40 for line in out.splitlines())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"verbosity": "loud"}, "verbosity must be one of 'brief', 'normal', 'verbose'"),
        ({"color": "yes"}, r"color must be None \(auto\), True or False"),
        ({"width": 5}, "width must be a whole number of columns, 20 or more"),
        ({"width": 80.0}, "width must be a whole number"),
        ({"width": True}, "width must be a whole number"),
    ],
)
def test_bad_options_say_what_is_accepted(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        printed(run_events(), **options)


@pytest.mark.parametrize("given", ["some text", {"type": "OutputEvent"}, 3, [run_events()[0], 1]])
def test_what_is_not_events_is_refused(given: object) -> None:
    with pytest.raises(TypeError, match="pprint_events prints"):
        printed(given)


def test_color_is_auto_forced_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    event = ErrorEvent(**WHO, step=1, error="boom")
    assert "\x1b[31mboom\x1b[0m" in printed(event, color=True)
    assert "\x1b[" not in printed(event)  # a StringIO is no terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    tty = Terminal()
    pprint_events(event, stream=tty)
    assert "\x1b[31mboom\x1b[0m" in tty.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    tty = Terminal()
    pprint_events(event, stream=tty)
    assert "\x1b[" not in tty.getvalue()
    tty = Terminal()
    pprint_events(event, stream=tty, color=False, verbosity="brief")
    assert tty.getvalue() == "demo . step 1 . error: boom\n"


@pytest.mark.parametrize("verbosity", ["brief", "normal", "verbose"])
def test_control_characters_are_shown_not_obeyed_at_every_verbosity(verbosity: str) -> None:
    hostile = "\x1b]52;c;cHduZWQ=\x07\x1b[2Jclean"
    events = [
        TaskStartEvent(**WHO, step=0, task_name="job", inputs={"q": hostile}),
        ActionEvent(**WHO, step=1, thinking=hostile, code=hostile),
        OutputEvent(**WHO, step=1, text=hostile),
        SuccessEvent(**WHO, step=2, result=hostile, commit=hostile),
    ]
    out = printed(events, verbosity=verbosity, color=True)
    assert "\x07" not in out
    assert "\x1b]" not in out
    assert "\x1b[2J" not in out
    assert "\\x1b]52;c;cHduZWQ=\\x07" in out


def test_stream_defaults_to_standard_output_at_call_time(capsys) -> None:
    pprint_events(run_events()[2], verbosity="brief")
    assert capsys.readouterr().out == "demo . step 1 . output: 1\n"


def test_a_partial_is_an_on_event_callback() -> None:
    out = io.StringIO()
    agent = Agent(
        name="demo",
        llm=connect_llm(provider="scripted", responses=["```python\ntask_success(7)\n```"]),
    )

    @agent.task
    def job() -> int:
        """Job."""

    assert job(on_event=functools.partial(pprint_events, verbosity="brief", stream=out)) == 7
    lines = out.getvalue().splitlines()
    assert lines[0] == "demo . step 0 . taskstart: job()"
    assert lines[-1] == "demo . step 1 . success: 7"


def test_tokens_go_to_their_stream_and_an_event_starts_a_line_after_them() -> None:
    out = io.StringIO()
    pprint_tokens("thinking \x1b[8mhidden", stream=out)
    pprint_events(run_events()[2], stream=out, verbosity="brief")
    assert out.getvalue() == "thinking \\x1b[8mhidden\ndemo . step 1 . output: 1\n"
    other = io.StringIO()
    pprint_tokens("mid-line", stream=out)
    pprint_events(run_events()[2], stream=other, verbosity="brief")
    assert other.getvalue() == "demo . step 1 . output: 1\n"  # the other stream is not mid-line


def test_tokens_default_to_standard_output(capsys) -> None:
    pprint_tokens("abc")
    pprint_tokens("\n")
    assert capsys.readouterr().out == "abc\n"
