"""Printed text from one run, capped so a runaway loop of prints cannot flood the context."""

from __future__ import annotations


class Output:
    """What a run prints: at most ``limit`` characters, the note of what was cut included,
    so that text fits an event whole when the limit is the events' own."""

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
        if not self._dropped:
            return shown
        # Room for the longest the note can be, and the newline before it.
        total = self._dropped + len(shown)
        kept = max(self.limit - len(_note(total)) - 1, 0)
        shown = shown[:kept]
        if shown and not shown.endswith("\n"):
            shown += "\n"
        return shown + _note(total - kept)


def _note(dropped: int) -> str:
    return f"[output truncated: {dropped:,} more characters not shown]\n"
