"""Closed attack: a live object (``agent.module(obj, name="db", include=...)``) is only guarded on
the paths the guards screen (an attribute read, a container a method returns). The raw object
reaches agent code by every other path a value can take, and from there agent code reads its
attributes (credentials) and calls the methods ``include``/``exclude`` left out.

Each test asserts that the membrane (agex/sandbox/live.py) closes one such path.
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import types

from agex.sandbox import Policy, Sandbox

SECRET = "s3cret-password"


class Store:
    """A client holding credentials, as the guide's example of a live object."""

    def __init__(self) -> None:
        self.password = SECRET
        self.rows: dict[object, int] = {"a": 1}
        self.dropped = False

    def get(self, key: str) -> int:
        return self.rows[key]

    def put(self, key: object, value: int) -> None:
        self.rows[key] = value

    def each(self):
        """Rows, lazily (a generator: a very common return value)."""
        yield self

    def queue(self) -> collections.deque:
        return collections.deque([self])

    def values(self):
        return {"me": self}.values()

    def transaction(self, body):
        """Run ``body`` in a transaction (a callback API: common in DB clients)."""
        return body(self)

    def same_as(self, other: object) -> bool:
        return self == other

    @classmethod
    def kind(cls):
        return cls

    def handler(self, name: str):
        """A bound method of the object, e.g. a callback to hand to something else."""
        return self.drop

    def drop(self) -> str:
        self.dropped = True
        return "dropped"


def _run(policy: Policy, code: str) -> tuple[dict, object]:
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(code, namespace)
    return namespace, result


def _policy(store: Store) -> Policy:
    policy = Policy()
    policy.live_object(store, "db", exclude=["_*", "drop"])
    return policy


def _assert_no_secret(namespace: dict, store: Store) -> None:
    assert namespace.get("reached") != SECRET, "agent code read the live object's password"
    assert not store.dropped, "agent code called a method its registration excluded"


def test_a_generator_yielding_the_object_does_not_hand_out_the_object() -> None:
    store = Store()
    namespace, _ = _run(_policy(store), "reached = next(db.each()).password")
    _assert_no_secret(namespace, store)


def test_a_deque_holding_the_object_does_not_hand_out_the_object() -> None:
    store = Store()
    namespace, _ = _run(_policy(store), "reached = db.queue()[0].password")
    _assert_no_secret(namespace, store)


def test_a_dict_view_holding_the_object_does_not_hand_out_the_object() -> None:
    store = Store()
    namespace, _ = _run(_policy(store), "reached = list(db.values())[0].password")
    _assert_no_secret(namespace, store)


def test_a_callback_given_the_object_does_not_get_the_object() -> None:
    store = Store()
    namespace, _ = _run(
        _policy(store),
        "reached = db.transaction(lambda conn: conn.password)\n"
        "db.transaction(lambda conn: conn.drop())",
    )
    _assert_no_secret(namespace, store)


def test_a_reflected_eq_does_not_get_the_object() -> None:
    """``self == other`` in a host method calls the agent's ``__eq__`` with ``self``."""
    store = Store()
    code = (
        "got = []\n"
        "class Probe:\n"
        "    def __eq__(self, other):\n"
        "        got.append(other)\n"
        "        return False\n"
        "db.same_as(Probe())\n"
        "reached = got[0].password\n"
    )
    namespace, _ = _run(_policy(store), code)
    _assert_no_secret(namespace, store)


def test_the_format_of_a_leaked_object_reads_nothing() -> None:
    store = Store()
    namespace, _ = _run(_policy(store), "reached = '{0.password}'.format(next(db.each()))")
    _assert_no_secret(namespace, store)


def test_a_classmethod_does_not_hand_out_the_objects_class() -> None:
    """The class of a live object is out of reach (the guide); a classmethod returning
    ``cls`` hands it out as it is, constructible, with every attribute."""
    store = Store()
    namespace, _ = _run(_policy(store), "reached = db.kind()\nreached = reached()")
    assert not isinstance(namespace.get("reached"), Store), "agent code built a Store itself"


def test_a_bound_method_of_the_object_is_not_an_excluded_method() -> None:
    store = Store()
    namespace, _ = _run(_policy(store), "db.handler('x')()")
    _assert_no_secret(namespace, store)


def test_sqlite_cursor_factory_does_not_hand_out_the_connection() -> None:
    """The guide's own example, with ``cursor`` included as well as ``execute``: sqlite3
    calls the cursor factory with the real connection, and agent code closes it (or calls
    any other Connection method include= left out)."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    policy = Policy()
    policy.live_object(connection, "db", include=["execute", "cursor"])
    code = (
        "Cursor = type(db.execute('select 1'))\n"
        "got = []\n"
        "class Mine(Cursor):\n"
        "    def __init__(self, connection):\n"
        "        got.append(connection)\n"
        "        super().__init__(connection)\n"
        "db.cursor(Mine)\n"
        "got[0].close()\n"
    )
    _run(policy, code)
    connection.execute("select 1")  # raises ProgrammingError if agent code closed it


def test_a_module_view_built_before_the_registration_does_not_hold_the_object() -> None:
    """A registered module that also holds the connection: a view built before the live
    registration (a first run, the prompt) keeps the raw connection for good."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    module = types.ModuleType("agex_attack_tools")
    module.conn = connection  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        policy = Policy()
        policy.module(module.__name__)
        policy.view(module.__name__)  # what a first run or the prompt does
        policy.live_object(connection, "db", include=["execute"])
        _run(policy, f"import {module.__name__} as tools\ntools.conn.close()")
        connection.execute("select 1")  # raises if agent code closed it
    finally:
        del sys.modules[module.__name__]


def test_view_of_the_agent_before_the_registration_does_not_keep_the_object() -> None:
    """The same, through the public API: ``view(agent)`` (or any task's prompt) builds the
    module's view; the connection registered afterwards stays raw in it."""
    from agex import Agent, connect_llm, view

    connection = sqlite3.connect(":memory:", check_same_thread=False)
    module = types.ModuleType("agex_attack_tools2")
    module.conn = connection  # type: ignore[attr-defined]
    module.__doc__ = "Tools."
    sys.modules[module.__name__] = module
    try:
        code = f"import {module.__name__} as tools\ntools.conn.close()\ntask_success(1)"
        retry = "```python\ntask_success(2)\n```"
        agent = Agent(
            llm=connect_llm(provider="scripted", responses=[f"```python\n{code}\n```", retry])
        )
        agent.module(module, visibility="high")
        view(agent)
        agent.module(connection, name="db", include=["execute"])

        @agent.task
        def go() -> int:
            """Go."""

        assert go() == 2  # the first attempt was refused
        connection.execute("select 1")  # raises if agent code closed it
    finally:
        del sys.modules[module.__name__]
