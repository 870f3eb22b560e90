"""Helpers for server tests: an in-memory listener (virtual time, exact) and a recording client."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import trio
import trio.testing
import trio_websocket

from trioagent import Agent, CascadingPipeline
from trioagent.audio import AudioFrame, ulaw_encode
from trioagent.auth import mint_token
from trioagent.server import Server
from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS

SECRET = "test-secret"
LONG = " ".join(["word"] * 24)  # 6 s of agent speech


def factory() -> tuple[Agent, CascadingPipeline]:
    llm = ScriptedLLM(["Hi there. How can I help?", LONG, "Okay."])
    stt = ScriptedSTT(["hello agent", "tell me more", "stop"])
    return Agent(instructions="Test agent."), CascadingPipeline(stt=stt, llm=llm, tts=ToneTTS())


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Connections as in-memory stream pairs: no sockets, so MockClock's autojump is exact."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def accept(self) -> trio.abc.Stream:
        return await self._receive.receive()

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()

    async def connect(self) -> trio.abc.Stream:
        client, server = trio.testing.memory_stream_pair()
        await self._send.send(server)
        return client


async def start_memory_server(nursery: trio.Nursery, agent_factory: Any = factory, **options: Any) -> tuple[Server, MemoryListener]:
    options.setdefault("secret", SECRET)
    listener = MemoryListener()
    server = Server(agent_factory, **options)
    await nursery.start(lambda task_status: server.run(listeners=[listener], task_status=task_status))
    return server, listener


async def open_ws(
    nursery: trio.Nursery, listener: MemoryListener, path: str, headers: list[tuple[bytes, bytes]] | None = None
) -> trio_websocket.WebSocketConnection:
    stream = await listener.connect()
    return await trio_websocket.wrap_client_stream(nursery, stream, "localhost", path, extra_headers=headers, max_message_size=1 << 22)


class Client:
    """Collects what the server sends on one connection, with the (virtual) time it came."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.json: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.audio: list[np.ndarray] = []
        self.closed: trio_websocket.CloseReason | None = None

    async def read(self) -> None:
        try:
            while True:
                message = await self.ws.get_message()
                if isinstance(message, bytes):
                    self.audio.append(np.frombuffer(message, "<i2"))
                else:
                    self.json.append(json.loads(message))
                    self.times.append(trio.current_time())
        except trio_websocket.ConnectionClosed as exc:
            self.closed = exc.reason

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.json if m.get("type") == kind or m.get("event") == kind]

    def time_of(self, kind: str) -> list[float]:
        return [t for m, t in zip(self.json, self.times) if m.get("type") == kind or m.get("event") == kind]

    async def send_audio(self, frames: list[AudioFrame], encode: Any = None) -> None:
        """Like a real microphone: each frame goes out once it has been captured."""
        for frame in frames:
            await trio.sleep(frame.duration)
            await self.ws.send_message(encode(frame) if encode else frame.to_pcm16())


async def browser_client(nursery: trio.Nursery, listener: MemoryListener) -> tuple[trio_websocket.WebSocketConnection, Client]:
    """A browser-protocol connection that has sent its hello and records what comes back."""
    ws = await open_ws(nursery, listener, "/ws")
    client = Client(ws)
    await ws.send_message(hello())
    nursery.start_soon(client.read)
    return ws, client


def hello(token: str | None = None, **extra: Any) -> str:
    fields = {"type": "hello", "token": mint_token(SECRET) if token is None else token, "sample_rate": 16000, "output_sample_rate": 24000}
    return json.dumps({**fields, **extra})


def twilio_start(token: str | None = None) -> str:
    start = {
        "streamSid": "MZ1",
        "accountSid": "AC1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": mint_token(SECRET) if token is None else token},
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": "MZ1"})


TWILIO_CONNECTED = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
TWILIO_STOP = json.dumps({"event": "stop", "sequenceNumber": "99", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}})


def twilio_media(frame: AudioFrame) -> str:
    payload = base64.b64encode(ulaw_encode(frame.samples)).decode()
    return json.dumps({"event": "media", "streamSid": "MZ1", "media": {"track": "inbound", "payload": payload}})


async def raw_exchange(listener: MemoryListener, data: bytes, *, read_for: float = 30.0) -> bytes:
    """Send raw bytes on a new connection and read until the server closes it (or `read_for`)."""
    stream = await listener.connect()
    out = b""
    async with stream:
        await stream.send_all(data)
        with trio.move_on_after(read_for):
            while chunk := await stream.receive_some(65536):
                out += chunk
    return out


def upgrade_request(path: str = "/ws", **overrides: bytes | None) -> bytes:
    """A WebSocket opening handshake; `overrides` replace (or, with None, drop) header fields."""
    fields: dict[str, bytes | None] = {
        "Host": b"localhost",
        "Upgrade": b"websocket",
        "Connection": b"Upgrade",
        "Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": b"13",
    }
    fields.update({k.replace("_", "-"): v for k, v in overrides.items()})
    head = b"".join(f"{k}: ".encode() + v + b"\r\n" for k, v in fields.items() if v is not None)
    return f"GET {path} HTTP/1.1\r\n".encode() + head + b"\r\n"
