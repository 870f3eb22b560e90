"""The speech scheduler in whole conversations, in virtual time: each numbered bug of issue 9
(utterances that replaced each other) as a timeline with exact times."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from trioagent import Agent, ChatRole, FunctionCallOutput, ProviderError, ToolError, UtteranceHandle, function_tool
from trioagent.events import ConversationItemAdded, FunctionToolsExecuted, SpeechCreated, UserInputTranscribed
from trioagent.scheduler import SpeechSource
from trioagent.testing import ToolCall, silence, speech

from .kit import FADE, TICK, about, at, make_session

LONG = " ".join(["word"] * 40)  # 10 s of agent speech with ToneTTS (0.25 s a word)


def assistant_texts(agent: Agent) -> list[str]:
    return [m.content for m in agent.chat_context.messages if m.role is ChatRole.ASSISTANT]


# -- 1. interrupt() then reply() -----------------------------------------------------------------


async def test_interrupt_then_reply_at_once_starts_a_new_reply(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, tts = make_session(script=[LONG, "Fresh answer."], ttft=0.1)
    async with session:
        first = await session.reply("talk", wait_for_playback=False)
        await trio.sleep_until(1.0)
        session.interrupt()
        second = await session.reply("again", wait_for_playback=False)
        assert second is not first and first.interrupted
        await second
        assert not second.interrupted
        assert trio.current_time() == at(1.6)  # 1.0 + 0.1 ttft + 2 words (0.5 s)
    assert tts.texts == [LONG, "Fresh answer."]
    (s1, e1), (s2, e2) = transport.voice_segments()
    assert s1 == about(0.1) and 1.0 < e1 <= 1.0 + TICK + FADE
    assert (s2, e2) == (about(1.1), about(1.6))
    assert len(llm.calls) == 2


# -- 2. text before a tool call is spoken before the tool's answer, never glued to it --------------


class SlowWeather(Agent):
    def __init__(self, say_in_tool: bool = False) -> None:
        super().__init__(instructions="Weather bot.")
        self.say_in_tool = say_in_tool
        self.log: list[tuple[float, str]] = []

    @function_tool
    async def get_weather(self, city: str) -> dict[str, Any]:
        """Current weather for a city."""
        self.log.append((trio.current_time(), f"tool starts: {city}"))
        if self.say_in_tool:
            handle = await self.session.say("One moment")  # 2 words: 0.5 s
            await handle
            self.log.append((trio.current_time(), "heard: one moment"))
            await trio.sleep(0.5)
        else:
            await trio.sleep(1.0)
        self.log.append((trio.current_time(), "tool returns"))
        return {"city": city, "sky": "sunny"}


async def test_text_before_a_tool_call_is_spoken_while_the_tool_runs(autojump_clock: trio.testing.MockClock) -> None:
    agent = SlowWeather()
    script: list[Any] = [["Let me check that.", ToolCall("get_weather", {"city": "Paris"})], "It is sunny."]
    session, transport, llm, tts = make_session(agent, transcripts=["weather in paris"], script=script, ttft=0.1)
    items: list[Any] = []
    executed: list[FunctionToolsExecuted] = []
    session.on("conversation_item_added", lambda e: items.append(e.item))
    session.on("function_tools_executed", executed.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(4.0))
    # End of turn 1.5; "Let me check that." at 1.6 while the tool runs 1.6 .. 2.6; the second
    # LLM step answers at 2.7.
    assert tts.texts == ["Let me check that.", "It is sunny."]
    assert agent.log == [(at(1.6), "tool starts: Paris"), (at(2.6), "tool returns")]
    assert transport.voice_segments() == [(about(1.6), about(2.6)), (about(2.7), about(3.45))]
    # Each LLM step is its own message, around the tool call and its output.
    kinds = [(type(i).__name__, getattr(i, "content", getattr(i, "name", ""))) for i in agent.chat_context.items[1:]]
    assert kinds == [
        ("ChatMessage", "weather in paris"),
        ("ChatMessage", "Let me check that."),
        ("FunctionCall", "get_weather"),
        ("FunctionCallOutput", "get_weather"),
        ("ChatMessage", "It is sunny."),
    ]
    # The history is valid for an OpenAI-style API: text and calls of one step in one message.
    history = agent.chat_context.to_openai()
    assert history[2] == {
        "role": "assistant",
        "content": "Let me check that.",
        "tool_calls": [{"id": "call_0_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    }
    assert history[3]["role"] == "tool"
    assert len(executed) == 1 and [c.name for c in executed[0].calls] == ["get_weather"]
    assert "sunny" in executed[0].outputs[0].output
    assert [type(i).__name__ for i in items] == ["ChatMessage", "FunctionCall", "FunctionCallOutput", "ChatMessage", "ChatMessage"]
    m = session.metrics[0]
    assert m.tool_calls == 1 and m.tool_seconds == pytest.approx(1.0)
    assert m.llm_duration == pytest.approx(1.2)  # 1.5 .. 2.7: two steps and the tool between
    assert m.tts_audio_seconds == pytest.approx(1.75)


async def test_speak_before_tools_off_speaks_after_the_tools(autojump_clock: trio.testing.MockClock) -> None:
    agent = SlowWeather()
    script: list[Any] = [["Let me check that.", ToolCall("get_weather", {"city": "Paris"})], "It is sunny."]
    session, transport, _, tts = make_session(
        agent, transcripts=["weather"], script=script, ttft=0.1, pipeline_options={"speak_before_tools": False}
    )
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(4.0))
    assert tts.texts == ["Let me check that.", "It is sunny."]
    # Held until the tool returned at 2.6, then spoken; the answer follows it.
    assert transport.voice_segments() == [(about(2.6), about(3.6 + 0.75))]


# -- 3. say() from inside a tool speaks inside the reply -----------------------------------------------


async def test_say_from_a_tool_speaks_inside_the_reply_and_the_tool_result_reaches_the_llm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agent = SlowWeather(say_in_tool=True)
    script: list[Any] = [ToolCall("get_weather", {"city": "Paris"}), "It is sunny."]
    session, transport, llm, tts = make_session(agent, transcripts=["weather in paris"], script=script, ttft=0.1)
    created: list[SpeechCreated] = []
    session.on("speech_created", created.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(4.0))
    # The tool runs at 1.6; its say plays 1.6 .. 2.1 and the tool hears it end (at the 2.1
    # tick); it returns at 2.6; the LLM got its result and answers at 2.7, on the 2.72 tick.
    assert agent.log == [(at(1.6), "tool starts: Paris"), (at(2.1), "heard: one moment"), (at(2.6), "tool returns")]
    assert tts.texts == ["One moment", "It is sunny."]
    assert transport.voice_segments() == [(about(1.6), about(2.1)), (about(2.72), about(3.47))]
    assert any(isinstance(i, FunctionCallOutput) and "sunny" in i.output for i in llm.calls[1].items)
    assert [c.source for c in created] == [SpeechSource.USER_TURN, SpeechSource.TOOL]
    reply = session.current_utterance
    assert reply is not None and not reply.interrupted
    contents = [getattr(i, "content", type(i).__name__) for i in agent.chat_context.items[1:]]
    assert contents == ["weather in paris", "FunctionCall", "FunctionCallOutput", "One moment", "It is sunny."]


# -- 4. allow_interruptions=False: heard, answered after, never cut ---------------------------------------


async def test_uninterruptible_speech_plays_to_its_end_and_the_user_is_answered_after(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(
        transcripts=["what about tomorrow"], script=["Tomorrow is sunny."], ttft=0.51, pipeline_options={"allow_interruptions": False}
    )
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        handle = await session.say(LONG)
        assert not handle.interruptible
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(11.0))
        assert not handle.interrupted
    # The say plays 0 .. 10.0 untouched; the user's turn (ended at 2.5) is answered after it:
    # 10.0 + 0.51 ttft, on the next tick.
    assert transport.voice_segments() == [(about(0.0), about(10.0)), (about(10.52), about(11.27))]
    assert transport.clears == []
    assert llm.calls[0].messages[-1].content == "what about tomorrow"
    assert assistant_texts(agent) == [LONG, "Tomorrow is sunny."]


async def test_say_and_reply_queue_behind_an_uninterruptible_utterance(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, _, tts = make_session(script=["Reply text."])
    async with session:
        first = await session.say("one two three four", interruptible=False)  # 0 .. 1.0
        await trio.sleep(0.2)
        second = await session.say("five six")
        third = await session.reply("go on", wait_for_playback=False)
        session.interrupt()  # not forced: the first cannot be cut
        assert session.speech_queue == (second, third)
        await third
        assert not first.interrupted and not second.interrupted
        # 1.0 + 0.5 + 0.5, and a tick between one utterance and the next: each starts pushing
        # audio just after the tick at which the one before was played out.
        assert trio.current_time() == at(2.04)
        third_forced = await session.say("seven eight nine ten", interruptible=False)
        await trio.sleep(0.5)
        session.interrupt(force=True)
        assert third_forced.interrupted
    assert tts.texts == ["one two three four", "five six", "Reply text.", "seven eight nine ten"]


# -- 5. a noise while the agent thinks: paused, then resumed; the question is answered ----------------------


async def test_noise_while_thinking_holds_the_reply_and_it_resumes(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=["what time is it", ""], script=["It is noon."], ttft=1.0)
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        await transport.send_user_audio(speech(1.0))  # the question: end of turn at 1.5
        await transport.send_user_audio(silence(0.7))
        await transport.send_user_audio(speech(0.2))  # 1.7 .. 1.9: a cough, no words
        await transport.send_user_audio(silence(4.0))
    # The reply's audio (ready at 2.5) is held from 1.7; no words came: it plays at 1.7 + 2.0.
    assert transport.voice_segments() == [(about(3.7), about(4.45))]
    assert len(llm.calls) == 1
    assert assistant_texts(agent) == ["It is noon."]
    assert session.metrics[0].first_audio_at == at(3.7) and not session.metrics[0].interrupted


async def test_words_while_thinking_replace_the_reply_with_one_turn(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, tts = make_session(
        transcripts=["book a table", "for two please"], script=["Stale.", "A table for two."], ttft=1.0
    )
    async with session:
        await transport.send_user_audio(speech(1.0))  # end of turn 1.5
        await transport.send_user_audio(silence(0.7))
        await transport.send_user_audio(speech(0.8))  # 1.7 .. 2.5: more words
        await transport.send_user_audio(silence(4.0))
    assert tts.texts == ["A table for two."]  # the stale answer was never synthesised
    assert [m.content for m in llm.calls[1].messages if m.role is ChatRole.USER] == ["book a table for two please"]
    # The new turn ends at 2.5 + 0.5; the answer comes 1.0 later.
    assert transport.voice_segments() == [(about(4.0), about(5.0))]


# -- 6. min_interruption_words over the whole ongoing turn --------------------------------------------------


async def test_min_interruption_words_counts_the_whole_turn(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(
        transcripts=["stop", "ok stop"], script=["Okay."], pipeline_options={"min_interruption_words": 3}
    )
    transcribed: list[UserInputTranscribed] = []
    session.on("user_input_transcribed", transcribed.append)
    async with session:
        handle = await session.say(LONG)
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(0.6))  # "stop": long enough, one word
        await transport.send_user_audio(silence(0.35))
        assert not handle.interrupted
        await transport.send_user_audio(speech(0.6))  # 1.95 .. 2.55 "ok stop": three words in all
        await transport.send_user_audio(silence(2.0))
        assert handle.interrupted
    # Cut when the final brought the third word (2.55 + 0.3 VAD silence = 2.85).
    first, second = transport.voice_segments()
    assert 2.85 < first[1] <= 2.85 + TICK + FADE
    assert second[0] == about(3.06)  # the turn ended 0.5 s after its speech (3.05), on the next tick
    assert llm.calls[0].messages[-1].content == "stop ok stop"  # no word dropped
    assert [(t.transcript, t.is_final) for t in transcribed] == [("stop", False), ("stop", True), ("ok", False), ("ok stop", True)]


# -- 7. tool errors ------------------------------------------------------------------------------------


class Bank(Agent):
    @function_tool
    async def balance(self, account: str) -> str:
        """The balance of an account."""
        if account == "unknown":
            raise ToolError("there is no account with that number")
        raise RuntimeError("connection to db://admin:hunter2@10.0.0.5 refused")


async def test_only_a_tool_error_reaches_the_llm(autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    script: list[Any] = [
        [ToolCall("balance", {"account": "unknown"}), ToolCall("balance", {"account": "42"})],
        "Sorry, I cannot see that.",
    ]
    session, transport, llm, _ = make_session(Bank(), transcripts=["my balance"], script=script)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    outputs = [i for i in llm.calls[1].items if isinstance(i, FunctionCallOutput)]
    assert [o.output for o in outputs] == [
        "error: there is no account with that number",
        "error: the balance tool failed; it may work if tried again later",
    ]
    assert all(o.is_error for o in outputs)
    assert "hunter2" not in str(llm.calls[1].to_openai())
    assert "hunter2" in caplog.text and "Traceback" in caplog.text  # the log has the details


# -- events, metrics and the seed's surface ------------------------------------------------------------


async def test_events_and_usage_metrics(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=["hello there"], script=["Hi."])
    llm.report_usage = True
    items: list[ConversationItemAdded] = []
    created: list[SpeechCreated] = []
    closes: list[Any] = []
    session.on("conversation_item_added", items.append)
    session.on("speech_created", created.append)
    session.on("close", closes.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
    assert [(type(e.item).__name__, e.item.content) for e in items] == [("ChatMessage", "hello there"), ("ChatMessage", "Hi.")]
    assert [c.source for c in created] == [SpeechSource.USER_TURN]
    m = session.metrics[0]
    assert (m.prompt_tokens, m.completion_tokens) == (6, 1)  # "You are a test." + "hello there"; "Hi."
    assert m.stt_final_latency == at(0.3) and m.llm_ttft == at(0.0) and m.tts_ttfb == at(0.0)
    assert m.tts_audio_seconds == pytest.approx(0.25)
    assert [(c.reason, c.error) for c in closes] == [("closed", None)]


async def test_get_context_history_and_hangup(autojump_clock: trio.testing.MockClock) -> None:
    script: list[Any] = [["Checking.", ToolCall("get_weather", {"city": "Rome"})], "Sunny."]
    session, transport, _, _ = make_session(SlowWeather(), transcripts=["rome weather"], script=script)
    closes: list[Any] = []
    session.on("close", closes.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
        assert session.get_context_history() == [
            {"role": "user", "content": "rome weather", "interrupted": False},
            {"role": "assistant", "content": "Checking.", "interrupted": False},
            {"role": "assistant", "content": "Sunny.", "interrupted": False},
        ]
        full = session.get_context_history(include_function_calls=True, include_system_messages=True)
        assert [d.get("role", d.get("type")) for d in full] == [
            "system", "user", "assistant", "function_call", "function_call_output", "assistant",
        ]
        await session.hangup("caller asked to end")
        assert transport.hung_up and session.closed
    assert [c.reason for c in closes] == ["caller asked to end"]


async def test_close_ends_every_queued_handle(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session(script=["a b c"])
    async with session:
        handles: list[UtteranceHandle] = [await session.say("one two three", interruptible=False)]
        handles.append(await session.say("four"))
        handles.append(await session.reply("five", wait_for_playback=False))
        await trio.sleep(0.1)
    assert all(h.done() and h.interrupted for h in handles)
    assert [h.interrupt_reason for h in handles] == ["session closing"] * 3


async def test_speech_without_words_does_not_stick_to_the_next_turn(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(transcripts=["", "what time is it"], script=["Noon."])
    async with session:
        handle = await session.say(LONG)
        await trio.sleep_until(1.0)
        await transport.send_user_audio(speech(1.0))  # noise over the agent: paused at 1.5, resumed at 3.5
        await transport.send_user_audio(silence(11.0))
        assert handle.done() and not handle.interrupted
        await transport.send_user_audio(speech(1.0))  # 13.0 .. 14.0: a question, the agent quiet
        await transport.send_user_audio(silence(2.0))
    m = session.metrics[0]
    assert (m.user_text, m.user_speech_start, m.user_speech_end, m.end_of_turn_at) == ("what time is it", at(13.0), at(14.0), at(14.5))
    assert transport.voice_segments()[-1] == (about(14.5), about(14.75))


async def test_close_event_carries_what_ended_the_session(autojump_clock: trio.testing.MockClock) -> None:
    class DeadSTT:
        sample_rate = 16000

        async def run(self, audio: Any, events: Any) -> None:
            async with audio, events:
                await trio.sleep(1.0)
                raise ProviderError("the STT stream died", provider="DeadSTT")

    session, _, _, _ = make_session()
    session.pipeline.stt = DeadSTT()  # type: ignore[attr-defined]
    closes: list[Any] = []
    session.on("close", closes.append)
    async with session:
        await session.wait_closed()
        assert trio.current_time() == at(1.0)
    (event,) = closes
    assert event.reason == "pipeline failed" and isinstance(event.error, ProviderError) and session.failure is event.error


async def test_async_close_callbacks_run_to_the_end(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session()
    saved: list[tuple[str, float]] = []

    async def save_transcript(event: Any) -> None:
        await trio.sleep(0.5)  # e.g. writing the call's record somewhere
        saved.append((event.reason, trio.current_time()))

    session.on("close", save_transcript)
    async with session:
        await trio.sleep(1.0)
    assert saved == [("closed", at(1.5))]


class BrokenTTS:
    """Synthesises the first sentence; raises a plain bug on the second."""

    sample_rate = 24000

    def __init__(self) -> None:
        self.calls = 0

    async def synthesize(self, text: str) -> Any:
        from trioagent.testing import ToneTTS

        self.calls += 1
        if self.calls == 2:
            raise ValueError("index out of range in the vocoder")
        async for frame in ToneTTS().synthesize(text):
            yield frame


async def test_provider_failures_and_timeouts_are_error_events(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.events import ErrorEvent

    session, transport, _, _ = make_session(transcripts=["one", "two", "three"], script=[None, "Fine. Then broken.", "Works."], pipeline_options={"llm_timeout": 4.0})
    session.pipeline.tts = BrokenTTS()  # type: ignore[attr-defined]
    errors: list[tuple[float, ErrorEvent]] = []
    session.on("error", lambda e: errors.append((trio.current_time(), e)))
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        await transport.send_user_audio(speech(1.0) + silence(5.0))  # the LLM hangs: fails at 1.5 + 4
        await transport.send_user_audio(speech(1.0) + silence(3.0))  # the TTS raises on the 2nd sentence
        await transport.send_user_audio(speech(1.0) + silence(2.0))  # and the session goes on
    (t1, e1), (t2, e2) = errors
    assert t1 == at(5.5) and (e1.stage, e1.fatal, e1.reason) == ("llm", False, "the language model (ScriptedLLM) timed out")
    assert (e2.stage, e2.reason) == ("tts", "speech synthesis (BrokenTTS) failed")
    assert isinstance(e2.error, ProviderError) and isinstance(e2.error.__cause__, ValueError)
    assert [m.content for m in agent.chat_context.messages if m.role is ChatRole.ASSISTANT][-1] == "Works."


class StallingTTS:
    """Each frame `gap` seconds after the one before; after `frames` frames it hangs."""

    sample_rate = 24000

    def __init__(self, gap: float, frames: int) -> None:
        self.gap, self.frames = gap, frames

    async def synthesize(self, text: str) -> Any:
        from trioagent.testing import ToneTTS

        for n, frame in enumerate([f async for f in ToneTTS().synthesize(text)]):
            if n == self.frames:
                await trio.sleep_forever()
            await trio.sleep(self.gap)
            yield frame


@pytest.mark.parametrize("gap", [0.0, 0.3])
async def test_the_tts_timeout_counts_from_the_last_frame(autojump_clock: trio.testing.MockClock, gap: float) -> None:
    # One cancel scope serves the whole stream, its deadline moved on at each frame: a stream
    # slower than the timeout in all (12 x 0.3 s against 1 s) is fine, and a stall is given up
    # on the timeout after the last frame that came.
    session, transport, _, _ = make_session(transcripts=["one"], script=["Fine, thanks for asking today."], pipeline_options={"tts_timeout": 1.0})
    session.pipeline.tts = StallingTTS(gap, frames=12)  # type: ignore[attr-defined]
    errors: list[tuple[float, Any]] = []
    session.on("error", lambda e: errors.append((trio.current_time(), e)))
    async with session:
        await transport.send_user_audio(speech(1.0) + silence(8.0))
    [(t, e)] = errors
    assert e.stage == "tts" and isinstance(e.error, ProviderError)
    assert t == at(1.5 + 12 * gap + 1.0)  # end of turn, 12 frames, then the 1 s timeout


async def test_a_whole_reply_handed_over_at_once_is_pushed_in_slices(autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    # ToneTTS hands over 1 s of voice in 20 ms frames without waiting; `_speak` pushes it
    # 0.1 s at a time between checkpoints, so the rest of the loop (other sessions' ticks and
    # turns) runs in between: never more than 5 frames in one task step.
    from trioagent.audio.mixer import MixerSource
    from trioagent.pipeline.cascading import PUSH_SLICE

    steps = [0]

    class CountSteps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            steps[0] += 1

    pushes: list[int] = []  # the task step of each voice frame pushed
    push = MixerSource.push

    def counted(self: MixerSource, frame: Any) -> None:
        if self.voice:
            pushes.append(steps[0])
        push(self, frame)

    monkeypatch.setattr(MixerSource, "push", counted)
    session, transport, _, _ = make_session(transcripts=["one"], script=["Fine, thanks for asking."])
    trio.lowlevel.add_instrument(CountSteps())
    async with session:
        await transport.send_user_audio(speech(1.0) + silence(3.0))
    per_step = [pushes.count(step) for step in sorted(set(pushes))]
    assert len(pushes) == 50  # 4 words: 1 s of 20 ms frames
    assert max(per_step) == round(PUSH_SLICE / TICK) and len(per_step) == 10
