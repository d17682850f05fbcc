"""Names of the Modal objects agex makes: the app, and the Dicts and Volumes that hold state.

Modal names are at most 64 characters of letters, digits, ``-``, ``_`` and ``.``. A name
agex derives from something that does not fit (a session with spaces, a long path) keeps a
readable part and gains a short hash of the whole, so distinct inputs get distinct names.
"""

from __future__ import annotations

import hashlib
import re

LIMIT = 64
_ALLOWED = re.compile(r"[A-Za-z0-9._-]+")
_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def valid(name: str) -> bool:
    return len(name) <= LIMIT and _ALLOWED.fullmatch(name) is not None


def fitted(text: str, room: int = LIMIT) -> str:
    """``text`` itself when it is a valid name part within ``room``; otherwise its valid
    characters, cut to fit, and a hash of the whole."""
    if len(text) <= room and _ALLOWED.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    readable = _BAD.sub("-", text).strip("-.")[: room - len(digest) - 1]
    return f"{readable}-{digest}" if readable else digest


def session_dict(fingerprint: str, session: str) -> str:
    """The Dict of a session's state in the memory tier: ``agex.<fingerprint8>.<session>``."""
    prefix = f"agex.{fingerprint[:8]}."
    return prefix + fitted(session, LIMIT - len(prefix))


def state_volume(path: str) -> str:
    """The Dict and Volume of the disk tier, named from the state ``path``."""
    return fitted(path.strip("/") or path)


def check(name: object, what: str) -> str:
    """``name`` when Modal accepts it; otherwise an error saying what it may hold."""
    if not isinstance(name, str) or not valid(name) or re.fullmatch(r"ap-[A-Za-z0-9]{22}", name):
        raise ValueError(
            f"{what} must be a Modal name: at most {LIMIT} letters, digits, '-', '_' or '.', "
            f"got {name!r}"
        )
    return name
