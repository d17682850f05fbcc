"""Server-sent events, decoded incrementally from the bytes of a response body, as the
WHATWG event-stream format defines them."""

from __future__ import annotations

import re

#: Lines end with CRLF, LF or CR.
_EOL = re.compile(rb"\r\n|\r|\n")


class EventDecoder:
    """Feed it body bytes as they come; it returns each message completed, as (id, event,
    data). The id is the last one the stream gave, as the format says; the event is an
    empty string when a message names none."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # the buffer before this has no line end
        self._after_cr = False
        self._event = ""
        self._data: list[str] = []
        self.last_id = ""

    def feed(self, data: bytes) -> list[tuple[str, str, str]]:
        if self._after_cr and data:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]  # the LF of a CRLF split between two pieces
        buffer = self._buffer
        buffer += data
        messages: list[tuple[str, str, str]] = []
        start = 0
        while end := _EOL.search(buffer, max(start, self._scanned)):
            message = self._line(buffer[start : end.start()].decode("utf-8", "replace"))
            if message is not None:
                messages.append(message)
            start = end.end()
        if start:
            self._after_cr = buffer[start - 1] == 13  # a CR: its LF may come next
            del buffer[:start]
        self._scanned = len(buffer)
        return messages

    def _line(self, line: str) -> tuple[str, str, str] | None:
        if not line:  # the end of a message: one without data is dropped
            message = (self.last_id, self._event, "\n".join(self._data)) if self._data else None
            self._event, self._data = "", []
            return message
        if line[0] == ":":
            return None  # a comment: a keep-alive
        field, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_id = value
        return None
