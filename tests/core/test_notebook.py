"""Events and a session's history in a notebook: HTML and Markdown that show every field,
that no model- or agent-written text can turn into markup, and that read in light and dark
themes alike."""

from __future__ import annotations

import html.parser
import pickle
import re
import subprocess
import sys

import pytest
from markdown_it import MarkdownIt

from agex import Agent, connect_llm, connect_state, view
from agex.events import (
    ActionEvent,
    CancelledEvent,
    ClarifyEvent,
    ConflictEvent,
    ErrorEvent,
    Event,
    FailEvent,
    OutputEvent,
    SuccessEvent,
    TaskStartEvent,
)
from agex.state.versioned import History, VersionedState

WHO = {"agent_name": "demo", "session": "s1", "timestamp": 0.0}

#: Markup a model or agent code might write, to turn a notebook's output into its own.
HOSTILE = (
    "<script>alert(1)</script><img src=x onerror=alert(2)>"
    "\n```\n# Heading\n[click](javascript:alert(3)) **bold** | cell |\n````\n</pre></div>"
)


def samples(text: str = "plain") -> list[Event]:
    """One event of every kind, each carrying ``text`` in its own fields."""
    return [
        TaskStartEvent(**WHO, step=0, task_name="job", inputs={"query": repr(text)}),
        ActionEvent(**WHO, step=1, thinking=f"think {text}", code=f"print({text!r})"),
        OutputEvent(**WHO, step=1, text=f"out {text}"),
        ErrorEvent(**WHO, step=2, error=f"ValueError: {text}"),
        SuccessEvent(**WHO, step=3, result={"answer": text}, commit="ab" * 32),
        FailEvent(**WHO, step=3, message=f"fail {text}"),
        ClarifyEvent(**WHO, step=3, message=f"which {text}?"),
        CancelledEvent(**WHO, step=3),
        ConflictEvent(**WHO, step=3, action="retry", attempt=2, message=f"moved {text}"),
    ]


def test_the_samples_cover_every_kind_of_event() -> None:
    assert {type(e) for e in samples()} == set(Event.kinds.values())


