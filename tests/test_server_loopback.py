"""The server on real loopback sockets, with two independent clients: trio-websocket, and the
`websockets` library (its sync client, in a thread).

Sockets cannot take part in MockClock's autojump (the clock would jump while bytes are in
flight), so these run on a MockClock that runs at 20x real time: times are not asserted here
(tests/test_server.py has the exact ones), only what was said and how connections ended.
"""

from __future__ import annotations

import base64
import functools
import logging
import socket
import struct
import json
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket
import websockets.exceptions
import websockets.sync.client

from trioagent.audio import ulaw_decode
from trioagent.server import Server, serve
from trioagent.testing import silence, speech

from .kit import all_tasks
from .netkit import SECRET, TWILIO_CONNECTED, TWILIO_STOP, Client, factory, hello, twilio_media, twilio_start

RATE = 20.0


async def start_server(nursery: trio.Nursery, **options: Any) -> Server:
    options.setdefault("secret", SECRET)
    server: Server = await nursery.start(functools.partial(serve, factory, "127.0.0.1", 0, **options))
    return server


async def raw_http(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_page_and_404(nursery: trio.Nursery) -> None:
    server = await start_server(nursery)
    page = await raw_http(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200") and b"text/html" in page and b"getUserMedia" in page
    assert (await raw_http(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 404")
    assert (await raw_http(server.port, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(b"HTTP/1.1 426")  # no upgrade
    assert (await raw_http(server.port, b"\x16\x03\x01 garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")  # not HTTP
    head = await raw_http(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head and head.endswith(b"\r\n\r\n")  # no body
    assert (await raw_http(server.port, b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n")).startswith(b"HTTP/1.1 405")
    server.shutdown()


async def test_browser_conversation_trio_websocket(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.rate = RATE
    before = len(all_tasks())
    async with trio.open_nursery() as nursery:
        server = await start_server(nursery)
        # Our own TCP stream under wrap_client_stream: trio-websocket's client never closes its
        # socket when the server closes first (trio-websocket 0.12, _handle_close_connection_event).
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream, trio.open_nursery() as inner:
            ws = await trio_websocket.wrap_client_stream(inner, stream, "127.0.0.1", "/ws")
            client = Client(ws)
            await ws.send_message(hello())
            inner.start_soon(client.read)
            await client.send_audio(speech(1.0) + silence(3.5))
            await ws.send_message(json.dumps({"type": "end"}))
        assert client.json[0]["type"] == "ready"
        assert [m["text"] for m in client.of("transcript")] == ["hello agent"]
        assert [m["text"] for m in client.of("agent_text")] == ["Hi there. How can I help?"]
        assert sum(np.abs(a.astype(np.int32)).max(initial=0) > 3000 for a in client.audio) >= 60
        assert client.closed is not None and client.closed.code == 1000
        server.shutdown()
    assert len(all_tasks()) == before


def until_closed(ws: websockets.sync.client.ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            ws.recv(timeout=30)
    except websockets.exceptions.ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason


def twilio_call_with_websockets(port: int) -> dict[str, Any]:
    """A whole Twilio call from the `websockets` sync client; runs in a thread. Audio goes out
    as fast as the socket takes it (it carries its own timing); the thread then waits for the
    answer and hangs up."""
    got: dict[str, Any] = {"events": [], "samples": []}
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/twilio", open_timeout=10) as ws:
        ws.send(TWILIO_CONNECTED)
        ws.send(twilio_start())
        for frame in speech(1.0, 8000) + silence(1.0, 8000):
            ws.send(twilio_media(frame))
        voiced = 0
        while voiced < 40:  # 0.8 s of the agent's voice
            message = json.loads(ws.recv(timeout=30))
            got["events"].append(message["event"])
            if message["event"] == "media":
                samples = ulaw_decode(base64.b64decode(message["media"]["payload"]))
                voiced += int(np.abs(samples.astype(np.int32)).max() > 3000)
        ws.send(TWILIO_STOP)
        got["close"] = until_closed(ws)
    return got


async def test_twilio_call_websockets_library(mock_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    mock_clock.rate = RATE
    server = await start_server(nursery)
    got = await trio.to_thread.run_sync(twilio_call_with_websockets, server.port)
    assert "media" in got["events"] and got["close"] == (1000, "session ended")
    assert server.sessions_started == 1
    server.shutdown()


def browser_call_with_websockets(port: int) -> dict[str, Any]:
    """A whole browser-protocol conversation from the `websockets` sync client, in a thread."""
    got: dict[str, Any] = {"json": [], "voiced": 0}
    with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.send(hello())
        for frame in speech(1.0) + silence(1.0):
            ws.send(frame.to_pcm16())
        while got["voiced"] < 40:
            message = ws.recv(timeout=30)
            if isinstance(message, bytes):
                got["voiced"] += int(np.abs(np.frombuffer(message, "<i2").astype(np.int32)).max() > 3000)
            else:
                got["json"].append(json.loads(message))
        ws.send(json.dumps({"type": "end"}))
        got["close"] = until_closed(ws)
    return got


async def test_browser_call_websockets_library(mock_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    mock_clock.rate = RATE
    server = await start_server(nursery)
    got = await trio.to_thread.run_sync(browser_call_with_websockets, server.port)
    assert got["json"][0]["type"] == "ready"
    assert [m["text"] for m in got["json"] if m["type"] == "transcript"] == ["hello agent"]
    assert got["close"] == (1000, "session ended")
    server.shutdown()


def websockets_close(port: int, path: str, messages: list[str | bytes], headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with websockets.sync.client.connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers, open_timeout=10) as ws:
            for m in messages:
                ws.send(m)
            return until_closed(ws)
    except websockets.exceptions.InvalidStatus as exc:
        return exc.response.status_code, exc.response.body.decode() if exc.response.body else ""


@pytest.mark.parametrize(
    "path, messages, expected",
    [
        ("/ws", ["{not json"], (1007, "not JSON: Expecting property name enclosed in double quotes")),
        ("/ws", [hello(token="forged.token")], (1008, "unauthorized: bad token")),
        ("/ws", [hello(), b"\x00" * 70000], (1009, "")),
        ("/twilio", [TWILIO_CONNECTED, json.dumps({"event": "dance"})], (1007, "unknown event 'dance'")),
    ],
)
async def test_bad_input_websockets_library(nursery: trio.Nursery, path: str, messages: list[Any], expected: tuple[int, str]) -> None:
    server = await start_server(nursery)
    got = await trio.to_thread.run_sync(websockets_close, server.port, path, messages)
    assert got[0] == expected[0] and got[1].startswith(expected[1])
    server.shutdown()


async def test_origin_refused_websockets_library(nursery: trio.Nursery) -> None:
    server = await start_server(nursery, allowed_origins={"https://good.example"})
    got = await trio.to_thread.run_sync(websockets_close, server.port, "/ws", [hello()], {"Origin": "https://evil.example"})
    assert got == (403, "origin not allowed")
    server.shutdown()


async def test_socket_dropped_mid_reply_is_not_an_error(mock_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    """A client that vanishes while the agent is talking (reset socket, no close frame) ends its
    session quietly: no error logged, nothing else affected."""
    mock_clock.rate = RATE
    server = await start_server(nursery)
    for _ in range(3):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with trio.open_nursery() as inner:
            ws = await trio_websocket.wrap_client_stream(inner, stream, "127.0.0.1", "/ws")
            await ws.send_message(hello())
            client = Client(ws)
            inner.start_soon(client.read)
            await client.send_audio(speech(1.0) + silence(0.8))  # the reply starts at 1.5
            with trio.fail_after(5):
                while not client.audio or np.abs(client.audio[-1].astype(np.int32)).max() < 3000:
                    await trio.sleep(0.02)
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
            await stream.aclose()
            inner.cancel_scope.cancel()
        with trio.fail_after(10):
            while server.active:
                await trio.sleep(0.05)
    assert server.sessions_started == 3
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    server.shutdown()
