"""Invariants of the speech scheduler under random interleavings, in virtual time (hypothesis):
say / reply / interrupt / user speech / tools that speak, in any order and timing, never leave
two voices playing at once, never leave a handle undone after close(), and never lose a final
user transcript (each is answered or in the chat context)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioagent import Agent, AgentSession, AudioFrame, CascadingPipeline, ChatRole, UtteranceHandle, function_tool
from trioagent.events import SpeechCreated, UserInputTranscribed
from trioagent.testing import MemoryTransport, ScriptedLLM, ScriptedSTT, ToneTTS, ToolCall, silence, speech


class Helper(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Help.")

    @function_tool
    async def lookup(self, q: str) -> str:
        """Look something up."""
        if q == "say":
            await self.session.say("one moment")
        await trio.sleep(0.3)
        return f"found {q}"


class Watched(MemoryTransport):
    """Checks, at every frame the mixer sends, that at most one voice is playing."""

    def __init__(self) -> None:
        super().__init__()
        self.session: AgentSession | None = None
        self.overlaps: list[float] = []

    async def send_audio(self, frame: AudioFrame) -> None:
        assert self.session is not None
        if sum(1 for s in self.session.mixer.sources if s.voice and s.playing) > 1:
            self.overlaps.append(frame.timestamp)
        await super().send_audio(frame)


ENTRIES: list[Any] = [
    "Okay.",
    "Sure thing, here it is.",
    "This is a longer answer that goes on for a while. It has two sentences.",
    ["Let me check.", ToolCall("lookup", {"q": "say"})],
    ToolCall("lookup", {"q": "quiet"}),
    ["Looking.", ToolCall("lookup", {"q": "quiet"})],
]

ops = st.lists(
    st.one_of(
        st.tuples(st.just("say"), st.booleans(), st.integers(1, 8)),
        st.tuples(st.just("reply"), st.booleans()),
        st.tuples(st.just("interrupt"), st.booleans()),
        st.tuples(st.just("speech"), st.sampled_from([0.15, 0.3, 0.6, 1.2])),
        st.tuples(st.just("wait"), st.sampled_from([0.05, 0.2, 0.5, 1.0, 2.5])),
    ),
    max_size=20,
)


@settings(max_examples=int(__import__("os").environ.get("SPEECH_EXAMPLES", "30")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=ops,
    transcripts=st.lists(st.sampled_from(["", "yes", "stop now please", "what time is it"]), min_size=30, max_size=30),
    script=st.lists(st.sampled_from(range(len(ENTRIES))), min_size=60, max_size=60),
    min_words=st.sampled_from([0, 2]),
    timeout=st.sampled_from([None, 1.0]),
    interruptions=st.sampled_from([True, True, False]),
    ttft=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_speech_invariants(
    ops: list[tuple[Any, ...]],
    transcripts: list[str],
    script: list[int],
    min_words: int,
    timeout: float | None,
    interruptions: bool,
    ttft: float,
) -> None:
    async def main() -> None:
        transport = Watched()
        pipeline = CascadingPipeline(
            stt=ScriptedSTT(transcripts),
            llm=ScriptedLLM([ENTRIES[i] for i in script], ttft=ttft),
            tts=ToneTTS(),
            allow_interruptions=interruptions,
            min_interruption_words=min_words,
            false_interruption_timeout=timeout,
        )
        session = AgentSession(Helper(), pipeline, transport=transport)
        transport.session = session
        handles: list[UtteranceHandle] = []
        finals: list[str] = []
        session.on("speech_created", lambda e: handles.append(e.handle) if isinstance(e, SpeechCreated) else None)
        session.on("user_input_transcribed", lambda e: finals.append(e.transcript) if isinstance(e, UserInputTranscribed) and e.is_final else None)
        agent = session.agent  # (the session lets go of it when it closes)
        async with session:
            for op in ops:
                kind = op[0]
                if kind == "say":
                    await session.say(" ".join(["word"] * op[2]), interruptible=op[1])
                elif kind == "reply":
                    await session.reply("answer", wait_for_playback=False, interruptible=op[1])
                elif kind == "interrupt":
                    session.interrupt(force=op[1])
                elif kind == "speech":
                    await transport.send_user_audio(speech(op[1]))
                else:
                    await transport.send_user_audio(silence(op[1]))
            await transport.send_user_audio(silence(1.5))
        assert session.closed
        assert transport.overlaps == [], f"two voices at {transport.overlaps[:5]}"
        undone = [h for h in handles if not h.done()]
        assert undone == [], f"not done after close: {undone}"
        said = [m.content for m in agent.chat_context.messages if m.role is ChatRole.USER]
        lost = [f for f in finals if not any(f in s for s in said)]
        assert lost == [], f"final transcripts neither answered nor in the chat: {lost} (chat: {said})"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
