"""The server's WebSocket (`transports._wire.ServerWebSocket`) against wsproto's client side,
on a real socket pair (the non-blocking fast path and the writer) and on trio's memory streams
(the writer only). The end-to-end checks with other clients (trio-websocket, `websockets`,
Chromium) are in test_server*.py and test_browser.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
import trio
import trio.testing
import wsproto
import wsproto.events as we

from trioagent._proto.browser import Hello
from trioagent.audio import AudioFrame
from trioagent.transports._wire import MAX_UNREAD, ConnectionClosed, ReadPoller, ServerWebSocket, _unmask, _unmask_by_int
from trioagent.transports.websocket import BrowserTransport


class Peer:
    """The client: wsproto over the other end."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.messages: list[str | bytes] = []
        self.closed: tuple[int, str] | None = None
        self._parts: list[str | bytes] = []

    def handshake(self) -> bytes:
        return self.ws.send(we.Request(host="localhost", target="/ws"))

    async def send(self, message: str | bytes) -> None:
        await self.stream.send_all(self.ws.send(we.TextMessage(data=message) if isinstance(message, str) else we.BytesMessage(data=message)))

    def take(self, data: bytes) -> None:
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, we.TextMessage | we.BytesMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    whole = "".join(self._parts) if isinstance(event, we.TextMessage) else b"".join(self._parts)  # type: ignore[arg-type]
                    self.messages.append(whole)
                    self._parts = []
            elif isinstance(event, we.CloseConnection):
                self.closed = (event.code, event.reason or "")

    async def read_until(self, done: object) -> None:
        while not done():  # type: ignore[operator]
            self.take(bytes(await self.stream.receive_some(65536)))


async def open_pair(small_buffers: bool = False) -> tuple[ServerWebSocket, Peer, socket.socket]:
    a, b = socket.socketpair()
    if small_buffers:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server_stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    peer = Peer(trio.SocketStream(trio.socket.from_stdlib_socket(b)))
    ws = await ServerWebSocket.accept(server_stream, peer.handshake(), max_message_size=1000)
    await peer.read_until(lambda: peer.ws.state is wsproto.connection.ConnectionState.OPEN)
    return ws, peer, b


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ServerWebSocket, Peer]]:
    ws, peer, _ = await open_pair()
    yield ws, peer
    await peer.stream.aclose()  # (a peer that answers no close: the end of its stream ends the wait)
    await ws.aclose()


async def test_frames_sent_right_behind_the_request_and_messages_both_ways(autojump_clock: trio.testing.MockClock) -> None:
    a, b = socket.socketpair()
    peer = Peer(trio.SocketStream(trio.socket.from_stdlib_socket(b)))
    early = wsproto.frame_protocol.FrameProtocol(client=True, extensions=[]).send_data("early", True)
    ws = await ServerWebSocket.accept(trio.SocketStream(trio.socket.from_stdlib_socket(a)), peer.handshake() + early)
    assert await ws.get_message() == "early"
    await ws.send_message("hi")
    await ws.send_droppable([b"\x01\x02", "mark"])
    ws.send_soon("control")
    await ws.send_droppable([b"\x03\x04"])  # (the control message goes first)
    await peer.read_until(lambda: len(peer.messages) == 5)
    assert peer.messages == ["hi", b"\x01\x02", "mark", "control", b"\x03\x04"]
    await peer.send("back")
    assert await ws.get_message() == "back"
    await peer.stream.aclose()  # (a peer that answers no close: the end of its stream ends the wait)
    await ws.aclose()


