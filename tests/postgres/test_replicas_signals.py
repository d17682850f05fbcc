"""agex_state_postgres.signals: what replicas tell each other through the database."""

from __future__ import annotations

import queue
from typing import Any

import psycopg
import pytest

from agex.errors import StateWriteError
from agex_state_postgres.signals import Channel


def listening(url: str, name: str = "agex_test") -> tuple[Channel, queue.SimpleQueue[Any]]:
    channel = Channel(name, url)
    arrived: queue.SimpleQueue[Any] = queue.SimpleQueue()
    channel.listen(arrived.put)
    assert channel.wait_listening(30)
    return channel, arrived


def test_a_signal_reaches_every_listener(database) -> None:
    first, to_first = listening(database)
    second, to_second = listening(database)
    try:
        first.send({"kind": "hello", "n": 1})
        assert to_first.get(timeout=30) == {"kind": "hello", "n": 1}
        assert to_second.get(timeout=30) == {"kind": "hello", "n": 1}
    finally:
        first.close()
        second.close()


def test_only_json_objects_are_handed_on(database) -> None:
    channel, arrived = listening(database)
    try:
        with psycopg.connect(database, autocommit=True) as db:
            for payload in ("not json", "[1, 2]", '"text"', "1e999999", '{"last": true}'):
                db.execute("SELECT pg_notify('agex_test', %s)", (payload,))
        assert arrived.get(timeout=30) == {"last": True}
        assert arrived.empty()
    finally:
        channel.close()


def test_a_handler_that_fails_does_not_end_the_listening(database) -> None:
    channel = Channel("agex_test", database)
    arrived: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def handle(signal: dict[str, Any]) -> None:
        if signal.get("fail"):
            raise RuntimeError("a handler's own mistake")
        arrived.put(signal)

    channel.listen(handle)
    try:
        assert channel.wait_listening(30)
        channel.send({"fail": True})
        channel.send({"fail": False})
        assert arrived.get(timeout=30) == {"fail": False}
    finally:
        channel.close()


def test_listening_and_sending_go_on_after_the_database_restarts() -> None:
    local = pytest.importorskip("agex_state_postgres.local")
    own = local.LocalServer(fsync=False)
    try:
        own.start()
        channel, arrived = listening(own.url)
        try:
            channel.send({"before": 1})
            assert arrived.get(timeout=30) == {"before": 1}
            own.restart()
            # Until the listener is back, a signal may be missed: send until one lands.
            for _ in range(60):
                channel.send({"after": 1})
                try:
                    assert arrived.get(timeout=1) == {"after": 1}
                    break
                except queue.Empty:
                    continue
            else:
                pytest.fail("no signal arrived after the database restarted")
            own.stop()
            with pytest.raises(StateWriteError) as down:
                channel.send({"down": 1})
            assert "could not signal" in str(down.value)
            assert own.password not in str(down.value)
        finally:
            channel.close()
    finally:
        own.remove()


def test_a_channel_name_is_an_identifier_and_a_signal_fits_a_notify(database) -> None:
    with pytest.raises(ValueError, match="channel"):
        Channel('x"; DROP TABLE agex_kv; --', database)
    channel = Channel("agex_test", database)
    try:
        with pytest.raises(ValueError, match="at most"):
            channel.send({"big": "x" * 10_000})
    finally:
        channel.close()


def test_a_listening_connection_is_named_for_the_database(database) -> None:
    """pg_stat_activity shows a listener by its application_name (its query column holds
    only the last statement it ran), so an operator, or a test, can find and end it."""
    from agex_state_postgres.signals import LISTENER

    channel, _ = listening(database)
    try:
        with psycopg.connect(database, autocommit=True) as admin:
            found = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (LISTENER,)
            ).fetchone()
        assert found is not None
        assert found[0] >= 1
    finally:
        channel.close()


def test_a_catch_up_that_failed_is_tried_again_on_a_new_connection(database) -> None:
    """The cancels recorded while nobody listened are read when listening starts: a read
    that fails (the database slow just then) must not leave them unread until the
    connection happens to break."""
    import threading

    from agex.errors import StateLoadError

    calls: list[float] = []
    again = threading.Event()

    def catch_up(now: float) -> None:
        calls.append(now)
        if len(calls) == 1:
            raise StateLoadError("could not read the state '.agex/server': no answer")
        again.set()

    channel = Channel("agex_test", database, timeout=5.0)
    channel.listen(lambda signal: None, catch_up)
    try:
        assert again.wait(30), "the failed catch-up was not tried again"
        assert channel.wait_listening(30)
    finally:
        channel.close()


def test_clock_reads_at_once_on_a_database_that_hangs_each_end_with_an_error(own) -> None:
    """What /v1/cancel does first: reads at once on one channel, the database not answering,
    each end with an error saying so (none waits for ever behind the one before it)."""
    import threading

    timeout, count = 1.0, 8
    channel = Channel("agex_test", own.url, timeout=timeout)
    channel.clock()  # its sending connection, open
    failed: list[BaseException] = []
    try:
        with own.paused():

            def read() -> None:
                try:
                    channel.clock()
                except Exception as exc:
                    failed.append(exc)

            threads = [threading.Thread(target=read) for _ in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
    finally:
        channel.close()
    assert len(failed) == count
    assert all("did not answer" in str(e) or "could not" in str(e) for e in failed)
