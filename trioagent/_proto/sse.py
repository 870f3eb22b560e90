"""Server-sent events (the `text/event-stream` format), sans-IO.

Feed bytes as they arrive with `SSEParser.feed(data)`; it returns the events completed so far.
Lines end with CRLF, LF or CR; a blank line dispatches the event; `data:` lines are joined with
newlines; lines starting with ``:`` are comments. See the WHATWG HTML standard, "Server-sent
events", section "Interpreting an event stream".
"""

from __future__ import annotations

import attrs

__all__ = ["SSEEvent", "SSEParser"]


@attrs.frozen
class SSEEvent:
    data: str
    event: str = "message"
    id: str | None = None


class SSEParser:
    """Incremental parser; keeps partial lines between calls."""

    def __init__(self, max_line: int = 1 << 20) -> None:
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._max_line = max_line
        self._pending_cr = False

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Parse more bytes.

        Raises:
            ValueError: a line longer than `max_line` bytes (a peer that never ends a line).
        """
        if self._pending_cr and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CRLF split across two reads
        self._pending_cr = False
        buf = self._buffer + data
        events: list[SSEEvent] = []
        start = 0
        while True:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr != -1 and (lf == -1 or cr < lf):
                end, nxt = cr, cr + 1
                if nxt < len(buf) and buf[nxt : nxt + 1] == b"\n":
                    nxt += 1
                elif nxt == len(buf):
                    self._pending_cr = True
            else:
                end, nxt = lf, lf + 1
            event = self._line(buf[start:end].decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)
            start = nxt
        self._buffer = buf[start:]
        if len(self._buffer) > self._max_line:
            raise ValueError(f"an event-stream line is longer than {self._max_line} bytes")
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent("\n".join(self._data), self._event or "message", self._id)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        return None
