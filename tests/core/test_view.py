"""agex.view: an agent as the model and its host see it; a session's variables and recent
commits, summarised without loading a value."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
from typing import Any

import pytest
from markdown_it import MarkdownIt

from agex import Agent, connect_host, connect_llm, connect_state, view
from agex.hosts.local import LocalHost
from agex.inspection import View
from agex.prompt import capabilities, system_message
from agex.state.versioned import Facts


def scripted(*codes: str) -> Any:
    return connect_llm(provider="scripted", responses=[f"```python\n{c}\n```" for c in codes])


def test_view_is_exported_lazily() -> None:
    import agex.inspection

    assert agex.view is view is agex.inspection.view
    assert "view" in agex.__all__
    code = "import sys, agex; print(sorted(m for m in sys.modules if m.startswith('agex.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "agex.inspection" not in loaded.stdout
    assert "agex.notebook" not in loaded.stdout
    assert loaded.stdout.startswith("[")


def test_an_agent_shows_its_setup_and_what_its_code_can_use() -> None:
    agent = Agent(
        primer="You count things.",
        name="counter",
        state=connect_state(type="versioned", storage="memory"),
        llm=connect_llm(provider="scripted", responses=[], model="replay-1"),
        max_iterations=7,
        timeout=2.5,
        isolation="none",
    )

    @agent.fn
    def count(text: str, letter: str = "a") -> int:
        """How many times ``letter`` is in ``text``."""
        return text.count(letter)

    shown = view(agent)
    assert isinstance(shown, View)
    text = str(shown)
    assert repr(shown) == text
    for line in [
        "agent counter",
        "  name            counter",
        "  primer          You count things.",
        "  model           scripted, model replay-1",
        "  host            local",
        "  state           versioned (storage memory)",
        "  max_iterations  7",
        "  timeout         2.5 s",
        "  isolation       none",
        "  max_memory_mb   none",
        f"  fingerprint     {agent.fingerprint[:16]}",
        # (annotations are strings in this module: the model is shown the types they name)
        "  - def count(text: str, letter: str = 'a') -> int  How many times ``letter`` "
        "is in ``text``.",
    ]:
        assert line in text.splitlines(), line
    # What the model is told, word for word.
    described = text.split("its code can use:\n", 1)[1].splitlines()
    assert described[:-1] == ["  " + line for line in capabilities(agent)]
    assert described[-1] == "  and it may import: " + ", ".join(agent.policy.importable_names())
    assert capabilities(agent)[0] in system_message(agent, count_task(agent))


def count_task(agent: Agent) -> Any:
    @agent.task
    def tally(text: str) -> int:
        """Tally."""

    return tally


def test_an_agent_without_a_model_or_registrations_says_so() -> None:
    text = str(view(Agent()))
    assert "not set: from AGEX_LLM_PROVIDER and AGEX_LLM_MODEL at the first task" in text
    assert "isolation       as the host decides" in text
    assert "state           ephemeral" in text
    assert "its code can use:\n  nothing registered\n  and it may import: bisect, " in text


def test_an_http_host_shows_its_configuration_without_its_token() -> None:
    pytest.importorskip("agex_host_http", reason="the http host is not installed")
    host = connect_host(provider="http", url="http://127.0.0.1:9", token="s3cret-token")
    text = str(view(Agent(host=host)))
    assert "host            http (" in text
    assert "url='http://127.0.0.1:9'" in text
    assert "s3cret" not in text


class TalkativeHost(LocalHost):
    """A third party's host whose configuration holds what looks like secrets."""

    def dump_config(self) -> dict[str, Any]:
        return {"provider": "talkative", "region": "eu", "api_key": "k-123", "Auth_Token": "t"}


def test_secret_looking_options_of_a_host_are_hidden() -> None:
    text = str(view(Agent(host=TalkativeHost())))
    assert "host            talkative (Auth_Token=<hidden>, api_key=<hidden>, region='eu')" in text
    assert "k-123" not in text


def test_an_agent_renders_in_a_notebook_with_its_text_inert() -> None:
    agent = Agent(primer="<script>alert(1)</script> **loud**", name="nb")
    out = view(agent)._repr_html_()
    assert "<script" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **loud**" in out
    rendered = MarkdownIt("commonmark").render(view(agent)._repr_markdown_())
    assert "<script" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **loud**" in rendered


@pytest.fixture
def session() -> Any:
    agent = Agent(
        name="viewed",
        state=connect_state(type="versioned", storage="memory"),
        llm=scripted("x = 41\nprint(x)", "words = ['a'] * 1000", "del x\ntask_success(1)"),
    )

    @agent.task
    def job() -> int:
        """Job."""

    name = f"s{id(agent)}"
    assert job(session=name) == 1
    return agent.state(name)