async def test_text_binary_ping_and_the_peers_close(autojump_clock: trio.testing.MockClock, pair: tuple[ServerWebSocket, Peer]) -> None:
    ws, peer = pair
    await peer.send("hello")
    await peer.send(b"\x00\x01")
    await peer.stream.send_all(peer.ws.send(we.Ping(payload=b"p1")))
    await peer.send("last")
    await peer.stream.send_all(peer.ws.send(we.CloseConnection(code=4000, reason="bye")))
    assert [await ws.get_message() for _ in range(3)] == ["hello", b"\x00\x01", "last"]  # (all that came before the close)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (4000, "bye")
    await ws.aclose()  # answers the close (and the ping before it)
    pongs: list[bytes] = []
    while data := bytes(await peer.stream.receive_some(65536)):
        peer.ws.receive_data(data)
        pongs += [e.payload for e in peer.ws.events() if isinstance(e, we.Pong)]
    assert pongs == [b"p1"]
    assert peer.ws.state is wsproto.connection.ConnectionState.CLOSED


async def test_a_message_over_the_limit_closes_with_1009(autojump_clock: trio.testing.MockClock, pair: tuple[ServerWebSocket, Peer]) -> None:
    ws, peer = pair
    await peer.send(b"\x00" * 600)
    await peer.stream.send_all(peer.ws.send(we.BytesMessage(data=b"\x00" * 600, message_finished=False)))
    await peer.stream.send_all(peer.ws.send(we.BytesMessage(data=b"\x00" * 600)))  # 1,200 in all
    assert await ws.get_message() == b"\x00" * 600
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1009
    with trio.fail_after(1):
        await ws.aclose()  # (a failed connection waits for no answer: RFC 6455 7.1.7)
    await peer.read_until(lambda: peer.closed is not None)
    assert peer.closed == (1009, "Exceeded maximum message size: 1000 bytes")
    assert ws.closed is not None and ws.closed.code == 1009


async def test_a_frame_that_breaks_the_protocol_closes_with_1002(autojump_clock: trio.testing.MockClock, pair: tuple[ServerWebSocket, Peer]) -> None:
    ws, peer = pair
    unmasked = wsproto.frame_protocol.FrameProtocol(client=False, extensions=[]).send_data(b"x", True)  # (a client must mask)
    await peer.stream.send_all(unmasked)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert closed.value.reason.code == 1002
    with trio.move_on_after(1):
        await ws.aclose()  # (the peer never answers: the caller's bound)
    await peer.read_until(lambda: peer.closed is not None)
    assert peer.closed is not None and peer.closed[0] == 1002


async def test_a_stuck_peer_gets_whole_frames_back_pressure_and_clear(autojump_clock: trio.testing.MockClock) -> None:
    """A peer that stops reading: the socket's buffer fills (a write goes out in part), then
    `max_queued` frames wait, then the sender waits; clear() drops the queue; when the peer
    reads again every frame it gets is whole and in order."""
    ws, peer, _ = await open_pair(small_buffers=True)
    ws.max_queued = 4
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.writer)
        sent = 0
        with trio.move_on_after(1) as blocked:
            while sent < 10_000:
                await ws.send_droppable([np.full(480, sent, np.int16).tobytes()])
                sent += 1
        assert blocked.cancelled_caught and 4 < sent < 10_000  # the pump waits instead of queueing without end
        assert ws._partial  # (a frame the socket took only part of: its rest is kept)
        ws.send_soon("control")  # (never dropped)
        ws.drop_droppable()  # barge-in
        with trio.fail_after(1):
            for _ in range(4):
                await ws.send_droppable([np.full(480, -1, np.int16).tobytes()])
        n = len(peer.messages)
        while len(peer.messages) < n + 1 or peer.messages[-1] != np.full(480, -1, np.int16).tobytes() or len([m for m in peer.messages if m == np.full(480, -1, np.int16).tobytes()]) < 4:
            peer.take(bytes(await peer.stream.receive_some(65536)))
        nursery.cancel_scope.cancel()
    audio = [m for m in peer.messages if isinstance(m, bytes)]
    assert all(len(m) == 960 for m in audio)  # whole frames only
    values = [int(np.frombuffer(m, np.int16)[0]) for m in audio]
    kept = values[: values.index(-1)]
    assert kept == list(range(len(kept))) and len(kept) < sent  # in order; the queued ones dropped
    assert values[len(kept) :] == [-1] * 4
    assert "control" in peer.messages
    await peer.stream.aclose()  # (a peer that answers no close: the end of its stream ends the wait)
    await ws.aclose()


