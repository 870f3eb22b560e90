"""Issue 10: the server against hostile and broken peers, in virtual time over in-memory
streams (the same server code; raw bytes or the trio-websocket client on the other side)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events

from trioagent import Agent, MCPServerStdio
from trioagent.mcp import MCPManager
from trioagent.pipeline.base import Pipeline

from .kit import all_tasks
from .netkit import (
    TWILIO_CONNECTED, Client, MemoryListener, browser_client, factory, hello, open_ws, raw_exchange, start_memory_server,
    twilio_start, upgrade_request,
)
from .test_server import browser_conversation, close_reason


async def test_header_bytes_that_are_not_utf8_get_an_http_answer(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    server, listener = await start_memory_server(nursery, allowed_origins={"https://good.example"})
    answer = await raw_exchange(listener, upgrade_request(Origin=b"\xff\xfe\x80"))
    assert answer.startswith(b"HTTP/1.1 403") and answer.endswith(b"origin not allowed")
    answer = await raw_exchange(listener, upgrade_request(Cookie=b"\xc3\x28", User_Agent=b"\xff"))  # any other header
    assert answer.startswith(b"HTTP/1.1 403")  # (still no allowed Origin)
    assert await raw_exchange(listener, b"\xff\xfe GARBAGE\r\n\r\n") == b"HTTP/1.1 400 \r\ncontent-type: text/plain\r\ncontent-length: 11\r\nconnection: close\r\n\r\nbad request"
    assert "Traceback" not in caplog.text and "connection failed" not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"Sec_WebSocket_Key": None}, 400),
        ({"Sec_WebSocket_Key": b"short"}, 400),
        ({"Sec_WebSocket_Version": b"8"}, 426),
        ({"Connection": b"keep-alive"}, 400),
        ({"Upgrade": None}, 426),
    ],
)
async def test_rejected_handshakes_leave_nothing_behind(autojump_clock: trio.testing.MockClock, overrides: dict[str, Any], status: int) -> None:
    before = len(all_tasks())
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery)
        running = len(all_tasks())
        for _ in range(50):
            answer = await raw_exchange(listener, upgrade_request(**overrides), read_for=60)
            assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer
        await trio.testing.wait_all_tasks_blocked()
        assert len(all_tasks()) == running  # each handler ended with its answer: no task, no connection left
        answer = await raw_exchange(listener, b"POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\ncontent-length: 0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405")
        server.shutdown()
    assert len(all_tasks()) == before


class SilentPeer:
    """A WebSocket client (wsproto over a raw stream) that talks, then never reads again: it
    does not answer the server's close frame."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)

    async def open(self, path: str) -> None:
        await self.stream.send_all(self.ws.send(wsproto.events.Request(host="localhost", target=path)))
        while True:
            self.ws.receive_data(await self.stream.receive_some(65536))
            if any(isinstance(e, wsproto.events.AcceptConnection) for e in self.ws.events()):
                return

    async def send(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(wsproto.events.TextMessage(data=text)))


async def test_a_peer_that_never_answers_the_close_frees_its_slot_at_once(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery, max_sessions=1)
    stream = await listener.connect()
    peer = SilentPeer(stream)
    await peer.open("/ws")
    await peer.send(hello())
    await trio.sleep(1.0)
    t = trio.current_time()
    await peer.send(json.dumps({"type": "end"}))  # ... and then it reads nothing, answers nothing
    with trio.fail_after(1):
        while server.active:
            await trio.sleep(0.001)
    assert trio.current_time() - t < 0.01  # the slot is free when the session ends
    # a healthy caller is served at once (max_sessions=1)
    assert [m["text"] for m in (await browser_conversation(listener)).of("transcript")] == ["hello agent"]
    # and the silent peer's TCP connection was dropped after the 2 s close bound
    with trio.fail_after(1):
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    assert b"session ended" in received  # the close frame went out; then the connection closed


