"""Turn taking, barge-in, tools and metrics: whole conversations in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from trioagent import Agent, AgentSession, AudioFrame, CascadingPipeline, ChatRole, ConversationFlow, ProviderError, TurnMetrics, function_tool
from trioagent.chat import FunctionCall, FunctionCallOutput
from trioagent.providers.base import TranscriptEvent, VADEvent
from trioagent.providers.vad import EnergyVAD
from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS, ToolCall, silence, speech
from trioagent.transports.memory import MemoryTransport

from .kit import FADE, TICK, EventLog, about, at, make_session

LONG = " ".join(["word"] * 40)  # 10 s of agent speech with ToneTTS


async def test_reply_timeline_and_metrics(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=["what time is it"], script=["It is noon."], ttft=0.3, ttfb=0.1)
    collected: list[TurnMetrics] = []
    session.on("metrics_collected", collected.append)
    log = EventLog(session)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
    # Voice starts at end of speech + 0.5 endpointing + 0.3 TTFT + 0.1 TTFB = 1.9, on a tick.
    (start, end), = transport.voice_segments()
    assert start == about(1.9) and end == about(1.9 + 0.75)
    m, = collected
    assert m is session.metrics[0]
    assert (m.user_speech_start, m.user_speech_end) == (at(0.0), at(1.0))
    assert m.end_of_utterance_delay == at(0.5)
    assert m.stt_final_latency == at(0.3)  # the STT (like the VAD) needs 0.3 s of silence
    assert m.llm_ttft == at(0.3) and m.tts_ttfb == at(0.1)
    assert m.e2e_latency == at(0.9)  # measured at the mixer, not summed
    assert (m.user_text, m.agent_text, m.interrupted, m.tool_calls) == ("what time is it", "It is noon.", False, 0)
    assert log.states("agent_state_changed")[:5] == ["starting", "idle", "listening", "idle", "thinking"]
    assert log.times("agent_state_changed", "thinking") == [at(1.5)]
    assert log.times("agent_state_changed", "speaking") == [at(1.9)]
    assert log.times("user_state_changed", "speaking") == [at(0.1)]  # the VAD needs 0.1 s of speech
    assert [(m.role, m.content) for m in llm.calls[0].messages] == [(ChatRole.SYSTEM, "You are a test."), (ChatRole.USER, "what time is it")]


async def test_short_backchannel_does_not_interrupt(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=["mm-hmm"])
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        handle = await session.say(LONG)
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(0.3))
        await transport.send_user_audio(silence(1.0))
        await handle
        assert not handle.interrupted
        assert trio.current_time() == at(10.0)
    assert transport.voice_segments() == [(about(0.0), about(10.0))]
    assert llm.calls == []  # no turn was taken
    # but what the user said is kept, unanswered (it ended its turn while the agent spoke on)
    assert [(m.role, m.content) for m in agent.chat_context.messages[1:]] == [
        (ChatRole.ASSISTANT, LONG),
        (ChatRole.USER, "mm-hmm"),
    ]


async def test_barge_in_silences_the_voice(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=["stop please"], script=["Okay."])
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        handle = await session.say(LONG)
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(1.0))
        assert handle.interrupted
        await transport.send_user_audio(silence(2.0))
    first, second = transport.voice_segments()
    # Interrupted at onset + 0.5 = 1.5: silent within one tick plus the fade.
    assert 1.5 < first[1] <= 1.5 + TICK + FADE
    assert transport.clears == [at(1.5)]
    assert second == (about(2.5), about(2.75))  # the answer, after 2.0 + 0.5 endpointing
    said = agent.chat_context.messages[1]
    # Only what was played stays in the context: 1.5 s of 10 s is 6 of 40 words.
    assert (said.content, said.interrupted) == (" ".join(["word"] * 6), True)
    assert llm.calls[0].messages[-1].content == "stop please"


async def test_false_interruption_resumes_after_timeout(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=[""])  # noise: the STT hears no words
    async with session:
        handle = await session.say(LONG)
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(10.0))
        await handle
        assert not handle.interrupted
    first, second = transport.voice_segments()
    assert 1.5 < first[1] <= 1.5 + TICK + FADE  # paused at onset + 0.5
    assert second[0] == about(3.5)  # resumed exactly 2.0 s later, where it stopped
    assert second[1] == about(3.5 + 10.0 - 1.51)  # the rest of the audio (10 ms faded at the pause)
    assert llm.calls == []


async def test_min_interruption_words(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(
        transcripts=["yeah", "please stop talking now"], script=["Sure."], pipeline_options={"min_interruption_words": 3}
    )
    async with session:
        handle = await session.say(LONG)
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(1.0))  # 1 s but one word: not an interruption
        await transport.send_user_audio(silence(1.0))
        assert not handle.interrupted
        await transport.send_user_audio(speech(1.0))  # 3.0 .. 4.0, four words
        await transport.send_user_audio(silence(0.3))
        await trio.testing.wait_all_tasks_blocked()
        assert handle.interrupted
        await transport.send_user_audio(silence(1.0))
    # Interrupted when the final transcript brought enough words (at the VAD's end of speech).
    assert transport.voice_segments()[0][1] == about(4.3 + 0.01)
    assert llm.calls[0].messages[-1].content == "please stop talking now"


async def test_stale_reply_never_plays_over_the_user(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, tts = make_session(transcripts=["first part", "second part"], script=["Stale answer.", "Fresh answer."], ttft=0.3)
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        await transport.send_user_audio(speech(1.0))  # end of turn at 1.5, LLM answers at 1.8
        await transport.send_user_audio(silence(0.6))
        await transport.send_user_audio(speech(1.0))  # 1.6 .. 2.6: detected at 1.7, before 1.8
        await transport.send_user_audio(silence(2.0))
    assert tts.texts == ["Fresh answer."]
    assert transport.voice_segments() == [(about(3.4), about(3.9))]
    # The unanswered question and the new words are one turn: one user message, one answer.
    assert [m.content for m in llm.calls[1].messages if m.role is ChatRole.USER] == ["first part second part"]
    assert [m.content for m in agent.chat_context.messages if m.role is ChatRole.ASSISTANT] == ["Fresh answer."]


class WeatherAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Weather bot.")
        self.asked: list[str] = []

    @function_tool
    async def get_weather(self, city: str) -> dict[str, Any]:
        """Current weather for a city."""
        self.asked.append(city)
        await trio.sleep(0.2)
        return {"city": city, "sky": "sunny"}


async def test_tool_call_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    agent = WeatherAgent()
    script = [ToolCall("get_weather", {"city": "Paris"}), "It is sunny in Paris."]
    session, transport, llm, _ = make_session(agent, transcripts=["weather in paris"], script=script, ttft=0.1)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    assert agent.asked == ["Paris"]
    items = agent.chat_context.items
    call = next(i for i in items if isinstance(i, FunctionCall))
    output = next(i for i in items if isinstance(i, FunctionCallOutput))
    assert (call.name, call.arguments) == ("get_weather", '{"city": "Paris"}')
    assert output.call_id == call.call_id and '"sky": "sunny"' in output.output
    assert items.index(call) < items.index(output) < items.index(agent.chat_context.messages[-1])
    assert agent.chat_context.messages[-1].content == "It is sunny in Paris."
    assert any(isinstance(i, FunctionCallOutput) for i in llm.calls[1].items)  # the result went back
    # 1.5 end of turn + 0.1 TTFT + 0.2 tool + 0.1 TTFT = 1.9
    assert transport.voice_segments()[0][0] == about(1.9)
    assert session.metrics[0].tool_calls == 1


async def test_tool_loop_is_bounded_and_bad_calls_are_reported(autojump_clock: trio.testing.MockClock) -> None:
    agent = WeatherAgent()
    script: list[Any] = [ToolCall("nope", {}), ToolCall("get_weather", {"town": "x"}), ToolCall("get_weather", {"city": "Rome"}), "Done."]
    session, transport, llm, _ = make_session(agent, transcripts=["go"], script=script)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    outputs = [i.output for i in agent.chat_context.items if isinstance(i, FunctionCallOutput)]
    assert "no tool named 'nope'" in outputs[0]
    assert "unexpected argument 'town'" in outputs[1] or "missing required city" in outputs[1]
    assert agent.asked == ["Rome"]
    assert llm.tools_seen == [["get_weather"]] * 3 + [[]]  # the 4th step (max_tool_steps=3) gets no tools
    assert agent.chat_context.messages[-1].content == "Done."


async def test_provider_error_ends_only_that_turn(autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    class FlakyLLM:
        def __init__(self) -> None:
            self.n = 0

        async def chat(self, chat_context: Any, tools: Any) -> Any:
            self.n += 1
            if self.n == 1:
                raise ProviderError("upstream 500", provider="FlakyLLM")
            yield_text = "Second try works."
            from trioagent.providers import TextDelta

            yield TextDelta(yield_text)

    session, transport, _, _ = make_session(transcripts=["one", "two"])
    session.pipeline.llm = FlakyLLM()  # type: ignore[attr-defined]
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(1.0))
        assert session.current_utterance is not None and session.current_utterance.done()
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
    assert "upstream 500" in caplog.text
    assert [m.content for m in agent.chat_context.messages if m.role is ChatRole.ASSISTANT] == ["Second try works."]


class Recorder(ConversationFlow):
    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    async def process_transcript(self, transcript: str) -> str | None:
        self.log.append(f"process:{transcript}")
        return None if transcript == "ignore me" else transcript.upper()

    async def on_turn_start(self, transcript: str) -> None:
        self.log.append(f"start:{transcript}")

    async def on_turn_end(self) -> None:
        self.log.append("end")

    def run_llm(self, llm: Any, chat_context: Any, tools: Any) -> Any:
        self.log.append("llm")
        return llm.chat(chat_context, tools)


async def test_conversation_flow_hooks(autojump_clock: trio.testing.MockClock) -> None:
    flow = Recorder()
    session, transport, llm, _ = make_session(transcripts=["ignore me", "hello"], script=["Hi."], conversation_flow=flow)
    async with session:
        for _ in range(2):
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(1.5))
    assert flow.log == ["process:ignore me", "process:hello", "start:HELLO", "llm", "end"]
    assert llm.calls[0].messages[-1].content == "HELLO"


class Receptionist(Agent):
    def __init__(self, log: list[str]) -> None:
        super().__init__(instructions="Route calls.")
        self.log = log

    @function_tool
    async def transfer_to_sales(self) -> Agent:
        """Hand the caller to sales."""
        return Sales(self.log)

    async def on_exit(self) -> None:
        self.log.append("receptionist exit")


class Sales(Agent):
    def __init__(self, log: list[str]) -> None:
        super().__init__(instructions="Sell.")
        self.log = log

    async def on_enter(self) -> None:
        self.log.append("sales enter")
        await self.session.say("Sales here")


async def test_tool_returning_an_agent_hands_over(autojump_clock: trio.testing.MockClock) -> None:
    log: list[str] = []
    first = Receptionist(log)
    session, transport, _, tts = make_session(first, transcripts=["sales please"], script=[ToolCall("transfer_to_sales", {})])
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
        sales = session.agent
        assert isinstance(sales, Sales) and sales.session is session
        assert log == ["receptionist exit", "sales enter"]
    assert tts.texts == ["Sales here"] and session.agent is None  # (let go at close, as in the seed)
    # The new agent knows the conversation so far, under its own instructions.
    contents = [getattr(i, "content", None) for i in sales.chat_context.items]
    assert contents[0] == "Sell." and "sales please" in contents and "Route calls." not in contents


def test_component_configs_name_each_part_and_keep_secrets_out() -> None:
    from trioagent import CascadingPipeline
    from trioagent.providers.openai_llm import OpenAILLM
    from trioagent.testing import ScriptedSTT, ToneTTS

    pipeline = CascadingPipeline(stt=ScriptedSTT([]), llm=OpenAILLM(model="gpt-4o-mini", api_key="sk-not-for-logs", base_url="http://x/v1"), tts=ToneTTS())
    configs = pipeline.get_component_configs()
    assert set(configs) == {"stt", "llm", "tts", "vad", "eou"}
    assert configs["llm"]["provider"] == "OpenAILLM" and configs["llm"]["model"] == "gpt-4o-mini"
    assert configs["vad"] == {"provider": "EnergyVAD", "model": None, "sample_rate": 16000, "threshold_db": -40.0,
                              "min_speech_duration": 0.1, "min_silence_duration": 0.3, "window": 0.01}  # fmt: skip
    assert configs["tts"]["sample_rate"] == 24000 and configs["eou"]["provider"] == "SilenceTurnDetector"
    assert "sk-not-for-logs" not in repr(configs) and not any("key" in name for c in configs.values() for name in c)


async def test_a_developer_message_reaches_the_llm_as_such(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(Agent(instructions="Be brief."), transcripts=["hello"], script=["Fine."])
    session.agent.chat_context.add_message(role=ChatRole.DEVELOPER, content="The user is a tester.")
    async with session:
        await transport.send_user_audio(speech(0.5) + silence(2.0))
    (context,) = llm.calls
    assert [(m.role, m.content) for m in context.messages][:3] == [
        (ChatRole.SYSTEM, "Be brief."), (ChatRole.DEVELOPER, "The user is a tester."), (ChatRole.USER, "hello")]  # fmt: skip
    assert {"role": "developer", "content": "The user is a tester."} in context.to_openai()


class ChunkRecordingSTT(ScriptedSTT):
    """Notes each piece of audio it is given: (when, its timestamp, its duration)."""

    def __init__(self, transcripts: list[str]) -> None:
        super().__init__(transcripts)
        self.chunks: list[tuple[float, float, float]] = []

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        send, receive = trio.open_memory_channel[AudioFrame](1000)

        async def tap() -> None:
            async with audio, send:
                async for frame in audio:
                    self.chunks.append((trio.current_time(), frame.timestamp, frame.duration))
                    send.send_nowait(frame)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tap)
            await super().run(receive, events)


async def test_the_stt_hears_60_ms_chunks_cut_at_each_vad_event_and_at_the_end(autojump_clock: trio.testing.MockClock) -> None:
    stt = ChunkRecordingSTT(["hello"])
    transport = MemoryTransport()
    session = AgentSession(Agent(), CascadingPipeline(stt=stt, llm=ScriptedLLM(["Hi."]), tts=ToneTTS()), transport=transport)
    async with session:
        await transport.send_user_audio(speech(1.02) + silence(1.0))
        transport.end_user_audio()
        with pytest.raises(trio.ClosedResourceError):  # (not to the pipeline's hook either)
            transport.send_user_audio_nowait(silence(0.02))
        await trio.sleep(1.0)
    # Cut every 60 ms, and early where the VAD reports the start (0.1 s: 0.1 s of speech
    # heard) and the end (1.32 s: 0.3 s of silence after 1.02 s), and where the input ends.
    starts = [0.0, 0.06] + [0.1 + 0.06 * k for k in range(21)] + [1.32 + 0.06 * k for k in range(12)]
    ends = starts[1:] + [2.02]
    assert [(at(when), at(stamp), at(duration)) for when, stamp, duration in stt.chunks] == list(zip(ends, starts, [b - a for a, b in zip(starts, ends)]))
    # Every sample once, in order (the chunks are back to back).
    assert sum(round(duration * 16000) for _, _, duration in stt.chunks) == round(2.02 * 16000)
    # The STT's final transcript (its own VAD: the same 0.3 s) is not held back by the chunking.
    assert session.metrics[0].stt_final_latency == at(0.3)


class PausingSTT(ChunkRecordingSTT):
    """Takes no audio for `pause` seconds after the first chunk that ends at `at` or later."""

    def __init__(self, transcripts: list[str], at: float, pause: float) -> None:
        super().__init__(transcripts)
        self.at, self.pause = at, pause

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        async def paused() -> AsyncIterator[AudioFrame]:
            async for chunk in audio:
                yield chunk
                if self.pause and chunk.end_time >= self.at - 1e-9:
                    await trio.sleep(self.pause)
                    self.pause = 0.0

        send, receive = trio.open_memory_channel[AudioFrame](0)

        async def pump() -> None:
            async with send:
                async for chunk in paused():
                    await send.send(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            await super().run(receive, events)


class StepTimes(trio.abc.Instrument):
    """When each task whose name ends with `name` took a step."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.times: list[float] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task.name.endswith(self.name):
            self.times.append(trio.current_time())

    def between(self, a: float, b: float) -> int:
        return sum(a <= t < b for t in self.times)


