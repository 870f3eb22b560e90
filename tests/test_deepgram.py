"""DeepgramSTT against a fake Deepgram server that follows the documented live API (binary
linear16 in; Results / SpeechStarted / UtteranceEnd / Metadata out; KeepAlive, CloseStream), on
in-memory streams in virtual time; and the sans-IO parser on its own."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket

from trioagent import Agent, AgentSession, CascadingPipeline, ProviderError
from trioagent._proto import deepgram as dg
from trioagent.errors import ProtocolError
from trioagent.providers.base import TranscriptEvent
from trioagent.providers.deepgram import DeepgramSTT
from trioagent.testing import MemoryTransport, ScriptedLLM, ToneTTS, silence, speech

from .kit import at
from .netkit import MemoryListener


class FakeDeepgram:
    """Hears 16 kHz linear16 with an energy detector; each speech segment gets an interim
    (its first word, 0.3 s in) and, 0.3 s after it ends, the final Results and an UtteranceEnd."""

    def __init__(self, transcripts: list[str], *, key: str = "dg-test", misbehave: str | None = None) -> None:
        self.transcripts = list(transcripts)
        self.key = key
        self.misbehave = misbehave
        self.listener = MemoryListener()
        self.url = ""
        self.control: list[tuple[float, str]] = []
        self.audio_seconds = 0.0
        self.closed_with: int | None = None
        self._speech_at: float | None = None
        self._quiet = 0.0
        self._interim_sent = False

    async def open_stream(self) -> trio.abc.Stream:
        return await self.listener.connect()

    def results(self, text: str, final: bool) -> str:
        words = [{"word": w.lower(), "start": 0.0, "end": 0.1, "confidence": 0.99, "punctuated_word": w} for w in text.split()]
        return json.dumps({
            "type": "Results", "channel_index": [0, 1], "duration": 1.0, "start": self.audio_seconds, "is_final": final,
            "speech_final": final, "channel": {"alternatives": [{"transcript": text, "confidence": 0.98, "words": words}]},
            "metadata": {"request_id": "req-1", "model_info": {"name": "nova-3", "version": "1", "arch": "nova-3"}, "model_uuid": "u"},
            "from_finalize": False,
        })  # fmt: skip

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        stream = await self.listener.accept()
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream)
            self.url = request.path
            headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            if headers.get("authorization") != f"Token {self.key}":
                await request.reject(401, body=b'{"err_code": "INVALID_AUTH", "err_msg": "Invalid credentials."}')
                return
            ws = await request.accept()
            try:
                while True:
                    message = await ws.get_message()
                    if isinstance(message, str):
                        kind = json.loads(message)["type"]
                        self.control.append((trio.current_time(), kind))
                        if kind == "CloseStream":
                            await ws.send_message(json.dumps({"type": "Metadata", "request_id": "req-1", "duration": self.audio_seconds, "channels": 1}))
                            await ws.aclose(1000)
                            return
                        continue
                    await self._hear(ws, message)
            except trio_websocket.ConnectionClosed as exc:
                self.closed_with = exc.reason.code if exc.reason else None
            nursery.cancel_scope.cancel()

    async def _hear(self, ws: trio_websocket.WebSocketConnection, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, "<i2")
        seconds = len(samples) / 16000
        self.audio_seconds += seconds
        loud = float(np.abs(samples.astype(np.int32)).mean()) > 300
        if loud:
            self._quiet = 0.0
            if self._speech_at is None:
                self._speech_at, self._interim_sent = self.audio_seconds, False
                await ws.send_message(json.dumps({"type": "SpeechStarted", "channel": [0], "timestamp": self.audio_seconds}))
                if self.misbehave == "garbage":
                    await ws.send_message("{not json")
                if self.misbehave == "drop":
                    await ws._stream.aclose()
            elif not self._interim_sent and self.audio_seconds - self._speech_at >= 0.3 and self.transcripts:
                self._interim_sent = True
                await ws.send_message(self.results(self.transcripts[0].split()[0], final=False))
        elif self._speech_at is not None:
            self._quiet += seconds
            if self._quiet >= 0.3 - 1e-9:
                self._speech_at = None
                text = self.transcripts.pop(0) if self.transcripts else ""
                await ws.send_message(self.results(text, final=True))
                await ws.send_message(json.dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.audio_seconds - 0.3}))


def dg_stt(fake: FakeDeepgram, **options: Any) -> DeepgramSTT:
    return DeepgramSTT(api_key=options.pop("api_key", "dg-test"), open_stream=fake.open_stream, base_url="wss://api.deepgram.com", **options)


async def test_a_conversation_hears_through_deepgram(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDeepgram(["What is the weather in Paris?"])
    transport = MemoryTransport()
    pipeline = CascadingPipeline(stt=dg_stt(fake, options={"smart_format": True}), llm=ScriptedLLM(["Sunny."]), tts=ToneTTS())
    session = AgentSession(Agent("Test."), pipeline, transport=transport)
    heard: list[Any] = []
    session.on("user_input_transcribed", heard.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
    assert fake.url.startswith("/v1/listen?") and "encoding=linear16" in fake.url and "sample_rate=16000" in fake.url
    assert "interim_results=true" in fake.url and "smart_format=true" in fake.url and "model=nova-3" in fake.url
    assert [(h.transcript, h.is_final) for h in heard] == [("What", False), ("What is the weather in Paris?", True)]
    assert session.metrics[0].user_text == "What is the weather in Paris?"
    assert "KeepAlive" not in [kind for _, kind in fake.control]  # (audio kept flowing)


async def run_alone(stt: DeepgramSTT, frames: list[Any], gap: float = 0.0) -> list[TranscriptEvent]:
    audio_send, audio_receive = trio.open_memory_channel[Any](1000)
    events_send, events_receive = trio.open_memory_channel[TranscriptEvent](100)
    got: list[TranscriptEvent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stt.run, audio_receive, events_send)
        async with audio_send:
            for frame in frames:
                await audio_send.send(frame)
                await trio.sleep(frame.duration)
            await trio.sleep(gap)
        async with events_receive:
            async for event in events_receive:
                got.append(event)
    return got


async def test_keepalive_while_no_audio_and_closestream_at_the_end(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDeepgram(["hello"])
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        got = await run_alone(dg_stt(fake, keepalive_every=4.0), list(speech(0.6)) + list(silence(0.6)), gap=9.0)
    assert [e.text for e in got if e.is_final] == ["hello"]
    # The last frame went at 1.18; 4 s without audio, a KeepAlive; again; the audio ends at 10.2.
    assert fake.control == [(at(5.18), "KeepAlive"), (at(9.18), "KeepAlive"), (at(10.2), "CloseStream")]


@pytest.mark.parametrize(("fake_options", "stt_options", "message"), [
    ({}, {"api_key": "wrong"}, "DeepgramSTT: the server refused the connection \\(check the API key\\): 401"),
    ({"misbehave": "garbage"}, {}, "Deepgram sent something unreadable"),
    ({"misbehave": "drop"}, {}, "Deepgram closed the stream"),
])  # fmt: skip
async def test_failures_are_provider_errors(autojump_clock: trio.testing.MockClock, fake_options: dict[str, Any], stt_options: dict[str, Any], message: str) -> None:
    fake = FakeDeepgram(["hello"], **fake_options)
    with pytest.raises(BaseException) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(fake.serve)
            await run_alone(dg_stt(fake, **stt_options), list(speech(0.6)) + list(silence(0.6)))
    errors = [e for e in (info.value.exceptions if isinstance(info.value, BaseExceptionGroup) else [info.value])]
    flat: list[BaseException] = []
    while errors:
        e = errors.pop()
        if isinstance(e, BaseExceptionGroup):
            errors.extend(e.exceptions)
        else:
            flat.append(e)
    assert any(isinstance(e, ProviderError) and re.search(message, str(e)) for e in flat), flat


async def test_cancelling_closes_the_socket_at_once(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeDeepgram(["hello"])
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        with trio.move_on_after(1.0):  # the session closes mid-stream
            await run_alone(dg_stt(fake), list(speech(3.0)))
        with trio.fail_after(3):
            while fake.closed_with is None:
                await trio.sleep(0.1)
    assert fake.closed_with == 1000


def test_parser() -> None:
    fake = FakeDeepgram([])
    assert dg.parse(fake.results("Hi there.", final=True)) == dg.Results("Hi there.", True, True, 0.0, 1.0)
    assert dg.parse('{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.5}') == dg.UtteranceEnd(2.5)
    assert dg.parse('{"type": "SpeechStarted", "channel": [0], "timestamp": 1.25}') == dg.SpeechStarted(1.25)
    assert dg.parse('{"type": "Metadata", "request_id": "r"}') == dg.Metadata("r")
    assert dg.parse('{"type": "Warning"}') == dg.Unknown("Warning")
    for bad in ["nope", "[]", '{"type": 1}', '{"type": "Results", "channel": {"alternatives": []}}', "[" * 10000]:
        with pytest.raises(ProtocolError):
            dg.parse(bad)
    url = dg.listen_url("wss://api.deepgram.com/", model="nova-3", interim_results=True, endpointing=None)
    assert url == "wss://api.deepgram.com/v1/listen?model=nova-3&interim_results=true"
