"""`WavFileTransport`: a WAV file plays the caller; the agent's answer is recorded."""

from __future__ import annotations

import os
import numpy as np
import trio

from ..audio.codec import read_wav, write_wav
from ..audio.frame import FRAME_DURATION, AudioFrame
from ..audio.resample import resample

__all__ = ["WavFileTransport"]


class _PacedFrames(trio.abc.ReceiveChannel[AudioFrame]):
    """Hands out a file's frames on the trio clock, each when it has been "captured"."""

    def __init__(self, frames: list[AudioFrame]) -> None:
        self._frames = frames
        self._next = 0
        self._start: float | None = None
        self._closed = False

    async def receive(self) -> AudioFrame:
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise trio.EndOfChannel
        if self._start is None:
            self._start = trio.current_time()
        if self._next >= len(self._frames):
            await trio.lowlevel.checkpoint()
            raise trio.EndOfChannel
        frame = self._frames[self._next]
        offset = self._next * frame.duration
        await trio.sleep_until(self._start + offset + frame.duration)
        if self._closed:
            raise trio.EndOfChannel
        self._next += 1
        return AudioFrame(frame.samples, frame.sample_rate, 1, self._start + offset)

    @property
    def started_at(self) -> float | None:
        return self._start

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()


class WavFileTransport:
    """Plays `input_path` into a session in real time (on the trio clock) and, on close, writes
    `output_path`: a stereo WAV with the caller on the left and the agent on the right.

    Args:
        input_path: the caller's audio (PCM WAV, any rate; stereo is mixed down).
        output_path: where to write the conversation (None: keep it in memory only).
        output_sample_rate: the rate the agent's audio is mixed at.
        tail: seconds of silence played after the file, so the agent can answer the last question.
        frame_duration: size of the input frames.
    """

    def __init__(
        self,
        input_path: str | os.PathLike[str],
        output_path: str | os.PathLike[str] | None = None,
        *,
        output_sample_rate: int = 24000,
        tail: float = 3.0,
        frame_duration: float = FRAME_DURATION,
    ) -> None:
        clip = read_wav(input_path).to_mono()
        self.input_sample_rate = clip.sample_rate
        self.output_sample_rate = output_sample_rate
        self.output_path = output_path
        padded = np.concatenate([clip.samples, np.zeros(round(tail * clip.sample_rate), np.int16)])
        step = round(frame_duration * clip.sample_rate)
        frames = [AudioFrame(padded[i : i + step], clip.sample_rate) for i in range(0, len(padded) - step + 1, step)]
        self._input = clip
        self._paced = _PacedFrames(frames)
        self.output: list[AudioFrame] = []
        self.hung_up = False
        self._written = False

    @property
    def duration(self) -> float:
        """Seconds of input, tail included."""
        return len(self._paced._frames) * (self._paced._frames[0].duration if self._paced._frames else 0.0)

    @property
    def audio_in(self) -> trio.abc.ReceiveChannel[AudioFrame]:
        return self._paced

    async def send_audio(self, frame: AudioFrame) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.output.append(frame)

    def clear(self) -> None:
        pass  # nothing is queued downstream of the mixer

    async def hang_up(self) -> None:
        self.hung_up = True
        await self._paced.aclose()

    async def aclose(self) -> None:
        await self._paced.aclose()
        if self.output_path is not None and not self._written:
            self._written = True
            write_wav(self.output_path, self.conversation())

    def conversation(self) -> AudioFrame:
        """Caller (left) and agent (right) on one time line, at the output rate."""
        rate = self.output_sample_rate
        start = self._paced.started_at or (self.output[0].timestamp if self.output else 0.0)
        caller = resample(self._input, rate).samples
        agent_end = max((round((f.timestamp - start) * rate) + len(f) for f in self.output), default=0)
        n = max(len(caller), agent_end)
        stereo = np.zeros((n, 2), np.int16)
        stereo[: len(caller), 0] = caller
        for f in self.output:
            i = round((f.timestamp - start) * rate)
            if i >= 0:
                stereo[i : i + len(f), 1] = f.samples[: max(0, n - i)]
        return AudioFrame(stereo, rate, 2, start)

    def __repr__(self) -> str:
        return f"<WavFileTransport {self.input_sample_rate} Hz in, {self.output_sample_rate} Hz out>"
