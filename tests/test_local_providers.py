"""The offline providers on speech made by the offline TTS, and the demo end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
import trio

from trioagent import AudioFrame, ChatContext, ChatRole, FunctionTool
from trioagent.audio import read_wav, resample, write_wav
from trioagent.providers import EnergyVAD, TextDelta, ToolCall
from trioagent.providers.vad import PreRoll
from trioagent.providers.espeak import EspeakTTS
from trioagent.providers import pocketsphinx as pocketsphinx_module
from trioagent.providers.pocketsphinx import DEMO_GRAMMAR, PocketsphinxSTT
from trioagent.providers.rule_llm import RuleLLM
from trioagent.transports import WavFileTransport

PHRASES = ["hello there", "what time is it", "what is the weather in paris", "what is the date today", "thank you goodbye",
           "how are you doing", "is it going to rain in london", "what day is it", "good morning", "tell me the weather in tokyo"]


async def spoken(text: str, sample_rate: int = 16000, **voice: object) -> np.ndarray:
    tts = EspeakTTS(**voice)  # type: ignore[arg-type]
    frames = [f async for f in tts.synthesize(text)]
    return resample(AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate), sample_rate).samples


def word_errors(ref: str, hyp: str) -> int:
    r, h = ref.split(), hyp.split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[-1]


async def test_espeak_synthesises_speech(autojump_clock: trio.testing.MockClock) -> None:
    tts = EspeakTTS()
    frames = [f async for f in tts.synthesize("Hello there, how are you?")]
    audio = np.concatenate([f.samples for f in frames])
    assert all(f.sample_rate == 22050 for f in frames) and 1.0 < len(audio) / 22050 < 3.0
    assert np.abs(audio.astype(np.int32)).max() > 5000


async def speech_with_pauses(rate: int = 16000) -> tuple[np.ndarray, list[tuple[str, float]]]:
    """Three eSpeak phrases (trimmed to their first and last loud sample) with a second of
    silence around each; and the true start and end times."""
    parts = [np.zeros(rate // 2, np.int16)]
    truth = []
    t = 0.5
    for phrase in ["hello there", "what time is it", "the weather in paris is nice"]:
        x = await spoken(phrase, rate)
        loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 0.01 * 32768)
        x = x[loud[0] : loud[-1] + 1]
        truth += [("start", t), ("end", t + len(x) / rate)]
        parts += [x, np.zeros(rate, np.int16)]
        t += len(x) / rate + 1.0
    return np.concatenate(parts), truth


async def test_vad_times_on_generated_speech_with_pauses(autojump_clock: trio.testing.MockClock) -> None:
    rate = 16000
    audio, truth = await speech_with_pauses(rate)
    vad = EnergyVAD()
    events = [e for i in range(0, len(audio) - 320, 320) for e in vad.process(AudioFrame(audio[i : i + 320], rate, 1, i / rate))]
    assert [e.kind for e in events] == [k for k, _ in truth]
    for event, (_, expected) in zip(events, truth):
        assert abs(event.time - expected) <= 0.02  # within one 20 ms frame


def test_vad_durations_are_of_audio_heard_not_of_time_passed() -> None:
    """Input that came late is stamped when it came: the gap before it is neither silence nor
    speech (a network stall on the quiet of a plosive used to end the user's speech)."""
    from trioagent.testing import silence, speech

    def stamped(frames: list[AudioFrame], t: float) -> list[AudioFrame]:
        return [AudioFrame(f.samples, f.sample_rate, 1, t + i * 0.02) for i, f in enumerate(frames)]

    def run(frames: list[AudioFrame]) -> list[tuple[str, float]]:
        vad = EnergyVAD()
        return [(e.kind, round(e.time, 3)) for f in frames for e in vad.process(f)]

    # 0.5 s of speech, 60 ms of quiet (a plosive's closure) with the network stalling 0.5 s in
    # the middle of it, then the rest of the sentence: one segment.
    said = stamped(speech(0.5), 0.0) + stamped(silence(0.04), 0.5) + stamped(silence(0.02), 1.04) + stamped(speech(0.5), 1.06) + stamped(silence(0.4), 1.56)
    assert run(said) == [("start", 0.0), ("end", 1.56)]
    # A silence heard in two parts around a gap ends the speech once 0.3 s of it is heard, at its start.
    paused = stamped(speech(0.5), 0.0) + stamped(silence(0.2), 0.5) + stamped(silence(0.2), 2.0)
    assert run(paused) == [("start", 0.0), ("end", 0.5)]
    assert run(paused[:39]) == [("start", 0.0)]  # (0.28 s of it heard, though 1.7 s have passed)
    # Speech must be heard for min_speech_duration (0.1 s): two 60 ms bursts split by a gap do it.
    bursts = stamped(speech(0.06), 0.0) + stamped(speech(0.06), 1.0)
    assert run(bursts) == [("start", 0.0)]


async def run_stt(stt: PocketsphinxSTT, audio: np.ndarray) -> list[tuple[str, bool]]:
    frames = [AudioFrame(audio[i : i + 320], 16000, 1, i / 16000) for i in range(0, len(audio) - 319, 320)]
    send, receive = trio.open_memory_channel[AudioFrame](len(frames) + 1)
    events_send, events_receive = trio.open_memory_channel(1000)
    for frame in frames:
        send.send_nowait(frame)
    send.close()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stt.run, receive, events_send)
        out = [(e.text, e.is_final) async for e in events_receive]
    return out


