"""Attack on the live-object membrane (agex/sandbox/live.py): an exception a live method raises
crosses back to agent code as the host's own object, not through ``returned()``. The policy
refuses attributes that hold the registered object itself, but nothing else the exception
carries is screened: the driver's inner session or cursor (``e.request``, ``e.cursor``,
``e.args[1]``), or a bound method of the object (a retry callback, as tenacity-style clients
attach). Returned, those would come back as views (public methods only, no data attributes)
or be refused; raised, agent code gets them raw: their credentials, and the methods the
registration left out.

Each test asserts the SAFE behaviour.
"""

from __future__ import annotations

from agex.sandbox import Policy, Sandbox

SECRET = "s3cret-token"


class Session:
    """The client's inner HTTP/DB session, holding the credentials."""

    def __init__(self) -> None:
        self.token = SECRET
        self.wiped = False

    def wipe(self) -> None:
        self.wiped = True


class QueryError(Exception):
    """A driver's error, keeping what it came from (as requests, httpx, DB drivers do)."""

    def __init__(self, message: str, session: object, retry: object = None) -> None:
        super().__init__(message, session)
        self.session = session
        self.retry = retry


class Store:
    def __init__(self) -> None:
        self._session = Session()
        self.dropped = False

    def query(self, sql: str) -> list:
        raise QueryError(f"syntax error near {sql!r}", self._session, retry=self.drop)

    def session(self) -> Session:
        return self._session  # returned, the session is a view: no .token

    def drop(self) -> str:
        self.dropped = True
        return "dropped"


def _run(code: str) -> tuple[dict, Store]:
    store = Store()
    policy = Policy()
    policy.live_object(store, "db", include=["query", "session"])
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    namespace["out"] = []
    result = sandbox.run(code, namespace)
    namespace["error"] = result.error
    return namespace, store


def test_returned_the_inner_session_is_a_view_without_its_token() -> None:
    """The baseline: the membrane hides the session's data when a method returns it."""
    namespace, store = _run("reached = db.session().token\n")
    assert namespace.get("reached") != SECRET
    assert not store._session.wiped


def test_raised_the_inner_session_is_not_handed_out_raw() -> None:
    namespace, store = _run(
        "try:\n"
        "    db.query('select')\n"
        "except Exception as e:\n"
        "    reached = e.session.token\n"
        "    e.args[1].wipe()\n"
    )
    assert namespace.get("reached") != SECRET, "agent code read the inner session's token"
    assert not store._session.wiped, "agent code called the raw session's methods"


def test_raised_a_bound_method_of_the_object_is_not_callable() -> None:
    """``drop`` is not in ``include``; a retry callback on the exception calls it."""
    _, store = _run("try:\n    db.query('select')\nexcept Exception as e:\n    e.retry()\n")
    assert not store.dropped, "agent code called a method its registration excluded"


class Streamer:
    """A live object whose generator method returns (as generators may) its inner session."""

    def __init__(self) -> None:
        self._session = Session()

    def rows(self):
        yield 1
        return self._session  # StopIteration.value


def test_a_views_stop_iteration_does_not_hand_out_the_generators_return_value() -> None:
    """``next()`` on a view of a host generator raises the generator's own StopIteration,
    whose ``value`` (and ``args[0]``) is whatever the generator returned, raw."""
    streamer = Streamer()
    policy = Policy()
    policy.live_object(streamer, "db", include=["rows"])
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    sandbox.run(
        "g = db.rows()\n"
        "next(g)\n"
        "try:\n"
        "    next(g)\n"
        "except StopIteration as e:\n"
        "    reached = e.value.token\n"
        "    e.args[0].wipe()\n",
        namespace,
    )
    assert namespace.get("reached") != SECRET, "agent code read the inner session's token"
    assert not streamer._session.wiped, "agent code called the raw session's methods"


class Raiser:
    """A live object whose methods raise what real libraries raise."""

    def __init__(self) -> None:
        self._session = Session()

    def bad_value(self, n: int) -> None:
        raise ValueError("out of range", n, [1, "two"])

    def missing(self) -> None:
        raise KeyError(self)  # the registered object itself

    def leaky(self) -> None:
        raise LookupError("no row", self._session)  # a builtin type carrying an object

    def driver(self) -> None:
        raise QueryError("no such table: users", self._session)

    def rows(self):
        yield 1
        return {"count": 1}


def _raise(code: str) -> tuple[dict, Raiser]:
    raiser = Raiser()
    policy = Policy()
    policy.live_object(raiser, "db")
    sandbox = Sandbox(policy)
    namespace = sandbox.namespace()
    result = sandbox.run(code, namespace)
    assert result.error is None, result.error
    return namespace, raiser


def test_a_builtin_exception_keeps_its_type_and_plain_arguments() -> None:
    namespace, _ = _raise(
        "try:\n    db.bad_value(7)\nexcept ValueError as e:\n    caught = e.args\n"
    )
    assert namespace["caught"] == ("out of range", 7, [1, "two"])


def test_the_registered_object_in_an_exception_is_its_view() -> None:
    namespace, _ = _raise(
        "try:\n    db.missing()\nexcept KeyError as e:\n    same = e.args[0] is db\n"
    )
    assert namespace["same"] is True


def test_any_other_object_in_a_builtin_exception_is_its_text() -> None:
    namespace, _ = _raise(
        "try:\n"
        "    db.leaky()\n"
        "except LookupError as e:\n"
        "    kind = type(e.args[1]).__name__\n"
        "    text = e.args[1]\n"
    )
    assert namespace["kind"] == "str"
    assert "Session object" in namespace["text"]


def test_a_library_exception_becomes_a_runtime_error_naming_it() -> None:
    namespace, _ = _raise(
        "try:\n"
        "    db.driver()\n"
        "except RuntimeError as e:\n"
        "    message = str(e)\n"
        "    plain = type(e) is RuntimeError\n"
    )
    assert namespace["plain"] is True
    assert "db.driver(...) raised" in namespace["message"]
    assert "QueryError" in namespace["message"]
    assert "no such table: users" in namespace["message"]
    assert SECRET not in namespace["message"]


def test_a_crossed_exception_keeps_nothing_of_the_original() -> None:
    """No cause or context leads back to the host's exception (agent code cannot read those
    dunders; the host's code that handles the run's exceptions can)."""
    namespace, _ = _raise(
        "try:\n    db.driver()\nexcept RuntimeError as e:\n    kept = e\n"
        "try:\n    db.leaky()\nexcept LookupError as e:\n    builtin = e\n"
    )
    for error in (namespace["kept"], namespace["builtin"]):
        assert error.__cause__ is None
        assert error.__context__ is None
        assert error.__suppress_context__
        assert not hasattr(error, "session")


def test_a_generators_plain_return_value_still_crosses() -> None:
    namespace, _ = _raise(
        "g = db.rows()\n"
        "first = next(g)\n"
        "try:\n"
        "    next(g)\n"
        "except StopIteration as e:\n"
        "    value = e.value\n"
        "items = list(db.rows())\n"
    )
    assert namespace["first"] == 1
    assert namespace["value"] == {"count": 1}
    assert namespace["items"] == [1]
