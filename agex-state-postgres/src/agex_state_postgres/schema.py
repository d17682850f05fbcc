"""agex's tables, made on first use and versioned: ``agex_schema`` records the version, and
an agex that finds an older one upgrades it (one step at a time, under a lock, in one
transaction), and one that finds a newer one refuses to touch it.

A user that may not create tables can still use them once an owner has made them: run
:data:`CREATE` as that owner (docs/state.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agex.errors import StateLoadError

if TYPE_CHECKING:
    import psycopg

    from agex_state_postgres.place import Place

#: The version these tables are at.
VERSION = 1
#: What makes them, at VERSION.
CREATE = f"""
CREATE TABLE IF NOT EXISTS agex_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS agex_kv (
    store text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (store, key)
);
INSERT INTO agex_schema (version) SELECT {VERSION} WHERE NOT EXISTS (SELECT FROM agex_schema);
"""
#: What takes the tables from version N to N + 1, by N (none yet: version 1 is the first).
UPGRADES: dict[int, str] = {}
#: Held while the tables are made or upgraded, so that replicas starting at once take turns.
_LOCK = 0x61676578  # "agex"


def prepare(place: Place, timeout: float) -> None:
    """Make the tables if missing, upgrade them if older; StateLoadError if that cannot be
    done, saying why (no such database, no permission, a newer agex's tables)."""
    import psycopg

    from agex_state_postgres.deadline import deadline

    # Connecting is bounded by connect_timeout; what follows, by a deadline of our own (a
    # server that stops answering bounds nothing, and the advisory lock waits its turn).
    with place.connect(timeout) as db, deadline(db, timeout) as expired:
        try:
            if _version(db) == VERSION:
                return  # the usual case: nothing to lock
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                found = _version(db)
                if found is None:
                    db.execute(CREATE.encode())
                elif found > VERSION:
                    raise StateLoadError(
                        f"the {place} holds agex tables at version {found}, newer than this "
                        f"agex-state-postgres knows ({VERSION}): upgrade agex-state-postgres"
                    )
                else:
                    for step in range(found, VERSION):
                        db.execute(UPGRADES[step].encode())
                    db.execute("UPDATE agex_schema SET version = %s", (VERSION,))
            return
        except psycopg.Error as exc:
            if expired:
                failure = StateLoadError(
                    f"could not make agex's tables in the {place}: the database did not "
                    f"answer within {timeout:g} s; check that the server runs and answers, "
                    "or give the storage a larger timeout (agex serve: --state-timeout)"
                )
            else:
                failure = StateLoadError(
                    f"could not make agex's tables in the {place}: {place.cause(exc)}; or "
                    "have the database's owner make them (docs/state.md)"
                )
    raise failure  # outside the handler: no psycopg error (nor connection) as its context


def _version(db: psycopg.Connection[Any]) -> int | None:
    """The recorded version; None when there are no agex tables yet."""
    made = db.execute("SELECT to_regclass('agex_schema') IS NOT NULL").fetchall()
    if not made[0][0]:
        return None
    found = db.execute("SELECT max(version) FROM agex_schema").fetchall()
    return None if found[0][0] is None else int(found[0][0])
