"""One accepted WebSocket, server side: wsproto (sans-I/O) over the stream, no task of its own.

How this works: the server's transports used trio-websocket, which gives every connection a
reader task (socket -> wsproto -> a channel) and sends each message under a lock from a writer
task. Per 20 ms of audio that is four task switches and two channel hops on top of the
session's own work; on a server holding many calls that, not the audio, was most of the CPU
(NOTES.md, "The network path"). Here:

- Reading happens in the task that calls `get_message` (the transport's reader): one socket
  read, wsproto's parse, messages out. Pings and the peer's close are answered as they come.
- Sending: everything queued goes out in one write, in this order: the rest of a write begun
  before (a frame is never cut), `urgent` frames (control messages, pongs, the close), then
  `droppable` frames (audio and its marks; `drop_droppable()` forgets them on barge-in). When
  no write is under way, `send_droppable` writes straight to the socket without blocking
  (`os.write` on the non-blocking descriptor): the usual case costs no task switch at all.
  What the socket does not take now is written by `writer()`, a task the transport runs, which
  also sends what `send_soon` queues. A peer that stops reading holds at most `max_queued`
  droppable frames here; beyond that `send_droppable` waits (back-pressure on the mixer).
- Every write that is not to a plain socket (TLS, in-memory streams in tests) goes through
  the writer and the stream's `send_all`.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterable

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Message, Ping, Request, TextMessage
from wsproto.utilities import RemoteProtocolError

from ..errors import CloseCode

__all__ = ["CloseReason", "ConnectionClosed", "HandshakeFailed", "ServerWebSocket"]

RECEIVE_SIZE = 65536
MAX_URGENT = 256  # urgent frames waiting for a peer that does not read: beyond, the oldest go


@attrs.frozen
class CloseReason:
    """How a connection closed: the code and reason sent or received (1006: it dropped)."""

    code: int
    reason: str = ""


class ConnectionClosed(Exception):
    """The WebSocket is closed; `reason` says how."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(f"{reason.code} {reason.reason}".strip())
        self.reason = reason


class HandshakeFailed(Exception):
    """The request is not a WebSocket handshake wsproto accepts (the server answers 400)."""


