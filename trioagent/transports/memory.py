"""`MemoryTransport`: user audio fed from code, agent audio recorded; the test kit's transport."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import trio

from ..audio.frame import AudioFrame
from .base import HandsInputOff, InputHandOff

__all__ = ["MemoryTransport"]


class MemoryTransport(HandsInputOff):
    """A transport whose input comes from code and whose output is kept with its times.

    Args:
        input_sample_rate: rate of the user audio you send.
        output_sample_rate: rate the session mixes at and sends here.
    """

    def __init__(self, input_sample_rate: int = 16000, output_sample_rate: int = 24000) -> None:
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = output_sample_rate
        self._input = InputHandOff(math.inf)  # (`audio_in`, or the session's hook: `DirectInput`)
        self.output: list[AudioFrame] = []
        """Every frame the session sent, stamped with the tick time it was mixed for."""
        self.clears: list[float] = []
        """Session times at which `clear()` was called."""
        self.hung_up = False
        self.closed = False

    # -- the session's side ---------------------------------------------------------------
    async def send_audio(self, frame: AudioFrame) -> None:
        """Record the frame. A cancellation point only: appending to a list never blocks, and
        skipping the schedule point saves a task switch on every tick."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self.output.append(frame)

    def clear(self) -> None:
        self.clears.append(trio.current_time())

    async def hang_up(self) -> None:
        self.hung_up = True
        self._input.close()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self.closed = True
        self._input.close()
        await trio.lowlevel.checkpoint()

    # -- the test's side ------------------------------------------------------------------
    async def send_user_audio(self, frames: Iterable[AudioFrame]) -> None:
        """Deliver frames in real time on the trio clock, as a microphone would.

        The first frame's audio starts now. Like a microphone, each frame is delivered once it
        has been captured (at the end of its span) and is stamped with the time its first sample
        was captured. Returns when the last frame has been delivered.
        """
        t = trio.current_time()
        for frame in frames:
            await trio.sleep_until(t + frame.duration)
            self._deliver(frame, t)
            t += frame.duration

    def send_user_audio_nowait(self, frames: Iterable[AudioFrame]) -> None:
        """Deliver all frames now, stamped as if captured back to back from the current time."""
        t = trio.current_time()
        for frame in frames:
            self._deliver(frame, t)
            t += frame.duration

    def end_user_audio(self) -> None:
        """The user's microphone is gone: close the input stream."""
        self._input.close()

    def _deliver(self, frame: AudioFrame, t: float) -> None:
        if frame.sample_rate != self.input_sample_rate:
            raise ValueError(f"this transport takes {self.input_sample_rate} Hz input, got {frame.sample_rate} Hz")
        self._input.offer(AudioFrame(frame.samples, frame.sample_rate, frame.channels, t))  # (never full)

    # -- reading the recording --------------------------------------------------------------
    def voice_segments(self, threshold: float = 0.01, min_gap: float = 0.05) -> list[tuple[float, float]]:
        """Spans ``(start, end)`` in session seconds where the output is louder than `threshold`
        (a fraction of full scale), sample-accurate. Gaps shorter than `min_gap` are bridged."""
        limit = threshold * 32768.0
        spans: list[tuple[float, float]] = []
        for frame in self.output:
            loud = np.flatnonzero(np.abs(frame.samples.astype(np.int32)) > limit)
            if len(loud) == 0:
                continue
            start = frame.timestamp + loud[0] / frame.sample_rate
            end = frame.timestamp + (loud[-1] + 1) / frame.sample_rate
            if spans and start - spans[-1][1] < min_gap:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return spans

    def recording(self) -> AudioFrame:
        """All output as one frame."""
        if not self.output:
            return AudioFrame.silence(0, self.output_sample_rate)
        return AudioFrame(np.concatenate([f.samples for f in self.output]), self.output_sample_rate, 1, self.output[0].timestamp)
