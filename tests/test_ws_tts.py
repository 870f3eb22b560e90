"""ElevenLabsTTS and CartesiaTTS against fake servers that follow the vendors' documented
WebSocket protocols (on in-memory streams, virtual time); every message the fakes send and the
clients send is checked against the vendors' own SDK models (offline)."""

from __future__ import annotations

import base64
import json
from contextlib import aclosing
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket
from pydantic import TypeAdapter

from trioagent import ProviderError, ProviderTimeout
from trioagent._proto import tts_ws
from trioagent.audio import AudioFrame
from trioagent.errors import ProtocolError
from trioagent.providers.ws_tts import CartesiaTTS, ElevenLabsTTS

from .netkit import MemoryListener

elevenlabs_types = pytest.importorskip("elevenlabs.types")
cartesia_types = pytest.importorskip("cartesia.types")


def tone(words: int, rate: int = 24000) -> bytes:
    n = words * rate // 4
    return (np.sin(np.arange(n) * 2 * np.pi * 300 / rate) * 6000).astype("<i2").tobytes()


class FakeTTSServer:
    """One connection: checks the key, records what the client sends, answers per `vendor`;
    `misbehave`: "error" (an error message), "silent" (no answer), "garbage", "slow" (audio
    then nothing)."""

    def __init__(self, vendor: str, *, key: str = "key-1", misbehave: str | None = None) -> None:
        self.vendor = vendor
        self.key = key
        self.misbehave = misbehave
        self.listener = MemoryListener()
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.path = ""
        self.headers: dict[str, str] = {}
        self.closed_code: int | None = None

    async def open_stream(self) -> trio.abc.Stream:
        return await self.listener.connect()

    async def send(self, ws: trio_websocket.WebSocketConnection, message: dict[str, Any]) -> None:
        self.sent.append(message)
        await ws.send_message(json.dumps(message))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        stream = await self.listener.accept()
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            self.path = request.path
            self.headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            auth = self.headers.get("xi-api-key") if self.vendor == "elevenlabs" else self.headers.get("authorization", "").removeprefix("Bearer ")
            if auth != self.key:
                await request.reject(401, body=b'{"detail": "invalid api key"}')
                return
            ws = await request.accept()
            try:
                await (self._elevenlabs(ws) if self.vendor == "elevenlabs" else self._cartesia(ws))
                with trio.move_on_after(60):
                    while True:
                        self.received.append(json.loads(await ws.get_message()))
            except trio_websocket.ConnectionClosed as exc:
                self.closed_code = exc.reason.code if exc.reason else None
            nursery.cancel_scope.cancel()

    async def _elevenlabs(self, ws: trio_websocket.WebSocketConnection) -> None:
        text = ""
        while True:
            message = json.loads(await ws.get_message())
            self.received.append(message)
            if message["text"] == "":
                break
            text += message["text"]
        if self.misbehave == "error":
            await self.send(ws, {"message": "Quota exceeded", "error": "quota_exceeded", "code": 1008})
            return
        if self.misbehave == "garbage":
            await ws.send_message("{not json")
            return
        audio = tone(len(text.split()))
        for i in range(0, len(audio), 4802):  # (not whole frames: the client reassembles them)
            chunk = audio[i : i + 4802]
            await self.send(ws, {"audio": base64.b64encode(chunk).decode(), "isFinal": None, "normalizedAlignment": None, "alignment": None})
            if self.misbehave == "slow":
                return  # (then nothing: serve() reads on)
        await self.send(ws, {"isFinal": True})
        await ws.aclose(1000)

    async def _cartesia(self, ws: trio_websocket.WebSocketConnection) -> None:
        message = json.loads(await ws.get_message())
        self.received.append(message)
        context = message["context_id"]
        if self.misbehave == "error":
            await self.send(ws, {"type": "error", "done": True, "context_id": context, "status_code": 429, "title": "Rate limited", "message": "Too many requests"})
            return
        if self.misbehave == "silent":
            await trio.sleep_forever()
        audio = tone(len(message["transcript"].split()), message["output_format"]["sample_rate"])
        for i in range(0, len(audio), 4800):
            await self.send(ws, {"type": "chunk", "data": base64.b64encode(audio[i : i + 4800]).decode(), "done": False, "status_code": 206, "step_time": 12.5, "context_id": context})
            if self.misbehave == "slow":
                return  # (no more: the client is cut meanwhile, a barge-in; serve() reads what it says)
        await self.send(ws, {"type": "done", "done": True, "status_code": 200, "context_id": context})


async def synthesize(tts: Any, text: str) -> list[AudioFrame]:
    async with aclosing(tts.synthesize(text)) as frames:
        return [f async for f in frames]


