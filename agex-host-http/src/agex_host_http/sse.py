"""Server-sent events, decoded incrementally from the bytes of a response body, as the
WHATWG event-stream format defines them."""

from __future__ import annotations


class EventDecoder:
    """Feed it body bytes as they come; it returns each message completed, as (id, event,
    data). The id is the last one the stream gave, as the format says; the event is an
    empty string when a message names none."""

    def __init__(self) -> None:
        self._partial = bytearray()  # the start of a line whose end has not come
        self._after_cr = False  # the last byte was a CR: a LF just after it is its pair
        self._event = ""
        self._data: list[str] = []
        self.last_id = ""

    def feed(self, data: bytes) -> list[tuple[str, str, str]]:
        if self._after_cr and data:
            self._after_cr = False
            if data[:1] == b"\n":
                data = data[1:]  # the LF of a CRLF split between two pieces
        cr = b"\r" in data
        end = max(data.rfind(b"\n"), data.rfind(b"\r")) if cr else data.rfind(b"\n")
        if end < 0:  # no line ends here: only the bytes of the new piece are searched
            self._partial += data
            return []
        if self._partial:
            complete = bytes(self._partial) + data[: end + 1]
            self._partial.clear()
        else:
            complete = data[: end + 1]
        self._partial += data[end + 1 :]
        # Lines end at ASCII bytes, so the complete lines decode as one text.
        text = complete.decode("utf-8", "replace")
        if cr:
            self._after_cr = complete[-1:] == b"\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # after the last line end: nothing
        messages: list[tuple[str, str, str]] = []
        for line in lines:
            if not line:  # the end of a message: one without data is dropped
                if self._data:
                    messages.append((self.last_id, self._event, "\n".join(self._data)))
                self._event, self._data = "", []
            elif line[0] != ":":  # not a comment (a keep-alive)
                field, _, value = line.partition(":")
                if value[:1] == " ":
                    value = value[1:]
                if field == "data":
                    self._data.append(value)
                elif field == "event":
                    self._event = value
                elif field == "id" and "\0" not in value:
                    self.last_id = value
        return messages
