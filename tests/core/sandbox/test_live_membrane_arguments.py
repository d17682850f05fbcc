"""Closed attack: agent-written objects passed as arguments to a live object's methods stay in the
trusted process's object and run there after the agent's run is over, with no time limit
(the guards stop cleanup code outside a run, see signals.OutsideRun, but not ordinary
methods such as ``__eq__``/``__hash__``).

The membrane lets only plain data, copied, into a live method (agex/sandbox/live.py).
"""

from __future__ import annotations

import sqlite3

from agex import Agent, connect_llm


def reply(code: str) -> str:
    return f"```python\n{code}\n```"


class Store:
    def __init__(self) -> None:
        self.rows: dict[object, object] = {}

    def put(self, key: object, value: object) -> None:
        self.rows[key] = value

    def get(self, key: object) -> object:
        return self.rows.get(key)


def test_agent_code_does_not_run_in_the_host_after_its_run() -> None:
    store = Store()
    code = (
        "class Key:\n"
        "    def __hash__(self):\n"
        "        return hash('admin')\n"
        "    def __eq__(self, other):\n"
        "        db.put('after', 'agent code ran in the host after its run')\n"
        "        return False\n"  # a `while True: pass` here hangs the host's thread
        "db.put(Key(), 1)\n"
        "task_success('ok')\n"
    )
    retry = reply("db.put('key', 1)\ntask_success('ok')")
    agent = Agent(llm=connect_llm(provider="scripted", responses=[reply(code), retry]), timeout=5)
    agent.module(store, name="db")
    refusals: list[str] = []

    @agent.task
    def remember() -> str:
        """Store something."""

    assert remember(on_event=lambda e: refusals.append(getattr(e, "error", "") or "")) == "ok"
    assert any("argument 1 of db.put(...) is a Key object" in r for r in refusals), refusals
    assert store.rows == {"key": 1}
    # Later, the host's own code uses its object, outside any run:
    store.get("admin")
    assert "after" not in store.rows, store.rows["after"]


def test_the_guides_sqlite_example_with_cursor_keeps_the_connection() -> None:
    """The guide's sqlite example, end to end, with include=["execute", "cursor"]."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.execute("create table sales (region text, amount integer)")
    code = (
        "Cursor = type(db.execute('select 1'))\n"
        "got = []\n"
        "class Mine(Cursor):\n"
        "    def __init__(self, connection):\n"
        "        got.append(connection)\n"
        "        super().__init__(connection)\n"
        "db.cursor(Mine)\n"
        "raw = got[0]\n"
        "raw.close()\n"
        "task_success(type(raw).__name__)\n"
    )
    retry = reply("task_success('refused')")
    agent = Agent(llm=connect_llm(provider="scripted", responses=[reply(code), retry]))
    agent.module(connection, name="db", include=["execute", "cursor"])
    errors: list[str] = []

    @agent.task
    def best_region() -> str:
        """The region with the largest sale."""

    assert best_region(on_event=lambda e: errors.append(getattr(e, "error", None))) == "refused"
    refusal = next(e for e in errors if e)
    assert "class Mine: LiveObject cannot be constructed in agent code" in refusal, refusal
    connection.execute("select 1")  # ProgrammingError: agent code closed the connection
