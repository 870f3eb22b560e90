"""One accepted WebSocket, server side: wsproto (sans-I/O) over the stream, no task of its own.

How this works: the server's transports used trio-websocket, which gives every connection a
reader task (socket -> wsproto -> a channel) and sends each message under a lock from a writer
task. Per 20 ms of audio that is four task switches and two channel hops on top of the
session's own work; on a server holding many calls that, not the audio, was most of the CPU
(NOTES.md, "The network path"). Here:

- Reading happens in the task that calls `get_message` (the transport's reader): one socket
  read, the data frames parsed here (the hot path: RFC 6455 5.2 by hand, fuzzed against
  wsproto's parser in the tests), messages out. wsproto runs the handshake and the closing
  handshake. Pings and the peer's close are answered as they come. On a server (Linux), a
  `ReadPoller` reads every connection in one task instead and hands each message to the
  connection's `on_message` while its reader waits; the reader runs only for what must wait.
- Sending: everything queued goes out in one write, in this order: the rest of a write begun
  before (a frame is never cut), `urgent` frames (control messages, pongs, the close), then
  `droppable` frames (audio and its marks; `drop_droppable()` forgets them on barge-in). When
  no write is under way, `send_droppable_nowait` writes straight to the socket without
  blocking (`os.write` on the non-blocking descriptor): the usual case costs no task switch.
  What the socket does not take now is written by `writer()`, a task the transport runs, which
  also sends what `send_soon` queues. A peer that stops reading holds at most `max_queued`
  droppable frames here; beyond that `send_droppable` waits (back-pressure on the mixer).
- Every write that is not to a plain socket (TLS, in-memory streams in tests) goes through
  the writer and the stream's `send_all`.
"""

from __future__ import annotations

import codecs
import collections
import os
import re
import select
from collections.abc import Callable, Sequence

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, CloseConnection, Request
from wsproto.utilities import RemoteProtocolError

from ..errors import CloseCode

_apply_mask: Callable[[bytearray, bytearray], bytes] | None
try:  # (a C extension: absent where websockets was installed without it)
    from websockets.speedups import apply_mask as _apply_mask
except ImportError:  # pragma: no cover
    _apply_mask = None

__all__ = ["CloseReason", "ConnectionClosed", "HandshakeFailed", "ReadPoller", "ServerWebSocket"]

