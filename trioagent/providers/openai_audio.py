"""`OpenAITTS` and `OpenAISTT`: OpenAI's speech endpoints, and any server that serves them.

`OpenAITTS` posts ``/v1/audio/speech`` with ``response_format: "pcm"`` and plays the raw 24 kHz
PCM16 as it streams in. `OpenAISTT` finds the user's speech segments with a VAD and posts each
as a WAV file to ``/v1/audio/transcriptions`` (multipart), one request per segment, in order, by a
task of its own so the audio keeps flowing meanwhile. Both run over httpx (under trio through
anyio), with every wait bounded: `connect_timeout`, `first_timeout` (to the first byte of an
answer), `chunk_timeout` (between chunks of a streamed one). HTTP errors are `ProviderError`s
saying the status and the start of the body (401/403: the key; 429 and 5xx: retryable); a
cancelled call (a barge-in, a close) closes its response at once.
"""

from __future__ import annotations

import io
import json
import os
import wave
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import trio

from ..audio.frame import FRAME_DURATION, AudioFrame
from ..errors import ProviderError, ProviderTimeout
from .segments import SegmentSTT
from .vad import EnergyVAD

__all__ = ["OpenAISTT", "OpenAITTS"]

TTS_RATE = 24000


def _httpx(provider: str) -> Any:
    try:
        import httpx
    except ImportError:
        raise ProviderError(f"{provider} needs httpx: pip install -e '.[openai]' (from a clone of trioagent)", provider=provider) from None
    return httpx


class _Endpoint:
    """What both share: where, who, and the bounded HTTP exchange."""

    provider = ""

    def __init__(self, base_url: str | None, api_key: str | None, connect_timeout: float, first_timeout: float, chunk_timeout: float) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.connect_timeout = connect_timeout
        self.first_timeout = first_timeout
        self.chunk_timeout = chunk_timeout

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    async def _post(self, path: str, **request: Any) -> AsyncGenerator[bytes, None]:
        """POST and stream the answer's body; checks the status and the content type."""
        httpx = _httpx(self.provider)
        url = f"{self.base_url}{path}"
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=self.connect_timeout)) as client:
                with trio.move_on_after(self.first_timeout) as waited:
                    response_cm = client.stream("POST", url, headers=self._headers(), **request)
                    response = await response_cm.__aenter__()
                if waited.cancelled_caught:
                    raise ProviderTimeout(f"{url} did not answer within {self.first_timeout:g} s", provider=self.provider)
                try:
                    if response.status_code != 200:
                        detail = (await response.aread()).decode("utf-8", errors="replace")[:300]
                        hint = " (check the API key)" if response.status_code in (401, 403) else ""
                        raise ProviderError(
                            f"{url} answered HTTP {response.status_code}{hint}: {detail}",
                            provider=self.provider,
                            retryable=response.status_code == 429 or response.status_code >= 500,
                        )
                    self._check_type(url, response.headers.get("content-type", ""))
                    chunks = response.aiter_bytes()
                    try:
                        while True:
                            with trio.move_on_after(self.chunk_timeout) as stalled:
                                try:
                                    data = await chunks.__anext__()
                                except StopAsyncIteration:
                                    return
                            if stalled.cancelled_caught:
                                raise ProviderTimeout(f"{url} stalled for {self.chunk_timeout:g} s", provider=self.provider)
                            yield data
                    finally:
                        await chunks.aclose()
                finally:
                    with trio.CancelScope(shield=True):
                        await response_cm.__aexit__(None, None, None)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{url}: {type(exc).__name__}: {exc}", provider=self.provider, retryable=True) from None

    def _check_type(self, url: str, kind: str) -> None:
        """Raises `ProviderError` when the body is not what the call expects."""


