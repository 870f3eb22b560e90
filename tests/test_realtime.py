"""`RealTimePipeline` against a scripted Realtime server, in virtual time; every event it sends
checked against the official `openai` SDK's Realtime event models."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from pydantic import TypeAdapter

from trioagent import Agent, AgentSession, ChatRole, FunctionCallOutput, ProviderError, RealTimePipeline, function_tool
from trioagent.providers import OpenAIRealtime
from trioagent.testing import MemoryTransport, ToolCall, silence, speech

from .kit import about, at
from .realtime_fake import FakeRealtime

openai_realtime = pytest.importorskip("openai.types.realtime")
CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(openai_realtime.RealtimeClientEvent)


def realtime_session(fake: FakeRealtime, agent: Agent | None = None, **options: Any) -> tuple[AgentSession, MemoryTransport]:
    model = OpenAIRealtime(model="gpt-realtime", base_url="ws://fake/v1", api_key="sk-test", open_stream=fake.open_stream)
    pipeline = RealTimePipeline(model=model)
    transport = MemoryTransport()
    session = AgentSession(agent or Agent(instructions="You are a test."), pipeline, transport=transport, **options)
    return session, transport


def check_client_events(fake: FakeRealtime) -> None:
    for _, event in fake.received:
        if event["type"] != "input_audio_buffer.append":  # (recorded without its audio)
            CLIENT_EVENT.validate_python(event)


async def test_a_spoken_question_gets_the_models_audio(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime(["Hello there friend."], transcripts=["hi"])
    session, transport = realtime_session(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
    assert fake.path == "/v1/realtime?model=gpt-realtime" and fake.headers["authorization"] == "Bearer sk-test"
    kinds = [e["type"] for _, e in fake.received]
    assert kinds[:2] == ["session.update", "input_audio_buffer.append"]
    assert fake.of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "create_response": False, "interrupt_response": False, "silence_duration_ms": 500,
    }  # fmt: skip
    # Speech 0 .. 1.0 s; 500 ms of quiet commits the turn: the server has heard 1.5 s of audio
    # at 1.52 (the 16 -> 24 kHz resampler holds back part of a frame); the response is asked
    # for at once and plays from the next tick.
    assert fake.times("response.create") == [at(1.52)]
    (start, end), = transport.voice_segments()
    assert start == about(1.52) and end == about(2.27)  # three words: 0.75 s
    assert fake.close_code == 1000
    messages = [(m.role, m.content) for m in session.agent.chat_context.messages]
    assert messages[1:] == [(ChatRole.USER, "hi"), (ChatRole.ASSISTANT, "Hello there friend.")]
    m = session.metrics[0]
    assert m.user_speech_end == pytest.approx(1.0, abs=0.02) and m.end_of_turn_at == at(1.52)  # (the fake VAD works in chunks)
    assert m.completion_tokens == 3 and m.prompt_tokens == 10
    check_client_events(fake)
