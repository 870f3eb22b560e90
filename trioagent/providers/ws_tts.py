"""`ElevenLabsTTS` and `CartesiaTTS`: streaming TTS over the vendors' WebSockets.

Each `synthesize(sentence)` opens one connection, sends the text, plays the PCM as it comes
(in 20 ms frames) and ends at the server's "done". The connection is driven inline (wsproto in
the generator's own task: a nursery must not stay open across a generator's yields); every wait
is bounded (`connect_timeout`,
`first_timeout` to the first audio, `chunk_timeout` between messages). A cancelled call (a
barge-in, a close) tells the server (Cartesia: ``cancel`` for the context) and closes the
socket at once. Refusals (401/403: the key), error messages and malformed messages are
`ProviderError`s. The protocols themselves are sans-IO in `trioagent._proto.tts_ws`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import trio

from .._proto import tts_ws as proto
from ..audio.frame import FRAME_DURATION, AudioFrame
from ..errors import ProtocolError, ProviderError, ProviderTimeout
from ._ws import InlineWebSocket, WebSocketClosed

__all__ = ["CartesiaTTS", "ElevenLabsTTS"]


class _WebSocketTTS:
    provider = ""
    sample_rate = 24000

    def __init__(self, connect_timeout: float, first_timeout: float, chunk_timeout: float, open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None) -> None:
        self.connect_timeout = connect_timeout
        self.first_timeout = first_timeout
        self.chunk_timeout = chunk_timeout
        self.open_stream = open_stream

    def _url(self) -> str:
        raise NotImplementedError

    def _headers(self) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _opening(self, text: str, context_id: str) -> list[str]:
        raise NotImplementedError

    def _parse(self, message: str | bytes) -> proto.Audio | proto.Done | proto.Failed | None:
        raise NotImplementedError

    def _cancel(self, context_id: str) -> str | None:
        return None

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        """The speech of `text`, in 20 ms frames as it streams in."""
        step = round(FRAME_DURATION * self.sample_rate) * 2
        context_id = uuid.uuid4().hex
        pending = b""
        finished = False
        ws = await InlineWebSocket.connect(
            self._url(), self._headers(), provider=self.provider, stage="tts", timeout=self.connect_timeout, open_stream=self.open_stream
        )
        try:
            for message in self._opening(text, context_id):
                await ws.send(message)
            timeout, heard = self.first_timeout, False
            while True:
                with trio.move_on_after(timeout) as waited:
                    raw = await ws.receive()
                if waited.cancelled_caught:
                    what = "nothing more" if heard else "no audio"
                    raise ProviderTimeout(f"{self.provider}: {what} for {timeout:g} s", provider=self.provider, stage="tts")
                event = self._parse(raw)
                if isinstance(event, proto.Failed):
                    status = f" ({event.status})" if event.status else ""
                    raise ProviderError(f"{self.provider}: the server failed{status}: {event.message}", provider=self.provider, stage="tts", retryable=(event.status or 0) >= 500)
                if isinstance(event, proto.Done):
                    break
                if isinstance(event, proto.Audio):
                    timeout, heard = self.chunk_timeout, True
                    pending += event.pcm
                    whole = len(pending) - len(pending) % step
                    for i in range(0, whole, step):
                        yield AudioFrame.from_pcm16(pending[i : i + step], self.sample_rate)
                    pending = pending[whole:]
            if pending:
                yield AudioFrame.from_pcm16(pending, self.sample_rate)
            finished = True
        except WebSocketClosed as exc:
            raise ProviderError(f"{self.provider}: the connection closed ({exc})", provider=self.provider, stage="tts", retryable=True) from None
        except ProtocolError as exc:
            raise ProviderError(f"{self.provider}: {exc}", provider=self.provider, stage="tts") from None
        finally:
            with trio.move_on_after(1.0, shield=True):
                cancel = None if finished else self._cancel(context_id)
                try:
                    if cancel is not None:
                        await ws.send(cancel)
                except WebSocketClosed:
                    pass  # (gone already)
                await ws.aclose()


class ElevenLabsTTS(_WebSocketTTS):
    """ElevenLabs' input-streaming TTS (``/v1/text-to-speech/{voice_id}/stream-input``), PCM.

    Args:
        voice_id: the voice.
        api_key: default ``$ELEVENLABS_API_KEY`` (sent as ``xi-api-key``).
        model_id: e.g. ``eleven_flash_v2_5``.
        sample_rate: 16000, 22050, 24000 or 44100 (``output_format=pcm_{rate}``).
        voice_settings: e.g. ``{"stability": 0.5, "similarity_boost": 0.8}``.
        base_url: default ``wss://api.elevenlabs.io``.
    """

    provider = "ElevenLabsTTS"

    def __init__(
        self,
        voice_id: str,
        api_key: str | None = None,
        *,
        model_id: str = "eleven_flash_v2_5",
        sample_rate: int = 24000,
        voice_settings: dict[str, Any] | None = None,
        base_url: str = "wss://api.elevenlabs.io",
        connect_timeout: float = 5.0,
        first_timeout: float = 10.0,
        chunk_timeout: float = 10.0,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        super().__init__(connect_timeout, first_timeout, chunk_timeout, open_stream)
        self.voice_id = voice_id
        self.api_key = api_key if api_key is not None else os.environ.get("ELEVENLABS_API_KEY", "")
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.voice_settings = voice_settings
        self.base_url = base_url.rstrip("/")

    def _url(self) -> str:
        query = urlencode({"model_id": self.model_id, "output_format": f"pcm_{self.sample_rate}"})
        return f"{self.base_url}/v1/text-to-speech/{quote(self.voice_id)}/stream-input?{query}"

    def _headers(self) -> list[tuple[str, str]]:
        return [("xi-api-key", self.api_key)] if self.api_key else []

    def _opening(self, text: str, context_id: str) -> list[str]:
        return [proto.elevenlabs_init(self.voice_settings), proto.elevenlabs_text(text, flush=True), proto.elevenlabs_close()]

    def _parse(self, message: str | bytes) -> proto.Audio | proto.Done | proto.Failed | None:
        return proto.parse_elevenlabs(message)


class CartesiaTTS(_WebSocketTTS):
    """Cartesia's TTS WebSocket (``/tts/websocket``), raw PCM, one context per sentence.

    Args:
        voice_id: the voice.
        api_key: default ``$CARTESIA_API_KEY`` (a Bearer token).
        model_id: e.g. ``sonic-2``.
        sample_rate: 8000 to 48000.
        language: e.g. ``en``.
        version: the ``Cartesia-Version`` header.
        base_url: default ``wss://api.cartesia.ai``.
    """

    provider = "CartesiaTTS"

    def __init__(
        self,
        voice_id: str,
        api_key: str | None = None,
        *,
        model_id: str = "sonic-2",
        sample_rate: int = 24000,
        language: str | None = "en",
        version: str = "2026-08-14",
        base_url: str = "wss://api.cartesia.ai",
        connect_timeout: float = 5.0,
        first_timeout: float = 10.0,
        chunk_timeout: float = 10.0,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> None:
        super().__init__(connect_timeout, first_timeout, chunk_timeout, open_stream)
        self.voice_id = voice_id
        self.api_key = api_key if api_key is not None else os.environ.get("CARTESIA_API_KEY", "")
        self.model_id = model_id
        self.sample_rate = sample_rate
        self.language = language
        self.version = version
        self.base_url = base_url.rstrip("/")

    def _url(self) -> str:
        return f"{self.base_url}/tts/websocket"

    def _headers(self) -> list[tuple[str, str]]:
        return [("Cartesia-Version", self.version)] + ([("Authorization", f"Bearer {self.api_key}")] if self.api_key else [])

    def _opening(self, text: str, context_id: str) -> list[str]:
        return [proto.cartesia_request(context_id=context_id, transcript=text, model_id=self.model_id, voice_id=self.voice_id, sample_rate=self.sample_rate, language=self.language)]

    def _parse(self, message: str | bytes) -> proto.Audio | proto.Done | proto.Failed | None:
        return proto.parse_cartesia(message)

    def _cancel(self, context_id: str) -> str | None:
        return proto.cartesia_cancel(context_id)
