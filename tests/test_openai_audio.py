"""OpenAITTS and OpenAISTT against a loopback server speaking OpenAI's audio endpoints; the
requests are checked against the `openai` SDK's parameter types, the answers against its models."""

from __future__ import annotations

import io
import wave

import pytest
import trio
from pydantic import TypeAdapter

from trioagent import ProviderError, ProviderTimeout
from trioagent.audio import AudioFrame
from trioagent.providers.base import TranscriptEvent
from trioagent.providers.openai_audio import OpenAISTT, OpenAITTS
from trioagent.testing import silence, speech

from .openai_server import SENT_TRANSCRIPTIONS, FakeOpenAI, serve

openai_audio = pytest.importorskip("openai.types.audio")


async def test_tts_streams_pcm_in_20_ms_frames(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    tts = OpenAITTS(voice="marin", instructions="Warm.", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test")
    frames = [f async for f in tts.synthesize("Hello there my friend.")]
    assert all(f.sample_rate == 24000 for f in frames)
    assert all(len(f.samples) == 480 for f in frames[:-1]) and sum(len(f.samples) for f in frames) == 4 * 6000
    request = server.requests[0]
    assert request["path"] == "/v1/audio/speech" and request["headers"]["authorization"] == "Bearer sk-test"
    assert request["body"] == {"model": "gpt-4o-mini-tts", "voice": "marin", "input": "Hello there my friend.", "response_format": "pcm", "instructions": "Warm."}
    TypeAdapter(openai_audio.speech_create_params.SpeechCreateParams).validate_python(request["body"])


@pytest.mark.parametrize(("text", "error", "message"), [
    ("unauthorized", ProviderError, "answered HTTP 401 \\(check the API key\\)"),
    ("json", ProviderError, "answered 200 with application/json, not audio"),
    ("stall now", ProviderTimeout, "stalled for 0.3 s"),
])  # fmt: skip
async def test_tts_errors_are_clear(nursery: trio.Nursery, text: str, error: type[Exception], message: str) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    tts = OpenAITTS(base_url=f"http://127.0.0.1:{port}/v1", chunk_timeout=0.3)
    with pytest.raises(error, match=message):
        [f async for f in tts.synthesize(text)]


async def test_tts_cancelled_mid_stream_closes_the_response(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    tts = OpenAITTS(base_url=f"http://127.0.0.1:{port}/v1")
    got: list[AudioFrame] = []
    with trio.move_on_after(5):
        async with trio.open_nursery() as inner:

            async def listen() -> None:
                async for frame in tts.synthesize("stall here please"):
                    got.append(frame)

            inner.start_soon(listen)
            await server.stalled.wait()
            inner.cancel_scope.cancel()  # a barge-in
    with trio.fail_after(5):
        await server.hung_up.wait()  # the cancelled call closed its connection
    assert got  # the audio before the stall was played


async def run_stt(stt: OpenAISTT, frames: list[AudioFrame]) -> list[TranscriptEvent]:
    audio_send, audio_receive = trio.open_memory_channel[AudioFrame](1000)
    events_send, events_receive = trio.open_memory_channel[TranscriptEvent](100)
    out: list[TranscriptEvent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stt.run, audio_receive, events_send)
        async with audio_send:
            t = 0.0
            for frame in frames:  # (stamped back to back, as a transport does)
                try:
                    await audio_send.send(AudioFrame(frame.samples, frame.sample_rate, 1, t))
                except trio.BrokenResourceError:
                    break  # (the STT has failed: its error comes out of the nursery)
                t += frame.duration
        async with events_receive:
            async for event in events_receive:
                out.append(event)
    return out


async def test_stt_posts_each_speech_segment_as_wav(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    server.transcripts = ["what is the weather", "in paris"]
    port = await nursery.start(serve, server)
    stt = OpenAISTT(language="en", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test")
    frames = list(silence(0.5)) + list(speech(1.0)) + list(silence(1.0)) + list(speech(0.6)) + list(silence(1.0))
    events = await run_stt(stt, frames)
    assert [(e.text, e.is_final) for e in events] == [("what is the weather", True), ("in paris", True)]
    first = server.requests[0]
    assert first["path"] == "/v1/audio/transcriptions" and first["headers"]["authorization"] == "Bearer sk-test"
    assert (first["body"]["model"], first["body"]["language"], first["body"]["response_format"]) == ("gpt-4o-mini-transcribe", "en", "json")
    with wave.open(io.BytesIO(first["body"]["file"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        seconds = w.getnframes() / 16000
    assert 1.2 < seconds < 1.8  # the speech, its pre-roll and the VAD's hangover
    for answer in SENT_TRANSCRIPTIONS:
        openai_audio.Transcription.model_validate(answer)


@pytest.mark.parametrize(("answer", "message"), [("error", "answered HTTP 503"), ("garbage", "not a transcription")])
async def test_stt_error_ends_the_stream_with_a_provider_error(nursery: trio.Nursery, answer: str, message: str) -> None:
    server = FakeOpenAI()
    server.transcripts = [answer]
    port = await nursery.start(serve, server)
    stt = OpenAISTT(base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(ExceptionGroup) as info:
        await run_stt(stt, list(speech(1.0)) + list(silence(1.0)))
    (error,) = info.value.exceptions  # the one error, bare
    assert isinstance(error, ProviderError) and message in str(error)
