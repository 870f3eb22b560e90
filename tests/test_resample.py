from __future__ import annotations

import numpy as np
import pytest

from trioagent import AudioFrame
from trioagent.audio import StreamResampler, resample


def chirp(rate: int, seconds: float) -> AudioFrame:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t)
    return AudioFrame.from_float(x, rate)


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    err = ref - test.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-12)))


@pytest.mark.parametrize(("src", "dst"), [(16000, 48000), (24000, 48000), (44100, 48000), (48000, 8000), (8000, 16000)])
def test_frame_by_frame_matches_one_shot(src: int, dst: int) -> None:
    signal = chirp(src, 1.0)
    one_shot = resample(signal, dst)
    r = StreamResampler(src, dst)
    step = src // 50  # 20 ms
    parts = [r.process(AudioFrame(signal.samples[i : i + step], src, timestamp=i / src)).samples for i in range(0, len(signal), step)]
    parts.append(r.flush().samples)
    streamed = np.concatenate(parts)
    assert abs(len(streamed) - len(one_shot)) <= 1
    n = min(len(streamed), len(one_shot))
    assert snr_db(one_shot.samples[:n], streamed[:n]) > 60


def test_timestamps_follow_input_and_validation() -> None:
    r = StreamResampler(16000, 48000)
    out = r.process(AudioFrame.silence(0.02, 16000, timestamp=3.25))
    assert out.timestamp == 3.25 and out.sample_rate == 48000
    with pytest.raises(ValueError, match="16000 Hz"):
        r.process(AudioFrame.silence(0.02, 8000))


def test_same_rate_passes_through() -> None:
    f = AudioFrame.silence(0.02, 16000)
    assert StreamResampler(16000, 16000).process(f) is f
