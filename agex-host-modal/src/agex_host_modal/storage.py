"""Storages "modal-dict" and "modal-volume": versioned state kept in Modal.

- ``modal-dict`` (``path`` is the Dict's name): every key in a Modal Dict. Modal drops a Dict
  entry nobody has read or written for 7 days, entry by entry, while a task reads only the
  newest part of a session. So once a day the first use of the Dict reads every entry in it
  (keeping what an older commit still names), and an entry that went anyway (a week without
  any use) is reported as forgotten, never taken for a key that was never written.
- ``modal-volume`` (``path`` names a Volume and a Dict): every key in the Volume, which keeps
  it until it is deleted, and the small ones in the Dict, which answers reads first and moves
  heads atomically. Inside a Modal container that mounts the Volume, files go through the
  mount: reloaded at the start of a task, committed once per write. Elsewhere (on the client,
  inspecting history) through the Volume's API. See "the Volume's layout" below.

A Dict has no compare-and-set, only "put unless present", so a key that may move (a head, a
session's turn) holds a token with its value; whoever claims the successor of the token it
read (``put(skip_if_exists=True)`` on a claim key) wins the move. Readers follow claims, so a
winner that dies between its claim and its data write loses nothing. A claim no reader can
reach any more (the data entry points past it) is removed by the writer that made it, a
minute later, or by the daily look, so a moving key keeps a few claims, not one per move.

No Dict entry holds more than ``PIECE`` bytes: a larger value is stored in pieces, or (a
blob or commit of the disk tier) in the Volume only; a step's writes go in requests of at
most ``REQUEST`` bytes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import quote, unquote

from agex.errors import AgexError, StateIntegrityError, StateLoadError, StateWriteError
from agex.state.versioned import IMMUTABLE
from agex.storage import check_items, check_key, check_value
from agex_host_modal import names, sdk

logger = logging.getLogger(__name__)

#: Where a function mounts the Volume of a state path (``mount_point``).
MOUNT_ROOT = "/agex-volumes"

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
#: How often the Dict is looked after (kept alive, its spent claims removed): the first use
#: of a day does it, so an entry is read at least every day the Dict is used.
DAY = 24 * 3600.0
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
#: The Volume version: 1. Modal documents Volumes v2 as a beta that may still lose data and
#: is not for mission-critical data, and the disk tier is the one meant to last; agex keeps a
#: v1 Volume well under its guidance (at most 50,000 files) by packing what never changes (see
#: the layout below). Existing Volumes are v1 too, and a Volume cannot change version.
VOLUME_VERSION = 1

#: Dict key prefixes: a key's data, a claim on a moving key's token, the token of a moving key
#: that was deleted, a piece of a large value, the mark of a day's look.
_DATA, _CLAIM, _GONE, _PIECE, _LOOK = "k:", "c:", "g:", "p:", "a:"
#: Estimated bytes a Dict request spends on an entry besides its key and value (pickling).
_OVERHEAD = 256


def mount_point(name: str) -> str:
    return f"{MOUNT_ROOT}/{name}"


def volume(name: str) -> Any:
    """The Volume of a modal-volume storage (created if missing), at VOLUME_VERSION."""
    return sdk.modal().Volume.from_name(name, create_if_missing=True, version=VOLUME_VERSION)


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _surfaced(doing: str) -> Callable[[_Method], _Method]:
    """A storage method whose failures in Modal or in the Volume's files (a request too
    large, Modal unreachable, a full or read-only mount) raise agex errors naming the
    store and the cause. A failed write leaves the session on its last commit."""

    def wrap(method: _Method) -> _Method:
        @functools.wraps(method)
        def surfaced(self: Any, *args: Any, **kwargs: Any) -> Any:
            from modal.exception import Error as ModalError

            try:
                return method(self, *args, **kwargs)
            except AgexError:
                raise
            except (OSError, ModalError) as exc:
                what = f"storage {self.provider} {self.name!r}"
                cause = f"{type(exc).__name__}: {exc}"
                if doing == "write":
                    raise StateWriteError(
                        f"{what} could not take a write ({cause}); the session stays on its "
                        "last commit: run the task again once the cause is gone"
                    ) from exc
                raise StateLoadError(f"{what} could not be read ({cause})") from exc

        return cast(_Method, surfaced)

    return wrap


# -- time ------------------------------------------------------------------------------


def _clock() -> Callable[[], float] | None:
    """The clock of a stand-in for Modal (tests move it), whose Dict ages entries by it."""
    clock = getattr(sdk.modal(), "clock", None)
    return clock if callable(clock) else None


def _now() -> float:
    """Wall time, as Modal ages Dict entries."""
    clock = _clock()
    return time.time() if clock is None else clock()


def _ticks() -> float:
    """Seconds on a clock that only moves forward, for how long something took."""
    clock = _clock()
    return time.monotonic() if clock is None else clock()


# -- tokens of moving keys ---------------------------------------------------------------


def _token(after: str | None = None, *, moved: bool = False) -> str:
    """A token for a key's next value: a sequence number (past the token it follows, and
    the time in milliseconds, so a later write sorts later), then ``.`` for a value set by
    compare-and-set (``_`` for one written over), and a random part."""
    seq = int(_now() * 1000)
    if after is not None:
        seq = max(seq, _seq(after) + 1)
    return f"{seq}{'.' if moved else '_'}{secrets.token_hex(8)}"


def _seq(token: str) -> int:
    """A token's sequence number; 0 for tokens written before tokens had one."""
    head = token.replace("_", ".").partition(".")[0]
    return int(head) if head.isdigit() and head != token else 0


