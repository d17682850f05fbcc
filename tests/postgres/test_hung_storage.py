"""A database that stops answering while its connections stay open (a hung host, a paused
VM, a network path that drops packets without a reset): every operation of the storage ends
within about its ``timeout`` per try, saying so, and the storage works again once the
database answers. The database is frozen here by stopping its processes (SIGSTOP), on a
server of its own (the ``own`` fixture) so that the session's server goes on answering."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from agex.errors import StateLoadError, StateWriteError
from agex_state_postgres import deadline
from agex_state_postgres.place import Place
from agex_state_postgres.storage import PostgresStorage

TIMEOUT = 2.0
#: Generous (a shared machine): the promise is about ``timeout`` per try, and two tries.
BOUND = 4 * TIMEOUT + 10


def in_thread(call: Callable[..., Any], *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = call(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def _ended(thread: threading.Thread, what: str) -> None:
    thread.join(BOUND)
    assert not thread.is_alive(), f"{what} still waiting after {BOUND:g} s (timeout={TIMEOUT:g})"


def test_a_read_from_a_hung_database_ends_with_a_load_error_then_works_again(own) -> None:
    storage = PostgresStorage("hung/read", url=own.url, timeout=TIMEOUT)
    storage.put_many({"k": b"v"})  # a pooled connection, open and idle
    try:
        with own.paused():
            thread, box = in_thread(storage.get, "k")
            _ended(thread, "get()")
        error = box.get("error")
        assert isinstance(error, StateLoadError), box
        assert f"did not answer within {TIMEOUT:g} s" in str(error)
        assert "--state-timeout" in str(error)
        assert own.password not in str(error)
        assert storage.get("k") == b"v"  # the same storage, once the database answers
    finally:
        storage.close()


def test_a_write_to_a_hung_database_ends_with_a_write_error_then_works_again(own) -> None:
    storage = PostgresStorage("hung/write", url=own.url, timeout=TIMEOUT)
    assert storage.compare_and_set("head", None, b"1")
    try:
        with own.paused():
            thread, box = in_thread(storage.put_and_set, {"c/2": b"x"}, "head", b"1", b"2")
            _ended(thread, "put_and_set()")
        error = box.get("error")
        assert isinstance(error, StateWriteError), box
        assert f"did not answer within {TIMEOUT:g} s" in str(error)
        # No COMMIT went out (the transaction's first statement got no answer).
        assert "Nothing was written" in str(error)
        assert storage.get("head") == b"1"
        assert storage.get("c/2") is None
        assert storage.put_and_set({"c/2": b"x"}, "head", b"1", b"2")
        assert storage.get("head") == b"2"
    finally:
        storage.close()


def test_each_operation_on_a_hung_database_ends(own) -> None:
    storage = PostgresStorage("hung/each", url=own.url, timeout=TIMEOUT)
    storage.put_many({"a": b"1"})
    operations: list[tuple[str, Callable[[], Any], type[Exception]]] = [
        ("keys()", lambda: storage.keys(""), StateLoadError),
        ("put_many()", lambda: storage.put_many({"b": b"2"}), StateWriteError),
        ("delete()", lambda: storage.delete("a"), StateWriteError),
    ]
    try:
        with own.paused():
            started = [(name, expected, *in_thread(call)) for name, call, expected in operations]
            for name, _, thread, _ in started:
                _ended(thread, name)
        for name, expected, _, box in started:
            assert isinstance(box.get("error"), expected), (name, box)
        assert storage.keys("") == ["a"]
    finally:
        storage.close()


def test_a_hung_database_does_not_hold_up_a_storage_of_another(own, database) -> None:
    """Making a storage's pool prepares its database (the schema); one that hangs there
    keeps no other database's storage waiting."""
    # A timeout no storage of this server has used yet: a pool of its own, made now.
    hung = PostgresStorage("hung/first", url=own.url, timeout=TIMEOUT + 9)
    other = PostgresStorage("elsewhere", url=database, timeout=TIMEOUT)
    try:
        with own.paused():
            thread, box = in_thread(hung.get, "k")
            other_thread, other_box = in_thread(
                lambda: (other.put_many({"k": b"v"}), other.get("k"))[1]
            )
            other_thread.join(BOUND)
            # (Connecting to the hung one gives up after connect_timeout, 10 s here.)
            held_up = other_thread.is_alive() or not thread.is_alive()
            thread.join(4 * (TIMEOUT + 9) + 10)
        assert not held_up, "a storage of another database waited on the hung one"
        assert other_box.get("value") == b"v", other_box
        assert not thread.is_alive(), "the first use of a hung database did not end"
        assert isinstance(box.get("error"), StateLoadError), box
        assert hung.get("k") is None  # and it works once the database answers
    finally:
        hung.close()
        other.close()


def test_the_deadline_leaves_nothing_behind(database) -> None:
    """Each operation registers a wait with the one watcher and removes it: a storage used
    many times holds none (and its connections are not cut afterwards)."""
    storage = PostgresStorage("many", url=database, timeout=TIMEOUT)
    try:
        for i in range(200):
            storage.put_many({f"k{i % 5}": b"v"})
            assert storage.get(f"k{i % 5}") == b"v"
        assert deadline._WATCH._waits == {}
    finally:
        storage.close()


def test_a_partitioned_network_is_noticed_by_tcp() -> None:
    """Keepalives and a limit on unacknowledged data, from the timeout; the URL's own kept."""
    options = Place.find("postgresql://u@db.example:5432/d").options(30.0)
    assert options["keepalives"] == 1
    assert options["keepalives_idle"] + 3 * options["keepalives_interval"] <= 30
    assert options["tcp_user_timeout"] == 30_000
    given = Place.find("postgresql://u@db.example/d?keepalives=0&tcp_user_timeout=5").options(30)
    assert "keepalives" not in given
    assert "tcp_user_timeout" not in given
    assert given["keepalives_count"] == 3


def test_a_write_cut_before_its_commit_says_nothing_was_written_and_nothing_is(own) -> None:
    """A delete (or put_many) sent to a hung database and cut by the deadline: the server,
    once it answers again, finds its client gone before the COMMIT and writes nothing, as
    the error said."""
    import time as clock

    storage = PostgresStorage("hung/cut", url=own.url, timeout=TIMEOUT)
    storage.put_many({"k": b"v"})
    try:
        with own.paused():
            with pytest.raises(StateWriteError) as raised:
                storage.delete("k")
            with pytest.raises(StateWriteError) as raised_put:
                storage.put_many({"k": b"changed"})
        clock.sleep(1.0)  # the server reads what was sent to it before the cut
        assert "Nothing was written" in raised.value.message
        assert "Nothing was written" in raised_put.value.message
        assert storage.get("k") == b"v"
    finally:
        storage.close()
