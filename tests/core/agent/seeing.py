"""A scripted model that keeps what it was asked: for tests of what the model is shown."""

from __future__ import annotations

from typing import Any

from agex.llm.scripted import ScriptedLLM


class Seeing(ScriptedLLM):
    """The scripted model, replying with one python block per code given, and keeping the
    messages of every request it answers."""

    def __init__(self, *codes: str) -> None:
        super().__init__([f"Step.\n```python\n{code}\n```" for code in codes])
        self.asked: list[list[dict[str, Any]]] = []

    async def stream(self, messages):  # type: ignore[no-untyped-def]
        self.asked.append([dict(m) for m in messages])
        async for piece in super().stream(messages):
            yield piece