def _moved(token: str) -> bool:
    head, dot, _ = token.partition(".")
    return bool(dot) and head.isdigit()


def _claim(key: str, token: str) -> str:
    return f"{_CLAIM}{token}:{key}"


class _Claim(NamedTuple):
    """A claim this storage made, to remove once no reader can reach it."""

    key: str
    token: str
    at: float


# -- the memory tier ---------------------------------------------------------------------


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
            if not self._dict.put(
                _claim(key, tokens[-1]), (token, stored, _now()), skip_if_exists=True
            ):
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


def _walk(get: Callable[[str], Any], key: str) -> tuple[list[str], Any]:
    """The tokens from the one the key's data entry holds to the end of the claims made on
    top of it, and the value (stored form) there; ``get`` reads an entry."""
    stored = get(_DATA + key)
    if stored is None:
        gone = get(_GONE + key)
        tokens, value = [gone if isinstance(gone, str) else "0"], None
    elif isinstance(stored, tuple):
        tokens, value = [stored[0]], stored[1]
    else:  # written as immutable: its bytes are its identity
        tokens, value = ["=" + _digest(stored)], stored
    while (successor := get(_claim(key, tokens[-1]))) is not None:
        tokens.append(successor[0])
        value = successor[1]
    return tokens, value


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


def _digest(stored: Any) -> str:
    if isinstance(stored, bytes):
        return hashlib.sha256(stored).hexdigest()
    return hashlib.sha256(json.dumps(stored, sort_keys=True, default=str).encode()).hexdigest()


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


# -- the disk tier ---------------------------------------------------------------------


