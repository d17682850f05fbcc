"""The remote-execution core: what every remote host (ours and third parties') shares.

A remote host is thin. On the caller's side it builds an :class:`Envelope` (plain JSON:
versions, session, state, limits) and ships the task (:func:`ship`); on the far side
:func:`stream` (or :class:`Outbox` and :func:`execute`, for a host that keeps a replayable
log) runs it and yields messages; back on the caller's side :func:`deliver` hands each
message to the caller's callbacks and :func:`settle` turns the last one into the task's
value or its exception. Everything between the two sides is the host's own transport.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False

#: Public names and their modules, imported on first use: a client needs the envelope and
#: the outcome, not the loop that runs tasks on the far side.
_EXPORTS = {
    "Envelope": "agex.remote.envelope",
    "Refused": "agex.remote.envelope",
    "Shipped": "agex.remote.execute",
    "batches": "agex.remote.execute",
    "execute": "agex.remote.execute",
    "stream": "agex.remote.execute",
    "unpack": "agex.remote.execute",
    "Lost": "agex.remote.messages",
    "Message": "agex.remote.messages",
    "Outbox": "agex.remote.messages",
    "deliver": "agex.remote.outcome",
    "failure": "agex.remote.outcome",
    "settle": "agex.remote.outcome",
    "success": "agex.remote.outcome",
    "NotSerializableError": "agex.remote.shipping",
    "ship": "agex.remote.shipping",
    "versions": "agex.remote.shipping",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from typing import Any

    from agex.remote.envelope import Envelope as Envelope
    from agex.remote.envelope import Refused as Refused
    from agex.remote.execute import Shipped as Shipped
    from agex.remote.execute import batches as batches
    from agex.remote.execute import execute as execute
    from agex.remote.execute import stream as stream
    from agex.remote.execute import unpack as unpack
    from agex.remote.messages import Lost as Lost
    from agex.remote.messages import Message as Message
    from agex.remote.messages import Outbox as Outbox
    from agex.remote.outcome import deliver as deliver
    from agex.remote.outcome import failure as failure
    from agex.remote.outcome import settle as settle
    from agex.remote.outcome import success as success
    from agex.remote.shipping import NotSerializableError as NotSerializableError
    from agex.remote.shipping import ship as ship
    from agex.remote.shipping import versions as versions


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agex.remote' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
