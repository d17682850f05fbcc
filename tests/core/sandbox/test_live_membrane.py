"""The membrane around a live object's methods: plain data in, copied; plain data, views
and the object's own view out; what would lead agent code into the host refused both ways.
The attacks that motivated it are in the other test_live_membrane_* files."""

from __future__ import annotations

import asyncio
import gc
import math
import sqlite3
import threading
import warnings

import pytest

from agex import Agent, connect_llm, connect_state
from agex.errors import AccessDenied, CallDenied, SandboxCancelled
from agex.sandbox import CancelScope, Policy, Sandbox


class Store:
    def __init__(self) -> None:
        self.rows: dict[object, object] = {}
        self.started: list[str] = []

    def put(self, key: object, value: object) -> None:
        self.rows[key] = value

    def get(self, key: object) -> object:
        return self.rows.get(key)

    def all(self) -> dict[object, object]:
        return self.rows  # its own dict, as many clients do

    def same(self, other: object) -> bool:
        return other is self

    def numbers(self):
        yield from (1, 2, 3)

    def span(self):
        return range(2)

    def kind(self) -> type:
        return Store

    def module(self):
        return math

    def function(self):
        return len

    def pending(self):
        return self._later()

    async def _later(self) -> int:
        self.started.append("coroutine")
        return 1

    async def fetch(self) -> int:
        self.started.append("fetch")
        return 1


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def policy(store: Store) -> Policy:
    policy = Policy()
    policy.live_object(store, "db")
    return policy


def run(policy: Policy, code: str) -> dict:
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(code, namespace)
    assert result.error is None, result.error
    return namespace


def test_arguments_are_copied_in(policy: Policy, store: Store) -> None:
    run(policy, "mine = ['a', {'b': (1, 2.5, None)}]\ndb.put('k', mine)\nmine.append('later')")
    assert store.rows == {"k": ["a", {"b": (1, 2.5, None)}]}
    assert type(store.rows["k"]) is list


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("db.put('k', lambda: 1)", "argument 2 of db.put(...) is a function"),
        ("class Key:\n    pass\ndb.put(Key(), 1)", "argument 1 of db.put(...) is a Key object"),
        ("class Key:\n    pass\ndb.put('k', Key)", "argument 2 of db.put(...) is a class (Key)"),
        ("db.put('k', print)", "argument 2 of db.put(...) is a function"),
        ("class S(str):\n    pass\ndb.put(S('k'), 1)", "argument 1 of db.put(...) is a S object"),
        ("db.put('k', value=[iter([1])])", "argument value= of db.put(...) is a"),
        ("deep = []\nfor _ in range(30):\n    deep = [deep]\ndb.put('k', deep)", "nested more"),
    ],
)
def test_arguments_that_are_not_plain_data_are_refused(
    attempt, policy: Policy, store: Store, code: str, what: str
) -> None:
    result = attempt(code, policy, expect=CallDenied)
    assert what in result.error
    assert store.rows == {}


def test_a_view_passed_back_is_its_object(policy: Policy) -> None:
    assert run(policy, "same = db.same(db)")["same"] is True


def test_a_view_is_true_and_has_a_length_when_its_object_does(attempt, policy) -> None:
    namespace = run(policy, "truth = bool(db)\nempty = bool(db.all())\nsize = len(db.span())")
    assert namespace == {**namespace, "truth": True, "empty": False, "size": 2}
    attempt("len(db)", policy, expect=TypeError)


def test_results_are_copied_out(policy: Policy, store: Store) -> None:
    store.rows["a"] = [1]
    namespace = run(policy, "rows = db.all()\nrows['b'] = 2\nrows['a'].append(2)")
    assert namespace["rows"] == {"a": [1, 2], "b": 2}
    assert store.rows == {"a": [1]}


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("reached = db.kind()", "db.kind(...) is the class Store"),
        ("reached = db.module()", "db.module(...) is the module 'math'"),
        ("reached = db.function()", "db.function(...) is a function or method"),
        ("reached = db.pending()", "db.pending(...) is a coroutine"),
    ],
)
def test_results_that_lead_into_the_host_are_refused(
    attempt, policy: Policy, code: str, what: str
) -> None:
    result = attempt(code, policy, expect=AccessDenied)
    assert what in result.error


def test_a_coroutine_result_is_closed_unrun(policy: Policy, store: Store) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited"
        Sandbox(policy).run("db.pending()")
        gc.collect()
    assert store.started == []


def test_an_async_method_is_refused_before_it_starts(attempt, policy: Policy, store) -> None:
    result = attempt("reached = db.fetch()", policy, expect=CallDenied)
    assert "db.fetch(...) is an async method" in result.error
    assert store.started == []


def test_a_returned_object_is_a_view_behind_the_same_membrane(attempt, policy: Policy) -> None:
    namespace = run(
        policy,
        "numbers = db.numbers()\nfirst = next(numbers)\nrest = list(numbers)\n"
        "names = dir(db.numbers())\nkind = repr(db.numbers())",
    )
    assert (namespace["first"], namespace["rest"]) == (1, [2, 3])
    assert {"send", "throw", "close"} <= set(namespace["names"])
    assert "gi_frame" not in namespace["names"]
    assert namespace["kind"].startswith("<live generator db.numbers(...)")
    result = attempt("db.numbers().send(lambda: 1)", policy, expect=CallDenied)
    assert "argument 1 of db.numbers(...).send(...) is a function" in result.error