async def test_a_factory_that_never_returns_is_bounded(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    async def stuck() -> tuple[Agent, Pipeline]:
        await trio.sleep_forever()
        raise AssertionError

    server, listener = await start_memory_server(nursery, factory_timeout=10.0)
    server.factory = stuck
    t = trio.current_time()
    assert await close_reason(listener, "/ws", [hello()]) == (1011, "the agent did not start within 10 s")
    assert trio.current_time() - t == pytest.approx(10.0, abs=1e-6)
    assert server.active == 0 and server.refused == {"factory": 1}


async def test_an_agent_whose_mcp_server_fails_to_start_gets_1011_and_one_log_line(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> tuple[Agent, Pipeline]:
        agent, pipeline = factory()
        agent.mcp_manager = MCPManager([MCPServerStdio("/nonexistent/mcp-server", name="crm")])
        return agent, pipeline

    server, listener = await start_memory_server(nursery)
    server.factory = broken
    assert await close_reason(listener, "/ws", [hello()]) == (1011, "the agent could not start")
    assert server.active == 0 and server.refused == {"agent_failed": 1}
    (record,) = [r for r in caplog.records if r.name == "trioagent.server"]
    assert record.getMessage().startswith("the agent could not start: MCP server 'crm' did not start: FileNotFoundError")
    assert record.exc_info is None  # one line: what failed and why
    server.factory = factory
    await browser_conversation(listener)  # the server goes on


async def test_a_drain_closes_a_session_that_is_still_starting(autojump_clock: trio.testing.MockClock) -> None:
    async def slow() -> tuple[Agent, Any]:
        await trio.sleep(60)
        return factory()

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, factory_timeout=100.0, grace=1.0)
        server.factory = slow
        got: list[tuple[int, str]] = []

        async def caller() -> None:
            got.append(await close_reason(listener, "/ws", [hello()]))

        nursery.start_soon(caller)
        await trio.sleep(0.5)
        t = trio.current_time()
        server.shutdown()
    assert got == [(1001, "server shutting down")]
    assert trio.current_time() - t == pytest.approx(1.0, abs=1e-3)  # the grace, not the factory's minute


@pytest.mark.parametrize("path", ["/ws", "/twilio"])
async def test_hanging_up_at_once_is_a_normal_close(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, path: str, caplog: pytest.LogCaptureFixture) -> None:
    class Greeter(Agent):
        async def on_enter(self) -> None:
            await self.session.say("Welcome to the line")

    server, listener = await start_memory_server(nursery)
    server.factory = lambda: (Greeter(), factory()[1])
    if path == "/ws":
        messages: list[str] = [hello(), json.dumps({"type": "end"})]
    else:
        stop = json.dumps({"event": "stop", "streamSid": "MZ1"})
        messages = [TWILIO_CONNECTED, twilio_start(), stop]
    assert await close_reason(listener, path, messages) == (1000, "session ended")
    assert server.active == 0 and server.refused == {}
    assert "Traceback" not in caplog.text and "SessionClosed" not in caplog.text


DEEP = "[" * 30_000 + "]" * 30_000  # 60 KB: under the 64 KiB limit
HUGE_INT = '{"type": "mark", "name": ' + "9" * 5_000 + "}"


@pytest.mark.parametrize(
    ("path", "messages", "reason"),
    [
        ("/ws", [DEEP], "nested too deep"),
        ("/ws", [hello(), DEEP], "nested too deep"),
        ("/ws", [hello(), HUGE_INT], "not usable JSON"),
        ("/twilio", [DEEP], "nested too deep"),
        ("/twilio", [twilio_start(), json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "", "timestamp": 1e999}}).replace("Infinity", "1e999")], "timestamp"),
        ("/twilio", [twilio_start(), '{"event": "media", "streamSid": "MZ1", "media": {"payload": "", "timestamp": -5}}'], "timestamp"),
    ],
)
async def test_json_that_defeats_a_parser_gets_1007(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, path: str, messages: list[str], reason: str, caplog: pytest.LogCaptureFixture) -> None:
    server, listener = await start_memory_server(nursery)
    code, why = await close_reason(listener, path, messages)
    assert code == 1007 and reason in why
    assert "Traceback" not in caplog.text


