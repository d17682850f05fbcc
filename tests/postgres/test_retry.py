"""A connection cut in the middle of a write, between the storage and a real server: the
write is tried again and lands exactly once, whether the cut came before the server
committed it or after (when only the answer was lost)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

import pytest

from agex.errors import StateWriteError
from agex.serializers import CloudpickleSerializer
from agex.state.versioned import VersionedState
from agex_state_postgres.storage import PostgresStorage


class CuttingRelay:
    """A TCP relay to the server. Armed with ``trigger``, it passes the client's next
    message that holds it on to the server, then cuts the client off: the server goes on
    with what it was sent (for a while, until the relay closes its side too), and the client
    never hears the answer."""

    def __init__(self, port: int, hold: float | None = 0.5, then_refuse: bool = False) -> None:
        self.target = port
        #: Whether the relay takes no new connection after its cut (the server unreachable).
        self.then_refuse = then_refuse
        #: Seconds the server's side stays open after a cut (None: until the relay closes,
        #: as when the network, not a peer, broke the connection).
        self.hold = hold
        self._upstreams: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.trigger: bytes | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, trigger: bytes) -> None:
        with self._lock:
            self.trigger = trigger

    def url(self, url: str) -> str:
        return url.replace(f":{self.target}/", f":{self.port}/")

    def _stop_listening(self) -> None:
        # (A listening socket closed while a thread waits in accept() still accepts, on
        # Linux; shutting it down first ends the wait.)
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def close(self) -> None:
        self._stop_listening()
        for upstream in self._upstreams:
            with contextlib.suppress(OSError):
                upstream.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._upstreams.append(upstream)
            cut = threading.Event()
            threading.Thread(target=self._up, args=(client, upstream, cut), daemon=True).start()
            threading.Thread(target=self._down, args=(upstream, client, cut), daemon=True).start()

    def _refuse(self, keep: socket.socket) -> None:
        """Take no new connection, and end the others (not ``keep``) at once."""
        self._stop_listening()
        for upstream in self._upstreams:
            if upstream is not keep:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_RDWR)

    def _up(self, client: socket.socket, upstream: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    fire = self.trigger is not None and self.trigger in data
                    if fire:
                        self.trigger, self.cuts = None, self.cuts + 1
                if fire:
                    cut.set()  # (first: no answer to this reaches the client)
                upstream.sendall(data)
                if fire:
                    if self.then_refuse:
                        self._refuse(upstream)
                    client.shutdown(socket.SHUT_RDWR)
                    client.close()
                    if self.hold is None:
                        return  # the server is never told
                    time.sleep(self.hold)  # the server finishes what it was sent
                    break
        with contextlib.suppress(OSError):
            upstream.close()

    def _down(self, upstream: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while (data := upstream.recv(65536)) and not cut.is_set():
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.close()


@pytest.fixture
def relay(postgres):
    relay = CuttingRelay(postgres.port)
    yield relay
    relay.close()


@pytest.mark.parametrize(
    ("trigger", "when"),
    [(b"COMMIT\x00", "after the server committed"), (b"UPDATE agex_kv", "before it did")],
)
def test_a_compare_and_set_cut_off_lands_exactly_once(database, relay, trigger, when) -> None:
    storage = PostgresStorage(f"cut/{uuid.uuid4().hex}", url=relay.url(database), timeout=10)
    assert storage.compare_and_set("head", None, b"one")
    relay.arm(trigger)
    assert storage.put_and_set({"item": b"data"}, "head", b"one", b"two"), when
    assert relay.cuts == 1  # the cut did happen
    assert storage.get("head") == b"two"
    assert storage.get("item") == b"data"
    assert not storage.compare_and_set("head", b"one", b"three")  # and it is not set again
    storage.close()


def test_a_commit_cut_off_after_it_landed_is_not_a_conflict(database, relay) -> None:
    storage = PostgresStorage(f"cut/{uuid.uuid4().hex}", url=relay.url(database), timeout=10)
    state = VersionedState(storage, CloudpickleSerializer(), "ns", "s")
    state.commit({"n": 1})
    relay.arm(b"COMMIT\x00")
    second = state.commit({"n": 2}).id  # no StateConflict: PostgreSQL says it landed
    assert relay.cuts == 1
    assert state.head() == second
    assert [c.depth for c in state.history()] == [1, 0]
    storage.close()


def test_a_write_cut_off_by_the_network_is_retried_once_the_server_lets_go(
    postgres, database
) -> None:
    """The server never learns that the first try's client is gone: its transaction holds
    the row until the server ends it (after ``timeout`` idle), and the retry then lands."""
    relay = CuttingRelay(postgres.port, hold=None)
    storage = PostgresStorage(f"cut/{uuid.uuid4().hex}", url=relay.url(database), timeout=3)
    try:
        assert storage.compare_and_set("head", None, b"one")
        relay.arm(b"UPDATE agex_kv")
        assert storage.put_and_set({"item": b"data"}, "head", b"one", b"two")
        assert relay.cuts == 1
        assert storage.get("head") == b"two"
    finally:
        storage.close()
        relay.close()


def test_a_commit_whose_fate_cannot_be_learned_says_so(postgres, database) -> None:
    """The answer to COMMIT is lost and the server cannot be reached again within the
    timeout: the error does not claim that nothing was written."""
    relay = CuttingRelay(postgres.port, then_refuse=True)
    name = f"cut/{uuid.uuid4().hex}"
    storage = PostgresStorage(name, url=relay.url(database), timeout=2)
    try:
        assert storage.compare_and_set("head", None, b"one")
        relay.arm(b"COMMIT\x00")
        with pytest.raises(StateWriteError, match="It may have been written") as failed:
            storage.put_and_set({"item": b"data"}, "head", b"one", b"two")
        assert "Nothing was written" not in str(failed.value)
    finally:
        storage.close()
        relay.close()
    direct = PostgresStorage(name, url=database)
    assert direct.get("head") == b"two"  # (it was: the server committed it)
    direct.close()


def test_a_write_that_never_reached_commit_says_nothing_was_written(postgres, database) -> None:
    relay = CuttingRelay(postgres.port, then_refuse=True)
    name = f"cut/{uuid.uuid4().hex}"
    storage = PostgresStorage(name, url=relay.url(database), timeout=2)
    try:
        assert storage.compare_and_set("head", None, b"one")
        relay.arm(b"UPDATE agex_kv")
        with pytest.raises(StateWriteError, match="Nothing was written"):
            storage.put_and_set({"item": b"data"}, "head", b"one", b"two")
    finally:
        storage.close()
        relay.close()
    direct = PostgresStorage(name, url=database)
    assert direct.get("head") == b"one"
    assert direct.get("item") is None
    direct.close()