class ModalVolumeStorage:
    provider = "modal-volume"

    def __init__(self, path: str | None = None) -> None:
        self.name = names.check(path, "the path of a modal-volume storage (the Volume's name)")
        self.index = ModalDictStorage(self.name, backed=True)
        self.index.on_look = self._repair
        self._volume = volume(self.name)
        self._views: dict[str, _Files] = {}
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """See what other containers committed (at the start of each task)."""
        self._files().reload()

    @_surfaced("read")
    def get(self, key: str) -> bytes | None:
        value = self.index.get(key)
        if value is not None or key.startswith(LEASES):
            return value
        found = self._files().read(check_key(key))
        if found is None:
            return None
        token, value = found
        return value if self.index.restore(key, token, value) else None

    @_surfaced("write")
    def put_many(self, items: Mapping[str, bytes]) -> None:
        checked = check_items(items)
        if not checked:
            return
        self._files().write_many({k: v for k, v in checked.items() if not k.startswith(LEASES)})
        # Large blobs are not mirrored: Modal advises small Dict objects, the mount serves
        # them from the container's disk, and they would cost the Dict request after request.
        # A key that may change is mirrored whatever its size (in pieces): the Dict decides
        # its moves.
        self.index.put_many(
            {k: v for k, v in checked.items() if len(v) <= PIECE or not k.startswith(IMMUTABLE)}
        )

    @_surfaced("write")
    def delete(self, key: str) -> None:
        self.index.delete(key)
        if not key.startswith(LEASES):
            self._files().remove(key)

    @_surfaced("write")
    def compare_and_set(self, key: str, expected: bytes | None, new: bytes) -> bool:
        """The Dict decides the move; then the Volume gets the new value as a file named by
        its token, so that the newest move wins there whatever order containers commit in.
        If the Volume refuses it, the move is taken back and the write fails. A move whose
        file was never written (a container stopped between) is superseded by the key's
        next move, or written by the next day's look, long before the Dict forgets it
        unless the state goes unused for a week."""
        new = check_value(check_key(key), new)
        expected = None if expected is None else check_value(key, expected)
        if key.startswith(LEASES):
            return self.index.compare_and_set(key, expected, new)
        self.get(key)  # a value the Dict forgot comes back from the Volume first
        moved = self.index.move(key, expected, new)
        if moved is None:
            return False
        before, token = moved
        try:
            self._files().write_move(key, token, new, before)
        except Exception:  # (a container stopped here runs nothing: see above)
            if expected is not None:
                self.index.compare_and_set(key, new, expected)
            elif self.index.get(key) == new:
                self.index.delete(key)
            raise
        return True

    @_surfaced("read")
    def keys(self, prefix: str = "") -> list[str]:
        return sorted(set(self.index.keys(prefix)) | set(self._files().keys(prefix)))

    def _repair(self, tips: dict[str, tuple[str, bytes]]) -> None:
        """The daily look: every moving key's current value is in the Volume."""
        files = self._files()
        for key, (token, value) in tips.items():
            found = files.read(key)
            if found is None or found[1] != value:
                files.write_move(key, token, value, None)

    def _files(self) -> _Files:
        """The mount when this code runs in a container that has one, else the API."""
        root = sdk.mounted(mount_point(self.name))
        where = str(root) if root.is_dir() else ""
        with self._lock:
            files = self._views.get(where)
            if files is None:
                files = _MountedFiles(root, self._volume) if where else _RemoteFiles(self._volume)
                self._views[where] = files
        return files

    def __repr__(self) -> str:
        return f"ModalVolumeStorage({self.name!r})"


# -- the Volume's layout ---------------------------------------------------------------
#
# - What never changes (blobs, commits) goes in packs: one file per write holding every
#   value of it, ``+packs/0/<id>``. Once a level holds FAN packs they are merged into one a
#   level up, so a session of n steps keeps under FAN files per level, log_FAN(n) levels.
#   A value larger than PIECE gets a pack of its own, never merged: ``+packs/big/<id>``.
# - A key written by put_many: one file named by the quoted key, ``h%2Fns%2Fsession``
#   (cut into folders past _SEGMENT characters), as every key was laid out before packs.
# - A key moved by compare-and-set: a folder of its values named by their tokens,
#   ``h%2Fns%2Fsession+/<seq>.<random>``; the newest sequence is the value. A move removes
#   the values before the one it follows, so the folder holds two or three.
#
# Quoting never leaves ``+`` or ``@`` in a name, so these never collide with a quoted key.
# Files written before packs (one per key) are still read.

#: Longest file name the encoding makes; longer encoded keys are split into folders.
_SEGMENT = 200
_PACKS = "+packs"
_MOVES = "+"
#: Packs per level before they are merged into one.
FAN = 16
_MAGIC = b"agex-pack 1\n"