async def test_pocketsphinx_recognises_tts_phrases(autojump_clock: trio.testing.MockClock) -> None:
    silence = np.zeros(8000, np.int16)
    audio = np.concatenate([part for p in PHRASES for part in (silence, await spoken(p, voice="en-us+m3", rate=150))] + [silence, silence])
    events = await run_stt(PocketsphinxSTT(grammar=DEMO_GRAMMAR), audio)
    finals = [text for text, final in events if final]
    # eSpeak's output varies a little from call to call (its pitch flutter runs on across
    # utterances, so what ran before matters): two phrases may come out as one segment. Score
    # the whole word sequence.
    assert len(finals) >= len(PHRASES) - 1, finals
    wer = word_errors(" ".join(PHRASES), " ".join(finals)) / sum(len(p.split()) for p in PHRASES)
    assert wer <= 0.25, (wer, finals)  # 14% measured (NOTES.md); the general model is far worse
    assert any(not final for _, final in events)  # interim transcripts while speaking


@pytest.mark.parametrize("interim", [None, 0.5])
async def test_pocketsphinx_segment_starts_before_the_true_onset(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch, interim: float | None
) -> None:
    """A soft first sound (a quiet consonant, below the VAD's threshold) comes before the onset
    the VAD reports; a VAD that needs 0.3 s of speech is sure of it late. The decoder must still
    get the audio from before the soft start."""
    decoded: list[bytes] = []

    def decode(grammar: str | None, pcm: bytes) -> str:
        decoded.append(pcm)
        return "heard"

    monkeypatch.setattr(pocketsphinx_module, "decode", decode)
    rate = 16000
    t = np.arange(3 * rate) / rate
    signal = np.zeros(len(t))
    signal[(t >= 1.0) & (t < 1.15)] = 0.004 * np.sin(2 * np.pi * 2500 * t[(t >= 1.0) & (t < 1.15)])  # -51 dBFS: a soft "b"
    signal[(t >= 1.15) & (t < 2.0)] = 0.3 * np.sin(2 * np.pi * 200 * t[(t >= 1.15) & (t < 2.0)])  # then the vowel
    audio = np.rint(signal * 32767).astype(np.int16)
    events = await run_stt(PocketsphinxSTT(interim_interval=interim, vad=EnergyVAD(min_speech_duration=0.3)), audio)
    assert ("heard", True) in events
    pcm = np.frombuffer(decoded[-1], np.int16)  # the final decode (interims come before it)
    start = round((1.15 - 0.3) * rate)  # the reported onset less the 0.3 s pre-roll
    assert np.array_equal(pcm, audio[start : start + len(pcm)])  # one continuous piece from there
    assert start / rate <= 1.0  # at or before the true (soft) onset


