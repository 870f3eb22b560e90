"""A scripted OpenAI Realtime server for tests, on in-memory streams (virtual time stays exact),
built on the sans-IO module's server side.

Its turn detection is a plain energy detector over the appended audio, 20 ms at a time, like
`server_vad`: speech starts at the first loud frame; `silence_ms` of quiet stops it, and the
turn is committed and transcribed (the next of `transcripts`) at once. Each `response.create`
plays the next entry of `script`: a string (a transcript, and a tone of `seconds_per_word` per
word, sent at once or paced in real time), a `ToolCall`, "error" (an error event), "drop"
(the socket is cut) or None (no answer). Everything the client sent is in `received`, with its
(virtual) time.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import trio
import trio_websocket

from trioagent._proto import openai_realtime as rt
from trioagent.testing import ToolCall

from .netkit import MemoryListener

CHUNK = 0.1  # seconds of audio per delta


def tone(seconds: float, rate: int = rt.RATE) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


class FakeRealtime:
    def __init__(
        self,
        script: list[str | ToolCall | None],
        transcripts: list[str] | None = None,
        *,
        seconds_per_word: float = 0.25,
        paced: bool = False,
        silence_ms: int = 500,
        threshold: float = 300.0,
    ) -> None:
        self.script = list(script)
        self.transcripts = list(transcripts or [])
        self.seconds_per_word = seconds_per_word
        self.paced = paced
        self.silence_ms = silence_ms
        self.threshold = threshold
        self.listener = MemoryListener()
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.sent: list[tuple[float, str]] = []  # (time, type) of each event sent
        self.close_code: int | None = None
        self.headers: dict[str, str] = {}
        self.path = ""
        self._events = rt.ServerEvents()
        self._ms = 0  # input audio so far
        self._speech_start: int | None = None
        self._last_loud = 0
        self._items = 0
        self._responses = 0
        self._streaming: trio.CancelScope | None = None
        self._ws: trio_websocket.WebSocketConnection | None = None
        self.server_vad = True  # (session.update with turn_detection None turns it off)

    async def open_stream(self) -> trio.abc.Stream:
        return await self.listener.connect()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.received if e["type"] == kind]

    def times(self, kind: str) -> list[float]:
        return [t for t, e in self.received if e["type"] == kind]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve one connection (start it in a nursery; it ends when the client goes)."""
        task_status.started()
        stream = await self.listener.accept()
        async with trio.open_nursery() as nursery:
            request = await trio_websocket.wrap_server_stream(nursery, stream, max_message_size=1 << 24)
            self.path = request.path
            self.headers = {k.decode().lower(): v.decode() for k, v in request.headers}
            ws = self._ws = await request.accept()
            await self._send(self._events.session("session.created", {"type": "realtime", "id": "sess_1"}))
            try:
                while True:
                    await self._handle(rt.parse_client(await ws.get_message()), nursery)
            except trio_websocket.ConnectionClosed as exc:
                self.close_code = exc.reason.code if exc.reason else None
            nursery.cancel_scope.cancel()

    async def _send(self, event: dict[str, Any]) -> None:
        assert self._ws is not None
        self.sent.append((trio.current_time(), event["type"]))
        await self._ws.send_message(json.dumps(event))

    async def _handle(self, event: dict[str, Any], nursery: trio.Nursery) -> None:
        kind = event["type"]
        if kind != "input_audio_buffer.append":
            self.received.append((trio.current_time(), event))
        if kind == "session.update":
            self.server_vad = event["session"]["audio"]["input"].get("turn_detection") is not None
            await self._send(self._events.session("session.updated", event["session"]))
        elif kind == "input_audio_buffer.append":
            if not self.received or self.received[-1][1]["type"] != "input_audio_buffer.append":
                self.received.append((trio.current_time(), {"type": "input_audio_buffer.append"}))
            await self._listen(rt.appended_audio(event))
        elif kind == "input_audio_buffer.commit":
            await self._commit(self._ms)
        elif kind == "response.create":
            self._responses += 1
            await nursery.start(self._respond, f"resp_{self._responses}")
        elif kind == "response.cancel":
            if self._streaming is not None:
                self._streaming.cancel()
            else:
                await self._send(self._events.error("invalid_request_error", "response_cancel_not_active", "no active response"))

    async def _listen(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, "<i2")
        ms = round(len(samples) * 1000 / rt.RATE)
        loud = len(samples) > 0 and float(np.abs(samples.astype(np.int32)).mean()) > self.threshold
        start, self._ms = self._ms, self._ms + ms
        if not self.server_vad:
            if loud and self._speech_start is None:
                self._speech_start = start
            return
        if loud:
            self._last_loud = self._ms
            if self._speech_start is None:
                self._speech_start = start
                await self._send(self._events.speech_started(start, f"item_{self._items + 1}"))
        elif self._speech_start is not None and self._ms - self._last_loud >= self.silence_ms:
            await self._commit(self._last_loud)

    async def _commit(self, end_ms: int) -> None:
        if self._speech_start is None:
            await self._send(self._events.error("invalid_request_error", "input_audio_buffer_commit_empty", "nothing to commit"))
            return
        self._speech_start = None
        self._items += 1
        item = f"item_{self._items}"
        if self.server_vad:
            await self._send(self._events.speech_stopped(end_ms, item))
        await self._send(self._events.committed(item))
        if self.transcripts:
            await self._send(self._events.input_transcript(item, self.transcripts.pop(0)))

    async def _respond(self, response_id: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        entry = self.script.pop(0) if self.script else None
        if entry == "error":
            task_status.started()
            await self._send(self._events.error("server_error", "internal", "the model is overloaded"))
            return
        if entry == "drop":
            task_status.started()
            assert self._ws is not None
            await self._ws._stream.aclose()  # (no close frame: the TCP connection just goes)
            return
        await self._send(self._events.response_created(response_id))
        task_status.started()
        if entry is None:
            return  # never answers
        item = f"{response_id}_item"
        if isinstance(entry, ToolCall):
            await self._send(self._events.function_call_done(response_id, item, entry.call_id or f"call_{response_id}", entry.name, json.dumps(entry.arguments)))
            await self._send(self._events.response_done(response_id, "completed", input_tokens=10, output_tokens=5))
            return
        with trio.CancelScope() as scope:
            self._streaming = scope
            await self._send(self._events.transcript_delta(response_id, item, entry))
            audio = tone(len(entry.split()) * self.seconds_per_word)
            step = round(CHUNK * rt.RATE) * 2
            for i in range(0, len(audio), step):
                if self.paced and i:
                    await trio.sleep(CHUNK)
                await self._send(self._events.audio_delta(response_id, item, audio[i : i + step]))
            await self._send(self._events.audio_done(response_id, item))
        self._streaming = None
        status = "cancelled" if scope.cancelled_caught else "completed"
        await self._send(self._events.response_done(response_id, status, input_tokens=10, output_tokens=len(entry.split())))