async def test_on_memory_streams_everything_goes_through_the_writer(autojump_clock: trio.testing.MockClock) -> None:
    server_stream, client_stream = trio.testing.lockstep_stream_pair()
    peer = Peer(client_stream)
    async with trio.open_nursery() as nursery:
        accepted: list[ServerWebSocket] = []

        async def accept() -> None:
            accepted.append(await ServerWebSocket.accept(server_stream, peer.handshake()))

        nursery.start_soon(accept)
        await peer.read_until(lambda: peer.ws.state is wsproto.connection.ConnectionState.OPEN)
    (ws,) = accepted
    transport = BrowserTransport(ws, Hello(16000, 24000, ""), max_queued=4, mark_every=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.run)
        frame = AudioFrame(np.zeros(480, np.int16), 24000)
        sent = 0
        with trio.move_on_after(1) as blocked:
            while sent < 100:
                await transport.send_audio(frame)
                sent += 1
        assert blocked.cancelled_caught and sent <= 6  # one in the writer's hands, four queued
        transport.clear()
        with trio.fail_after(1):
            for _ in range(4):
                await transport.send_audio(frame)
        clear = '{"type": "clear"}'

        def after_clear() -> list[object]:
            kinds = [m if isinstance(m, str) else len(m) for m in peer.messages]
            return kinds[kinds.index(clear) + 1 :] if clear in kinds else []

        nursery.start_soon(peer.read_until, lambda: len(after_clear()) == 4)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    kinds = [m if isinstance(m, str) else len(m) for m in peer.messages]
    # What the writer had taken before clear() (one or two frames: trio runs a batch's tasks in
    # either order), then the clear (before queued audio), then the four sent after it.
    taken = kinds.index(clear)
    assert 1 <= taken <= 2 and kinds[:taken] == [960] * taken and after_clear() == [960] * 4


# -- the frame parser against wsproto's ------------------------------------------------------
def _opened_pair() -> tuple[ServerWebSocket, wsproto.WSConnection, wsproto.WSConnection]:
    """Ours and wsproto's server side, both past the handshake (no I/O: fed by hand)."""
    client = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    request = client.send(we.Request(host="localhost", target="/ws"))
    ours = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    reference = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    for server in (ours, reference):
        server.receive_data(request)
        assert any(isinstance(e, we.Request) for e in server.events())
        server.send(we.AcceptConnection())
    return ServerWebSocket(trio.testing.MemorySendStream(), ours, max_message_size=1 << 30), client, reference  # type: ignore[arg-type]