def test_preroll_keeps_its_span_and_cuts_to_the_sample() -> None:
    ring = PreRoll(seconds=0.5)
    for i in range(100):
        ring.push(AudioFrame(np.full(320, i, np.int16), 16000, 1, i * 0.02))  # 0 .. 2.0 s
    cut = ring.since(1.51)
    assert cut[0].timestamp == pytest.approx(1.51) and len(cut[0].samples) == 160 and cut[0].samples[0] == 75
    assert sum(len(f.samples) for f in cut) == round(0.49 * 16000)
    assert ring.since(0.0)[0].timestamp == pytest.approx(1.5)  # no further back than it keeps


def test_rule_llm_intents() -> None:
    llm = RuleLLM(now=lambda: dt.datetime(2026, 11, 25, 14, 5))
    weather = FunctionTool.from_function(lambda city: city, name="get_weather", description="w")

    def answer(text: str, tools: list[FunctionTool] | None = None) -> object:
        ctx = ChatContext()
        ctx.add_message(role=ChatRole.USER, content=text)
        return llm.answer(ctx, tools or [])

    assert answer("what time is it") == "It is 2:05 PM."
    assert answer("what is the date today") == "Today is Wednesday, November 25."
    assert answer("what is the whether in pariss", [weather]) == ToolCall("get_weather", {"city": "paris"})
    assert answer("what's the weather") == "Which city would you like the weather for?"
    assert answer("how are you doing") == "I am doing well, thank you for asking."
    assert answer("thank you goodbye") == "You are welcome. Goodbye, have a nice day!"
    assert "only tell" in str(answer("sing me a song"))
    ctx = ChatContext()
    ctx.add_function_output(name="get_weather", call_id="c", output='{"city": "paris", "sky": "sunny", "celsius": 20}')
    assert llm.answer(ctx, []) == "In Paris it is sunny and 20 degrees."
    # The time in a city: through a `get_current_time` tool (the MCP time server's) when there is one.
    clock = FunctionTool.from_function(lambda timezone: timezone, name="get_current_time", description="t")
    assert answer("tell me the time in tokyo", [clock]) == ToolCall("get_current_time", {"timezone": "Asia/Tokyo"})
    assert answer("what time is it in boston") == "I cannot tell the time in Boston; here it is 2:05 PM."
    ctx = ChatContext()
    ctx.add_message(role=ChatRole.USER, content="tell me the time in tokyo")
    ctx.add_function_output(name="get_current_time", call_id="c", output='{"timezone": "Asia/Tokyo", "datetime": "2026-11-26T09:05:00+09:00"}')
    assert llm.answer(ctx, [clock]) == "In Tokyo it is 9:05 AM."
    ctx.add_function_output(name="get_current_time", call_id="d", output="error: Invalid timezone", is_error=True)
    assert llm.answer(ctx, [clock]) == "Sorry, I could not get the time in Tokyo just now."


async def test_rule_llm_streams_words() -> None:
    ctx = ChatContext()
    ctx.add_message(role=ChatRole.USER, content="hello")
    chunks = [c async for c in RuleLLM().chat(ctx, [])]
    assert all(isinstance(c, TextDelta) for c in chunks) and len(chunks) > 3
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)).startswith("Hello!")