async def test_control_messages_are_rate_limited(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    # Ten a second for ten seconds: fine.
    ws, client = await browser_client(nursery, listener)
    for _ in range(100):
        await ws.send_message(json.dumps({"type": "interrupt"}))
        await trio.sleep(0.1)
    assert client.closed is None and server.active == 1
    await ws.aclose()
    # A flood: closed with 1008 once the burst allowance (40) is spent.
    interrupts = [json.dumps({"type": "interrupt"})] * 1000
    assert await close_reason(listener, "/ws", [hello(), *interrupts]) == (1008, "too many control messages (over 20 a second)")


async def test_interrupt_clears_only_what_plays(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    ws, client = await browser_client(nursery, listener)
    await trio.sleep(0.5)
    for _ in range(30):  # nothing is playing: no clear goes out, nothing is queued
        await ws.send_message(json.dumps({"type": "interrupt"}))
    await trio.sleep(0.5)
    assert client.of("clear") == []
    await ws.aclose()


class HungSTT:
    """Takes ten frames, then never reads again (a recogniser that hung)."""

    sample_rate = 16000

    async def run(self, audio: Any, events: Any) -> None:
        async with audio, events:
            for _ in range(10):
                await audio.receive()
            await trio.sleep_forever()


async def test_a_hung_stt_ends_that_session_with_1011_and_an_error(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    from trioagent import CascadingPipeline
    from trioagent.testing import ScriptedLLM, ToneTTS, silence

    server, listener = await start_memory_server(nursery)
    server.factory = lambda: (Agent(), CascadingPipeline(stt=HungSTT(), llm=ScriptedLLM([]), tts=ToneTTS()))
    async with trio.open_nursery() as client_side:
        ws, client = await browser_client(client_side, listener)
        t = trio.current_time()
        with pytest.raises(trio_websocket.ConnectionClosed):
            await client.send_audio(silence(30.0))
        gone = trio.current_time() - t
    # The STT takes ten 60 ms chunks (0.6 s), 83 more (5 s) wait for it and one more is being
    # handed over, then 5 s more without it taking any: the session ends (the last frame's
    # 20 ms on the way in).
    assert gone == pytest.approx(0.6 + 4.98 + 0.06 + 5.0 + 0.02)
    assert client.closed is not None and (client.closed.code, client.closed.reason) == (1011, "the agent failed")
    assert client.of("error") == [{"type": "error", "stage": "stt", "reason": "speech recognition (HungSTT) timed out", "fatal": True}]
    transport_frames = server.refused
    assert transport_frames == {"agent_failed": 1}


async def test_a_reply_that_fails_tells_the_browser_and_the_call_goes_on(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    from trioagent import CascadingPipeline
    from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech

    server, listener = await start_memory_server(nursery)
    server.factory = lambda: (Agent(), CascadingPipeline(stt=ScriptedSTT(["one", "two"]), llm=ScriptedLLM([None, "Second time lucky."]), tts=ToneTTS()))
    ws, client = await browser_client(nursery, listener)
    await client.send_audio(speech(1.0) + silence(1.0))  # the LLM never answers this turn
    await client.send_audio(silence(15.0))
    assert client.of("error") == [{"type": "error", "stage": "llm", "reason": "the language model (ScriptedLLM) timed out", "fatal": False}]
    assert client.time_of("error")[0] == pytest.approx(client.time_of("ready")[0] + 1.5 + 15.0, abs=0.05)  # 15 s after the end of turn
    await client.send_audio(speech(1.0) + silence(2.0))
    assert [m["text"] for m in client.of("agent_text")] == ["Second time lucky."]
    assert client.closed is None
    await ws.aclose()


async def test_a_connection_accepted_before_a_drain_is_served(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    """A drain stops accepting, but a connection already accepted (a worker's supervisor handed
    it over just before a rolling restart drained that worker) is served, not refused: the
    drain waits for it like a session, within the grace."""
    server, listener = await start_memory_server(nursery, grace=10.0)
    stream = await listener.connect()
    await trio.sleep(0.1)  # accepted; its request head is still to come
    server.shutdown()
    await trio.sleep(0.1)
    assert server.active == 0 and len(server._pending) == 1  # (the drain waits for it)
    client = await browser_conversation(listener, stream=stream)
    assert [m["text"] for m in client.of("agent_text")] == ["Hi there. How can I help?"]
    assert client.closed is not None and client.closed.code == 1000 and server.refused == {}


async def test_a_flood_of_silent_connections_drops_the_oldest_not_a_caller(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections that send nothing (or half a request) are held for `hello_timeout` each; past
    `max_pending` of them, each new connection drops the one that has waited longest, so a
    caller, whose request comes at once, is never the one dropped and is served."""
    server, listener = await start_memory_server(nursery, max_pending=5, hello_timeout=10.0)
    t0 = trio.current_time()
    closed: dict[int, float] = {}

    async def watch(i: int, stream: trio.abc.Stream) -> None:
        while await stream.receive_some(65536):
            pass
        closed[i] = trio.current_time() - t0

    for i in range(8):
        stream = await listener.connect()
        if i % 2:
            await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # half a request head
        nursery.start_soon(watch, i, stream)
        await trio.sleep(0.5)
    # A caller comes during the flood (the ninth connection: it drops the fourth silent one).
    t = trio.current_time() - t0
    client = await browser_conversation(listener)
    assert [m["text"] for m in client.of("transcript")] == ["hello agent"]
    await trio.sleep(20)
    # The three oldest were dropped as the sixth, seventh and eighth came, the fourth by the
    # caller; the rest at their hello_timeout.
    assert closed == {0: 2.5, 1: 3.0, 2: 3.5, 3: t, 4: 12.0, 5: 12.5, 6: 13.0, 7: 13.5}
    assert server.refused == {"pending": 4} and not server._pending
    # A warning at most once a second, not one per connection.
    assert caplog.text.count("without a request, handshake or hello") == 2  # (at 2.5 s and 3.5 s)


async def test_connections_that_never_say_hello_hold_no_session_slot(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    """Handshakes without a hello (the token comes with it) are pending connections, not
    sessions: they cannot fill `max_sessions`, and a flood of them drops its oldest first."""
    server, listener = await start_memory_server(nursery, max_sessions=2, max_pending=4, hello_timeout=10.0)
    mute = []
    for _ in range(6):
        mute.append(await open_ws(nursery, listener, "/ws"))  # the handshake, and then nothing
        await trio.sleep(0.1)
    assert server.active == 0 and len(server._pending) == 4  # (the fifth and sixth dropped the first two)
    callers = [await browser_conversation(listener) for _ in range(2)]
    assert [[m["text"] for m in c.of("transcript")] for c in callers] == [["hello agent"]] * 2
    # The first caller dropped the third mute one; the other three got 1007 at their hello_timeout.
    assert server.refused == {"pending": 3, "protocol": 3}
    # A hello with a bad token takes no slot either, and is told why.
    assert await close_reason(listener, "/ws", [hello(token="forged")]) == (1008, "unauthorized: malformed token")
    # The full server still says so at once, before any hello.
    server.max_sessions = 0
    assert await close_reason(listener, "/ws", []) == (1013, "server full: too many sessions")


class _ScarceListener(trio.abc.Listener[trio.abc.Stream]):
    """Accept fails with these errors first (out of descriptors, say), then gives streams."""

    def __init__(self, errors: list[int]) -> None:
        self.errors = errors
        self.given = 0

    async def accept(self) -> trio.abc.Stream:
        await trio.sleep(0)
        if self.errors:
            import os

            code = self.errors.pop(0)
            raise OSError(code, os.strerror(code))
        if self.given:
            await trio.sleep_forever()
        self.given += 1
        return trio.testing.memory_stream_pair()[0]

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def test_accept_out_of_descriptors_pauses_and_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE or ENOBUFS from accept (the process at its open-file limit) pauses the accept loop
    for 100 ms, logged, and it goes on, in a server and in `--workers`' supervisor alike (trio's
    listener raises them); any other error is raised."""
    import errno

    from trioagent.server import Server
    from trioagent.workers import Supervisor

    supervisor = Supervisor([], 0)
    handed: list[float] = []

    async def hand(self: Supervisor, stream: trio.abc.Stream) -> None:
        handed.append(trio.current_time())

    monkeypatch.setattr(Supervisor, "_hand", hand)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervisor._accept, _ScarceListener([errno.EMFILE, errno.ENOBUFS]))
        server = Server(lambda: None)
        server_handled: list[float] = []

        async def handle(self: Server, stream: trio.abc.Stream, waiting: trio.CancelScope) -> None:
            server_handled.append(trio.current_time())

        monkeypatch.setattr(Server, "_handle", handle)
        nursery.start_soon(server._accept, _ScarceListener([errno.ENFILE]), nursery)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert handed == [pytest.approx(0.2)] and server_handled == [pytest.approx(0.1)]
    assert sum("pausing 100 ms" in r.message for r in caplog.records) == 3
    with pytest.raises(OSError, match="Bad file descriptor"):
        await supervisor._accept(_ScarceListener([errno.EBADF]))  # type: ignore[arg-type]


async def test_the_hand_over_skips_a_backed_up_worker_and_gives_up_after_a_second(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """`--workers`' supervisor never waits on one worker's socket: a full one (a stuck worker's)
    is skipped for the next best; when every worker's is full it tries again every 10 ms and,
    a second later, closes the connection (counted, logged)."""
    import socket as socket_module

    from trioagent.workers import Supervisor, _Worker

    class Raw:
        def __init__(self, full: bool) -> None:
            self.full, self.sent = full, 0

        def sendmsg(self, *args: Any) -> int:
            if self.full:
                raise BlockingIOError
            self.sent += 1
            return 1

    class Stream:
        def __init__(self) -> None:
            self.socket = socket_module.socket()
            self.closed_at: float | None = None

        async def aclose(self) -> None:
            self.socket.close()
            self.closed_at = trio.current_time()

    stuck, other = Raw(full=True), Raw(full=False)
    supervisor = Supervisor([], 2)
    now = trio.current_time()
    supervisor._pool.extend([_Worker(1, None, None, stuck, reported_at=now), _Worker(2, None, None, other, reported_at=now, reported_load=5)])  # type: ignore[arg-type]
    stream = Stream()
    await supervisor._hand(stream)  # type: ignore[arg-type]
    assert (stuck.sent, other.sent, stream.closed_at) == (0, 1, now)  # (the least loaded was full: the other)
    other.full = True
    stream = Stream()
    await supervisor._hand(stream)  # type: ignore[arg-type]
    assert stream.closed_at == pytest.approx(now + 1.0) and supervisor.unhanded == 1
    assert sum("no worker could take it" in r.message for r in caplog.records) == 1