def _file_of(key: str) -> str:
    """The key's file, relative to the Volume's root.

    Quoted, so any key is a flat name; long names are cut into folders whose names end in
    ``@`` (which quoting never leaves in a name), so a file and a folder never collide.
    """
    quoted = quote(key, safe="")
    parts = [quoted[i : i + _SEGMENT] for i in range(0, len(quoted), _SEGMENT)]
    return "/".join([*(p + "@" for p in parts[:-1]), parts[-1]])


def _key_of(file: str) -> str:
    return unquote("".join(part.removesuffix("@") for part in file.split("/")))


def _moves(key: str) -> str:
    return _file_of(key) + _MOVES


def _order(token: str) -> tuple[int, str]:
    return _seq(token), token


def _pack(values: Mapping[str, bytes]) -> bytes:
    """Values in one file: a header naming where each is, then the values."""
    where: dict[str, list[int]] = {}
    at = 0
    for key, value in values.items():
        where[key] = [at, len(value)]
        at += len(value)
    header = json.dumps(where, separators=(",", ":")).encode()
    return b"".join([_MAGIC, len(header).to_bytes(8, "big"), header, *values.values()])


def _header(start: bytes) -> tuple[int, int] | None:
    """Where a pack's header ends and how long it is, from the pack's first bytes."""
    fixed = len(_MAGIC) + 8
    if len(start) < fixed or not start.startswith(_MAGIC):
        return None
    size = int.from_bytes(start[len(_MAGIC) : fixed], "big")
    return fixed + size, size


def _unpack(data: bytes) -> dict[str, bytes]:
    head = _header(data)
    if head is None:
        return {}
    end, size = head
    where = json.loads(data[end - size : end])
    return {key: data[end + at : end + at + length] for key, (at, length) in where.items()}


def _pack_id() -> str:
    return f"{int(_now() * 1000)}-{secrets.token_hex(6)}"