async def test_wav_file_transport_plays_in_real_time_and_records(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    write_wav(tmp_path / "in.wav", AudioFrame(np.full(8000, 1000, np.int16), 8000))  # 1 s
    transport = WavFileTransport(tmp_path / "in.wav", tmp_path / "out.wav", output_sample_rate=8000, tail=0.5)
    times = []
    async for frame in transport.audio_in:
        times.append((trio.current_time(), frame.timestamp))
        await transport.send_audio(AudioFrame(np.full(160, 2000, np.int16), 8000, 1, frame.timestamp))
    assert len(times) == 75 and times[0] == (0.02, 0.0) and times[-1][0] == pytest.approx(1.5)
    await transport.aclose()
    out = read_wav(tmp_path / "out.wav")
    assert out.channels == 2 and out.samples[:8000, 0].min() == 1000 and out.samples[:100, 1].min() == 2000


async def test_demo_end_to_end_in_virtual_time(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    import io

    from trioagent.demo import QUESTIONS, run_demo

    out = io.StringIO()
    turns = await run_demo(str(tmp_path / "demo.wav"), out=out)
    assert [t.said for t in turns] == QUESTIONS
    assert sum(t.heard != "" for t in turns) == len(QUESTIONS)
    answers = {t.said: t.answered for t in turns}
    assert answers["What is the weather in Paris?"].startswith("In Paris it is")
    assert answers["What time is it?"].startswith("It is ")
    assert all(t.metrics is not None and t.metrics.e2e_latency is not None and t.metrics.e2e_latency < 1.0 for t in turns)
    text = out.getvalue()
    assert "STT heard   : what is the weather in paris" in text and "end-to-end" in text
    recording = read_wav(tmp_path / "demo.wav")
    assert recording.channels == 2 and np.abs(recording.samples[:, 1].astype(np.int32)).max() > 5000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=0, max_size=6), min_size=1, max_size=60))
def test_segmenter_windows_at_once_are_windows_one_by_one(frames: list[list[bool]]) -> None:
    """`feed_windows` (a frame's windows at once, with its steady-state shortcut) makes the same
    events and the same state as `feed` window by window."""
    from trioagent.providers.vad import Segmenter

    at_once, one_by_one = Segmenter(0.03, 0.05), Segmenter(0.03, 0.05)
    t, w = 0.0, 0.01
    for voiced in frames:
        events = at_once.feed_windows(t, w, voiced)
        expected = [e for i, v in enumerate(voiced) if (e := one_by_one.feed(t + i * w, w, v)) is not None]
        assert events == expected
        assert (at_once.speaking, at_once.in_speech_run, at_once.speech_duration) == pytest.approx(
            (one_by_one.speaking, one_by_one.in_speech_run, one_by_one.speech_duration)
        )
        t += len(voiced) * w


_LEVELS = st.sampled_from([0.0, 0.003, 0.009, 0.0099, 0.0101, 0.011, 0.05, 0.3])  # RMS, around 0.01 (-40 dBFS)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_LEVELS, _LEVELS, st.integers(0, 3), st.integers(1, 12)), min_size=1, max_size=30))
def test_energy_vad_decides_every_window_as_a_window_by_window_reference(runs: list[tuple[float, float, int, int]]) -> None:
    """EnergyVAD's quiet shortcut (one sum of squares for the whole frame while no speech is
    under way) makes the same events as deciding each 10 ms window on its own: frames around
    the -40 dBFS threshold (0.01 RMS), loud in one window only, or of odd lengths."""
    from trioagent.providers.vad import Segmenter

    frames = [(first, second, extra) for first, second, extra, repeat in runs for _ in range(repeat)]
    rng = np.random.default_rng(len(frames))
    vad, reference = EnergyVAD(), Segmenter(0.1, 0.3)
    threshold = 10 ** (-40 / 20)
    t = 0.0
    for first, second, extra in frames:
        # Two windows of 160 samples at those RMS levels (a sine: its RMS is known), and
        # `extra` samples that no window takes.
        halves = [rms * np.sqrt(2) * np.sin(np.arange(160) * 0.3 + rng.uniform(0, 6)) for rms in (first, second)]
        samples = np.rint(np.concatenate([*halves, np.zeros(extra)]) * 32768).astype(np.int16)
        windows = samples[:320].astype(np.float64).reshape(2, 160) / 32768
        voiced = [bool(np.sqrt(np.mean(w * w)) > threshold) for w in windows]
        assert vad.process(AudioFrame(samples, 16000, 1, t)) == reference.feed_windows(t, 0.01, voiced)
        t += 0.02
    assert vad.speaking == reference.speaking
