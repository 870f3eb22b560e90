from __future__ import annotations

import attrs
import numpy as np
import pytest

from trioagent import AudioFrame


def test_from_pcm16_round_trip() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], np.int16)
    f = AudioFrame.from_pcm16(samples.tobytes(), 8000)
    assert f.samples.dtype == np.int16
    assert np.array_equal(f.samples, samples)
    assert f.to_pcm16() == samples.tobytes()
    assert f.samples_per_channel == 5
    assert f.duration == 5 / 8000


def test_stereo_shape() -> None:
    data = np.arange(8, dtype=np.int16).tobytes()
    f = AudioFrame.from_pcm16(data, 16000, channels=2)
    assert f.samples.shape == (4, 2)
    assert f.to_pcm16() == data
    assert f.to_mono().samples.tolist() == [0, 2, 4, 6]  # mean of (0,1)=0.5 rounds to 0 (even)


def test_silence_and_float() -> None:
    s = AudioFrame.silence(0.02, 24000, timestamp=1.5)
    assert s.samples_per_channel == 480 and not s.samples.any() and s.timestamp == 1.5
    f = AudioFrame.from_float(np.array([0.0, 0.5, -1.0, 2.0], np.float32), 16000)
    assert f.samples.tolist() == [0, 16384, -32768, 32767]
    back = f.to_float()
    assert back.dtype == np.float32 and back.max() < 1.0 and back.min() >= -1.0


def test_equality_and_evolve() -> None:
    a = AudioFrame.silence(0.01, 8000)
    b = AudioFrame.silence(0.01, 8000)
    assert a == b
    c = attrs.evolve(a, timestamp=2.0)
    assert c != a and c.timestamp == 2.0
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.sample_rate = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: AudioFrame.from_pcm16(b"\x00" * 3, 8000), "whole number"),
        (lambda: AudioFrame.from_pcm16(b"\x00" * 6, 8000, channels=2), "whole number"),
        (lambda: AudioFrame.from_pcm16(b"", 0), "sample_rate"),
        (lambda: AudioFrame.silence(0.1, -8000), "sample_rate"),
        (lambda: AudioFrame(np.zeros(4, np.float32), 8000), "int16"),  # type: ignore[arg-type]
        (lambda: AudioFrame(np.zeros((4, 2), np.int16), 8000, channels=1), "shape"),
        (lambda: AudioFrame.from_float(np.zeros(4, np.int16), 8000), "floating"),
    ],
)
def test_invalid_input(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
