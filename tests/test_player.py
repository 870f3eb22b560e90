from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from trioagent import AudioFormatError, BackgroundAudioHandlerConfig
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
        player = BackgroundAudioPlayer(BackgroundAudioHandlerConfig(hum, volume=0.5), mixer)
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


async def test_errors_reach_the_caller(tmp_path: Path) -> None:
    mixer = Mixer()
    async with trio.open_nursery() as nursery:
        with pytest.raises(FileNotFoundError):
            await BackgroundAudioPlayer(BackgroundAudioHandlerConfig(tmp_path / "nope.wav"), mixer).start(nursery)
        (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
        with pytest.raises(AudioFormatError):
            await BackgroundAudioPlayer(BackgroundAudioHandlerConfig(tmp_path / "bad.wav"), mixer).start(nursery)
    assert mixer.sources == ()


async def test_disabled_config_plays_nothing(hum: Path) -> None:
    mixer = Mixer()
    async with trio.open_nursery() as nursery:
        await BackgroundAudioPlayer(BackgroundAudioHandlerConfig(hum, enabled=False), mixer).start(nursery)
    assert mixer.sources == ()


def test_config_validates_volume(hum: Path) -> None:
    with pytest.raises(ValueError, match="volume"):
        BackgroundAudioHandlerConfig(hum, volume=1.5)
    assert np.isclose(BackgroundAudioHandlerConfig(hum).volume, 1.0)