class ServerWebSocket:
    """An accepted WebSocket. One task reads (`get_message`); sends come from any task.

    Args:
        max_message_size: a message larger than this closes the connection with 1009.
        max_queued: droppable frames held for a peer that is not reading before
            `send_droppable` waits.
    """

    def __init__(self, stream: trio.abc.Stream, connection: WSConnection, *, max_message_size: int = 64 * 1024, max_queued: int = 10) -> None:
        self._stream = stream
        self._ws = connection
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self.max_message_size = max_message_size
        self.max_queued = max_queued
        self.closed: CloseReason | None = None
        """None while open; then how it closed (what we sent, or what the peer sent)."""
        self._messages: collections.deque[str | bytes] = collections.deque()
        self._parts: list[str | bytes] = []
        self._size = 0
        self._partial = b""  # the unwritten end of a write already begun
        self._urgent: collections.deque[bytes] = collections.deque(maxlen=MAX_URGENT)
        self._droppable: collections.deque[bytes] = collections.deque()
        self._writing = False
        self._output_shut = False
        self._wake = trio.Event()
        self._space = trio.Event()
        self._idle = trio.Event()
        self._idle.set()

    @classmethod
    async def accept(cls, stream: trio.abc.Stream, head: bytes, **options: int) -> ServerWebSocket:
        """Answer the handshake whose request (and anything after it) is `head`: a checkpoint.

        Raises:
            HandshakeFailed: wsproto does not take the request.
        """
        # wsproto's server side drops what follows the request: frames a client sent right
        # behind it are handed over after the answer (the head ends at h11's blank line).
        end = re.search(rb"\n\r?\n", head)
        if end is None:
            raise HandshakeFailed("no complete WebSocket request")
        connection = WSConnection(ConnectionType.SERVER)
        try:
            connection.receive_data(head[: end.end()])
            request = next((e for e in connection.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            raise HandshakeFailed(str(exc)) from None
        if request is None:
            raise HandshakeFailed("no complete WebSocket request")
        await stream.send_all(connection.send(AcceptConnection()))
        ws = cls(stream, connection, **options)
        if len(head) > end.end():
            connection.receive_data(head[end.end() :])
            ws._read_events()
        return ws

    # -- reading -------------------------------------------------------------------------------
    async def get_message(self) -> str | bytes:
        """The next whole message (a checkpoint when none is waiting); the messages that came
        before the peer's close are still given.

        Raises:
            ConnectionClosed: closed (by either side) or dropped, and nothing left to give.
        """
        while not self._messages:
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            try:
                data = await self._stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if self.closed is not None:  # (closed by us meanwhile)
                continue
            self._ws.receive_data(bytes(data) if data else None)  # (None: the TCP connection ended)
            self._read_events()
        return self._messages.popleft()

    def _read_events(self) -> None:
        for event in self._ws.events():
            if isinstance(event, Message):
                self._size += len(event.data)
                if self._size > self.max_message_size:
                    self._fail(CloseCode.MESSAGE_TOO_BIG, f"Exceeded maximum message size: {self.max_message_size} bytes")
                    return
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts, self._size = self._parts, [], 0
                    if isinstance(event, TextMessage):
                        self._messages.append(parts[0] if len(parts) == 1 else "".join(parts))  # type: ignore[arg-type]
                    else:
                        self._messages.append(b"".join(parts))  # type: ignore[arg-type]
            elif isinstance(event, Ping):
                self._push_urgent(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self._push_urgent(self._ws.send(event.response()))  # the peer closed: answer
                    self.closed = CloseReason(event.code, event.reason or "")
                elif self._ws.state is ConnectionState.OPEN:
                    self._fail(event.code, event.reason or "")  # its frames broke the protocol
                else:
                    self.closed = self.closed or CloseReason(event.code, event.reason or "")  # (1006, or the answer to ours)
                self._parts, self._size = [], 0
                return

    def _fail(self, code: int, reason: str) -> None:
        """Close from our side now (the whole messages before this one are still given)."""
        self._parts, self._size = [], 0
        self.closed = CloseReason(code, reason)
        self._push_urgent(self._ws.send(CloseConnection(code=code, reason=reason)))

    # -- writing -------------------------------------------------------------------------------
    def _encode(self, message: str | bytes) -> bytes:
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        return self._ws.send(event)

    def _push_urgent(self, frame: bytes) -> None:
        self._urgent.append(frame)
        self._wake.set()

    def send_soon(self, message: str | bytes) -> None:
        """Queue a message to go before any droppable one, never dropped by `drop_droppable`
        (a peer that reads nothing loses the oldest beyond 256). Not a checkpoint."""
        if self._ws.state is ConnectionState.OPEN and not self._output_shut:
            self._push_urgent(self._encode(message))

    async def send_droppable(self, messages: Iterable[str | bytes]) -> None:
        """Send `messages` (audio), or queue them behind a write under way; waits while
        `max_queued` are already queued. A checkpoint only when it queues or waits."""
        if self._output_shut or self._ws.state is not ConnectionState.OPEN:
            await trio.lowlevel.checkpoint()
            return
        if self._socket is not None and not (self._writing or self._partial or self._droppable):
            # The usual case: nothing under way, so write now, without a task switch.
            data = b"".join([*self._urgent, *(self._encode(m) for m in messages)])
            self._urgent.clear()
            self._partial = data[self._write_now(data) :]
            if self._partial:
                self._wake.set()  # (the writer waits until the socket takes the rest)
            return
        while len(self._droppable) >= self.max_queued and not self._output_shut:
            self._space = trio.Event() if self._space.is_set() else self._space
            await self._space.wait()
        if self._output_shut or self._ws.state is not ConnectionState.OPEN:
            return
        self._droppable.extend(self._encode(m) for m in messages)
        self._wake.set()
        await trio.lowlevel.checkpoint()

    def drop_droppable(self) -> None:
        """Forget the droppable frames not yet written (a write begun is finished). Not a
        checkpoint."""
        self._droppable.clear()
        self._space.set()

    def shut_output(self) -> None:
        """From now on droppable and `send_soon` messages are dropped, and nothing waits to
        send them (the session is over). Not a checkpoint."""
        self._output_shut = True
        self._droppable.clear()
        self._space.set()

    def _write_now(self, data: bytes) -> int:
        """Write what the socket takes without blocking; how much that was (0 if this is not
        a plain socket)."""
        if self._socket is None or not data:
            return 0
        fd = self._socket.fileno()  # (-1 once closed: a descriptor number may be reused)
        if fd < 0:
            return len(data)  # (closed: nowhere to go)
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError:  # reset, broken pipe: the reader sees the end
            self._output_shut = True
            return len(data)

    def _take(self, droppable: bool) -> bytes:
        data = b"".join([self._partial, *self._urgent, *(self._droppable if droppable else ())])
        self._partial = b""
        self._urgent.clear()
        if droppable:
            self._droppable.clear()
            self._space.set()
        return data

    async def _write(self, data: bytes) -> None:
        """Write all of `data`. Cancelled midway, the unwritten rest is kept for the next
        write (on a plain socket), so a frame is never cut."""
        self._writing = True
        self._idle = trio.Event()
        try:
            if self._socket is None:
                # Kept until written: trio's memory streams take nothing from a cancelled
                # send_all; a TLS stream breaks on one (and the next write says so).
                self._partial = data
                await self._stream.send_all(data)
                self._partial = b""
                return
            while data:
                data = data[self._write_now(data) :]
                if data:
                    self._partial = data
                    await self._stream.wait_send_all_might_not_block()
                    data, self._partial = self._partial, b""
        finally:
            self._writing = False
            self._idle.set()

    async def writer(self) -> None:
        """Write what is queued, as it is queued; runs until cancelled.

        Raises:
            trio.BrokenResourceError: the peer went away (not on a plain socket: there it is
                the reader that sees the end).
        """
        while True:
            while not (self._partial or self._urgent or self._droppable):
                self._wake = trio.Event()
                await self._wake.wait()
            await self._write(self._take(droppable=True))

    async def send_message(self, message: str | bytes) -> None:
        """Send one message after what is queued, and wait until it is written (used before
        and after a transport's `writer` runs).

        Raises:
            ConnectionClosed: the connection is closed.
            trio.BrokenResourceError: the peer went away.
        """
        if self._ws.state is not ConnectionState.OPEN:
            raise ConnectionClosed(self.closed or CloseReason(CloseCode.ABNORMAL_CLOSURE))
        self._push_urgent(self._encode(message))
        await self._flush()

    async def _flush(self) -> None:
        while self._writing:
            await self._idle.wait()
        await self._write(self._take(droppable=False))

    async def aclose(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close: send our close frame (unless one was sent), wait for the peer's answer, close
        the stream. Idempotent; the caller bounds the wait."""
        try:
            if self._ws.state is ConnectionState.OPEN:
                self.closed = CloseReason(code, reason)
                self._droppable.clear()
                self._urgent.append(self._ws.send(CloseConnection(code=code, reason=reason)))
            self._output_shut = True
            await self._flush()  # (our close, or the answer to the peer's)
            while self._ws.state is ConnectionState.LOCAL_CLOSING:  # the peer's answer
                data = await self._stream.receive_some(RECEIVE_SIZE)
                self._ws.receive_data(bytes(data) if data else None)
                for event in self._ws.events():
                    if isinstance(event, CloseConnection) and self.closed is None:
                        self.closed = CloseReason(event.code, event.reason or "")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # (gone already)
        finally:
            if self.closed is None:
                self.closed = CloseReason(CloseCode.ABNORMAL_CLOSURE)
            await self._stream.aclose()
