"""What an http client and an agex server say to each other, in one place.

A run request is one line of JSON (the envelope, ``agex.remote.Envelope``), a newline, and
the serialized task. The server checks the token and the envelope before it loads a byte of
the task.

The answer is a stream of server-sent events, each with an id and JSON data, one per
message of the run (``agex.remote.messages``):

- ``event``: one agex event (``Event.to_json``);
- ``tokens``: a JSON list of model output pieces (consecutive pieces travel together);
- ``result`` or ``error``: the run's outcome (``agex.remote.outcome``), always last.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agex.protocols import StateConfig

API = "/v1"
ENVELOPE_LIMIT = 8 * 1024 * 1024


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


def state_refused(state: StateConfig) -> str | None:
    """Why state of this configuration cannot be kept by a server, or None."""
    if state.type == "live":
        return LIVE_REFUSED
    if state.type == "versioned" and (state.storage == "memory" or not state.path):
        return MEMORY_REFUSED
    return None


class BadRequest(ValueError):
    """A request the server cannot read; the message says what is wrong."""


def request_body(envelope: dict[str, Any], payload: bytes) -> bytes:
    return json.dumps(envelope, separators=(",", ":")).encode() + b"\n" + payload


def split_request(body: bytes) -> tuple[dict[str, Any], bytes]:
    """The envelope and the serialized task of a run request."""
    line, newline, payload = body.partition(b"\n")
    if not newline:
        raise BadRequest("a run request is a line of JSON (the envelope), a newline, then the task")
    if len(line) > ENVELOPE_LIMIT:
        raise BadRequest(
            f"the run request's envelope is {len(line):,} bytes, over the {ENVELOPE_LIMIT:,} it "
            "may take (it carries the agent's model configuration: a scripted model's replies "
            "count)"
        )
    try:
        envelope = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("the run request's envelope is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise BadRequest("the run request's envelope must be a JSON object")
    return envelope, payload
