"""Fallback providers in virtual time: the next provider takes the turn when one fails or says
nothing in time; a failed one rests, then gets the next call again; every switch is an event and
in the turn's metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from trioagent import Agent, AgentSession, CascadingPipeline, ChatContext, FunctionTool, ProviderError
from trioagent.audio import AudioFrame
from trioagent.providers import FallbackLLM, FallbackSTT, FallbackTTS, ProviderSwitched, TextDelta
from trioagent.providers.base import LLMChunk, TranscriptEvent
from trioagent.testing import MemoryTransport, ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech

from .kit import about, at


class FlakyLLM:
    """Per call, the next behaviour: "error", "hang", "break" (a word, then an error) or text."""

    def __init__(self, script: Sequence[str]) -> None:
        self.script = list(script)
        self.calls: list[float] = []

    async def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        self.calls.append(trio.current_time())
        entry = self.script.pop(0)
        await trio.lowlevel.checkpoint()
        if entry == "error":
            raise ProviderError("HTTP 503: overloaded", provider="FlakyLLM", stage="llm")
        if entry == "hang":
            await trio.sleep_forever()
        if entry == "break":
            yield TextDelta("Well")
            raise ProviderError("the stream broke", provider="FlakyLLM", stage="llm")
        for i, word in enumerate(entry.split()):
            yield TextDelta(word if i == 0 else " " + word)


class BackupLLM(FlakyLLM):
    pass


def session_with(llm: Any = None, *, stt: Any = None, tts: Any = None, transcripts: list[str] | None = None) -> tuple[AgentSession, MemoryTransport, list[ProviderSwitched]]:
    transport = MemoryTransport()
    pipeline = CascadingPipeline(stt=stt or ScriptedSTT(transcripts or ["one", "two", "three"]), llm=llm or ScriptedLLM(["Okay."]), tts=tts or ToneTTS())
    session = AgentSession(Agent("Test."), pipeline, transport=transport)
    switches: list[ProviderSwitched] = []
    session.on("provider_switched", switches.append)
    return session, transport, switches


async def turn(transport: MemoryTransport, after: float = 3.0) -> None:
    await transport.send_user_audio(speech(1.0))
    await transport.send_user_audio(silence(after))


async def test_an_llm_error_before_the_first_token_moves_the_turn_to_the_next(autojump_clock: trio.testing.MockClock) -> None:
    primary, backup = FlakyLLM(["error", "Back again."]), BackupLLM(["From the backup.", "Still the backup."])
    session, transport, switches = session_with(FallbackLLM([primary, backup], cooldown=10.0))
    async with session:
        await turn(transport)  # turn 1 at 1.5: the primary fails at once, the backup answers
        await turn(transport)  # turn 2 at 5.5: the primary rests (10 s): the backup, no switch
        await trio.sleep_until(12.0)
        await turn(transport)  # turn 3 at 13.5: rested: the primary is asked first, and answers
    assert primary.calls == [at(1.5), at(13.5)] and backup.calls == [at(1.5), at(5.5)]
    assert switches == [ProviderSwitched("llm", "FlakyLLM", "BackupLLM", "ProviderError: HTTP 503: overloaded")]
    assert [m.agent_text for m in session.metrics] == ["From the backup.", "Still the backup.", "Back again."]
    assert [m.provider_switches for m in session.metrics] == [1, 0, 0]


async def test_nothing_within_first_timeout_is_a_failure_too(autojump_clock: trio.testing.MockClock) -> None:
    primary, backup = FlakyLLM(["hang"]), BackupLLM(["Here."])
    session, transport, switches = session_with(FallbackLLM([primary, backup], first_timeout=2.0))
    async with session:
        await turn(transport, after=4.0)
    assert [s.reason for s in switches] == ["nothing within 2 s"]
    assert transport.voice_segments()[0][0] == about(3.5)  # 1.5 + the 2 s timeout


async def test_a_failure_after_the_first_token_is_the_turns_and_all_failing_is_an_error(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, switches = session_with(FallbackLLM([FlakyLLM(["break", "error"]), BackupLLM(["error"])]))
    errors: list[Any] = []
    session.on("error", errors.append)
    async with session:
        await turn(transport)  # a word came, then the error: not restarted elsewhere
        await turn(transport)  # both fail: the turn's error is the last one's
    assert switches == [ProviderSwitched("llm", "FlakyLLM", "BackupLLM", "ProviderError: HTTP 503: overloaded")]
    assert [str(e.error) for e in errors] == ["the stream broke", "HTTP 503: overloaded"]


class BrokenTTS(ToneTTS):
    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        raise ProviderError("TTS quota exceeded", provider="BrokenTTS", stage="tts")
        yield  # (an async generator)


async def test_a_tts_fallback_with_another_rate_is_resampled(autojump_clock: trio.testing.MockClock) -> None:
    tts = FallbackTTS([BrokenTTS(sample_rate=24000), ToneTTS(sample_rate=16000)])
    session, transport, switches = session_with(tts=tts)
    async with session:
        await turn(transport)
    assert [(s.stage, s.from_provider, s.to_provider) for s in switches] == [("tts", "BrokenTTS", "ToneTTS")]
    (start, end), = transport.voice_segments()
    assert start == about(1.5) and end - start == pytest.approx(0.25, abs=0.03)  # "Okay." at 0.25 s a word


class DyingSTT(ScriptedSTT):
    """Hears its first turn, then dies at `die_at`."""

    def __init__(self, transcripts: list[str], die_at: float) -> None:
        super().__init__(transcripts)
        self.die_at = die_at

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        with trio.move_on_at(self.die_at):
            await super().run(audio, events)
        raise ProviderError("the STT socket closed", provider="DyingSTT", stage="stt")


class RecordingSTT(ScriptedSTT):
    """Notes the timestamp of each frame it is given."""

    def __init__(self, transcripts: list[str]) -> None:
        super().__init__(transcripts)
        self.stamps: list[float] = []

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        send, receive = trio.open_memory_channel[AudioFrame](1000)

        async def tap() -> None:
            async with audio, send:
                async for frame in audio:
                    self.stamps.append(frame.timestamp)
                    await send.send(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tap)
            await super().run(receive, events)


async def test_an_stt_fallback_takes_the_stream_with_the_last_seconds_replayed(autojump_clock: trio.testing.MockClock) -> None:
    backup = RecordingSTT(["second"])
    stt = FallbackSTT([DyingSTT(["first"], die_at=5.0), backup])
    session, transport, switches = session_with(ScriptedLLM(["One.", "Two."]), stt=stt)
    async with session:
        await turn(transport)  # 0 .. 1: heard by the first STT
        await transport.send_user_audio(silence(0.6))
        await turn(transport)  # 4.6 .. 5.6: the first STT dies at 5.0, in the middle of it
    assert [s.to_provider for s in switches] == ["RecordingSTT"]
    assert backup.stamps[0] == pytest.approx(3.0, abs=0.021)  # the 2 s before the failure, again
    assert [m.user_text for m in session.metrics] == ["first", "second"]