async def test_elevenlabs_streams_pcm_and_speaks_its_protocol(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeTTSServer("elevenlabs")
    tts = ElevenLabsTTS("voice-7", api_key="key-1", voice_settings={"stability": 0.5}, open_stream=server.open_stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        frames = await synthesize(tts, "Hello there, how are you?")
    assert server.path == "/v1/text-to-speech/voice-7/stream-input?model_id=eleven_flash_v2_5&output_format=pcm_24000"
    assert sum(len(f.samples) for f in frames) == 5 * 6000 and all(len(f.samples) == 480 for f in frames[:-1])
    assert server.received[:3] == [
        {"text": " ", "voice_settings": {"stability": 0.5}},
        {"text": "Hello there, how are you? ", "flush": True},
        {"text": ""},
    ]
    elevenlabs_types.InitializeConnection.model_validate(server.received[0])
    elevenlabs_types.SendText.model_validate(server.received[1])
    elevenlabs_types.CloseConnection.model_validate(server.received[2])
    for message in server.sent:
        (elevenlabs_types.FinalOutput if "audio" not in message else elevenlabs_types.AudioOutput).model_validate(message)


async def test_cartesia_streams_pcm_and_speaks_its_protocol(autojump_clock: trio.testing.MockClock) -> None:
    server = FakeTTSServer("cartesia")
    tts = CartesiaTTS("voice-3", api_key="key-1", sample_rate=16000, open_stream=server.open_stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        frames = await synthesize(tts, "Good morning.")
    assert server.path == "/tts/websocket" and server.headers["cartesia-version"] == "2026-08-14"
    assert all(f.sample_rate == 16000 for f in frames) and sum(len(f.samples) for f in frames) == 2 * 4000
    request = server.received[0]
    TypeAdapter(cartesia_types.generation_request_param.GenerationRequestParam).validate_python(request)
    assert (request["transcript"], request["voice"], request["output_format"]["encoding"]) == ("Good morning.", {"mode": "id", "id": "voice-3"}, "pcm_s16le")
    response: TypeAdapter[Any] = TypeAdapter(cartesia_types.websocket_response.WebsocketResponse)
    for message in server.sent:
        response.validate_python(message)
    assert server.closed_code == 1000


@pytest.mark.parametrize(("vendor", "misbehave", "key", "error", "message"), [
    ("elevenlabs", None, "wrong", ProviderError, "ElevenLabsTTS: the server refused the connection \\(check the API key\\): 401"),
    ("cartesia", None, "wrong", ProviderError, "CartesiaTTS: the server refused the connection \\(check the API key\\): 401"),
    ("elevenlabs", "error", "key-1", ProviderError, "ElevenLabsTTS: the server failed: Quota exceeded"),
    ("cartesia", "error", "key-1", ProviderError, "CartesiaTTS: the server failed \\(429\\): Too many requests"),
    ("elevenlabs", "garbage", "key-1", ProviderError, "ElevenLabsTTS: a ElevenLabs message that is not JSON"),
    ("cartesia", "silent", "key-1", ProviderTimeout, "CartesiaTTS: no audio for 10 s"),
    ("elevenlabs", "slow", "key-1", ProviderTimeout, "ElevenLabsTTS: nothing more for 10 s"),
])  # fmt: skip
async def test_failures_are_clear_provider_errors(
    autojump_clock: trio.testing.MockClock, vendor: str, misbehave: str | None, key: str, error: type[Exception], message: str
) -> None:
    server = FakeTTSServer(vendor, misbehave=misbehave)
    tts = (ElevenLabsTTS if vendor == "elevenlabs" else CartesiaTTS)("voice", api_key=key, open_stream=server.open_stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        with pytest.raises(error, match=message):
            await synthesize(tts, "Hello there.")
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("vendor", ["cartesia", "elevenlabs"])
async def test_a_barge_in_cancels_and_closes_at_once(autojump_clock: trio.testing.MockClock, vendor: str) -> None:
    server = FakeTTSServer(vendor, misbehave="slow")
    tts = (CartesiaTTS if vendor == "cartesia" else ElevenLabsTTS)("voice", api_key="key-1", open_stream=server.open_stream)
    got: list[AudioFrame] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        with trio.move_on_after(1.0):  # the barge-in
            async with aclosing(tts.synthesize("A long answer that is cut.")) as frames:
                async for frame in frames:
                    got.append(frame)
        with trio.fail_after(10):
            while server.closed_code is None:
                await trio.sleep(0.1)
    assert got and server.closed_code == 1000
    if vendor == "cartesia":  # (Cartesia is told to stop the context; ElevenLabs just loses the socket)
        assert server.received[-1] == {"context_id": server.received[0]["context_id"], "cancel": True}


def test_the_parsers() -> None:
    pcm = base64.b64encode(b"\x01\x00\x02\x00").decode()
    assert tts_ws.parse_elevenlabs(json.dumps({"audio": pcm, "isFinal": None})) == tts_ws.Audio(b"\x01\x00\x02\x00")
    assert tts_ws.parse_elevenlabs('{"isFinal": true}') == tts_ws.Done()
    assert tts_ws.parse_elevenlabs('{"audio": null, "isFinal": null}') is None
    assert tts_ws.parse_cartesia(json.dumps({"type": "chunk", "data": pcm})) == tts_ws.Audio(b"\x01\x00\x02\x00")
    assert tts_ws.parse_cartesia('{"type": "timestamps", "word_timestamps": {}}') is None
    for bad in ['{"type": "chunk", "data": "@@"}', '{"type": "chunk", "data": "AQ=="}', "[]", '{"data": 1}']:
        with pytest.raises(ProtocolError):
            tts_ws.parse_cartesia(bad)
