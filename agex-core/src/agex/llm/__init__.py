"""What the loop asks of a model: stream a reply to a conversation.

Providers (``scripted`` in core; ``openai`` and ``anthropic`` through their SDKs) register
through ``agex_register_llms``. A client keeps its configuration (provider, model, options)
so it can be sent to wherever the loop runs; API keys are read there, from its environment,
and never travel.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypedDict, runtime_checkable


class Message(TypedDict):
    role: str  # "system", "user" or "assistant"
    content: str


@runtime_checkable
class LLM(Protocol):
    provider: str
    model: str | None

    def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        """The reply to ``messages``, piece by piece as the model produces it."""
        ...

    def config(self) -> dict[str, Any]:
        """What rebuilds this client elsewhere: provider, model and options, no secrets."""
        ...


_FENCE = re.compile(r"```(?:python|py)[ \t]*\n(.*?)(?:```|\Z)", re.S)


def split_reply(reply: str) -> tuple[str, str | None]:
    """The reasoning before the first python block, and the block's code (None if none)."""
    found = _FENCE.search(reply)
    if found is None:
        return reply.strip(), None
    return reply[: found.start()].strip(), found.group(1).rstrip()
