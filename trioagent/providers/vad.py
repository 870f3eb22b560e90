"""`EnergyVAD`: a numpy energy detector, the default VAD."""

from __future__ import annotations

import attrs
import numpy as np

from ..audio.frame import AudioFrame
from .base import VADEvent

__all__ = ["EnergyVAD"]


@attrs.define(eq=False)
class EnergyVAD:
    """Speech is audio louder than `threshold_db` (dBFS RMS over `window` seconds).

    A start needs `min_speech_duration` of continuous loud windows; an end needs
    `min_silence_duration` of quiet ones. Event times are the true onset and offset (window
    precision, 10 ms by default), taken from the frames' timestamps. Sans-IO; not a checkpoint.
    """

    sample_rate: int = 16000
    threshold_db: float = -40.0
    min_speech_duration: float = 0.1
    min_silence_duration: float = 0.3
    window: float = 0.01
    _speaking: bool = attrs.field(init=False, default=False)
    _run_start: float | None = attrs.field(init=False, default=None)
    _silence_start: float | None = attrs.field(init=False, default=None)
    _processed_until: float = attrs.field(init=False, default=0.0)
    _win: int = attrs.field(init=False)
    _threshold: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._win = max(1, round(self.window * self.sample_rate))
        self._threshold = (10 ** (self.threshold_db / 20) * 32768.0) ** 2

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def speech_duration(self) -> float:
        """Seconds of the current speech segment heard so far, not counting trailing silence
        (0 when not speaking)."""
        if not self._speaking or self._run_start is None:
            return 0.0
        end = self._silence_start if self._silence_start is not None else self._processed_until
        return max(0.0, end - self._run_start)

    def reset(self) -> None:
        self._speaking = False
        self._run_start = None
        self._silence_start = None

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"EnergyVAD runs at {self.sample_rate} Hz, got a {frame.sample_rate} Hz frame")
        x = frame.to_mono().samples.astype(np.float32)
        n = len(x) // self._win
        if n == 0:
            return []
        windows = x[: n * self._win].reshape(n, self._win)
        power = np.einsum("ij,ij->i", windows, windows) / self._win  # mean square, no temporaries
        voiced = power > self._threshold
        events: list[VADEvent] = []
        w = self._win / self.sample_rate
        t0 = frame.timestamp
        for i in range(n):
            t = t0 + i * w
            if voiced[i]:
                self._silence_start = None
                if not self._speaking:
                    if self._run_start is None:
                        self._run_start = t
                    if t + w - self._run_start >= self.min_speech_duration - 1e-9:
                        self._speaking = True
                        events.append(VADEvent("start", self._run_start))
            else:
                if not self._speaking:
                    self._run_start = None
                if self._speaking:
                    if self._silence_start is None:
                        self._silence_start = t
                    if t + w - self._silence_start >= self.min_silence_duration - 1e-9:
                        self._speaking = False
                        events.append(VADEvent("end", self._silence_start))
                        self._silence_start = None
                        self._run_start = None
        self._processed_until = t0 + n * w
        return events
