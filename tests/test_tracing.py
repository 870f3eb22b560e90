"""OpenTelemetry spans of a session and its utterances, recorded with the SDK's in-memory
exporter."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioagent import Agent, function_tool
from trioagent.testing import ToolCall, silence, speech

from .kit import make_session

sdk = pytest.importorskip("opentelemetry.sdk.trace")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
trace = pytest.importorskip("opentelemetry.trace")

EXPORTER = in_memory.InMemorySpanExporter()
_provider = sdk.TracerProvider()
_provider.add_span_processor(export.SimpleSpanProcessor(EXPORTER))
trace.set_tracer_provider(_provider)  # (once per process: OpenTelemetry's rule)


class Weather(Agent):
    @function_tool
    async def get_weather(self, city: str) -> str:
        """Weather."""
        return "sunny"


async def test_a_session_and_its_turns_are_spans(autojump_clock: trio.testing.MockClock) -> None:
    EXPORTER.clear()
    session, transport, _, _ = make_session(Weather("Test."), transcripts=["weather in paris"], script=[ToolCall("get_weather", {"city": "Paris"}), "Sunny."])
    async with session:
        await session.say("Hello.")
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    root = [s for s in EXPORTER.get_finished_spans() if s.name == "trioagent.session"][0]
    assert root.attributes["trioagent.agent"] == "Weather" and root.attributes["trioagent.pipeline"] == "CascadingPipeline"
    assert root.attributes["trioagent.llm"] == "ScriptedLLM" and list(root.attributes["trioagent.function_tools"]) == ["get_weather"]
    assert root.attributes["trioagent.close_reason"] == "closed" and root.attributes["trioagent.turns"] == 1
    utterances = [s for s in EXPORTER.get_finished_spans() if s.name == "trioagent.utterance"]
    assert [u.attributes["trioagent.source"] for u in utterances] == ["say", "user_turn"]
    assert all(u.parent is not None and u.parent.span_id == root.context.span_id for u in utterances)
    turn = utterances[1]
    assert turn.attributes["trioagent.tool_calls"] == 1 and turn.attributes["trioagent.interrupted"] is False
    assert turn.attributes["trioagent.e2e_latency"] == pytest.approx(0.5, abs=0.03)
    assert "trioagent.session" in spans


async def test_a_cut_turn_span_has_its_barge_in_latency(autojump_clock: trio.testing.MockClock) -> None:
    EXPORTER.clear()
    session, transport, _, _ = make_session(transcripts=["tell me", "stop"], script=[" ".join(["word"] * 40), "Okay."])
    async with session:
        await transport.send_user_audio(speech(1.0) + silence(2.0))  # the answer from 1.5
        await transport.send_user_audio(speech(1.0) + silence(2.0))  # "stop" at 3.0: cut at 3.5
    cut, answer = [s for s in EXPORTER.get_finished_spans() if s.name == "trioagent.utterance"]
    assert cut.attributes["trioagent.interrupted"] is True
    assert cut.attributes["trioagent.barge_in_latency"] == pytest.approx(0.5)
    assert "trioagent.barge_in_latency" not in answer.attributes
