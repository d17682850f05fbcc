"""What client and server say to each other, in one place.

A run request is one line of JSON (the envelope: session, state, versions, serializer,
timeout), a newline, and the serialized task. The server checks the token and the envelope
before it loads a byte of the task.

The answer is a stream of server-sent events, each with an id and JSON data:

- ``event``: one agex event (``Event.to_json``);
- ``tokens``: a JSON list of model tokens (consecutive tokens travel together);
- ``result``: the task's value, as JSON when JSON carries it exactly, otherwise serialized
  and authenticated with an HMAC under the shared token;
- ``error``: how the task ended without a value: its type, message and traceback
  (``agex.hosts.outcomes``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

# Errors travel the way every remote host sends them.
from agex.hosts.outcomes import encode_error as encode_error
from agex.hosts.outcomes import raise_error as raise_error
from agex.hosts.shipping import mismatch as mismatch
from agex.hosts.shipping import versions as versions

API = "/v1"
ENVELOPE_LIMIT = 64 * 1024


#: The seed's rules for state on a remote host: the client checks them at Agent creation,
#: the server again on each run.
MEMORY_REFUSED = (
    "Remote execution requires disk-based state with a shared path: memory storage has no "
    'shared path. Use connect_state(type="versioned", storage="disk", path="...")'
)
LIVE_REFUSED = (
    "live state keeps objects in one process and cannot run on a remote host; use "
    'connect_state(type="versioned", storage="disk", path="...") or type="ephemeral"'
)


class BadRequest(ValueError):
    """A request the server cannot read; the message says what is wrong."""


def request_body(envelope: dict[str, Any], payload: bytes) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode() + b"\n" + payload


def split_request(body: bytes) -> tuple[dict[str, Any], bytes]:
    """The envelope and the serialized task of a run request."""
    line, newline, payload = body.partition(b"\n")
    if not newline or len(line) > ENVELOPE_LIMIT:
        raise BadRequest("a run request is a line of JSON (the envelope), a newline, then the task")
    try:
        envelope = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the run request's envelope is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise BadRequest("the run request's envelope must be a JSON object")
    return envelope, payload


# -- results ---------------------------------------------------------------------------


def _plain(value: Any, depth: int = 0) -> bool:
    """True when JSON carries ``value`` exactly: plain types only, no subclasses."""
    if depth > 64:
        return False
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return True
    if kind is float:
        return value == value and value not in (float("inf"), float("-inf"))
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    return False


def _mac(token: str, data: bytes) -> str:
    return hmac.new(token.encode(), data, hashlib.sha256).hexdigest()


def encode_value(value: Any, token: str, serializer: Any) -> dict[str, Any]:
    if _plain(value):
        return {"json": value}
    data = serializer.dumps(value)
    return {"pickle": base64.b64encode(data).decode(), "mac": _mac(token, data)}


def decode_value(message: dict[str, Any], token: str, serializer: Any) -> Any:
    """The value of a ``result`` message; a serialized value is loaded only when its HMAC
    under our token matches (loading it runs code)."""
    if "json" in message:
        return message["json"]
    try:
        data = base64.b64decode(message["pickle"], validate=True)
        given = message["mac"]
    except (KeyError, TypeError, ValueError):
        raise ValueError("the server's result is malformed") from None
    if not isinstance(given, str) or not hmac.compare_digest(given, _mac(token, data)):
        raise ValueError(
            "the server's result failed its HMAC check and was not loaded: the server does "
            "not share this client's token, or something altered the response"
        )
    return serializer.loads(data)
