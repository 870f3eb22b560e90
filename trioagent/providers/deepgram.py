"""`DeepgramSTT`: Deepgram's live streaming speech-to-text over WebSocket.

One connection per session's audio stream: `run` sends every frame as linear16 (binary
messages), a ``KeepAlive`` when no audio has gone for `keepalive_every` seconds, and
``CloseStream`` when the audio ends, then waits (bounded) for the last results and the server's
close. Interim ``Results`` become interim transcripts, final ones final transcripts. A refused
handshake (401/403: the key) or a connection that drops is a `ProviderError`; cancelling `run`
(the session closing) closes the socket at once.
"""

from __future__ import annotations

import logging

import os
from collections.abc import Awaitable, Callable

import trio
import trio_websocket

from .._proto import deepgram as dg
from ..audio.frame import AudioFrame
from ..errors import ProtocolError, ProviderError, sole_error

from ._ws import open_websocket, refused
from .base import TranscriptEvent

__all__ = ["DeepgramSTT"]

_log = logging.getLogger("trioagent.providers.deepgram")
_PROVIDER = "DeepgramSTT"


class DeepgramSTT:
    """Deepgram live transcription.

    Args:
        api_key: default ``$DEEPGRAM_API_KEY``.
        model, language: e.g. ``nova-3``, ``en``.
        sample_rate: the rate audio is sent at (the pipeline resamples to it).
        endpointing: Deepgram's own end-of-speech silence, in ms (None: its default).
        interim_results: ask for interim transcripts.
        options: any other ``/v1/listen`` query options (``smart_format=True``, ``keyterm=...``).
        base_url: default ``wss://api.deepgram.com``.
        keepalive_every: seconds without audio before a ``KeepAlive`` (Deepgram closes after 10).
        connect_timeout: seconds to open the connection; `close_timeout`: to finish at the end.
        open_stream: tests: a function returning a connected byte stream instead of TCP.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        model: str = "nova-3",
        language: str | None = "en",
        sample_rate: int = 16000,
        endpointing: int | None = 300,
        interim_results: bool = True,
        options: dict[str, object] | None = None,
        base_url: str = "wss://api.deepgram.com",
        keepalive_every: float = 4.0,
        connect_timeout: float = 5.0,
        close_timeout: float = 2.0,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("DEEPGRAM_API_KEY", "")
        self.sample_rate = sample_rate
        self.url = dg.listen_url(
            base_url,
            model=model,
            language=language,
            encoding="linear16",
            sample_rate=sample_rate,
            channels=1,
            interim_results=interim_results,
            endpointing=endpointing,
            vad_events=True,
            **(options or {}),
        )
        self.keepalive_every = keepalive_every
        self.connect_timeout = connect_timeout
        self.close_timeout = close_timeout
        self.open_stream = open_stream

    async def _connect(self, nursery: trio.Nursery) -> trio_websocket.WebSocketConnection:
        headers = [("Authorization", f"Token {self.api_key}")]
        return await open_websocket(nursery, self.url, headers, provider=_PROVIDER, stage="stt", timeout=self.connect_timeout, open_stream=self.open_stream)

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        try:
            await self._run(audio, events)
        except BaseExceptionGroup as group:
            # (trio-websocket's own reader task, in our nursery, reports a refused handshake)
            rejected, _ = group.split(trio_websocket.HandshakeError)
            if rejected is None:
                raise
            raise refused(sole_error(rejected), _PROVIDER, "stt") from None

    async def _run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        async with audio, events, trio.open_nursery() as nursery:
            ws = await self._connect(nursery)
            done = trio.Event()
            failure: ProviderError | None = None

            async def receive() -> None:
                nonlocal failure
                try:
                    while True:
                        message = await ws.get_message()
                        event = dg.parse(message)
                        if isinstance(event, dg.Results) and event.transcript.strip():
                            await events.send(TranscriptEvent(event.transcript.strip(), event.is_final, trio.current_time()))
                except trio_websocket.ConnectionClosed as exc:
                    code = exc.reason.code if exc.reason is not None else None
                    if code != 1000 and not done.is_set():
                        failure = ProviderError(f"Deepgram closed the stream ({code}: {exc.reason.reason if exc.reason else ''})", provider=_PROVIDER, stage="stt", retryable=True)
                except ProtocolError as exc:
                    failure = ProviderError(f"Deepgram sent something unreadable: {exc}", provider=_PROVIDER, stage="stt")
                finally:
                    done.set()
                    if failure is not None:
                        nursery.cancel_scope.cancel()

            nursery.start_soon(receive)
            try:
                await self._send_audio(ws, audio, done)
                # The audio is over: the last results, then the server closes (bounded).
                await ws.send_message(dg.CLOSE_STREAM)
                with trio.move_on_after(self.close_timeout):
                    await done.wait()
            except trio_websocket.ConnectionClosed:
                await done.wait()
            finally:
                with trio.move_on_after(self.close_timeout, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _send_audio(self, ws: trio_websocket.WebSocketConnection, audio: trio.abc.ReceiveChannel[AudioFrame], done: trio.Event) -> None:
        while not done.is_set():
            frame: AudioFrame | None = None
            with trio.move_on_after(self.keepalive_every):
                try:
                    frame = await audio.receive()
                except trio.EndOfChannel:
                    return
            if frame is None:
                await ws.send_message(dg.KEEP_ALIVE)
                continue
            if frame.sample_rate != self.sample_rate:
                raise ProviderError(f"DeepgramSTT takes {self.sample_rate} Hz, got {frame.sample_rate} Hz", provider=_PROVIDER, stage="stt")
            await ws.send_message(frame.to_pcm16())


