"""Storage "modal-dict" (``path`` is the Dict's name): every key in a Modal Dict.

Modal drops a Dict entry nobody has read or written for 7 days, entry by entry, while a task
reads only the newest part of a session. So once a day the first use of the Dict reads every
entry in it (keeping what an older commit still names), and an entry that went anyway (a week
without any use) is reported as forgotten, never taken for a key that was never written.

A key that may move holds a token with its value, and moves by claims (see ``claims``).

No Dict entry holds more than ``PIECE`` bytes: a larger value is stored in pieces, or (a
blob or commit of the disk tier) in the Volume only; a step's writes go in requests of at
most ``REQUEST`` bytes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from agex.errors import AgexError, StateIntegrityError, StateLoadError, StateWriteError
from agex.state.versioned import IMMUTABLE
from agex.storage import check_items, check_key, check_value
from agex_host_modal import names, sdk
from agex_host_modal.storage.claims import (
    _CLAIM,
    _DATA,
    _GONE,
    _Claim,
    _claim,
    _moved,
    _seq,
    _token,
    _walk,
)
from agex_host_modal.storage.clock import DAY, _now, _ticks
from agex_host_modal.storage.copies import _LocalCopies
from agex_host_modal.storage.surfaced import _surfaced

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
#: Modal documents two limits on a Dict: an object of at most 100 MiB, and at most this many
#: entries in one update. A request Modal finds too large fails with RequestSizeError (HTTP
#: 413); no size is documented for a request as a whole.
DICT_UPDATE_ENTRIES = 10_000
#: The most bytes agex puts in one Dict entry (Modal recommends Dict objects under 5 MiB). A
#: larger value is kept in pieces of this size (memory tier), or only in the Volume (disk
#: tier, whose mount serves it from the container's disk).
PIECE = 4 * _MIB
#: The most bytes agex sends in one Dict request, far under the 100 MiB Modal allows an
#: object: a step's values go in as many requests as it takes.
REQUEST = 16 * _MIB
#: Dicts made before this day are Modal's legacy Dicts: their entries expire 30 days after
#: being written, whatever reads them, and Modal keeps them in memory, where a server restart
#: may lose them (Modal's Dict reference, "Lifetime of a Dict and its items").
LEGACY_BEFORE = datetime(2025, 5, 20, tzinfo=UTC)
#: A writer claims a move, and writes a data entry, only this many seconds after reading what
#: it builds on; slower, it reads again.
WINDOW = 10.0
#: A claim is removed once no reader can reach it and it was made this long ago: far more than
#: WINDOW, so no writer can still be about to claim on the token it was made on.
SETTLE = 60.0
#: Reads in flight at once during the daily look.
LOOK_THREADS = 16
#: Keys that hold a session's turn (``agex.state.turn``): a lease that means nothing once its
#: holder is gone. The disk tier keeps them in the Dict only, so renewing one every few
#: seconds costs no Volume commit.
LEASES = ("t/",)

#: Dict key prefixes besides those of claims (``claims``): a piece of a large value, the mark
#: of a day's look.
_PIECE, _LOOK = "p:", "a:"
#: Estimated bytes a Dict request spends on an entry besides its key and value (pickling).
_OVERHEAD = 256


class ModalDictStorage:
    provider = "modal-dict"

    def __init__(self, path: str | None = None, *, backed: bool = False) -> None:
        self.name = names.check(path, "the path of a modal-dict storage (the Dict's name)")
        sdk.check_credentials()
        #: The disk tier's index: a Volume holds everything too, so an entry the Dict forgot
        #: is only a miss, and nothing needs keeping alive.
        self.backed = backed
        #: Called by the daily look with the (token, value) of each key moved by
        #: compare-and-set since the last look (the disk tier checks its Volume has them).
        self.on_look: Callable[[dict[str, tuple[str, bytes]]], None] | None = None
        self._handle = sdk.modal().Dict.from_name(self.name, create_if_missing=True)
        self._opened = False
        self._cache = _LocalCopies(self.name) if sdk.in_container() else None
        self._lock = threading.Lock()
        self._claims: list[_Claim] = []
        self._looked: int | None = None  # the last day this object saw looked after

    @property
    def _dict(self) -> Any:
        if not self._opened:
            _refuse_legacy(self._handle, self.name)
            self._opened = True
        return self._handle

    @_surfaced("read")
    def get(self, key: str) -> bytes | None:
        check_key(key)
        self._daily()
        if not key.startswith(IMMUTABLE):
            return self._bytes(self._current(key)[1], key)
        copy = None if self._cache is None else self._cache.get(key)
        if copy is not None:
            return copy
        value = self._bytes(self._dict.get(_DATA + key), key)
        if value is None:
            if self.backed:
                return None
            raise _forgotten(self.name, key)
        if self._cache is not None:
            self._cache.put(key, value)
        return value

    @_surfaced("write")
    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        if not checked:
            return
        self._daily()
        # Pieces first, then what never changes, then moving keys: a request that fails
        # midway leaves nothing named that is not stored.
        pieces: dict[str, bytes] = {}
        fixed: dict[str, Any] = {}
        moving: dict[str, Any] = {}
        for key, value in checked.items():
            stored = self._stored(value, pieces)
            if key.startswith(IMMUTABLE):
                fixed[_DATA + key] = stored
            else:
                moving[_DATA + key] = (_token(), stored)
        self._send({**pieces, **fixed, **moving})
        if self._cache is not None:
            for key, value in checked.items():
                if key.startswith(IMMUTABLE):
                    self._cache.put(key, value)

    @_surfaced("write")
    def delete(self, key: str) -> None:
        check_key(key)
        if not key.startswith(IMMUTABLE):
            # A token past the key's last one: readers start from it while the key is absent.
            tokens, _ = self._chain(key)
            self._dict.put(_GONE + key, _token(tokens[-1]))
        self._dict.pop(_DATA + key, None)
        if self._cache is not None:
            self._cache.delete(key)

    @_surfaced("write")
    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        return self.move(key, expected, new) is not None

    @_surfaced("write")
    def move(self, key: str, expected: bytes | None, new: bytes) -> tuple[str, str] | None:
        """Compare-and-set that says what moved: the token moved from and the new token;
        None when the key did not hold ``expected``."""
        check_key(key)
        new = check_value(key, new)
        expected = None if expected is None else check_value(key, expected)
        self._daily()
        pieces: dict[str, bytes] = {}
        stored = self._stored(new, pieces)
        self._send(pieces)
        for _ in range(3):
            start = _ticks()
            tokens, held = self._current(key, start)
            if self._bytes(held, key) != expected:
                return None
            if _ticks() - start > WINDOW:
                continue  # too slow to claim safely on what was read: read again
            token = _token(tokens[-1], moved=True)
            claim = _claim(key, tokens[-1])
            if not self._dict.put(claim, (token, stored, _now()), skip_if_exists=True):
                # Modal's client retries a put whose answer was lost: a retry finds the
                # claim its first attempt made. Only another token means another writer.
                found = self._dict.get(claim)
                if not isinstance(found, tuple) or not found or found[0] != token:
                    return None  # another writer moved it first
            if _ticks() - start <= WINDOW:
                self._dict.put(_DATA + key, (token, stored))
            self._settle(key, tokens)
            return tokens[-1], token
        raise StateWriteError(
            f"storage {self.provider} {self.name!r}: Modal answered too slowly (over "
            f"{WINDOW:g} s) to move {key!r} safely; run the task again"
        )

    @_surfaced("read")
    def keys(self, prefix: str = "") -> list[str]:
        start = _DATA + prefix
        listed = self._dict.keys()  # a Modal Dict lists its keys with keys(), not iter()
        return sorted(k[len(_DATA) :] for k in listed if isinstance(k, str) and k.startswith(start))

    # -- for the disk tier -------------------------------------------------------------

    def restore(self, key: str, token: str | None, value: bytes) -> bool:
        """Put back a value the Dict forgot and a Volume kept, unless the key was deleted
        or came back meanwhile; whether the key may be read as ``value``."""
        if key.startswith(IMMUTABLE):
            if len(value) <= PIECE:
                self._dict.put(_DATA + key, value, skip_if_exists=True)
            return True
        if self._dict.get(_GONE + key) is not None:
            return False  # deleted: the Volume's copy is on its way out
        pieces: dict[str, bytes] = {}
        stored = self._stored(value, pieces)
        self._send(pieces)
        self._dict.put(_DATA + key, (token or _token(), stored), skip_if_exists=True)
        return True

    # -- inside ------------------------------------------------------------------------

    def _stored(self, value: bytes, pieces: dict[str, bytes]) -> Any:
        """How ``value`` is stored in its entry: itself, or for a value larger than PIECE,
        what names its pieces (added to ``pieces``)."""
        if len(value) <= PIECE:
            return value
        name = f"{int(_now())}.{secrets.token_hex(6)}"
        count = 0
        for count, start in enumerate(range(0, len(value), PIECE), 1):
            pieces[f"{_PIECE}{name}:{count - 1}"] = value[start : start + PIECE]
        return {
            "pieces": name,
            "count": count,
            "size": len(value),
            "sha256": hashlib.sha256(value).hexdigest(),
        }

    def _bytes(self, stored: Any, key: str) -> bytes | None:
        """The bytes an entry's stored form holds (its pieces put together)."""
        if stored is None or isinstance(stored, bytes):
            return stored
        if isinstance(stored, tuple):  # a moving key's (token, value) under this key
            return self._bytes(stored[1], key)
        if isinstance(stored, dict) and "pieces" in stored:
            found = [
                self._dict.get(f"{_PIECE}{stored['pieces']}:{i}") for i in range(stored["count"])
            ]
            if all(isinstance(piece, bytes) for piece in found):
                value = b"".join(found)
                if hashlib.sha256(value).hexdigest() == stored["sha256"]:
                    return value
            if self.backed:
                return None
            raise _forgotten(self.name, key)
        raise StateIntegrityError(
            f"Modal Dict {self.name!r} holds something agex did not write under {key!r}: "
            f"{type(stored).__name__}; use a Dict only agex writes to"
        )

    def _send(self, entries: Mapping[str, Any]) -> None:
        """Write entries in order, in requests that each fit Modal's limits."""
        batch: dict[str, Any] = {}
        size = 0
        for key, stored in entries.items():
            cost = len(key) + _size(stored) + _OVERHEAD
            if batch and (size + cost > REQUEST or len(batch) >= DICT_UPDATE_ENTRIES):
                self._dict.update(batch)
                batch, size = {}, 0
            batch[key] = stored
            size += cost
        if batch:
            self._dict.update(batch)

    def _chain(self, key: str) -> tuple[list[str], Any]:
        return _walk(self._dict.get, key)

    def _current(self, key: str, start: float | None = None) -> tuple[list[str], Any]:
        """:meth:`_chain`, then the data entry moved to its end (saving later readers the
        walk), unless the walk took longer than WINDOW."""
        start = _ticks() if start is None else start
        tokens, value = self._chain(key)
        if len(tokens) > 1 and _ticks() - start <= WINDOW:
            self._dict.put(_DATA + key, (tokens[-1], value))
        return tokens, value

    def _settle(self, key: str, chain: list[str]) -> None:
        """Note the claim just made on ``chain[-1]``, and remove this storage's claims that no
        reader can reach any more (their token is off their key's chain) made SETTLE seconds
        ago or more."""
        now = _ticks()
        with self._lock:
            self._claims.append(_Claim(key, chain[-1], now))
            del self._claims[:-1000]  # past that, the daily look removes them
            due = [c for c in self._claims if now - c.at >= SETTLE]
        if not due:
            return
        chains = {key: set(chain)}
        done = []
        for claim in due:
            if claim.key not in chains:
                chains[claim.key] = set(self._chain(claim.key)[0])
            if claim.token not in chains[claim.key]:
                self._dict.pop(_claim(claim.key, claim.token), None)
                done.append(claim)
        with self._lock:
            self._claims = [c for c in self._claims if c not in done]

    # -- the daily look ----------------------------------------------------------------

    def _daily(self) -> None:
        """On the first use of a day (across every process using the Dict), look after it."""
        day = int(_now() // DAY)
        with self._lock:
            if self._looked == day:
                return
            self._looked = day
        try:
            if self._dict.put(f"{_LOOK}{day}", _now(), skip_if_exists=True):
                self._look()
        except AgexError:
            raise
        except Exception as exc:  # the session goes on; the next day's first use looks again
            logger.warning("agex could not look after Modal Dict %r today: %s", self.name, exc)

    def _look(self) -> None:
        """Read every entry a session may still use, so that Modal keeps it (memory tier);
        remove claims and pieces nothing reaches; hand the keys moved since the last look to
        ``on_look``. Costs one listing and one read per entry (the Dict's bytes), LOOK_THREADS
        at a time; the disk tier reads only its moving keys and claims."""
        keys = self._dict.keys()  # a Modal Dict lists its keys with keys(), not iter()
        listed = [k for k in keys if isinstance(k, str)]
        claims: dict[str, list[str]] = {}
        for entry in listed:
            if entry.startswith(_CLAIM):
                token, _, key = entry[len(_CLAIM) :].partition(":")
                claims.setdefault(key, []).append(token)
        data = [k[len(_DATA) :] for k in listed if k.startswith(_DATA)]
        moving = {k for k in data if not k.startswith(IMMUTABLE)} | claims.keys()
        if self.backed:
            wanted = [_DATA + k for k in moving] + [_GONE + k for k in claims]
        else:
            wanted = [k for k in listed if k.startswith((_DATA, _GONE))]
        wanted += [_claim(k, t) for k, tokens in claims.items() for t in tokens]
        read = self._read_all(wanted)
        tips: dict[str, tuple[str, bytes]] = {}
        for key in moving:
            chain, value = _walk(read.get, key)
            for token in set(claims.get(key, ())) - set(chain):
                made = read.get(_claim(key, token))
                born = made[2] if isinstance(made, tuple) and len(made) > 2 else 0.0
                if _now() - born >= DAY:  # no writer still works from what led to it
                    self._dict.pop(_claim(key, token), None)
            if isinstance(value, bytes) and not key.startswith(LEASES):
                tips[key] = (chain[-1], value)
        self._tidy_pieces([k for k in listed if k.startswith(_PIECE)], read.values())
        if self.on_look is not None:
            since = _last_look([k[len(_LOOK) :] for k in listed if k.startswith(_LOOK)]) - 3600
            moved = {k: t for k, t in tips.items() if _moved(t[0]) and _seq(t[0]) >= since * 1000}
            if moved:
                self.on_look(moved)

    def _tidy_pieces(self, pieces: list[str], stored: Iterable[Any]) -> None:
        """Read the pieces an entry names (memory tier: so Modal keeps them); remove those
        none names, a day after they were written (when no writer is still about to name
        them)."""
        named = set()
        for each in stored:
            for part in each if isinstance(each, tuple) else (each,):
                if isinstance(part, dict) and "pieces" in part:
                    named.add(str(part["pieces"]))
        if not self.backed:
            self._read_all([k for k in pieces if _piece_name(k) in named])
        for entry in pieces:
            name = _piece_name(entry)
            if name not in named and _now() - _piece_time(name) >= DAY:
                self._dict.pop(entry, None)

    def _read_all(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        with ThreadPoolExecutor(LOOK_THREADS) as pool:
            return dict(zip(keys, pool.map(self._dict.get, keys), strict=True))

    def __repr__(self) -> str:
        return f"ModalDictStorage({self.name!r})"


def _last_look(marks: list[str]) -> float:
    """When the look before today's began (the start of its day; 0: none is known)."""
    today = int(_now() // DAY)
    days = [int(mark) for mark in marks if mark.isdigit() and int(mark) < today]
    return max(days, default=0) * DAY


def _piece_name(entry: str) -> str:
    return entry[len(_PIECE) :].rpartition(":")[0]


def _piece_time(name: str) -> float:
    head = name.partition(".")[0]
    return float(head) if head.isdigit() else 0.0


def _size(stored: Any) -> int:
    if isinstance(stored, bytes | str):
        return len(stored)
    if isinstance(stored, tuple):
        return sum(_size(part) for part in stored if isinstance(part, bytes | str | dict))
    return 200


def _forgotten(name: str, key: str) -> StateIntegrityError:
    what = f"commit {key[2:]}" if key.startswith("c/") else f"value {key}"
    return StateIntegrityError(
        f"{what} is not in Modal Dict {name!r}: a Dict forgets an entry nobody read or wrote "
        "for 7 days, so this part of the session's history is gone (or it was never written "
        'there). Keep state that must last with storage="disk" (a Modal Volume); '
        "agent.state(session).revert(<a commit from history()>) moves the session back to a "
        "commit that is whole"
    )


def _refuse_legacy(handle: Any, name: str) -> None:
    """Refuse a Dict made before Modal's 2025 change (its metadata says when it was made)."""
    made = handle.info().created_at
    if made.tzinfo is None:
        made = made.replace(tzinfo=UTC)
    if 0 < made.timestamp() < LEGACY_BEFORE.timestamp():  # (0: Modal did not say)
        raise StateLoadError(
            f"Modal Dict {name!r} was made on {made:%Y-%m-%d}, before Modal's Dicts changed on "
            f"{LEGACY_BEFORE:%Y-%m-%d}: its entries expire 30 days after they were written, "
            "however often they are read, and Modal may lose it on a server restart, so agex "
            "cannot keep state in it. Use a new Dict: another path, or delete this one "
            f"(`modal dict delete {name}`, which loses what it holds) and run again"
        )
