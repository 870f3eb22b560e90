"""A scripted phone-style conversation, run in virtual time with the public test kit.

The caller asks about the weather; the agent greets, calls a tool, answers, gets interrupted
by a barge-in, and answers again. Prints the timeline of states, speech and metrics.

Run: python examples/scripted_conversation.py
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from trioagent import Agent, AgentSession, CascadingPipeline, TurnMetrics, function_tool
from trioagent.testing import MemoryTransport, ScriptedLLM, ScriptedSTT, ToneTTS, ToolCall, silence, speech


class WeatherAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You are a friendly weather line.")

    async def on_enter(self) -> None:
        await self.session.say("Hello! Which city?")

    @function_tool
    async def get_weather(self, city: str) -> dict[str, Any]:
        """Current weather for a city.

        Args:
            city: the city name.
        """
        await trio.sleep(0.15)  # a pretend web call
        return {"city": city, "sky": "sunny", "celsius": 21}


def line(what: str) -> None:
    print(f"{trio.current_time():7.2f}s  {what}")


async def main() -> None:
    transport = MemoryTransport()
    llm = ScriptedLLM(
        [
            ToolCall("get_weather", {"city": "Paris"}),
            "It is sunny in Paris, twenty one degrees. Perfect for a long walk along the river this afternoon.",
            "Sure, goodbye!",
        ],
        ttft=0.35,
    )
    pipeline = CascadingPipeline(
        stt=ScriptedSTT(["what's the weather in paris", "thanks that's all"]),
        llm=llm,
        tts=ToneTTS(ttfb=0.08),
    )
    agent = WeatherAgent()
    session = AgentSession(agent, pipeline, transport=transport)
    session.on("agent_state_changed", lambda d: line(f"agent -> {d['state']}"))
    session.on("user_state_changed", lambda d: line(f"user  -> {d['state']}"))
    session.on("user_turn_ended", lambda e: line(f"heard: {e.text!r}"))
    session.on("agent_speech_started", lambda e: line(f"says:  {e.text!r}"))

    def report(m: TurnMetrics) -> None:
        line(
            f"metrics {m.turn_id}: end-of-turn {m.end_of_utterance_delay or 0:.2f}s, LLM TTFT {m.llm_ttft or 0:.2f}s, "
            f"TTS TTFB {m.tts_ttfb or 0:.2f}s, end-to-end {m.e2e_latency or 0:.2f}s, tools {m.tool_calls}, "
            f"interrupted {m.interrupted}"
        )

    session.on("metrics_collected", report)
    async with session:
        await trio.sleep(2.0)
        line("caller speaks (1.2 s)")
        await transport.send_user_audio(speech(1.2))
        await transport.send_user_audio(silence(3.0))
        line("caller barges in (0.9 s)")
        await transport.send_user_audio(speech(0.9))
        await transport.send_user_audio(silence(3.0))
        line("caller hangs up")
        transport.end_user_audio()
        await session.wait_closed()
    print("\nagent voice on the line:")
    for start, end in transport.voice_segments():
        print(f"  {start:6.2f}s .. {end:6.2f}s")
    print("\nchat context:")
    for item in agent.chat_context.items:  # (the session let go of its agent when it closed)
        print(f"  {item}")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