def test_a_session_shows_its_variables_and_recent_commits(session) -> None:
    text = str(view(session))
    history = session.history()
    head = history[0]
    words = session.tree(head.id)["words"]
    stored = session.storage.get("b/" + words.blob)
    assert text.startswith(f"session {session.session} of viewed\n")
    assert f"  head           {head.id}" in text
    assert "  variables      1" in text
    assert "  commits shown  3\n" in text
    size = f"{len(stored) / 1024:.1f} KiB"
    assert len(stored) > 1024
    # x was removed at the last step; words, of 1000 strings, was set at commit 1.
    assert text.split("\nvariables:\n")[1].split("\n\n")[0].splitlines() == [
        f"  name   type  {'size':<{len(size)}}  set at #",
        f"  words  list  {size}  1",
    ]
    for commit in history:
        assert f"  {commit.depth}  {commit.id[:12]}  " in text
    assert "del x task_success(1)" not in text  # a step's first line only
    assert "-x" in text


def test_commits_limits_the_commits_listed(session) -> None:
    history = session.history()
    text = str(view(session, commits=1))
    assert "  commits shown  1, older in state.history()" in text
    assert f"  2  {history[0].id[:12]}  " in text
    assert history[1].id[:12] not in text
    assert "recent commits:" not in str(view(session, commits=0))


def test_a_session_without_commits() -> None:
    state = Agent(name="new", state=connect_state(type="versioned")).state("never")
    text = str(view(state))
    assert "  head           none: the session has no commits yet" in text
    assert "variables:" not in text
    assert "recent commits:" not in text


#: A pickle that, loaded, runs code: what agent code could leave in a store.
PAYLOAD = b"cbuiltins\nexec\n(Vimport sys; sys.agex_view_test_ran = True\ntR."


def test_a_summary_loads_no_value(monkeypatch) -> None:
    monkeypatch.delattr(sys, "agex_view_test_ran", raising=False)
    pickle.loads(PAYLOAD)  # the payload is live: loading it runs its code
    assert sys.agex_view_test_ran is True
    del sys.agex_view_test_ran

    state = Agent(name="hostile", state=connect_state(type="versioned")).state("s")
    state.commit_serialized(
        {"loot": PAYLOAD}, shaped=True, facts={"loot": Facts("<script>Evil</script>")}
    )
    shown = view(state)
    text = str(shown)
    assert f"  loot  <script>Evil</script>  {len(PAYLOAD)} B  0" in text
    assert "&lt;script&gt;Evil&lt;/script&gt;" in shown._repr_html_()
    assert "<script" not in shown._repr_html_()
    assert "<script" not in MarkdownIt("commonmark").enable("table").render(shown._repr_markdown_())
    assert not hasattr(sys, "agex_view_test_ran")


def test_a_damaged_value_is_reported_not_fatal() -> None:
    state = Agent(name="damaged", state=connect_state(type="versioned")).state("s")
    state.commit_serialized({"gone": b"data", "kept": b"more"})
    state.storage.delete("b/" + hashlib.sha256(b"data").hexdigest())
    text = str(view(state))
    assert "  gone  ?     unreadable: missing or damaged (agex state check)  0" in text
    assert "  kept  ?     4 B" in text


def test_control_characters_are_shown_not_obeyed() -> None:
    text = str(view(Agent(primer="\x1b]0;owned\x07\x1b[2J")))
    assert "\x1b" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J" in text


@pytest.mark.parametrize("given", [None, "agent", 3, object()])
def test_view_says_what_it_accepts(given: object) -> None:
    with pytest.raises(TypeError, match=r"view shows an Agent or a session's state"):
        view(given)  # type: ignore[arg-type]


@pytest.mark.parametrize("commits", [-1, 1.5, "3", True])
def test_commits_must_be_a_count(commits: object) -> None:
    with pytest.raises(ValueError, match="commits must be a whole number, 0 or more"):
        view(Agent(), commits=commits)  # type: ignore[arg-type]


def test_credentials_in_a_hosts_address_are_not_shown() -> None:

    class Elsewhere(LocalHost):
        def dump_config(self) -> dict:
            return {"provider": "elsewhere", "url": "https://alice:hunter2@agents.example.com/x"}

    shown = view(Agent(host=Elsewhere()))
    for text in (str(shown), shown._repr_html_(), shown._repr_markdown_()):
        assert "hunter2" not in text
        assert "alice" not in text
    assert "https://***@agents.example.com/x" in str(shown)
