"""LLM "scripted": replays the replies it was given, in order. How tests, benchmarks and the
offline demo drive agents without a model.

The position is kept on the object, and in its configuration, so successive tasks (and a
remote run, which starts from the client's position) continue where the previous call stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agex.protocols import LLM, Message


class ScriptExhausted(RuntimeError):
    """Every scripted reply has been used."""


class ScriptedLLM(LLM):
    provider = "scripted"
    #: A remote run hands the position back: the caller's script continues where it stopped.
    resumable = ("position",)

    def __init__(
        self,
        responses: Sequence[str],
        delay: float = 0.0,
        chunk_size: int | None = None,
        model: str | None = None,
        position: int = 0,
    ) -> None:
        if isinstance(responses, str) or not all(isinstance(r, str) for r in responses):
            raise TypeError("responses must be a list of strings, one per model reply")
        if delay < 0:
            raise ValueError(f"delay must be zero or more seconds, got {delay!r}")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        if not isinstance(position, int) or not 0 <= position <= len(responses):
            raise ValueError(
                f"position must be the index of the next reply, 0 to {len(responses)}, "
                f"got {position!r}"
            )
        self.responses = list(responses)
        self.delay = delay
        self.chunk_size = chunk_size
        self.model = model
        self.position = position

    async def stream(self, messages: Sequence[Message]) -> AsyncIterator[str]:
        if self.position >= len(self.responses):
            raise ScriptExhausted(
                f"the scripted LLM has used all {len(self.responses)} of its replies; give it "
                "one reply per loop step"
            )
        reply = self.responses[self.position]
        self.position += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        size = self.chunk_size or len(reply) or 1
        for start in range(0, len(reply), size):
            yield reply[start : start + size]

    def config(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "responses": self.responses,
            "delay": self.delay,
            "chunk_size": self.chunk_size,
            "position": self.position,
        }
