"""A server among replicas that share one PostgreSQL database (``agex serve --state-url``).

Each run lives in the replica that started it: its loop, its worker and the messages kept
for reconnecting clients are in that process. So that a run id never starts twice (a start
re-sent after a lost answer, landing on another replica, would run every step again), a
replica claims the id in the database before it starts the run: one compare-and-set, which
only one replica wins. The claim goes when the replica forgets the run, minutes after it
ended. A request for a run held elsewhere is answered 421 Misdirected
Request, naming the rule that keeps a run's requests on one replica (route by run id).

Cancelling reaches every replica: the one asked stops its own runs and signals the others
(LISTEN/NOTIFY, :mod:`agex_state_postgres.signals`), which stop theirs. A signal is checked
before anything acts on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

from agex.errors import AgexError
from agex.hosts import check_session
from agex.remote.envelope import Refused

if TYPE_CHECKING:
    from agex.stores import DatabaseStores
    from agex_host_http.server.runs import RunBoard

log = logging.getLogger(__name__)

#: The channel replicas signal each other on.
CHANNEL = "agex_replicas"
#: Where docs/hosts.md explains the rule a load balancer in front of replicas follows.
RULE = (
    "send every request that names a run id (/v1/runs/<id>...) to the replica that started "
    "the run: route by run id (docs/hosts.md, 'Several servers on one database')"
)
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_LONGEST_NAME = 200


class Replicas:
    """This replica's claims on run ids, and the signals it sends and acts on."""

    def __init__(self, stores: DatabaseStores, url: str, board: RunBoard) -> None:
        #: This process, as other replicas' messages name it.
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.records = stores.server()
        self.board = board
        self._url = url
        self._channel: Any = None

    # -- listening ---------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Listen for the other replicas' signals; returns once listening (or after
        ``timeout`` seconds, listening as soon as the database lets it)."""
        from agex_state_postgres.signals import Channel

        loop = asyncio.get_running_loop()
        self._channel = Channel(CHANNEL, self._url)
        self._channel.listen(lambda signal: loop.call_soon_threadsafe(self.act, signal))
        await asyncio.to_thread(self._channel.wait_listening, timeout)

    async def stop(self) -> None:
        if self._channel is not None:
            await asyncio.to_thread(self._channel.close)

    def act(self, signal: dict[str, Any]) -> int:
        """Do what another replica's signal asks, once checked; how many runs it stopped."""
        if signal.get("v") != 1 or signal.get("from") == self.id:
            return 0  # another version's, or ours (acted on when it was sent)
        kind = signal.get("kind")
        if kind == "cancel-session":
            agent, session = signal.get("agent"), signal.get("session")
            if not (isinstance(agent, str) and isinstance(session, str)):
                return 0
            if not (_name(agent) and _name(session)):
                return 0
            try:
                check_session(session)
            except ValueError:
                return 0
            return self.board.cancel_session(agent, session)
        if kind == "cancel-run":
            run_id = signal.get("run")
            if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
                return 0
            run = self.board.runs.get(run_id)
            return 0 if run is None else int(run.cancel())
        return 0

    # -- cancelling everywhere ---------------------------------------------------------

    async def cancel_session(self, agent: str, session: str) -> None:
        """Ask the other replicas to stop the agent's runs in ``session``."""
        await self._send({"kind": "cancel-session", "agent": agent, "session": session})

    async def cancel_run(self, run_id: str) -> bool:
        """Ask the replica holding ``run_id`` to stop it; False when no other replica claimed
        it (this one holds it no longer, or none ever did)."""
        holder = await self.holder(run_id)
        if holder is None or holder == self.id:
            return False
        await self._send({"kind": "cancel-run", "run": run_id})
        return True

    async def _send(self, signal: dict[str, Any]) -> None:
        assert self._channel is not None, "start() first"
        try:
            await asyncio.to_thread(self._channel.send, {"v": 1, "from": self.id, **signal})
        except AgexError as exc:
            raise Refused(503, f"{exc.message}; the other replicas were not told") from None

    # -- run ids -----------------------------------------------------------------------

    async def claim(self, run_id: str) -> None:
        """Claim ``run_id`` for this replica, or Refused: 421 when another replica holds it,
        409 when this one ran it already, 503 when the database cannot be reached."""
        record = json.dumps({"replica": self.id, "at": time.time()}).encode()
        key = _key(run_id)
        try:
            won = await asyncio.to_thread(self.records.compare_and_set, key, None, record)
        except AgexError as exc:
            raise Refused(503, f"run {run_id} was not started: {exc.message}") from None
        if won:
            return
        holder = await self.holder(run_id)
        if holder == self.id:
            raise Refused(
                409,
                f"run {run_id} ran on this server already and is no longer kept; a run id "
                "starts one run: start a new run for the task",
            )
        raise misdirected(run_id, holder)

    def release(self, run_id: str) -> None:
        """Drop this replica's claim on a run it has forgotten (its retention over), so that
        claims do not pile up; a client re-sends a start within seconds, never this late."""
        key = _key(run_id)

        def drop() -> None:
            try:
                self.records.delete(key)
            except AgexError as exc:  # left behind: harmless, and small
                log.warning("could not drop the claim on run %s: %s", run_id, exc.message)

        asyncio.get_running_loop().run_in_executor(None, drop)

    async def holder(self, run_id: str) -> str | None:
        """The replica that claimed ``run_id`` (None: none did); Refused 503 when the
        database cannot be reached."""
        try:
            found = await asyncio.to_thread(self.records.get, _key(run_id))
        except AgexError as exc:
            raise Refused(503, f"could not look run {run_id} up: {exc.message}") from None
        if found is None:
            return None
        try:
            holder = json.loads(found)["replica"]
        except (ValueError, KeyError, TypeError):
            return "an unknown replica"
        return holder if isinstance(holder, str) else "an unknown replica"


def misdirected(run_id: str, holder: str | None) -> Refused:
    return Refused(
        421,
        f"run {run_id} belongs to another replica of this server ({holder}), or to one "
        f"that has stopped; {RULE}",
    )


def _key(run_id: str) -> str:
    return f"runs/{run_id}"


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _LONGEST_NAME
