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