class OpenAITTS(_Endpoint):
    """Text to speech over ``/v1/audio/speech``, streamed as raw PCM (24 kHz, mono).

    Args:
        model: e.g. ``gpt-4o-mini-tts`` (the default) or ``tts-1``.
        voice: e.g. ``alloy``, ``marin``.
        instructions: how to speak (models that take them).
        speed: 0.25 to 4.0 (server default when None).
        base_url, api_key: default ``$OPENAI_BASE_URL`` / ``$OPENAI_API_KEY``.
        connect_timeout, first_timeout, chunk_timeout: seconds (see the module docstring).
    """

    provider = "OpenAITTS"
    sample_rate = TTS_RATE

    def __init__(
        self,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        *,
        instructions: str | None = None,
        speed: float | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        first_timeout: float = 10.0,
        chunk_timeout: float = 10.0,
    ) -> None:
        super().__init__(base_url, api_key, connect_timeout, first_timeout, chunk_timeout)
        self.model = model
        self.voice = voice
        self.instructions = instructions
        self.speed = speed

    def request(self, text: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "voice": self.voice, "input": text, "response_format": "pcm"}
        if self.instructions:
            body["instructions"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        return body

    def _check_type(self, url: str, kind: str) -> None:
        if kind.startswith(("application/json", "text/")):
            raise ProviderError(f"{url} answered 200 with {kind}, not audio", provider=self.provider)

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        """The speech of `text`, in 20 ms frames as the bytes arrive."""
        step = round(FRAME_DURATION * TTS_RATE) * 2
        pending = b""
        async with aclosing(self._post("/audio/speech", json=self.request(text))) as body:
            async for data in body:
                pending += data
                whole = len(pending) - len(pending) % step
                for i in range(0, whole, step):
                    yield AudioFrame.from_pcm16(pending[i : i + step], TTS_RATE)
                pending = pending[whole:]
        usable = len(pending) - len(pending) % 2
        if usable:
            yield AudioFrame.from_pcm16(pending[:usable], TTS_RATE)


class OpenAISTT(_Endpoint, SegmentSTT):
    """Speech to text over ``/v1/audio/transcriptions``, one request per VAD speech segment.

    Args:
        model: ``gpt-4o-mini-transcribe`` (the default), ``whisper-1``, or a local server's.
        language: an ISO-639-1 hint (e.g. ``en``), or None.
        prompt: words to expect (names, jargon).
        sample_rate: the rate it takes audio at (segments are sent as WAV at this rate).
        vad: finds the segments (default `EnergyVAD` at `sample_rate`); `preroll` seconds before
            each onset are sent too.
        base_url, api_key: default ``$OPENAI_BASE_URL`` / ``$OPENAI_API_KEY``.
        connect_timeout, first_timeout: seconds (the answer is not streamed: `first_timeout`
            bounds the whole request).
    """

    provider = "OpenAISTT"

    def __init__(
        self,
        model: str = "gpt-4o-mini-transcribe",
        *,
        language: str | None = None,
        prompt: str | None = None,
        sample_rate: int = 16000,
        vad: EnergyVAD | None = None,
        preroll: float = 0.3,
        base_url: str | None = None,
        api_key: str | None = None,
        connect_timeout: float = 5.0,
        first_timeout: float = 15.0,
    ) -> None:
        _Endpoint.__init__(self, base_url, api_key, connect_timeout, first_timeout, first_timeout)
        SegmentSTT.__init__(self, sample_rate, vad, preroll)
        self.model = model
        self.language = language
        self.prompt = prompt

    def _check_type(self, url: str, kind: str) -> None:
        if not kind.startswith("application/json"):
            raise ProviderError(f"{url} answered 200 with {kind or 'no content type'}, not JSON", provider=self.provider)

    async def transcribe(self, pcm: bytes) -> str:
        """The text of one segment (PCM16 at `sample_rate`). A checkpoint."""
        fields = {"model": self.model, "response_format": "json"}
        if self.language:
            fields["language"] = self.language
        if self.prompt:
            fields["prompt"] = self.prompt
        body = b""
        files = {"file": ("speech.wav", wav_bytes(pcm, self.sample_rate), "audio/wav")}
        with trio.move_on_after(self.first_timeout) as waited:
            async with aclosing(self._post("/audio/transcriptions", data=fields, files=files)) as answer_body:
                async for data in answer_body:
                    body += data
        if waited.cancelled_caught:
            raise ProviderTimeout(f"{self.base_url}/audio/transcriptions took more than {self.first_timeout:g} s", provider=self.provider)
        try:
            answer = json.loads(body)
            text = answer["text"]
        except (ValueError, KeyError, TypeError):
            raise ProviderError(f"{self.base_url}/audio/transcriptions: not a transcription: {body[:200]!r}", provider=self.provider) from None
        if not isinstance(text, str):
            raise ProviderError(f"{self.base_url}/audio/transcriptions: text is not a string", provider=self.provider)
        return text.strip()


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A mono 16-bit WAV file of `pcm`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return out.getvalue()
