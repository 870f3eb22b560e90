"""`SegmentSTT`: speech-to-text one VAD speech segment at a time, for recognisers that take
whole utterances (an HTTP transcription API, a local Whisper). The VAD finds each segment
(with `preroll` seconds before its onset); a task of its own transcribes the segments in order,
so the audio keeps flowing meanwhile; each text is a final transcript."""

from __future__ import annotations

import math

import numpy as np
import trio

from ..audio.frame import AudioFrame
from ..errors import ProviderError
from .base import TranscriptEvent
from .vad import EnergyVAD, PreRoll

__all__ = ["SegmentSTT"]


class SegmentSTT:
    """The segmenting; a subclass says how to `transcribe` one segment (PCM16 at `sample_rate`)."""

    provider = "SegmentSTT"

    def __init__(self, sample_rate: int = 16000, vad: EnergyVAD | None = None, preroll: float = 0.3) -> None:
        self.sample_rate = sample_rate
        self.vad = vad or EnergyVAD(sample_rate=sample_rate)
        self.preroll = preroll

    async def transcribe(self, pcm: bytes) -> str:
        raise NotImplementedError

    async def warm_up(self) -> None:
        """Get ready before the first segment (load a model); nothing by default. A checkpoint."""
        await trio.lowlevel.checkpoint()

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        segments_in, segments_out = trio.open_memory_channel[bytes](math.inf)  # (speech: small, and the VAD paces it)
        failure: ProviderError | None = None

        async def transcriber() -> None:
            nonlocal failure
            async with segments_out, events:
                try:
                    async for pcm in segments_out:
                        text = await self.transcribe(pcm)
                        if text:
                            await events.send(TranscriptEvent(text, True, trio.current_time()))
                except ProviderError as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            await self.warm_up()  # (while the first words are still being said, not after them)
            nursery.start_soon(transcriber)
            async with audio, segments_in:
                recent = PreRoll(seconds=self.preroll + 1.0)
                segment: list[AudioFrame] | None = None
                async for frame in audio:
                    if frame.sample_rate != self.sample_rate:
                        raise ProviderError(f"{self.provider} takes {self.sample_rate} Hz, got {frame.sample_rate} Hz", provider=self.provider)
                    recent.push(frame)
                    for event in self.vad.process(frame):
                        if event.kind == "start":
                            segment = recent.since(event.time - self.preroll)
                        elif segment is not None:
                            segments_in.send_nowait(np.concatenate([f.samples for f in segment]).astype("<i2").tobytes())
                            segment = None
                    if segment is not None and segment[-1].end_time < frame.end_time:
                        segment.append(frame)
        if failure is not None:
            raise failure  # (out here: bare, not in the nursery's exception group)
