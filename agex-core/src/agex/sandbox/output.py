"""Printed text from one run, capped so a runaway loop of prints cannot flood the context."""

from __future__ import annotations


class Output:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[str] = []
        self._size = 0
        self._dropped = 0

    def write(self, text: str) -> None:
        room = self.limit - self._size
        if room >= len(text):
            self._parts.append(text)
            self._size += len(text)
            return
        if room > 0:
            self._parts.append(text[:room])
            self._size += room
        self._dropped += len(text) - max(room, 0)

    def text(self) -> str:
        shown = "".join(self._parts)
        if self._dropped:
            if shown and not shown.endswith("\n"):
                shown += "\n"
            shown += f"[output truncated: {self._dropped} more characters not shown]\n"
        return shown
