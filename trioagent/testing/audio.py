"""Synthetic user audio for tests."""

from __future__ import annotations

import numpy as np

from ..audio.frame import FRAME_DURATION, AudioFrame

__all__ = ["speech", "silence"]


def _frames(signal: np.ndarray, sample_rate: int, frame_duration: float) -> list[AudioFrame]:
    step = round(sample_rate * frame_duration)
    pcm = np.clip(np.rint(signal * 32768.0), -32768, 32767).astype(np.int16)
    return [AudioFrame(pcm[i : i + step], sample_rate) for i in range(0, len(pcm), step)]


def speech(duration: float, sample_rate: int = 16000, frame_duration: float = FRAME_DURATION, pitch: float = 140.0) -> list[AudioFrame]:
    """Voice-like frames: a harmonic-rich buzz at about -15 dBFS, loud enough for `EnergyVAD`.

    Deterministic; the level is constant, so the VAD's onset and offset are exact.
    """
    t = np.arange(round(duration * sample_rate)) / sample_rate
    harmonics = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 8) if pitch * k < sample_rate / 2)
    signal = 0.2 * np.asarray(harmonics, dtype=np.float64)
    return _frames(signal, sample_rate, frame_duration)


def silence(duration: float, sample_rate: int = 16000, frame_duration: float = FRAME_DURATION) -> list[AudioFrame]:
    """Frames of digital silence."""
    return _frames(np.zeros(round(duration * sample_rate)), sample_rate, frame_duration)