async def test_input_is_heard_in_the_senders_task_and_queued_in_order_while_the_stt_is_behind(autojump_clock: trio.testing.MockClock) -> None:
    stt = PausingSTT(["hello"], at=1.0, pause=6.0)
    transport = MemoryTransport()
    session = AgentSession(Agent(), CascadingPipeline(stt=stt, llm=ScriptedLLM(["Hi."]), tts=ToneTTS()), transport=transport)
    steps = StepTimes("_run_pipeline")  # the task that runs the pipeline's input loop
    async with session:
        trio.lowlevel.add_instrument(steps)
        await transport.send_user_audio(silence(8.0) + speech(1.0) + silence(3.0))
        trio.lowlevel.remove_instrument(steps)
    # While the STT keeps up, the sender's task hears each frame: the pipeline's input loop
    # takes no step. The STT takes nothing from 1.06 s to 7.06 s: its queue (5 s) is full
    # from about 6.06 s, frames then wait on `audio_in` for the input loop, which hands them
    # on as the STT takes them again; once it has caught up, the sender's task hears them again.
    assert steps.between(0.0, 6.0) == 0
    assert steps.between(6.1, 7.1) > 10
    assert steps.between(7.5, 12.0) == 0
    # Every sample reached the STT once, in order; the turn was heard and answered.
    stamps = [(stamp, duration) for _, stamp, duration in stt.chunks]
    assert all(b[0] == at(a[0] + a[1]) for a, b in zip(stamps, stamps[1:]))
    assert sum(round(duration * 16000) for _, duration in stamps) == round(12.0 * 16000)
    assert [m.user_text for m in session.metrics] == ["hello"]