class Tags(html.parser.HTMLParser):
    """The tags and attributes an HTML text holds, as a browser would read them."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.styles: list[str] = []
        self.text = ""
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add(name)
            if name == "style":
                self.styles.append(value)

    def handle_data(self, data: str) -> None:
        self.text += data


OUR_TAGS = {"div", "strong", "pre", "table", "tr", "th", "td"}


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_html_shows_the_fields_of_each_event(event: Event) -> None:
    page = Tags(event._repr_html_())
    assert "demo · step" in page.text
    assert "session s1 · 1970-01-01 00:00:00 UTC" in page.text
    shown = {
        TaskStartEvent: ["job", "query", "'plain'"],
        ActionEvent: ["think plain", "print('plain')"],
        OutputEvent: ["out plain"],
        ErrorEvent: ["ValueError: plain"],
        SuccessEvent: ['"answer": "plain"', "commit " + "ab" * 32],
        FailEvent: ["fail plain"],
        ClarifyEvent: ["which plain?"],
        CancelledEvent: ["cancelled"],
        ConflictEvent: ["retry (attempt 2)", "moved plain"],
    }[type(event)]
    for text in shown:
        assert text in page.text


@pytest.mark.parametrize("event", samples(), ids=lambda e: type(e).__name__)
def test_markdown_shows_the_fields_of_each_event(event: Event) -> None:
    rendered = Tags(MarkdownIt("commonmark").enable("table").render(event._repr_markdown_()))
    assert "demo · step" in rendered.text
    assert "session s1 · 1970-01-01 00:00:00 UTC · commit" in rendered.text
    assert event.to_dict()["type"].removesuffix("Event").lower() in rendered.text


@pytest.mark.parametrize("event", samples(HOSTILE), ids=lambda e: type(e).__name__)
def test_agent_text_is_never_markup_in_html(event: Event) -> None:
    out = event._repr_html_()
    page = Tags(out)
    assert page.tags <= OUR_TAGS
    assert page.attributes <= {"style"}
    assert "<script" not in out
    assert "<img" not in out
    if not isinstance(event, CancelledEvent):
        assert "<script>alert(1)</script>" in page.text  # shown, as text


@pytest.mark.parametrize("event", samples(HOSTILE), ids=lambda e: type(e).__name__)
def test_agent_text_is_never_markup_in_markdown(event: Event) -> None:
    # Notebooks let raw HTML through Markdown: commonmark's preset does too.
    rendered = MarkdownIt("commonmark").enable("table").render(event._repr_markdown_())
    page = Tags(rendered)
    assert page.tags <= {"p", "strong", "em", "pre", "code", "table", "thead", "tbody", "tr"} | {
        "th",
        "td",
    }
    assert "<script" not in rendered
    assert "<img" not in rendered
    assert "<h1" not in rendered
    assert "<a " not in rendered
    if not isinstance(event, CancelledEvent):
        assert "<script>alert(1)</script>" in page.text


def test_hostile_names_in_the_title_are_inert() -> None:
    event = OutputEvent(agent_name="<b>*x*</b>", session="[s](http://e)", step=1, text="")
    page = Tags(MarkdownIt("commonmark").render(event._repr_markdown_()))
    assert page.tags <= {"p", "strong", "em", "pre", "code"}
    assert "<b>*x*</b>" in page.text
    assert "[s](http://e)" in page.text
    assert "<b>" not in event._repr_html_()


#: Colours that stay one colour whatever the theme: unreadable on a background of theirs.
ABSOLUTE = re.compile(
    r"#(?:000|fff)(?:000|fff)?\b|\b(?:black|white)\b(?!-space)"
    r"|rgba?\(\s*(?:0\s*,\s*0\s*,\s*0|255\s*,\s*255\s*,\s*255)\s*[,)]",
    re.I,
)


def test_the_absolute_colours_pattern_finds_them() -> None:
    for css in ["color: #000", "color:#FFFFFF", "background: white", "color: rgb(0, 0, 0)"]:
        assert ABSOLUTE.search(css), css
    assert not ABSOLUTE.search("white-space: pre-wrap; color: rgba(127, 127, 127, 0.5)")


def test_html_has_no_absolute_black_or_white(tmp_path) -> None:
    pages = [e._repr_html_() for e in samples()]
    state = session_state(tmp_path)
    pages.append(state.history()._repr_html_())
    pages.append(view(Agent(name="v"))._repr_html_())
    pages.append(view(state)._repr_html_())
    for out in pages:
        assert not ABSOLUTE.search(out), ABSOLUTE.search(out)
        for style in Tags(out).styles:  # colours are tints: translucent, or inherited
            for colour in re.findall(r"rgba?\([^)]*\)", style):
                assert colour.startswith("rgba("), colour


def session_commits(tmp_path) -> History:
    return session_state(tmp_path).history()


def session_state(tmp_path) -> VersionedState:
    agent = Agent(
        name="hist",
        state=connect_state(type="versioned", storage="memory"),
        llm=connect_llm(
            provider="scripted",
            responses=[
                "```python\nx = '<script>alert(1)</script>'\nprint(x)\n```",
                "```python\nundefined_name\n```",
                "```python\ny = [1, 2]\ntask_success(2)\n```",
            ],
        ),
    )

    @agent.task
    def job() -> int:
        """Job."""

    assert job(session=str(tmp_path)) == 2
    return agent.state(str(tmp_path))


def test_history_is_a_list_that_renders(tmp_path) -> None:
    history = session_commits(tmp_path)
    assert isinstance(history, History)
    assert isinstance(history, list)
    assert history == list(history)
    assert [c.depth for c in history] == [2, 1, 0]
    assert history[0].depth == 2
    assert history[-1].depth == 0
    newest = history[:2]
    assert isinstance(newest, History)
    assert newest == [history[0], history[1]]
    assert "history: 2 commits, newest first" in newest._repr_html_()
    page = Tags(history._repr_html_())
    assert page.tags <= OUR_TAGS
    assert "history: 3 commits, newest first" in page.text
    for commit in history:
        assert commit.id[:12] in page.text
    assert "x = '<script>alert(1)</script>'  [+1 lines]" in page.text
    assert "undefined_name  -> NameError" in page.text
    assert "<script" not in history._repr_html_()
    rendered = MarkdownIt("commonmark").enable("table").render(history._repr_markdown_())
    assert "<script" not in rendered
    assert Tags(rendered).text.count(history[0].task[:12]) == 3


def test_an_empty_history_says_so() -> None:
    assert "no commits" in History()._repr_html_()
    assert "no commits" in History()._repr_markdown_()


def test_a_revert_is_shown_as_one(tmp_path) -> None:
    history = session_commits(tmp_path)
    agent_state = Agent(name="hist", state=connect_state(type="versioned", storage="memory")).state(
        str(tmp_path)
    )
    agent_state.revert(history[-1].id)
    page = Tags(agent_state.history()._repr_html_())
    assert f"revert to {history[-1].id[:12]}" in page.text
    assert "-y" in page.text


def test_rendering_is_loaded_only_when_a_notebook_asks() -> None:
    code = (
        "import sys, agex.events as e\n"
        "event = e.OutputEvent(agent_name='a', session='s', step=1, text='x')\n"
        "before = 'agex.notebook' in sys.modules\n"
        "event._repr_html_()\n"
        "print(before, 'agex.notebook' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_events_still_round_trip_through_json() -> None:
    for event in samples(HOSTILE):
        assert Event.from_json(event.to_json()) == event
        assert "_repr_html_" not in event.to_dict()
    assert pickle.loads(pickle.dumps(samples()[0])) == samples()[0]
