"""A server among replicas that share one PostgreSQL database (``agex serve --state-url``).

Each run lives in the replica that started it: its loop, its worker and the messages kept
for reconnecting clients are in that process. So that a run id never starts twice (a start
re-sent after a lost answer, landing on another replica, would run every step again), a
replica claims the id in the database before it starts the run: one compare-and-set, which
only one replica wins. The claim is marked ended when the run ends, and goes when the
replica forgets the run, minutes later, or when the replica stops; a replica that starts
drops claims older than a day (left by replicas that were killed). A request for a run
held elsewhere is answered 421 Misdirected Request, naming the rule that keeps a run's
requests on one replica (route by run id).

Cancelling reaches every replica: the one asked stops its own runs, records the cancel in
the database (with the database's clock: every replica's frame of reference) and signals
the others (LISTEN/NOTIFY, :mod:`agex_state_postgres.signals`), which stop theirs. A cancel
of one run held by another replica is recorded and signalled the same way. A replica that
starts listening again (its connection broke) reads the cancels recorded in the last
minutes it had not heard, and acts on each as if heard when it was made: it stops the runs
whose requests arrived before it, those still being claimed included. A signal, and a
record, is checked before anything acts on it.
"""

from __future__ import annotations

import asyncio
import hashlib
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
from agex_host_http.server.runs import RUN_ID, RunBoard

if TYPE_CHECKING:
    from agex.stores import DatabaseStores

log = logging.getLogger(__name__)

#: The channel replicas signal each other on.
CHANNEL = "agex_replicas"
#: Where docs/hosts.md explains the rule a load balancer in front of replicas follows.
RULE = (
    "send every request that names a run id (/v1/runs/<id>...) to the replica that started "
    "the run: route by run id (docs/hosts.md, 'Several servers on one database')"
)
#: Seconds a cancel stays recorded for replicas that were not listening when it was sent.
CANCEL_KEPT = 300.0
#: Seconds after which a claim is taken to be left by a replica that was killed.
STALE_CLAIM = 86400.0
_RUN_ID = re.compile(RUN_ID)
_CANCEL_ID = re.compile(r"^[0-9a-f]{16}$")
_LONGEST_NAME = 200


