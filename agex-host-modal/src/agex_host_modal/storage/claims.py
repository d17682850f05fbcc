"""Tokens and claims of moving keys.

A Dict has no compare-and-set, only "put unless present", so a key that may move (a head, a
session's turn) holds a token with its value; whoever claims the successor of the token it
read (``put(skip_if_exists=True)`` on a claim key) wins the move. Readers follow claims, so a
winner that dies between its claim and its data write loses nothing. A claim no reader can
reach any more (the data entry points past it) is removed by the writer that made it, a
minute later, or by the daily look, so a moving key keeps a few claims, not one per move.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any, NamedTuple

from agex_host_modal.storage.clock import _now

#: Dict key prefixes: a key's data, a claim on a moving key's token, the token of a moving key
#: that was deleted (the Dict's own prefixes are in ``dicts``).
_DATA, _CLAIM, _GONE = "k:", "c:", "g:"


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


def _digest(stored: Any) -> str:
    if isinstance(stored, bytes):
        return hashlib.sha256(stored).hexdigest()
    return hashlib.sha256(json.dumps(stored, sort_keys=True, default=str).encode()).hexdigest()
