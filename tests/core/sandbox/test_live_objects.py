"""A live object registered with the policy: agent code calls its allowed methods and
reaches nothing else of it (the object, its class, its other attributes, what its methods
close over)."""

from __future__ import annotations

import sqlite3

import pytest

from agex.errors import AccessDenied, CallDenied, CodeRejected
from agex.sandbox import Policy, Sandbox

SECRET = "s3cret-password"


class Store:
    """A key-value store holding a secret, as a client holds its credentials."""

    def __init__(self) -> None:
        self.password = SECRET
        self.rows: dict[str, int] = {"a": 1}
        self._token = SECRET

    def get(self, key: str) -> int:
        """The value at ``key``."""
        return self.rows[key]

    def put(self, key: str, value: int) -> Store:
        """Store ``value`` at ``key``; returns the store, to chain calls."""
        self.rows[key] = value
        return self

    def pairs(self) -> list[object]:
        return [self, 1]

    def drop(self) -> None:
        raise AssertionError("an excluded method was called")

    def _private(self) -> str:
        return SECRET

    @property
    def size(self) -> int:
        raise AssertionError("a property was read at registration")


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def policy(store: Store) -> Policy:
    policy = Policy()
    policy.live_object(store, "db", exclude=["_*", "drop"])
    return policy


def run(policy: Policy, code: str) -> dict:
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(code, namespace)
    assert result.error is None, result.error
    return namespace


def test_agent_code_calls_the_allowed_methods(policy: Policy, store: Store) -> None:
    namespace = run(policy, "db.put('b', 2)\nfound = db.get('b')\nnames = dir(db)")
    assert namespace["found"] == 2
    assert store.rows == {"a": 1, "b": 2}  # the real object, in this process
    assert namespace["names"] == ["get", "pairs", "put"]


def test_a_method_returning_its_object_gives_the_view_again(policy: Policy) -> None:
    namespace = run(policy, "same = db.put('c', 3) is db\nvalue = db.put('d', 4).get('d')")
    assert namespace["same"] is True
    assert namespace["value"] == 4


def test_a_method_returning_its_object_in_a_list_gives_the_view(attempt, policy: Policy) -> None:
    namespace = run(policy, "pairs = db.pairs()\nsame = pairs[0] is db")
    assert namespace["same"] is True
    assert namespace["pairs"][1] == 1
    result = attempt("reached = db.pairs()[0].password", policy, expect=AccessDenied)
    assert "db.password is not available to agent code" in result.error


def test_an_excluded_method_says_what_is_offered(attempt, policy: Policy) -> None:
    result = attempt("db.drop()", policy, expect=AccessDenied)
    assert "db.drop is not available to agent code; db offers get, pairs, put" in result.error


@pytest.mark.parametrize(
    "code",
    [
        "reached = db.password",  # data, not a method
        "reached = db.rows",
        "reached = db.size",  # a property
        "reached = db._private()",
        "reached = db._token",
        "reached = getattr(db, '_members')",
        "reached = getattr(db, '_name')",
        "reached = db.__class__",
        "reached = db.__dict__",
        "reached = vars(db)",
        "reached = db.get.__self__",
        "reached = db.get.__func__",
        "reached = db.get.__globals__",
        "reached = db.get.__closure__",
        "reached = db.get.__wrapped__",
        "reached = db.get.__dict__",
        "reached = getattr(db.get, '__closure__')",
        "reached = db.__reduce_ex__(2)",
        "reached = object.__getattribute__(db, '_members')",
        "reached = type(db)('x', 'y', None)",
        "class Mine(type(db)):\n    pass",
        "reached = '{0.get.__closure__}'.format(db)",
        "match db.get:\n    case object(__closure__=c):\n        reached = c",
        "match db:\n    case object(_members=m):\n        reached = m",
        "db.get = print",
        "db.extra = 1",
        "del db.get",
        "setattr(db, 'get', print)",
    ],
)
def test_agent_code_reaches_nothing_else_of_the_object(attempt, policy: Policy, code) -> None:
    attempt(code, policy, expect=(AccessDenied, CallDenied, CodeRejected))


def test_a_returned_object_is_a_view_of_its_methods(attempt) -> None:
    """A cursor is a view of its own: its methods behind the membrane, its data (the
    connection it leads back to) out of reach."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    policy = Policy()
    policy.live_object(connection, "db", include=["execute"])
    namespace = run(
        policy,
        "cursor = db.execute('select 40 + 2')\nvalue = cursor.fetchone()[0]\n"
        "rows = [row for row in db.execute('select 1 union all select 2')]",
    )
    assert namespace["value"] == 42
    assert namespace["rows"] == [(1,), (2,)]
    result = attempt("db.execute('select 1').connection.close()", policy, expect=AccessDenied)
    assert "db.execute(...).connection is not available to agent code" in result.error
    connection.execute("select 1")  # still open


def test_a_container_holding_the_object_is_refused_through_an_attribute(attempt) -> None:
    store = Store()

    class Holder:
        def __init__(self) -> None:
            self.items = [store]

    policy = Policy()
    policy.live_object(store, "db")
    policy.fn(Holder)
    attempt("reached = Holder().items[0].password", policy, expect=AccessDenied)


def test_the_view_cannot_be_pickled(policy: Policy) -> None:
    import pickle

    with pytest.raises(TypeError, match=r"db is a live object .*cannot be copied"):
        pickle.dumps(policy.names["db"])


def test_a_name_is_required_and_classes_and_functions_are_sent_elsewhere() -> None:
    policy = Policy()
    with pytest.raises(ValueError, match=r'needs the name .*agent\.module\(obj, name="db"\)'):
        policy.live_object(Store(), None)
    with pytest.raises(TypeError, match=r"register it with agent\.cls"):
        policy.live_object(Store, "db")
    with pytest.raises(TypeError, match=r"register it with agent\.fn"):
        policy.live_object(len, "db")
    with pytest.raises(TypeError, match="got None"):
        policy.live_object(None, "db")
    with pytest.raises(ValueError, match="cannot be a name in agent code"):
        policy.live_object(Store(), "_db")


def test_registering_another_value_under_the_name_forgets_the_object(store: Store) -> None:
    policy = Policy()
    policy.live_object(store, "db")
    policy.fn(len, name="db")
    assert "db" not in policy.live
    assert policy.exposed(store, "x") is store  # no longer handed out as a view