class Replicas:
    """This replica's claims on run ids, and the signals it sends and acts on."""

    def __init__(
        self, stores: DatabaseStores, url: str, board: RunBoard, timeout: float = 10.0
    ) -> None:
        #: This process, as other replicas' messages name it.
        self.id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.records = stores.server()
        self.board = board
        self._url = url
        self._timeout = timeout
        self._channel: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The claims this replica holds, by run id, as written (marking one ended swaps it).
        self._claims: dict[str, bytes] = {}
        # Ids of the cancels acted on (time.monotonic() when), so none is acted on twice.
        self._heard: dict[str, float] = {}
        # Runs cancelled while their ids were being claimed here (time.monotonic() when):
        # they stop once started (:meth:`cancelled_while_claimed`).
        self._cancelled_runs: dict[str, float] = {}

    # -- listening ---------------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Listen for the other replicas' signals; returns once listening (or after
        ``timeout`` seconds, listening as soon as the database lets it)."""
        from agex_state_postgres.signals import Channel

        loop = self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._drop_stale_claims)
        self._channel = Channel(CHANNEL, self._url, self._timeout)
        self._channel.listen(
            lambda signal: loop.call_soon_threadsafe(self.act, signal), self._catch_up
        )
        await asyncio.to_thread(self._channel.wait_listening, timeout)

    async def stop(self) -> None:
        """Stop listening, and drop this replica's claims: its runs end with it."""
        if self._channel is not None:
            await asyncio.to_thread(self._channel.close)
        claims, self._claims = list(self._claims), {}
        await asyncio.to_thread(self._drop, claims)

    def _drop(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self.records.delete(_key(run_id))
            except AgexError as exc:  # left behind: dropped by the next replica's start
                log.warning("could not drop the claim on run %s: %s", run_id, exc.message)
                return

    def _drop_stale_claims(self) -> None:
        """Claims older than a day are left by replicas that were killed: no client
        re-sends a start that late."""
        try:
            for key in self.records.keys("runs/"):
                at = _field(self.records.get(key), "at")
                if isinstance(at, (int, float)) and time.time() - at > STALE_CLAIM:
                    self.records.delete(key)
        except AgexError as exc:
            log.warning("could not drop old claims: %s", exc.message)

    def _catch_up(self, now: float) -> None:
        """A connection listens again (``now``: the database's clock): act on the cancels
        recorded meanwhile, which may not have been heard; drop those past keeping. Runs in
        the listening thread; raising (the database did not answer), it is called again on
        the next connection."""
        offset = now - time.monotonic()  # this process's monotonic clock to the database's
        missed = []
        for prefix in ("cancel/", "cancel-run/"):
            for key in self.records.keys(prefix):
                found = self.records.get(key)
                at = _field(found, "at")
                if not isinstance(at, (int, float)):
                    continue
                if now - at > CANCEL_KEPT:
                    self.records.delete(key)
                    continue
                missed.append(json.loads(found or b"{}"))
        if missed and self._loop is not None:
            self._loop.call_soon_threadsafe(self._act_on_records, missed, offset)

    def _act_on_records(self, records: list[dict[str, Any]], offset: float) -> None:
        """Act on recorded cancels not heard yet, each as if heard when it was made: its
        ``at`` (the database's clock) less ``offset`` is that moment by this process's
        monotonic clock, the one a run's request arrival is measured by."""
        for record in records:
            at = record.get("at")
            if not isinstance(at, (int, float)) or isinstance(at, bool):
                continue
            run_id = record.get("run")
            if run_id is not None:
                well_formed = isinstance(run_id, str) and _RUN_ID.match(run_id)
                if well_formed and self._first_time(record.get("id")):
                    self._cancel_run_here(str(run_id))
                continue
            agent, session = record.get("agent"), record.get("session")
            if not _session(agent, session):
                continue
            if not self._first_time(record.get("id")):
                continue
            self.board.cancel_session_at(str(agent), str(session), at - offset)

    def _cancel_run_here(self, run_id: str) -> int:
        """Stop run ``run_id`` here; one whose id is being claimed stops once started."""
        run = self.board.runs.get(run_id)
        if run is not None:
            return int(run.cancel())
        now = time.monotonic()
        if len(self._cancelled_runs) > 1000:
            self._cancelled_runs = {
                k: t for k, t in self._cancelled_runs.items() if now - t < 2 * CANCEL_KEPT
            }
        self._cancelled_runs[run_id] = now
        return 0

    def cancelled_while_claimed(self, run_id: str) -> bool:
        """Whether a cancel of ``run_id`` arrived while its id was being claimed here: the
        run, just started, must stop."""
        return self._cancelled_runs.pop(run_id, None) is not None

    def act(self, signal: dict[str, Any]) -> int:
        """Do what another replica's signal asks, once checked; how many runs it stopped."""
        if signal.get("v") != 1 or signal.get("from") == self.id:
            return 0  # another version's, or ours (acted on when it was sent)
        kind = signal.get("kind")
        if kind == "cancel-session":
            agent, session = signal.get("agent"), signal.get("session")
            if not (isinstance(agent, str) and isinstance(session, str)):
                return 0
            if not _session(agent, session):
                return 0
            self._first_time(signal.get("id"))
            return self.board.cancel_session(agent, session)
        if kind == "cancel-run":
            run_id = signal.get("run")
            if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
                return 0
            self._first_time(signal.get("id"))
            return self._cancel_run_here(run_id)
        return 0

    # -- cancelling everywhere ---------------------------------------------------------

    def _first_time(self, cancel_id: object) -> bool:
        """Whether the cancel ``cancel_id`` is heard for the first time (remembered now)."""
        if not (isinstance(cancel_id, str) and _CANCEL_ID.match(cancel_id)):
            return True
        now = time.monotonic()
        if cancel_id in self._heard:
            return False
        if len(self._heard) > 1000:
            self._heard = {k: t for k, t in self._heard.items() if now - t < 2 * CANCEL_KEPT}
        self._heard[cancel_id] = now
        return True

    async def cancel_session(self, agent: str, session: str) -> None:
        """Ask the other replicas to stop the agent's runs in ``session``: recorded, for
        those not listening now, then signalled. Refused 503 when either fails."""
        cancel_id = secrets.token_hex(8)
        self._first_time(cancel_id)
        record = {"id": cancel_id, "agent": agent, "session": session}
        await asyncio.to_thread(self._record, _cancel_key(agent, session), record)
        await self._send({"kind": "cancel-session", **record})

    def _record(self, key: str, record: dict[str, str]) -> None:
        """Record a cancel at ``key``, for replicas not listening now, with the database's
        clock; Refused 503 when the database does not answer."""
        assert self._channel is not None, "start() first"
        try:
            at = self._channel.clock()
            self.records.put_many({key: json.dumps({**record, "at": at}).encode()})
        except AgexError as exc:
            raise Refused(503, f"{exc.message}; the other replicas were not told") from None

    async def cancel_run(self, run_id: str) -> int | None:
        """Ask the replica holding ``run_id`` to stop it: 1 when it was running there, 0 when
        it has ended; None when no other replica claimed it (this one holds it no longer,
        or none ever did)."""
        claim = await self._claim(run_id)
        if claim is None or claim.get("replica") == self.id:
            return None
        if claim.get("ended"):
            return 0
        cancel_id = secrets.token_hex(8)
        self._first_time(cancel_id)
        record = {"id": cancel_id, "run": run_id}
        await asyncio.to_thread(self._record, _cancel_run_key(run_id), record)
        await self._send({"kind": "cancel-run", **record})
        return 1

    def ended(self, run_id: str) -> None:
        """Mark this replica's claim on a run that ended, so that another replica asked to
        cancel it says none was stopped. Only the claim as written is swapped: one dropped
        meanwhile (the replica stopping) is not written again."""
        claim = self._claims.get(run_id)
        if claim is None:
            return
        marked = json.dumps({**json.loads(claim), "ended": True}).encode()

        def mark() -> None:
            try:
                swapped = self.records.compare_and_set(_key(run_id), claim, marked)
                if swapped and run_id in self._claims:
                    self._claims[run_id] = marked
            except AgexError as exc:  # then it is cancelled in vain: harmless
                log.warning("could not mark run %s ended: %s", run_id, exc.message)

        asyncio.get_running_loop().run_in_executor(None, mark)

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
            self._claims[run_id] = record
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
        self._claims.pop(run_id, None)

        def drop() -> None:
            try:
                self.records.delete(key)
            except AgexError as exc:  # left behind: harmless, and small
                log.warning("could not drop the claim on run %s: %s", run_id, exc.message)

        asyncio.get_running_loop().run_in_executor(None, drop)

    async def holder(self, run_id: str) -> str | None:
        """The replica that claimed ``run_id`` (None: none did); Refused 503 when the
        database cannot be reached."""
        claim = await self._claim(run_id)
        if claim is None:
            return None
        holder = claim.get("replica")
        return holder if isinstance(holder, str) else "an unknown replica"

    async def _claim(self, run_id: str) -> dict[str, Any] | None:
        try:
            found = await asyncio.to_thread(self.records.get, _key(run_id))
        except AgexError as exc:
            raise Refused(503, f"could not look run {run_id} up: {exc.message}") from None
        if found is None:
            return None
        try:
            claim = json.loads(found)
        except ValueError:
            return {}
        return claim if isinstance(claim, dict) else {}


def misdirected(run_id: str, holder: str | None) -> Refused:
    return Refused(
        421,
        f"run {run_id} belongs to another replica of this server ({holder}); {RULE}. If "
        "that replica stopped, the run is lost and its session is at its last commit: start "
        "the task again",
    )


def _key(run_id: str) -> str:
    return f"runs/{run_id}"


def _cancel_key(agent: str, session: str) -> str:
    """Where the last cancel of an agent's runs in a session is recorded: a digest, as the
    names may hold any character."""
    digest = hashlib.sha256(json.dumps([agent, session]).encode()).hexdigest()[:32]
    return f"cancel/{digest}"


def _cancel_run_key(run_id: str) -> str:
    """Where a cancel of one run, asked of a replica that does not hold it, is recorded."""
    return f"cancel-run/{run_id}"


def _field(found: bytes | None, name: str) -> object:
    """A field of a JSON record, None when it is not one."""
    try:
        record = json.loads(found or b"null")
    except ValueError:
        return None
    return record.get(name) if isinstance(record, dict) else None


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _LONGEST_NAME


def _session(agent: object, session: object) -> bool:
    """Whether an agent's name and a session, from a signal or a record, are well formed."""
    if not (_name(agent) and _name(session)):
        return False
    try:
        check_session(str(session))
    except ValueError:
        return False
    return True
