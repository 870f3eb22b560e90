from __future__ import annotations

import numpy as np
import pytest

from trioagent import AudioFrame
from trioagent.audio import StreamResampler, resample


def chirp(rate: int, seconds: float, top: float = 3200.0) -> AudioFrame:
    """A sweep from 200 Hz up to `top` Hz."""
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * (200 + (top - 200) / 2 * t / seconds) * t)
    return AudioFrame.from_float(x, rate)


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    ref = ref.astype(np.float64)
    err = ref - test.astype(np.float64)
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum(err**2), 1e-12)))


def streamed(r: StreamResampler, signal: AudioFrame, step: int) -> np.ndarray:
    parts = [r.process(AudioFrame(signal.samples[i : i + step], signal.sample_rate, timestamp=i / signal.sample_rate)).samples for i in range(0, len(signal.samples), step)]
    parts.append(r.flush().samples)
    return np.concatenate(parts)


PAIRS = [(16000, 48000), (24000, 48000), (44100, 48000), (48000, 8000), (8000, 16000), (24000, 8000), (22050, 24000), (44100, 24000)]


@pytest.mark.parametrize(("src", "dst"), PAIRS)
@pytest.mark.parametrize("quality", ["LL", "HQ"])
def test_frame_by_frame_matches_one_shot(src: int, dst: int, quality: str) -> None:
    """In 20 ms frames, in odd 7-sample pieces, or all at once: the same samples (no clicks at
    frame edges); and the same signal as soxr's one-shot resample in the pass band."""
    signal = chirp(src, 1.0, top=0.35 * min(src, dst))
    whole = streamed(StreamResampler(src, dst, quality=quality), signal, len(signal.samples))
    in_frames = streamed(StreamResampler(src, dst, quality=quality), signal, src // 50)
    in_pieces = streamed(StreamResampler(src, dst, quality=quality), signal, 7)
    if quality == "LL":  # equal up to float rounding (BLAS blocks differently): at most 1 LSB
        assert np.abs(in_frames.astype(np.int32) - whole).max() <= 1 and np.abs(in_pieces.astype(np.int32) - whole).max() <= 1
    else:  # soxr: equal up to its internal float rounding
        assert snr_db(whole, in_frames) > 80 and snr_db(whole, in_pieces) > 80
    one_shot = resample(signal, dst)
    assert abs(len(in_frames) - len(one_shot.samples)) <= 1
    n = min(len(in_frames), len(one_shot.samples))
    edge = n // 20  # the filters treat the signal's abrupt start and end differently
    assert snr_db(one_shot.samples[edge : n - edge], in_frames[edge : n - edge]) > 60


@pytest.mark.parametrize(("src", "dst", "worst"), [(8000, 16000, 0.0035), (16000, 8000, 0.0035), (24000, 8000, 0.0035), (22050, 24000, 0.0015), (16000, 48000, 0.002)])
def test_low_latency(src: int, dst: int, worst: float) -> None:
    """Each 20 ms frame comes out as soon as it goes in, less only the filter's lookahead (a
    few ms); soxr's stream holds back 20 to 115 ms."""
    r = StreamResampler(src, dst)
    got = 0
    for k in range(1, 51):
        got += len(r.process(AudioFrame.silence(0.02, src)).samples)
        assert k * 0.02 - got / dst <= worst


def test_low_latency_filter_blocks_aliases() -> None:
    """24 kHz voice to an 8 kHz phone line: speech band kept, everything above 4 kHz (which
    would fold back as aliases) at least 85 dB down."""
    t = np.arange(24000) / 24000

    def level(freq: float) -> float:
        r = StreamResampler(24000, 8000)
        y = streamed(r, AudioFrame.from_float(0.5 * np.sin(2 * np.pi * freq * t), 24000), 480).astype(np.float64)[2000:-2000]
        return float(20 * np.log10(max(np.sqrt(np.mean(y**2)), 1e-9) / (0.5 * 32768 / np.sqrt(2))))

    assert abs(level(1000)) < 0.1 and abs(level(3000)) < 0.5
    assert max(level(f) for f in (4400, 5000, 7000, 11000)) < -85


def test_timestamps_follow_input_and_validation() -> None:
    r = StreamResampler(16000, 48000)
    out = r.process(AudioFrame.silence(0.02, 16000, timestamp=3.25))
    assert out.timestamp == 3.25 and out.sample_rate == 48000
    with pytest.raises(ValueError, match="16000 Hz"):
        r.process(AudioFrame.silence(0.02, 8000))


def test_same_rate_passes_through() -> None:
    f = AudioFrame.silence(0.02, 16000)
    assert StreamResampler(16000, 16000).process(f) is f