class _Files:
    """A Volume's files as agex lays them out, seen through the mount or through the API."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._where: dict[str, tuple[str, int, int]] = {}  # key -> (pack, offset, length)
        self._packs: set[str] = set()

    # what a way of reaching the files provides

    def _list(self, folder: str) -> list[str]:
        """Paths of the files under ``folder`` ("": all), relative to the root."""
        raise NotImplementedError

    def _read(self, path: str) -> bytes | None:
        raise NotImplementedError

    def _read_range(self, path: str, start: int, length: int) -> bytes | None:
        raise NotImplementedError

    def _apply(self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool) -> None:
        """Write and remove files; ``publish``: make it visible to others now."""
        raise NotImplementedError

    def reload(self) -> None:
        with self._lock:
            self._where.clear()
            self._packs.clear()

    # the layout

    def read(self, key: str) -> tuple[str | None, bytes] | None:
        """A key's value, and for a moved key the token it was moved to."""
        if key.startswith(IMMUTABLE):
            value = self._packed(key)
            return None if value is None else (None, value)
        tokens = self._tokens(key)
        for token in sorted(tokens, key=_order, reverse=True):
            value = self._read(f"{_moves(key)}/{token}")
            if value is not None:
                return token, value
        value = self._read(_file_of(key))
        return None if value is None else (None, value)

    def write_many(self, items: Mapping[str, bytes]) -> None:
        writes: dict[str, bytes] = {}
        removes: list[str] = []
        small: dict[str, bytes] = {}
        for key, value in items.items():
            if not key.startswith(IMMUTABLE):
                moved = [f"{_moves(key)}/{token}" for token in self._tokens(key)]
                if moved or self._read(_file_of(key)) != value:  # unchanged: no commit
                    writes[_file_of(key)] = value
                    removes += moved
            elif len(value) > PIECE:
                writes[f"{_PACKS}/big/{_pack_id()}"] = _pack({key: value})
            else:
                small[key] = value
        if small:
            self._add_pack(small, writes, removes)
        self._change(writes, removes)

    def write_move(self, key: str, token: str, value: bytes, before: str | None) -> None:
        """A moving key's new value, in a file named by its token. The value it moved from
        (``before``) is kept too, in case the newest file cannot be read; older ones go."""
        folder = _moves(key)
        keep = _seq(token if before is None else before)
        removes = [f"{folder}/{t}" for t in self._tokens(key) if _seq(t) < keep and t != token]
        if self._read(_file_of(key)) is not None:
            removes.append(_file_of(key))  # as written by put_many, or before this layout
        self._change({f"{folder}/{token}": value}, removes)

    def remove(self, key: str) -> None:
        """Published with the next write (or reload): a removal need not cost a commit."""
        removes = [_file_of(key), *(f"{_moves(key)}/{t}" for t in self._tokens(key))]
        writes: dict[str, bytes] = {}
        where = self._locate(key) if key.startswith(IMMUTABLE) else None
        if where is not None:
            pack = where[0]
            rest = {k: v for k, v in _unpack(self._read(pack) or b"").items() if k != key}
            removes.append(pack)
            if rest:
                writes[f"{pack.rpartition('/')[0]}/{_pack_id()}"] = _pack(rest)
        self._change(writes, removes, publish=False)

    def keys(self, prefix: str) -> set[str]:
        self._scan()
        with self._lock:
            found = {k for k in self._where if k.startswith(prefix)}
        for path in self._list(""):
            if path.startswith(_PACKS + "/"):
                continue
            folder, _, _ = path.rpartition("/")
            key = _key_of(folder.removesuffix(_MOVES)) if folder.endswith(_MOVES) else _key_of(path)
            if key.startswith(prefix):
                found.add(key)
        return found

    # inside

    def _tokens(self, key: str) -> list[str]:
        folder = _moves(key) + "/"
        return [p[len(folder) :] for p in self._list(_moves(key)) if p.startswith(folder)]

    def _change(
        self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool = True
    ) -> None:
        removes = list(removes)
        if not writes and not removes:
            return
        self._apply(writes, removes, publish)
        with self._lock:
            for path in removes:
                self._forget(path)
            for path, data in writes.items():
                if path.startswith(_PACKS + "/"):
                    self._record(path, data)

    def _add_pack(
        self, values: dict[str, bytes], writes: dict[str, bytes], removes: list[str]
    ) -> None:
        """A pack at level 0; a level that reaches FAN packs is merged into one a level up."""
        level = 0
        while True:
            held = self._list(f"{_PACKS}/{level}")
            if len(held) + 1 < FAN:
                writes[f"{_PACKS}/{level}/{_pack_id()}"] = _pack(values)
                return
            merged: dict[str, bytes] = {}
            for path in held:
                data = self._read(path)
                if data is not None and _header(data) is None:
                    continue  # not a pack agex wrote: left as it is
                merged.update(_unpack(data or b""))  # (None: merged away meanwhile)
                removes.append(path)
            merged.update(values)
            level, values = level + 1, merged

    def _packed(self, key: str) -> bytes | None:
        """A value that never changes: from its pack, or its own file (as laid out before
        packs)."""
        where = self._locate(key, scan=False)
        if where is not None:
            value = self._read_range(*where)
            if value is not None:
                return value
        value = self._read(_file_of(key))
        if value is not None:
            return value
        for _ in range(2):  # a pack written since, or merged away since: look again
            with self._lock:
                self._where.pop(key, None)
            where = self._locate(key)
            if where is None:
                return None
            value = self._read_range(*where)
            if value is not None:
                return value
            with self._lock:
                self._forget(where[0])
        return None

    def _locate(self, key: str, scan: bool = True) -> tuple[str, int, int] | None:
        with self._lock:
            where = self._where.get(key)
        if where is None and scan:
            self._scan()
            with self._lock:
                where = self._where.get(key)
        return where

    def _scan(self) -> None:
        """Learn where the values are in packs not seen yet; forget packs that went."""
        listed = set(self._list(_PACKS))
        with self._lock:
            for path in self._packs - listed:
                self._forget(path)
            unseen = listed - self._packs
        for path in unseen:
            start = self._read_range(path, 0, len(_MAGIC) + 8)
            head = None if start is None else _header(start)
            if head is None:
                continue
            end, size = head
            header = self._read_range(path, end - size, size)
            with contextlib.suppress(ValueError, TypeError):  # not a pack agex wrote
                where = {} if header is None else json.loads(header)
                with self._lock:
                    self._packs.add(path)
                    for key, (at, length) in where.items():
                        self._where[key] = (path, end + at, length)

    def _record(self, path: str, data: bytes) -> None:
        head = _header(data)
        if head is None:
            return
        end, size = head
        self._packs.add(path)
        for key, (at, length) in json.loads(data[end - size : end]).items():
            self._where[key] = (path, end + at, length)

    def _forget(self, path: str) -> None:
        if path in self._packs:
            self._packs.discard(path)
            for key in [k for k, w in self._where.items() if w[0] == path]:
                del self._where[key]


