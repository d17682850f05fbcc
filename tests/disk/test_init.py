"""connect_state(init=...) on disk: whether a session is new is the store's to say, so a
session another process seeded is not seeded again here."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from agex import Agent, connect_llm, connect_state

FIRST = textwrap.dedent(
    """
    import sys
    from agex import Agent, connect_llm, connect_state

    state = connect_state(storage="disk", path=sys.argv[1], init={"owner": "first", "n": 0})
    step = "Step.\\n```python\\nn += 1\\ntask_success(n)\\n```"
    agent = Agent(name="shared", state=state, llm=connect_llm("scripted", responses=[step]))

    @agent.task("Count.")
    def count() -> int: ...

    assert count() == 1
    """
)


def test_a_session_seeded_by_another_process_is_not_seeded_again(tmp_path) -> None:
    path = str(tmp_path / "state")
    subprocess.run([sys.executable, "-c", FIRST, path], check=True, timeout=120)
    calls = []

    def init() -> dict:
        calls.append(1)
        return {"owner": "second", "n": 100}

    step = "Step.\n```python\nn += 1\ntask_success([owner, n])\n```"
    agent = Agent(
        name="shared",
        state=connect_state(storage="disk", path=path, init=init),
        llm=connect_llm("scripted", responses=[step, step]),
    )

    @agent.task("Count.")
    def count() -> list: ...

    assert count() == ["first", 2]
    assert calls == []
    assert count(session="new") == ["second", 101]
    assert calls == [1]
    history = agent.state().history()
    assert [c.events for c in history if any("init" in e for e in c.events)] == [
        ({"step": 0, "init": ["n", "owner"]},)
    ]