def test_a_views_class_can_neither_be_built_nor_subclassed(attempt, policy: Policy) -> None:
    attempt("reached = type(db)(1, 'x', None)", policy, expect=CallDenied)
    attempt("class Mine(type(db)):\n    pass", policy, expect=CallDenied)
    assert run(policy, "ok = isinstance(db, type(db))")["ok"] is True


def test_the_guides_sqlite_example_through_the_membrane() -> None:
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.execute("create table sales (region text, amount integer)")
    connection.executemany("insert into sales values (?, ?)", [("north", 5), ("south", 9)])
    policy = Policy()
    policy.live_object(connection, "db", include=["execute"])
    namespace = run(
        policy,
        "best = {}\n"
        "for region, amount in db.execute('select region, amount from sales where amount > ?',"
        " (1,)):\n"
        "    best[region] = amount\n"
        "total = db.execute('select sum(amount) from sales').fetchone()[0]",
    )
    assert namespace["best"] == {"north": 5, "south": 9}
    assert namespace["total"] == 14


def test_host_generators_and_coroutines_are_not_driven_by_agent_code(attempt) -> None:
    def numbers():
        yield 1

    async def one() -> int:
        return 1

    made = []

    def later():
        made.append(one())
        return made[-1]

    policy = Policy()
    policy.fn(numbers)
    policy.fn(later)
    result = attempt("numbers().send(None)", policy, expect=AccessDenied)
    assert "generator object.send would resume code agent code did not write" in result.error
    attempt("later().send(None)", policy, expect=AccessDenied)
    attempt("later().throw(ValueError)", policy, expect=AccessDenied)
    for coroutine in made:
        coroutine.close()
    namespace = run(
        policy,
        "def mine():\n    got = yield 1\n    yield got\n"
        "g = mine()\nfirst = next(g)\nsecond = g.send(5)\n"
        "inner = numbers()\nvalues = list(inner)",
    )
    assert (namespace["first"], namespace["second"], namespace["values"]) == (1, 5, [1])


def test_event_loops_and_futures_are_refused_as_values(attempt) -> None:
    loop = asyncio.new_event_loop()
    try:
        future = loop.create_future()

        class Holder:
            def __init__(self) -> None:
                self.loop = loop
                self.future = future

        def hand_out():
            return future

        policy = Policy()
        policy.fn(Holder)
        policy.fn(hand_out)
        result = attempt("reached = Holder().loop", policy, expect=AccessDenied)
        assert "is an event loop, which agent code may not use" in result.error
        attempt("reached = Holder().future", policy, expect=AccessDenied)
        result = attempt("reached = hand_out().get_loop()", policy, expect=AccessDenied)
        assert "is an asyncio future: agent code may not use its 'get_loop'" in result.error
        attempt("hand_out().set_result(1)", policy, expect=AccessDenied)
        result = attempt("reached = type(hand_out()).get_loop", policy, expect=AccessDenied)
        assert "the class of an asyncio future" in result.error
        attempt("class Mine(type(hand_out())):\n    pass", policy, expect=AccessDenied)
        assert not future.done()
    finally:
        loop.close()


def test_a_cancel_waits_for_the_live_method_to_return() -> None:
    """A cancel is an interrupt too: it lands after the host's method, never inside it."""

    class Slow:
        def __init__(self) -> None:
            self.steps: list[str] = []

        def work(self) -> None:
            self.steps.append("begin")
            total = 0
            for i in range(3_000_000):
                total += i
            self.steps.append("end")

    slow = Slow()
    policy = Policy()
    policy.live_object(slow, "db")
    scope = CancelScope()
    timer = threading.Timer(0.05, scope.cancel)
    timer.start()
    with pytest.raises(SandboxCancelled):
        Sandbox(policy).run("while True:\n    db.work()", cancel=scope)
    timer.join()
    assert slow.steps[-1] == "end", slow.steps
    assert slow.steps.count("begin") == slow.steps.count("end")


def test_isolation_cannot_be_set_on_an_agent_with_live_state() -> None:
    agent = Agent(name="keeper", state=connect_state(type="live"))
    with pytest.raises(ValueError, match="has live state, kept in this process"):
        agent.isolation = "process"
    assert agent.isolation is None
    agent.isolation = "none"
    assert agent.isolation == "none"


def test_an_agent_run_gets_the_refusal_and_can_go_on(store: Store) -> None:
    code = "```python\ndb.put('k', lambda: 1)\n```"
    retry = "```python\ndb.put('k', 1)\ntask_success(db.get('k'))\n```"
    agent = Agent(llm=connect_llm(provider="scripted", responses=[code, retry]))
    agent.module(store, name="db")

    @agent.task
    def keep() -> int:
        """Keep it."""

    assert keep() == 1
    assert store.rows == {"k": 1}


def test_an_object_of_the_agents_comes_back_as_itself() -> None:
    """One a registered function kept, returned by a live method: the agent's own, not a
    view of it (a view would call its methods in host code, with interrupts held)."""
    kept: list[object] = []

    class Shelf:
        def last(self) -> object:
            return kept[-1]

    policy = Policy()
    policy.fn(kept.append, name="keep")
    policy.live_object(Shelf(), "shelf")
    namespace = run(
        policy, "class Mine:\n    pass\nmine = Mine()\nkeep(mine)\nsame = shelf.last() is mine"
    )
    assert namespace["same"] is True