class _MountedFiles(_Files):
    """The Volume mounted in this container: reloaded at the start of a task, committed
    after each write."""

    def __init__(self, root: Path, volume: Any) -> None:
        super().__init__()
        self.root, self.volume = root, volume
        self._unpublished = False

    def reload(self) -> None:
        if self._unpublished:  # removals waiting for a commit would be lost
            self.volume.commit()
            self._unpublished = False
        self.volume.reload()
        super().reload()

    def _list(self, folder: str) -> list[str]:
        out = []
        for at, _, files in os.walk(self.root / folder):
            relative = Path(at).relative_to(self.root)
            out += [(relative / f).as_posix() for f in files if not f.startswith(".")]
        return out

    def _read(self, path: str) -> bytes | None:
        try:
            return (self.root / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _read_range(self, path: str, start: int, length: int) -> bytes | None:
        try:
            with (self.root / path).open("rb") as file:
                file.seek(start)
                data = file.read(length)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return data if len(data) == length else None

    def _apply(self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool) -> None:
        for path, data in writes.items():
            target = self.root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
            temporary.write_bytes(data)
            os.replace(temporary, target)
        for path in removes:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                (self.root / path).unlink()
        if publish:
            self.volume.commit()
            self._unpublished = False
        else:
            self._unpublished = True


class _RemoteFiles(_Files):
    """The Volume through Modal's API (outside a container): every change is visible at
    once."""

    def __init__(self, volume: Any) -> None:
        super().__init__()
        self.volume = volume

    def _list(self, folder: str) -> list[str]:
        file = sdk.modal().volume.FileEntryType.FILE
        try:
            listed = self.volume.listdir("/" + folder, recursive=True)
        except (FileNotFoundError, sdk.modal().exception.NotFoundError):
            return []
        paths = [e.path.lstrip("/") for e in listed if e.type == file]
        return [p for p in paths if not p.rpartition("/")[2].startswith(".")]

    def _read(self, path: str) -> bytes | None:
        try:
            return b"".join(self.volume.read_file(path))
        except (FileNotFoundError, sdk.modal().exception.NotFoundError):
            return None

    def _read_range(self, path: str, start: int, length: int) -> bytes | None:
        """Streams the file only as far as the range (a pack's header is at its start)."""
        data = b""
        chunks = self.volume.read_file(path)
        try:
            for chunk in chunks:
                data += chunk
                if len(data) >= start + length:
                    break
        except (FileNotFoundError, sdk.modal().exception.NotFoundError):
            return None
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        return data[start : start + length] if len(data) >= start + length else None

    def _apply(self, writes: Mapping[str, bytes], removes: Iterable[str], publish: bool) -> None:
        if writes:
            with self.volume.batch_upload(force=True) as batch:
                for path, data in writes.items():
                    batch.put_file(io.BytesIO(data), "/" + path)
        for path in removes:
            with contextlib.suppress(FileNotFoundError, sdk.modal().exception.NotFoundError):
                self.volume.remove_file(path)


# -- local copies of what never changes ----------------------------------------------


class _LocalCopies:
    """Blobs and commits on the container's disk. A copy older than a day is fetched again,
    so that the Dict sees the read."""

    def __init__(self, name: str) -> None:
        self.folder = Path(tempfile.gettempdir()) / "agex-modal-cache" / name
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.folder / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            if time.time() - path.stat().st_mtime > DAY:
                return None
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        temporary.write_bytes(value)
        os.replace(temporary, path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
