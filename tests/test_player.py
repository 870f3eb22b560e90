from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from trioagent import BackgroundAudioHandlerConfig
from trioagent.audio import BackgroundAudioPlayer, Mixer, write_wav

from .helpers import dc, running_mixer


@pytest.fixture
def hum(tmp_path: Path) -> Path:
    path = tmp_path / "hum.wav"
    write_wav(path, dc(0.3, 44100, 8000))
    return path


async def test_loops_and_stops_with_fade(autojump_clock: trio.testing.MockClock, hum: Path) -> None:
    mixer = Mixer(sample_rate=48000)
    async with running_mixer(mixer) as rec, trio.open_nursery() as nursery:
        player = BackgroundAudioPlayer(BackgroundAudioHandlerConfig(hum, volume=0.5, looping=True), mixer)
        await player.start(nursery)
        assert player.is_playing
        await trio.sleep(1.0)  # longer than the file: it loops
        assert player.is_playing
        await player.stop()
        stopped_at = trio.current_time()
        assert not player.is_playing
        await trio.sleep(0.1)
    loud = [f for f in rec.frames if f.samples.any()]
    assert loud[0].timestamp == pytest.approx(0.0, abs=1e-9)
    mid = rec.frame_at(0.6).samples
    assert abs(int(mid[500]) - 4000) <= 2  # volume 0.5 of 8000, seamless across the loop point
    assert stopped_at == pytest.approx(1.02 + 1e-6, abs=1e-9)  # tick 1.00 holds the 10 ms fade; played out at 1.02
    assert not any(f.samples.any() for f in rec.frames if f.timestamp >= 1.02 - 1e-9)


async def test_one_shot_plays_out(autojump_clock: trio.testing.MockClock, hum: Path) -> None:
    mixer = Mixer(sample_rate=44100, frame_duration=0.02)
    async with running_mixer(mixer), trio.open_nursery() as nursery:
        player = BackgroundAudioPlayer(BackgroundAudioHandlerConfig(hum, looping=False), mixer)
        await player.start(nursery)
        assert player.source is not None
        await player.source.wait_played_out()
        assert player.source.played_out_at == pytest.approx(0.3, abs=1e-9)  # 0.3 s of audio from t = 0: ticks 0.00..0.28
        assert not player.is_playing


async def test_a_missing_or_undecodable_file_is_a_warning_and_plays_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mixer = Mixer()
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    (tmp_path / "bad.mp3").write_bytes(b"ID3 not really")
    async with trio.open_nursery() as nursery:
        for name in ("nope.wav", "bad.wav", "bad.mp3"):
            await BackgroundAudioPlayer(BackgroundAudioHandlerConfig(tmp_path / name), mixer).start(nursery)
    assert mixer.sources == ()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3 and all(w.startswith("background audio not played: ") for w in warnings)
    assert "nope.wav" in warnings[0]


@pytest.mark.parametrize("fmt, subtype, tolerance", [("FLAC", "PCM_16", 2), ("OGG", "VORBIS", 600), ("MP3", "MPEG_LAYER_III", 600)])
async def test_common_formats_decode_resample_and_play(autojump_clock: trio.testing.MockClock, tmp_path: Path, fmt: str, subtype: str, tolerance: int) -> None:
    """FLAC, OGG/Vorbis and MP3 (through soundfile), stereo at 44.1 kHz, played at 48 kHz."""
    soundfile = pytest.importorskip("soundfile")
    rate = 44100
    t = np.arange(rate) / rate
    tone = 0.25 * np.sin(2 * np.pi * 300 * t)
    path = tmp_path / f"clip.{fmt.lower()}"
    soundfile.write(path, np.stack([tone, tone], axis=1), rate, format=fmt, subtype=subtype)
    mixer = Mixer(sample_rate=48000)
    async with running_mixer(mixer) as rec, trio.open_nursery() as nursery:
        player = BackgroundAudioPlayer(BackgroundAudioHandlerConfig(path), mixer)
        await player.start(nursery)
        assert player.source is not None
        await player.source.wait_played_out()
    peak = max(int(np.abs(f.samples).max()) for f in rec.frames if 0.3 <= f.timestamp <= 0.7)
    assert abs(peak - 0.25 * 32767) <= tolerance  # (a lossy codec moves the peak a little)
    heard = [f.timestamp for f in rec.frames if f.samples.any()]
    assert heard[0] == pytest.approx(0.0, abs=1e-9) and heard[-1] == pytest.approx(1.0, abs=0.08)  # about 1 s, once


async def test_disabled_config_plays_nothing(hum: Path) -> None:
    mixer = Mixer()
    async with trio.open_nursery() as nursery:
        await BackgroundAudioPlayer(BackgroundAudioHandlerConfig(hum, enabled=False), mixer).start(nursery)
    assert mixer.sources == ()


def test_config_validates_volume(hum: Path) -> None:
    with pytest.raises(ValueError, match="volume"):
        BackgroundAudioHandlerConfig(hum, volume=1.5)
    assert np.isclose(BackgroundAudioHandlerConfig(hum).volume, 1.0)