class BreakingVAD(EnergyVAD):
    """Raises on its `n`th frame."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        self.n -= 1
        if self.n == 0:
            raise RuntimeError("the VAD broke")
        return super().process(frame)


async def test_a_failure_while_hearing_in_the_senders_task_fails_the_pipeline_not_the_sender(autojump_clock: trio.testing.MockClock) -> None:
    transport = MemoryTransport()
    pipeline = CascadingPipeline(stt=ScriptedSTT([]), llm=ScriptedLLM([]), tts=ToneTTS(), vad=BreakingVAD(10))
    session = AgentSession(Agent(), pipeline, transport=transport)
    closed: list[float] = []
    session.on("close", lambda _: closed.append(trio.current_time()))
    async with session:
        await transport.send_user_audio(silence(0.2))  # the VAD breaks on the last: the sender's task goes on
        await session.wait_closed()
    assert isinstance(session.failure, RuntimeError) and str(session.failure) == "the VAD broke"
    assert closed == [at(0.2)]  # at the 10th frame


async def test_barge_in_latency_in_the_turn_metrics(autojump_clock: trio.testing.MockClock) -> None:
    """An answer cut by the user's speech reports when that speech began and when the voice was
    cut: `barge_in_latency` is `min_interruption_duration` (0.5 s) here. Paused on suspicion and
    then confirmed by words, the cut is the pause's; paused and resumed (a false interruption),
    there is no cut."""
    session, transport, _, _ = make_session(transcripts=["tell me a story", "", "stop", "okay then"], script=[LONG, "Sure."])
    collected: list[TurnMetrics] = []
    session.on("metrics_collected", collected.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))  # the story from 1.5 (no TTFT here)
        await transport.send_user_audio(speech(0.8))  # 3.0: noise, no words: paused at 3.5, resumed at 5.5
        await transport.send_user_audio(silence(3.2))
        await transport.send_user_audio(speech(1.0))  # 7.0: "stop": paused at 7.5, words at 8.3 confirm it
        await transport.send_user_audio(silence(2.0))
    (a, b), (c, d), answer = transport.voice_segments()
    assert (a, c, answer) == (about(1.5), about(5.5), (about(8.5), about(8.75)))
    assert 3.5 < b <= 3.5 + TICK + FADE and 7.5 < d <= 7.5 + TICK + FADE  # (the pauses' fades)
    story = collected[0]
    assert story.interrupted and (story.barge_in_at, story.cut_at) == (at(7.0), at(7.5))
    assert story.barge_in_latency == at(0.5)
    assert collected[1].barge_in_latency is None and not collected[1].interrupted