def _reference(server: wsproto.WSConnection, chunks: list[bytes]) -> tuple[list[str | bytes], int | None, int]:
    """wsproto's reading: the whole messages, the close code (None: still open), pings."""
    messages: list[str | bytes] = []
    parts: list[str | bytes] = []
    pings = 0
    for chunk in chunks:
        server.receive_data(chunk)
        for event in server.events():
            if isinstance(event, we.TextMessage | we.BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    messages.append("".join(parts) if isinstance(event, we.TextMessage) else b"".join(parts))  # type: ignore[arg-type]
                    parts = []
            elif isinstance(event, we.Ping):
                pings += 1
            elif isinstance(event, we.CloseConnection):
                return messages, event.code, pings
    return messages, None, pings


def _frame_bytes(opcode: int, payload: bytes, fin: bool, rsv: int, masked: bool, wide: bool) -> bytes:
    """A client frame as a peer may write it (valid or not)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if wide or n >= 65536:
        head += bytes([mask_bit | 127]) + n.to_bytes(8, "big")
    elif n >= 126:
        head += bytes([mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | n])
    if not masked:
        return head + payload
    key = b"\x37\xfa\x21\x3d"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


_frames = st.lists(
    st.one_of(
        # mostly well-formed frames: data, fragments, pings, closes
        st.tuples(st.sampled_from([0x0, 0x1, 0x2, 0x9, 0xA]), st.binary(max_size=300), st.booleans(), st.just(0), st.just(True), st.just(False)),
        st.tuples(st.just(0x1), st.text(max_size=40).map(str.encode), st.just(True), st.just(0), st.just(True), st.just(False)),
        st.tuples(st.just(0x8), st.sampled_from([b"", b"\x03\xe8", b"\x03\xe8bye", b"\x0f\xa0", b"\x03\xed", b"\x03\xe8\xff", b"\x01"]), st.just(True), st.just(0), st.just(True), st.just(False)),
        # and anything a peer might put in a header
        st.tuples(st.integers(0, 15), st.binary(max_size=200), st.booleans(), st.integers(0, 7), st.booleans(), st.booleans()),
    ),
    max_size=8,
)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(frames=_frames, cuts=st.lists(st.integers(0, 4000), max_size=6))
def test_the_frame_parser_reads_what_wsproto_reads(frames: list[tuple[int, bytes, bool, int, bool, bool]], cuts: list[int]) -> None:
    """Any sequence of client frames, cut anywhere: the same whole messages, pings and close
    code as wsproto's own parser (the reason text may differ)."""
    data = b"".join(_frame_bytes(*f) for f in frames)
    edges = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    chunks = [data[a:b] for a, b in zip(edges, edges[1:])]
    ws, _, reference = _opened_pair()
    want_messages, want_code, want_pings = _reference(reference, chunks)
    for chunk in chunks:
        if ws.closed is not None:
            break
        ws._take_in(chunk)
    got = list(ws._messages)
    got_code = ws.closed.code if ws.closed is not None else None
    pongs = sum(1 for f in ws._urgent if f[0] == 0x8A)
    if want_code == 1006:
        want_code = None  # (wsproto's "abnormal" is never sent: the connection is simply open)
    assert (got, got_code) == (want_messages, want_code)
    if want_code is None:
        assert pongs == want_pings


@pytest.mark.parametrize("unmask", [_unmask, _unmask_by_int])
def test_the_unmasking_matches_the_rfc(unmask: Callable[[bytearray, bytearray], bytes]) -> None:
    key = bytearray(b"\x01\x02\x03\x04")
    for n in (11, 640, 641):
        data = bytearray(i % 251 for i in range(n))
        assert unmask(data, key) == bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert unmask(bytearray(), key) == b""


async def test_silence_is_encoded_once_and_other_audio_every_time(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.audio import Mixer

    ws, peer, _ = await open_pair()
    transport = BrowserTransport(ws, Hello(16000, 24000, ""), mark_every=0, send_silence=True)
    silent = Mixer(sample_rate=24000).mix(0.0)  # (the mixer's shared read-only silence)
    loud = AudioFrame(np.full(480, 7, np.int16), 24000)
    for frame in (silent, silent, loud, silent):
        assert transport.send_audio_nowait(frame)
    assert transport._kept is not None and transport._kept[0] is silent.samples
    encoded = ws._encode_droppable(transport._audio_message_of(silent))
    assert ws._encode_droppable(transport._audio_message_of(silent)) is encoded  # made once, sent again
    loud.samples[:] = 9  # (a writable array is never kept: the same object may hold new audio)
    assert transport.send_audio_nowait(loud)
    await peer.read_until(lambda: len(peer.messages) == 5)
    assert peer.messages == [bytes(960), bytes(960), np.full(480, 7, "<i2").tobytes(), bytes(960), np.full(480, 9, "<i2").tobytes()]
    await peer.stream.aclose()
    await ws.aclose()


async def test_by_default_the_mixers_idle_frames_are_not_sent(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.audio import Mixer
    from trioagent.audio.mixer import is_idle

    ws, peer, _ = await open_pair()
    transport = BrowserTransport(ws, Hello(16000, 24000, ""), mark_every=2)
    mixer = Mixer(sample_rate=24000)
    idle = mixer.mix(0.0)
    played_zeros = AudioFrame(np.zeros(480, np.int16), 24000, timestamp=0.02)  # (silence a source played: sent)
    loud = AudioFrame(np.full(480, 7, np.int16), 24000, timestamp=0.04)
    assert is_idle(idle) and is_idle(Mixer(sample_rate=24000).mix(1.0)) and not is_idle(played_zeros)
    for frame in (idle, played_zeros, idle, loud, idle):
        assert transport.send_audio_nowait(frame)
    await transport.send_audio(idle)
    await peer.read_until(lambda: len(peer.messages) == 3)
    assert peer.messages == [bytes(960), np.full(480, 7, "<i2").tobytes(), '{"type": "mark", "name": "t=0.060"}']
    assert transport._sent_until == pytest.approx(0.06)  # (what was heard is counted in what was sent)
    await peer.stream.aclose()
    await ws.aclose()


# -- the server's shared reader (ReadPoller) ---------------------------------------------------

linux_only = pytest.mark.skipif(not ReadPoller.available(), reason="the poller is epoll's (Linux)")


@linux_only
async def test_a_poller_hands_messages_over_in_its_task_in_order_and_wakes_the_reader_for_the_rest(autojump_clock: trio.testing.MockClock) -> None:
    poller = ReadPoller()
    handled: list[tuple[str, str | bytes]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        ws, peer, _ = await open_pair()
        ws.read_with(poller)
        assert len(poller) == 1

        def take(message: str | bytes) -> bool:
            if isinstance(message, str):
                return False  # (left to the reader)
            handled.append(("poller", message))
            return True

        ws.on_message = take
        reader_steps = 0

        async def reader() -> None:
            nonlocal reader_steps
            while True:
                try:
                    message = await ws.receive_message()
                except ConnectionClosed:
                    return
                reader_steps += 1
                assert message is not None
                handled.append(("reader", message))

        nursery.start_soon(reader)
        await trio.sleep(0.01)  # (it waits: from now on the poller hands messages over)
        for i in range(20):
            await peer.send(bytes([i, 0]))
            await trio.sleep(0.02)
        assert reader_steps == 0  # every binary message went by the poller
        # In one write: the poller takes the first, leaves the text and what follows it to the
        # reader, which handles them in order.
        await peer.stream.send_all(b"".join(peer.ws.send(m) for m in (we.BytesMessage(data=b"a1"), we.TextMessage(data="t"), we.BytesMessage(data=b"a2"))))
        await trio.sleep(0.02)
        assert handled[20:] == [("poller", b"a1"), ("reader", "t"), ("reader", b"a2")]
        await peer.send(b"a3")  # (the reader waits again: the poller's turn)
        await trio.sleep(0.02)
        assert handled[-1] == ("poller", b"a3")
        await peer.stream.aclose()  # the end: the reader hears it, the poller lets go
        await trio.sleep(0.02)
        assert ws.closed is not None and ws.closed.code == 1006 and len(poller) == 0
        await ws.aclose()
        nursery.cancel_scope.cancel()
    assert handled[:20] == [("poller", bytes([i, 0])) for i in range(20)]


@linux_only
async def test_a_poller_raises_a_connections_failure_in_its_reader_and_reads_the_others_on(autojump_clock: trio.testing.MockClock) -> None:
    poller = ReadPoller()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        (bad, bad_peer, _), (good, good_peer, _) = await open_pair(), await open_pair()
        taken: list[str | bytes] = []

        def fail(message: str | bytes) -> bool:
            raise ValueError(f"cannot take {message!r}")

        def keep(message: str | bytes) -> bool:
            taken.append(message)
            return True

        for ws, take in ((bad, fail), (good, keep)):
            ws.read_with(poller)
            ws.on_message = take
        failures: list[Exception] = []

        async def read(ws: ServerWebSocket) -> None:
            try:
                while True:
                    await ws.receive_message()
            except (ValueError, ConnectionClosed) as exc:
                failures.append(exc)

        nursery.start_soon(read, bad)
        nursery.start_soon(read, good)
        await trio.sleep(0.01)
        await bad_peer.send(b"x")
        await good_peer.send(b"y")
        await trio.sleep(0.01)
        await good_peer.send(b"z")
        await trio.sleep(0.01)
        assert [str(e) for e in failures] == ["cannot take b'x'"]  # in the bad one's reader
        assert taken == [b"y", b"z"]
        nursery.cancel_scope.cancel()
    for ws, peer in ((bad, bad_peer), (good, good_peer)):
        await peer.stream.aclose()
        await ws.aclose()


@linux_only
async def test_a_busy_reader_stops_the_poller_reading_its_socket_and_nothing_is_lost(autojump_clock: trio.testing.MockClock) -> None:
    poller = ReadPoller()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        ws, peer, _ = await open_pair(small_buffers=True)
        ws.max_message_size = 100_000
        ws.read_with(poller)
        sent = [i.to_bytes(2, "big") * 500 for i in range(200)]  # 200 kB: more than the socket buffers

        async def send_all() -> None:
            for message in sent:
                await peer.send(message)

        nursery.start_soon(send_all)
        await trio.sleep(1.0)  # nobody reads: the poller reads up to MAX_UNREAD messages, then lets TCP hold the rest
        assert MAX_UNREAD <= len(ws._messages) < MAX_UNREAD + 70
        got = [await ws.get_message() for _ in sent]
        assert got == sent
        nursery.cancel_scope.cancel()
    await peer.stream.aclose()
    await ws.aclose()


@linux_only
async def test_once_the_poller_stops_each_connection_reads_by_itself(autojump_clock: trio.testing.MockClock) -> None:
    ws, peer, _ = await open_pair()
    got: list[str | bytes] = []

    async def reader() -> None:
        got.append(await ws.get_message())
        got.append(await ws.get_message())

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as polling:
            poller = ReadPoller()
            await polling.start(poller.run)
            ws.read_with(poller)
            outer.start_soon(reader)
            await peer.send("one")
            await trio.sleep(0.01)
            assert got == ["one"]
            polling.cancel_scope.cancel()  # (the reader waits for its second message meanwhile)
        assert len(poller) == 0 and ws._poller is None
        await peer.send("two")
    assert got == ["one", "two"]
    await peer.stream.aclose()
    await ws.aclose()


@linux_only
async def test_audio_the_session_does_not_take_waits_in_the_reader_task_in_order(autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    from trioagent.transports import websocket

    monkeypatch.setattr(websocket, "INPUT_QUEUE", 2)
    poller = ReadPoller()
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        ws, peer, _ = await open_pair()
        ws.read_with(poller)
        transport = BrowserTransport(ws, Hello(16000, 24000, ""), mark_every=0)
        hooked: list[AudioFrame] = []

        def hook(frame: AudioFrame) -> bool:
            if len(hooked) == 3:
                return False  # the session stops taking audio (an STT that hangs, say)
            hooked.append(frame)
            return True

        transport.input_hook = hook
        nursery.start_soon(transport.run)
        await trio.sleep(0.01)
        for i in range(10):
            await peer.send(np.full(320, i, "<i2").tobytes())
        await peer.send('{"type": "mark", "name": "t=0.100"}')
        await trio.sleep(1.0)
        # Three heard, two queued for the session, the next owed by the reader, which waits to
        # hand it over; the rest and the end wait behind it (owed too, or unread).
        assert len(hooked) == 3 and transport._owed and len(transport._owed) + len(ws._messages) == 6
        await peer.stream.aclose()  # (the end: input closes once all before it is handed over)
        queued = [frame async for frame in transport.audio_in]
        assert [int(f.samples[0]) for f in hooked + queued] == list(range(10))
        assert np.all(np.diff([f.timestamp for f in hooked + queued]) >= 0.02 - 1e-9)  # (the last read late: stamped then)
        nursery.cancel_scope.cancel()
    await ws.aclose()
