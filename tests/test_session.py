from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from trioagent import (
    Agent,
    AgentSession,
    AgentState,
    BackgroundAudioHandlerConfig,
    ChatRole,
    SessionClosed,
    UserState,
    UtteranceHandle,
)
from trioagent.audio import write_wav
from trioagent.testing import silence, speech

from .helpers import dc
from .kit import FADE, TICK, about, all_tasks, at, make_session


class Greeter(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Greet.")
        self.calls: list[str] = []

    async def on_enter(self) -> None:
        self.calls.append("on_enter")
        await self.session.say("Hello there friend")  # 3 words = 0.75 s of tone

    async def on_exit(self) -> None:
        self.calls.append("on_exit")

    async def cleanup(self) -> None:
        self.calls.append("cleanup")


async def test_start_states_and_greeting(autojump_clock: trio.testing.MockClock) -> None:
    agent = Greeter()
    session, transport, _, _ = make_session(agent, ttfb=0.1)
    states: list[str] = []
    session.on("agent_state_changed", lambda d: states.append(d["state"]))
    async with session:
        assert agent.calls == ["on_enter"]
        handle = session.current_utterance
        assert handle is not None
        await handle
        assert handle.done() and not handle.interrupted
        assert trio.current_time() == at(0.86)  # 0.1 ttfb + 0.75 s of audio, played out on the 20 ms grid
    # IDLE once started (as in the seed), then SPEAKING when the greeting's audio starts.
    assert states == ["starting", "idle", "speaking", "idle", "closing"]
    assert transport.voice_segments() == [(about(0.1), about(0.85))]
    assert agent.calls == ["on_enter", "on_exit", "cleanup"]
    assert [(m.role, m.content) for m in agent.chat_context.messages] == [
        (ChatRole.SYSTEM, "Greet."),
        (ChatRole.ASSISTANT, "Hello there friend"),
    ]


async def test_start_in_a_nursery_without_async_with(autojump_clock: trio.testing.MockClock) -> None:
    """The seed's ``await session.start()``: it returns once the session runs (on_enter done),
    the nursery owns the session, and close() ends it."""
    agent = Greeter()
    session, transport, _, _ = make_session(agent, ttfb=0.1)
    async with trio.open_nursery() as nursery:
        await session.start(nursery)
        assert agent.calls == ["on_enter"] and session.agent_state == AgentState.IDLE
        assert trio.current_time() == 0.0  # (started: the greeting is still to come)
        handle = session.current_utterance
        assert handle is not None
        await handle
        assert trio.current_time() == at(0.86)
        await session.close()
    assert agent.calls == ["on_enter", "on_exit", "cleanup"]
    assert transport.voice_segments() == [(about(0.1), about(0.85))]
    assert session.closed


async def test_nursery_start_run_reports_a_failed_start(autojump_clock: trio.testing.MockClock) -> None:
    class Broken(Agent):
        async def on_enter(self) -> None:
            raise ValueError("no greeting today")

    session, _, _, _ = make_session(Broken(instructions="x"))
    async with trio.open_nursery() as nursery:
        with pytest.raises(ValueError, match="no greeting today"):  # (from start itself, not the nursery)
            await nursery.start(session.run)
    assert session.closed


async def test_states_are_lower_case_strings() -> None:
    assert [s.value for s in AgentState] == ["starting", "idle", "listening", "thinking", "speaking", "closing"]
    assert [s.value for s in UserState] == ["idle", "speaking", "listening"]


async def test_say_over_say_interrupts_the_first(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, _, tts = make_session()
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        first = await session.say("one two three four five six seven eight")  # 2 s
        await trio.sleep(0.5)
        second = await session.say("nine ten")  # 0.5 s
        assert first.interrupted and first.done()
        await second
        assert not second.interrupted
        assert trio.current_time() == at(1.0)
    segments = transport.voice_segments()
    # The first voice ends within one tick + fade of 0.5; the second starts at the 0.5 tick.
    assert len(segments) == 1 and segments[0][0] == about(0.0) and segments[0][1] == about(1.0)
    frame = next(f for f in transport.output if abs(f.timestamp - 0.5) < 1e-9)
    assert tts.texts == ["one two three four five six seven eight", "nine ten"]
    msgs = [m for m in agent.chat_context.messages if m.role is ChatRole.ASSISTANT]
    # The interrupted say keeps only what was played: 0.5 s of 2 s = 2 of 8 words.
    assert [(m.content, m.interrupted) for m in msgs] == [("one two", True), ("nine ten", False)]
    assert frame.samples.any()


async def test_interrupt_silences_within_one_tick_plus_fade(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, _, _ = make_session()
    async with session:
        handle = await session.say("a b c d e f g h")
        await trio.sleep(0.31)
        session.interrupt()
        await handle  # returns at once, never raises
        assert handle.interrupted and trio.current_time() == at(0.31)
        await trio.sleep(0.2)
    (start, end), = transport.voice_segments()
    assert start == about(0.0)
    assert 0.31 < end <= 0.31 + TICK + FADE
    assert transport.clears == [at(0.31)]


async def test_reply_semantics(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, llm, _ = make_session(script=["Sure thing.", "Unused."], ttft=0.2)
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        assert (await session.reply("")).done()
        first_task: list[UtteranceHandle] = []
        async with trio.open_nursery() as nursery:

            async def first_reply() -> None:
                first_task.append(await session.reply("Offer help"))

            nursery.start_soon(first_reply)
            await trio.sleep(0.1)
            running = session.current_utterance
            again = await session.reply("Another", wait_for_playback=False)
            assert again is running
        assert first_task[0] is running and running.done()
        assert trio.current_time() == at(0.7)  # 0.2 ttft + 2 words * 0.25 s
    assert len(llm.calls) == 1
    # The instructions were given to the LLM as a system message, not stored in the agent's context.
    assert llm.calls[0].messages[-1].content == "Offer help"
    assert [m.content for m in agent.chat_context.messages] == ["You are a test.", "Sure thing."]


async def test_close_during_reply(autojump_clock: trio.testing.MockClock) -> None:
    agent = Greeter()
    session, _, _, _ = make_session(agent, script=["one two three four five six"])
    before = len(all_tasks())
    async with session:
        await session.current_utterance  # the greeting
        handle = await session.reply("talk", wait_for_playback=False)
        await trio.sleep(0.3)
        assert session.agent_state is AgentState.SPEAKING
        await session.close()
        assert handle.interrupted and handle.done()
        assert agent.calls == ["on_enter", "on_exit", "cleanup"]
        assert session.closed
        assert len(all_tasks()) == before  # nothing the session started is still running
        await session.close()  # idempotent
        with pytest.raises(SessionClosed):
            await session.say("too late")


async def test_close_with_an_llm_that_never_answers(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session(script=[None])
    async with session:
        handle = await session.reply("hang", wait_for_playback=False)
        await trio.sleep(5)
        assert not handle.done()
        t = trio.current_time()
        await session.close()
        assert trio.current_time() == at(t)
        assert handle.interrupted


class Stubborn(Agent):
    """Cleanup steps that hang or fail."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[str] = []

    async def on_exit(self) -> None:
        self.steps.append("on_exit")
        raise RuntimeError("on_exit failed")

    async def cleanup(self) -> None:
        self.steps.append("cleanup")
        await trio.sleep_forever()


async def test_close_is_bounded_and_runs_every_step(autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    agent = Stubborn()
    session, transport, _, _ = make_session(agent)
    async with session:
        await trio.sleep(1)
        await session.close()
        assert trio.current_time() == at(3.0)  # the 2 s grace period, not forever
    assert agent.steps == ["on_exit", "cleanup"]
    assert transport.closed  # the step after the hanging one still ran
    assert "on_exit failed" in caplog.text


async def test_leave_hangs_up_then_closes(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, _, _ = make_session()
    async with session:
        await session.leave()
        assert transport.hung_up and session.closed


async def test_run_returns_when_input_ends(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, _, _ = make_session(Greeter())

    async def hang_up_later() -> None:
        await trio.sleep(0.2)
        transport.end_user_audio()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hang_up_later)
        await session.run()
    # The greeting was allowed to finish before the session closed.
    assert trio.current_time() == at(0.76) and session.closed  # 0.75 s, played out on the 20 ms grid


async def test_failing_callback_does_not_kill_the_session(autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    session, transport, _, _ = make_session()
    seen: list[str] = []

    def broken(_: Any) -> None:
        raise ValueError("callback bug")

    async def async_broken(_: Any) -> None:
        raise ValueError("async callback bug")

    session.on("agent_state_changed", broken)
    session.on("agent_state_changed", async_broken)
    session.on("agent_state_changed", lambda d: seen.append(d["state"]))
    async with session:
        await (await session.say("still alive"))
    assert "speaking" in seen and "idle" in seen
    assert transport.voice_segments()
    assert "callback bug" in caplog.text and "async callback bug" in caplog.text
    with pytest.raises(ValueError, match="unknown event"):
        session.on("agent_state_change", broken)
    session.off("agent_state_changed", broken)


async def test_body_exception_comes_out_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session()
    with pytest.raises(KeyError):
        async with session:
            raise KeyError("boom")
    assert session.closed


# -- the wake-up timer ------------------------------------------------------------------------


async def test_wake_up_fires_once_per_arming(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session(wake_up=5)
    fired: list[float] = []
    session.on_wake_up = lambda: fired.append(trio.current_time())
    async with session:
        await trio.sleep(20)
    assert fired == [at(5.0)]


async def test_wake_up_resets_on_user_speech_and_after_playback(autojump_clock: trio.testing.MockClock) -> None:
    session, transport, _, _ = make_session(wake_up=3, transcripts=["hello"], script=["hi there"])
    fired: list[float] = []

    async def wake() -> None:
        fired.append(trio.current_time())
        await session.say("are you there")  # 0.75 s

    session.on_wake_up = wake
    async with session:
        await trio.sleep(2.0)
        await transport.send_user_audio(speech(1.0))  # 2.0 .. 3.0: resets the timer
        await transport.send_user_audio(silence(12.0))
    # Speech ends at 3.0; end of turn at 3.5; reply "hi there" plays 3.5 .. 4.0; the timer
    # re-arms at the end of playback: fires at 7.0; its say() plays 7.0 .. 7.75 (played out at
    # 7.76 on the 20 ms grid): fires again at 10.76, and so on while nobody speaks.
    assert fired == [at(7.0), at(10.76), at(14.52)]


async def test_wake_up_never_fires_during_a_reply(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session(wake_up=1, script=["a " * 19 + "b"], ttft=0.5)
    fired: list[float] = []
    session.on_wake_up = lambda: fired.append(trio.current_time())
    async with session:
        await trio.sleep(0.5)
        await session.reply("talk a lot")  # 0.5 s thinking + 5 s of speech
        assert trio.current_time() == at(6.0)
        await trio.sleep(1.5)
    assert fired == [at(7.0)]


# -- background audio ---------------------------------------------------------------------------


async def test_background_audio_ducks_under_speech_and_fades_out(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    path = tmp_path / "bg.wav"
    write_wav(path, dc(1.0, 16000, 8000))
    config = BackgroundAudioHandlerConfig(path, volume=0.5, looping=True)
    session, transport, _, _ = make_session(background_audio=config)
    async with session:
        assert session.is_background_audio_enabled
        await trio.sleep(0.5)
        await (await session.say("one two"))  # 0.5 .. 1.0
        await trio.sleep_until(1.5)
        await session.stop_background_audio()
        stopped = trio.current_time()
        await trio.sleep(0.5)

    def level(t: float) -> float:
        frame = next(f for f in transport.output if abs(f.timestamp - t) < 1e-9)
        return float(np.mean(frame.samples))  # the 250 Hz tone averages out over a 20 ms frame

    assert level(0.2) == pytest.approx(4000, abs=2)  # the hum at volume 0.5, mixed at 24 kHz
    # Under the voice the hum is ducked by 12 dB.
    assert level(0.7) == pytest.approx(4000 * 10 ** (-12 / 20), abs=40)
    assert level(1.3) == pytest.approx(4000, abs=2)  # back after the voice
    assert stopped == at(1.52)  # the fade played in the 1.50 tick
    assert all(not f.samples.any() for f in transport.output if f.timestamp >= 1.52 - 1e-9)


async def test_thinking_audio_plays_while_thinking(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    path = tmp_path / "think.wav"
    write_wav(path, dc(0.2, 16000, 6000))
    agent = Agent()
    agent.set_thinking_audio(path, volume=1.0)  # (from a file: it loops, as in the seed)
    session, transport, _, _ = make_session(agent, script=["done"], ttft=1.0)
    async with session:
        await session.reply("think hard")
        await trio.sleep(0.3)
    loud = transport.voice_segments()
    # Thinking 0 .. 1.0 (then stopped with a fade as the voice starts), voice 1.0 .. 1.25.
    assert loud[0][0] == about(0.0) and loud[-1][1] == about(1.25)
    mid = next(f for f in transport.output if abs(f.timestamp - 0.5) < 1e-9)
    assert np.median(mid.samples) == pytest.approx(6000, abs=2)
    after = next(f for f in transport.output if abs(f.timestamp - 1.1) < 1e-9)
    assert np.abs(after.samples).max() <= 0.3 * 32767 + 1  # only the voice, no thinking sound


async def test_playback_mode_is_the_agents_voice_and_is_cut_like_speech(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    path = tmp_path / "jingle.wav"
    write_wav(path, dc(1.0, 16000, 8000))
    session, transport, _, _ = make_session()
    states: list[str] = []
    session.on("agent_state_changed", lambda d: states.append(d["state"]))
    async with session:
        await trio.sleep(0.2)
        await session.play_background_audio(BackgroundAudioHandlerConfig(path, volume=0.5, mode="playback"))
        handle = session.current_utterance
        assert handle is not None and handle.is_interruptible
        await trio.sleep(0.4)
        session.interrupt()  # cut like speech
        await handle
        assert handle.interrupted
        await trio.sleep(0.3)

    def level(t: float) -> float:
        frame = next(f for f in transport.output if abs(f.timestamp - t) < 1e-9)
        return float(np.mean(frame.samples))

    assert level(0.1) == 0.0 and level(0.4) == pytest.approx(4000, abs=2)  # the clip at volume 0.5, as the voice
    assert all(not f.samples.any() for f in transport.output if f.timestamp >= 0.64 - 1e-9)  # cut at 0.6 (+ the fade)
    assert "speaking" in states
    with pytest.raises(ValueError):
        BackgroundAudioHandlerConfig(path, mode="blaring")


async def test_a_missing_background_file_is_a_warning(autojump_clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    session, transport, _, _ = make_session()
    async with session:
        await session.play_background_audio(BackgroundAudioHandlerConfig(tmp_path / "nope.wav"))  # (the seed's behaviour)
        await (await session.say("fine"))  # the session goes on
    assert "background audio not played" in caplog.text and "nope.wav" in caplog.text
    assert len(transport.voice_segments()) == 1


async def test_unused_logging_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    AgentSession(Agent(), make_session()[0].pipeline)
    assert caplog.text == ""


async def test_an_agent_apologises_when_an_answer_fails(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.testing import silence, speech

    from .kit import about, make_session

    agent = Agent(instructions="Test.", apology="Sorry, say that again?")
    session, transport, _, tts = make_session(agent, transcripts=["hello"], script=[None], pipeline_options={"llm_timeout": 2.0})
    errors: list[Any] = []
    session.on("error", errors.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(5.0))
    assert [(e.stage, e.fatal) for e in errors] == [("llm", False)]
    assert tts.texts == ["Sorry, say that again?"]
    assert transport.voice_segments()[0][0] == about(3.5)  # end of turn 1.5 + the 2 s LLM timeout
    assert all(m.content != "Sorry, say that again?" for m in agent.chat_context.messages)  # (not in the context)