RECEIVE_SIZE = 65536
MAX_UNREAD = 64  # messages read for a reader that is busy: beyond, its socket is not read (TCP back-pressure)
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
        self._buffer = bytearray()  # bytes read, not yet whole frames
        self._opcode: int | None = None  # of a message that came in fragments, until its end
        self._text: codecs.IncrementalDecoder | None = None  # (a text message in fragments)
        self._parts: list[bytes] = []
        self._size = 0
        self._drained = True  # the last read took all there was
        self._failed = False  # we failed the connection: nothing more is read
        self._partial = b""  # the unwritten end of a write already begun
        self._urgent: collections.deque[bytes] = collections.deque(maxlen=MAX_URGENT)
        self._droppable: collections.deque[bytes] = collections.deque()
        self._last_encoded: tuple[str | bytes, bytes] = (b"", _frame(0x2, b""))  # (a message, its frame)
        self._writing = False
        self._output_shut = False
        self._wake = trio.Event()
        self._space = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        # Reading by a `ReadPoller` (see there): while the reader task waits in `get_message`
        # with nothing to give (`_parked`), each message goes to `on_message` first.
        self.on_message: Callable[[str | bytes], bool] | None = None
        """Called in the poller's task with each message while the reader waits for one: True
        when it took the message (it must not wait; `wake_reader()` if its task has work from
        it), False to leave it to the reader. An exception it raises is raised by `get_message`."""
        self._poller: ReadPoller | None = None
        self._poll_fd = -1
        self._parked = False
        self._woken = False
        self._arrived = trio.Event()
        self._fault: Exception | None = None

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
            ws._take_in(head[end.end() :])
        return ws

    # -- reading -------------------------------------------------------------------------------
    async def get_message(self) -> str | bytes:
        """The next whole message (a checkpoint when none is waiting); the messages that came
        before the peer's close are still given.

        Raises:
            ConnectionClosed: closed (by either side) or dropped, and nothing left to give.
        """
        while True:
            message = await self.receive_message()
            if message is not None:
                return message

    async def receive_message(self) -> str | bytes | None:
        """`get_message`, or None when `wake_reader()` woke the reader with no message (its
        caller has something else to do: the handler took a message that left work, say)."""
        while True:
            if self._fault is not None:  # (raised before the messages that came after it)
                fault, self._fault = self._fault, None
                raise fault
            if self._messages:
                return self._messages.popleft()
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            if self._poller is not None:
                self._poller.resume(self)
                self._parked, self._woken = True, False
                self._arrived = trio.Event()
                try:
                    await self._arrived.wait()
                finally:
                    self._parked = False
                if self._woken and not self._messages:
                    return None
                continue
            data = await self._receive()
            if self.closed is None:  # (else closed by us meanwhile)
                self._take_in(data)

    def read_with(self, poller: ReadPoller) -> None:
        """Be read by `poller` from now on (a plain socket only; others read as before). Not a
        checkpoint."""
        if self._socket is not None and self._poller is None and self.closed is None:
            self._poll_fd = self._socket.fileno()
            self._poller = poller
            poller.add(self._poll_fd, self)

    def stop_polling(self) -> None:
        """Read in the reader's own task again (before closing: idempotent). Not a checkpoint."""
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.forget(self._poll_fd, self)
            self._arrived.set()

    def wake_reader(self) -> None:
        """Give the reader task its turn (`receive_message` returns None if no message waits):
        `on_message` took a message that left it work, say. Not a checkpoint."""
        self._parked, self._woken = False, True
        self._arrived.set()

    def _on_readable(self) -> None:
        """The poller saw the socket readable: read once, parse, offer messages to `on_message`
        while the reader waits, wake the reader for the rest."""
        assert self._socket is not None
        fd = self._socket.fileno()
        if fd != self._poll_fd or self.closed is not None:
            self.stop_polling()  # (closed meanwhile: the reader or `aclose` go on alone)
            return
        try:
            data = os.read(fd, RECEIVE_SIZE)
        except BlockingIOError:
            return
        except OSError:  # reset: the end
            data = b""
        self._take_in(data)
        if self.closed is not None:
            self.stop_polling()
        messages, take = self._messages, self.on_message
        if take is not None:
            try:
                while self._parked and messages and take(messages[0]):
                    messages.popleft()
            except Exception as exc:  # noqa: BLE001 - the reader raises it, in its own task
                messages.popleft()
                self._fault = exc
        if self._parked:
            if messages or self._fault is not None or self._poller is None:
                self._arrived.set()
        elif len(messages) >= MAX_UNREAD and self._poller is not None:
            self._poller.pause(self._poll_fd)

    async def _receive(self) -> bytes:
        """Some bytes from the peer (b"": the connection ended). A checkpoint."""
        sock = self._socket
        if sock is not None:
            # A plain socket: wait until readable and read once (the stream's receive_some
            # tries a read first, which fails whenever the last read took all there was).
            while True:
                try:
                    if self._drained:
                        await trio.lowlevel.wait_readable(sock)
                    else:
                        await trio.lowlevel.checkpoint()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return b""  # (closed from another task)
                fd = sock.fileno()
                if fd < 0:
                    return b""
                try:
                    data = os.read(fd, RECEIVE_SIZE)
                except BlockingIOError:
                    self._drained = True
                    continue
                except OSError:  # reset: the end
                    return b""
                self._drained = len(data) < RECEIVE_SIZE
                return data
        try:
            return bytes(await self._stream.receive_some(RECEIVE_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    def _take_in(self, data: bytes) -> None:
        if not data:
            self._ws.receive_data(None)  # the TCP connection ended: wsproto's 1006
            self._on_close_events()
            return
        self._buffer += data
        self._parse()

    def _parse(self) -> None:
        """Take the whole frames in the buffer (RFC 6455 5.2, client to server). Data frames are
        parsed here, the hot path; a close frame goes to wsproto, whose state machine runs the
        closing handshake. Stops at the close, or at a frame the RFC forbids (then we close)."""
        buf = self._buffer
        pos, n = 0, len(buf)
        state = self._ws.state  # (changed below only by a close frame or a failure: both stop)
        messages = self._messages
        try:
            while n - pos >= 2 and state in _READING and not self._failed:
                b0, b1 = buf[pos], buf[pos + 1]
                opcode, length, head = b0 & 0x0F, b1 & 0x7F, 2
                if length == 126:
                    if n - pos < 4:
                        return
                    length, head = buf[pos + 2] << 8 | buf[pos + 3], 4
                    if length < 126:
                        return self._fail(CloseCode.PROTOCOL_ERROR, "a 2-byte length where 1 would do")
                elif length == 127:
                    if n - pos < 10:
                        return
                    length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
                    if length < 65536 or length >> 63:
                        return self._fail(CloseCode.PROTOCOL_ERROR, "an 8-byte length where 2 would do, or over 2**63")
                if b0 in _WHOLE_DATA and b1 & 0x80 and self._opcode is None and length <= self.max_message_size:
                    pass  # a whole masked data frame, no message in fragments: nothing to check (the usual case)
                elif problem := self._header_problem(b0, b1, opcode, length):
                    return self._fail(*problem)
                end = pos + head + 4 + length
                if n < end:
                    return
                start, pos = pos, end
                if opcode == 0x8:  # close: wsproto's state machine (the frame as it came)
                    self._ws.receive_data(bytes(buf[start:end]))
                    self._on_close_events()
                    return
                payload = _unmask(buf[start + head + 4 : end], buf[start + head : start + head + 4])
                if b0 == 0x82:  # a whole binary message (audio): taken as it is
                    if state is ConnectionState.OPEN:
                        messages.append(payload)
                elif opcode == 0x9:
                    if state is ConnectionState.OPEN:
                        self._push_urgent(_frame(0xA, payload))  # ping: pong
                elif opcode != 0xA:
                    self._on_data(opcode, bool(b0 & 0x80), payload)
        finally:
            if self._failed:
                buf.clear()  # (nothing after a frame the RFC forbids can be trusted)
            else:
                del buf[:pos]

    def _header_problem(self, b0: int, b1: int, opcode: int, length: int) -> tuple[int, str] | None:
        if b0 & 0x70:
            return CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension was agreed)"
        if not b1 & 0x80:
            return CloseCode.PROTOCOL_ERROR, "a client frame must be masked"
        if opcode >= 0x8:
            if opcode > 0xA:
                return CloseCode.PROTOCOL_ERROR, f"invalid opcode {opcode:#x}"
            if not b0 & 0x80 or length > 125:
                return CloseCode.PROTOCOL_ERROR, "a control frame must be whole and at most 125 bytes"
            return None
        if opcode > 0x2:
            return CloseCode.PROTOCOL_ERROR, f"invalid opcode {opcode:#x}"
        if (opcode == 0x0) != (self._opcode is not None):
            return CloseCode.PROTOCOL_ERROR, "a continuation frame outside a message" if opcode == 0 else "a new message inside a fragmented one"
        if self._size + length > self.max_message_size and self._ws.state is ConnectionState.OPEN:
            return CloseCode.MESSAGE_TOO_BIG, f"Exceeded maximum message size: {self.max_message_size} bytes"
        return None

    def _on_data(self, opcode: int, fin: bool, payload: bytes) -> None:
        closing = self._ws.state is not ConnectionState.OPEN  # (we are closing: nothing more is read)
        try:
            if opcode and fin:  # a whole message in one frame: the usual case
                if not closing:
                    self._messages.append(payload.decode("utf-8") if opcode == 0x1 else payload)
                return
            if opcode:
                self._opcode = opcode
                self._text = codecs.getincrementaldecoder("utf-8")() if opcode == 0x1 else None
            # A message in fragments: UTF-8 checked as it comes (RFC 6455 8.1: fail fast).
            self._parts.append(self._text.decode(payload, fin).encode() if self._text is not None else payload)
        except UnicodeDecodeError:
            self._fail(CloseCode.INVALID_DATA, "a text message that is not UTF-8")
            return
        self._size += len(payload)
        if not fin:
            return
        data = b"".join(self._parts)
        text = self._opcode == 0x1
        self._parts, self._size, self._opcode, self._text = [], 0, None, None
        if not closing:
            self._messages.append(data.decode("utf-8") if text else data)

    def _on_close_events(self) -> None:
        for event in self._ws.events():
            if not isinstance(event, CloseConnection):
                continue
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                self._push_urgent(self._ws.send(event.response()))  # the peer closed: answer
                self.closed = CloseReason(event.code, event.reason or "")
            elif self._ws.state is ConnectionState.OPEN:
                self._fail(event.code, event.reason or "")  # a close frame that breaks the RFC
            else:
                self.closed = self.closed or CloseReason(event.code, event.reason or "")  # (1006, or the answer to ours)
        self._parts, self._size, self._opcode = [], 0, None

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame goes, nothing more is read
        (the whole messages before this one are still given)."""
        self._parts, self._size, self._opcode = [], 0, None
        self._failed = True
        if self._ws.state is ConnectionState.OPEN:
            self.closed = CloseReason(code, reason)
            self._push_urgent(self._ws.send(CloseConnection(code=code, reason=reason)))

    # -- writing -------------------------------------------------------------------------------
    @staticmethod
    def _encode(message: str | bytes) -> bytes:
        return _frame(0x1, message.encode()) if isinstance(message, str) else _frame(0x2, message)

    def _encode_droppable(self, message: str | bytes) -> bytes:
        """`_encode`, kept for the last message: audio of silence is the same message object
        tick after tick (see `_WebSocketTransport._audio_message_of`)."""
        last = self._last_encoded
        if last[0] is message:
            return last[1]
        frame = self._encode(message)
        self._last_encoded = (message, frame)
        return frame

    def _push_urgent(self, frame: bytes) -> None:
        self._urgent.append(frame)
        self._wake.set()

    def send_soon(self, message: str | bytes) -> None:
        """Queue a message to go before any droppable one, never dropped by `drop_droppable`
        (a peer that reads nothing loses the oldest beyond 256). Not a checkpoint."""
        if self._ws.state is ConnectionState.OPEN and not self._output_shut:
            self._push_urgent(self._encode(message))

    async def send_droppable(self, messages: Sequence[str | bytes]) -> None:
        """Send `messages` (audio), or queue them behind a write under way; waits first while
        `max_queued` are already queued. A checkpoint."""
        await self.wait_space()
        self.send_droppable_nowait(messages)

    def send_droppable_nowait(self, messages: Sequence[str | bytes]) -> bool:
        """Send `messages` or queue them (even beyond `max_queued`); False when the queue is
        now full: wait with `wait_space` before more. Not a checkpoint."""
        if self._output_shut or self._ws.state is not ConnectionState.OPEN:
            return True
        if self._socket is not None and not (self._writing or self._partial or self._droppable):
            # The usual case: nothing under way, so write now, without a task switch.
            if len(messages) == 1 and not self._urgent:
                data = self._encode_droppable(messages[0])  # (one frame of audio: most ticks)
            else:
                data = b"".join([*self._urgent, *(self._encode_droppable(m) for m in messages)])
                self._urgent.clear()
            self._partial = data[self._write_now(data) :]
            if self._partial:
                self._wake.set()
            return True
        self._droppable.extend(self._encode_droppable(m) for m in messages)
        self._wake.set()
        return len(self._droppable) < self.max_queued

    async def wait_space(self) -> None:
        """Until fewer than `max_queued` droppable frames wait (or output is shut). A checkpoint."""
        while len(self._droppable) >= self.max_queued and not self._output_shut:
            self._space = trio.Event() if self._space.is_set() else self._space
            await self._space.wait()
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
        self.stop_polling()
        try:
            if self._ws.state is ConnectionState.OPEN:
                self.closed = CloseReason(code, reason)
                self._droppable.clear()
                self._urgent.append(self._ws.send(CloseConnection(code=code, reason=reason)))
            self._output_shut = True
            await self._flush()  # (our close, or the answer to the peer's)
            while self._ws.state is ConnectionState.LOCAL_CLOSING and not self._failed:  # the peer's answer
                self._take_in(await self._receive())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # (gone already)
        finally:
            if self.closed is None:
                self.closed = CloseReason(CloseCode.ABNORMAL_CLOSURE)
            await self._stream.aclose()


_READING = (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING)
_WHOLE_DATA = (0x81, 0x82)  # the first byte of a whole text or binary frame (FIN, no reserved bits)


class ReadPoller:
    """One epoll of a server's own for its WebSocket connections' sockets, read in one task.

    Why: a connection that reads in its own task pays, per 20 ms message, a wake-up of that
    task (trio's scheduler) and two changes of trio's epoll registration (trio arms each fd
    one-shot for each wait). Here every socket stays registered (level-triggered) in one epoll;
    the poller's task waits for that epoll, then reads each ready socket once, parses it and
    hands its messages to the connection's `on_message` (a transport takes audio there, without
    waiting). Only what must wait (a control message, input the session does not take now, the
    end, an error) wakes the connection's own reader task, which handles it in order. The more
    sockets are ready at once (the busier the server), the less each costs.

    An exception while handling one connection's message is raised in that connection's reader
    task, not here: one bad connection never stops the others' reading. Linux only
    (`available()`); elsewhere every connection reads in its own task.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._connections: dict[int, ServerWebSocket] = {}
        self._paused: set[int] = set()

    @staticmethod
    def available() -> bool:
        return hasattr(select, "epoll")

    def __len__(self) -> int:
        return len(self._connections)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read until cancelled; then every connection reads in its own task again."""
        fd = self._epoll.fileno()
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                for ready, _ in self._epoll.poll(0):
                    ws = self._connections.get(ready)
                    if ws is not None:
                        ws._on_readable()
        finally:
            for ws in list(self._connections.values()):
                ws.stop_polling()
            trio.lowlevel.notify_closing(fd)
            self._epoll.close()

    def add(self, fd: int, ws: ServerWebSocket) -> None:
        if self._epoll.closed:
            raise trio.ClosedResourceError("the poller has stopped")
        self._epoll.register(fd, select.EPOLLIN)
        self._connections[fd] = ws

    def forget(self, fd: int, ws: ServerWebSocket) -> None:
        if self._connections.get(fd) is ws:
            del self._connections[fd]
            self._paused.discard(fd)
            if not self._epoll.closed and ws._socket is not None and ws._socket.fileno() == fd:
                self._epoll.unregister(fd)  # (a closed socket left the epoll by itself)

    def pause(self, fd: int) -> None:
        """Stop reading `fd` (its reader is behind) until `resume`."""
        self._epoll.modify(fd, 0)
        self._paused.add(fd)

    def resume(self, ws: ServerWebSocket) -> None:
        if self._paused and ws._poll_fd in self._paused and self._connections.get(ws._poll_fd) is ws:
            self._paused.discard(ws._poll_fd)
            self._epoll.modify(ws._poll_fd, select.EPOLLIN)


def _frame(opcode: int, payload: bytes) -> bytes:
    """One whole unmasked frame (server to client, no extensions): RFC 6455 5.2."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def _unmask(data: bytearray, mask: bytearray) -> bytes:
    """RFC 6455 5.3: XOR with the 4-byte key, repeated: `websockets`' C `apply_mask` (5k
    instructions for 20 ms of 16 kHz audio), else one big-integer XOR (34k)."""
    if _apply_mask is not None:
        return _apply_mask(data, mask)
    return _unmask_by_int(data, mask)


def _unmask_by_int(data: bytearray, mask: bytearray) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (bytes(mask) * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
