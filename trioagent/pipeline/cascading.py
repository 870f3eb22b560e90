"""`CascadingPipeline`: VAD -> STT -> turn detection -> LLM (+ tools) -> TTS -> mixer.

How this works. `run()` owns three tasks:
- the input task reads the transport, resamples to the STT/VAD rate, runs the (sans-IO) VAD and
  feeds the STT;
- the STT task turns audio into transcript events;
- the controller takes VAD and transcript events in arrival order and owns the turn-taking
  timers (end of turn, barge-in, false-interruption resume). Each timer is a deadline; the
  controller waits for the next event or the earliest deadline, whichever comes first.

Replies and `say()` run in their utterance handle's cancel scope (the session starts them). A
reply streams the LLM into a sentence splitter; a second task synthesises each sentence as soon as
it is complete and pushes the audio into the utterance's voice source in the mixer, so the first
sentence plays while the LLM still writes. Tools run in the reply's scope, so a barge-in cancels
them too. When an utterance is interrupted, the chat context keeps only what was played.
"""

from __future__ import annotations

import json
import logging
import math
import re
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..audio.frame import AudioFrame
from ..audio.mixer import MixerSource
from ..audio.resample import StreamResampler
from ..chat import ChatContext, ChatRole
from ..errors import ProviderError
from ..flow import ConversationFlow
from ..metrics import TurnMetrics
from ..providers.base import LLM, STT, TTS, VAD, TextDelta, ToolCall, TranscriptEvent, TurnDetector, VADEvent
from ..providers.turn import SilenceTurnDetector
from ..providers.vad import EnergyVAD
from ..states import AgentState, UserState
from ..utterance import UtteranceHandle

if TYPE_CHECKING:
    from ..agent import Agent
    from ..session import AgentSession

__all__ = ["CascadingPipeline"]

_log = logging.getLogger("trioagent.pipeline")

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")
# Input arrives a frame at a time: at the barge-in deadline the last frame may still be in
# flight, so speech that has lasted the minimum duration minus one frame counts as long enough.
_INPUT_SLACK = 0.02


class _SentenceSplitter:
    """Cuts streamed text into sentences as soon as each is complete."""

    def __init__(self) -> None:
        self._buf = ""

    def push(self, text: str) -> list[str]:
        self._buf += text
        parts = _SENTENCE_END.split(self._buf)
        self._buf = parts.pop()
        return [p.strip() for p in parts if p.strip()]

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        return [rest] if rest else []


@attrs.define(eq=False)
class _Spoken:
    """What an utterance has sent to the mixer: each sentence and its audio length."""

    segments: list[tuple[str, float]] = attrs.field(factory=list)

    def played_text(self, played: float) -> str:
        words: list[str] = []
        for text, duration in self.segments:
            if played >= duration - 1e-9:
                words += text.split()
                played -= duration
                continue
            sentence = text.split()
            if duration > 0 and played > 0:
                words += sentence[: round(len(sentence) * played / duration)]
            break
        return " ".join(words)


@attrs.define(eq=False)
class _TurnState:
    """The controller's view of the user's current turn."""

    speaking: bool = False
    speech_start: float | None = None
    speech_end: float | None = None
    finals: list[str] = attrs.field(factory=list)
    interim: str = ""
    stt_final_at: float | None = None
    transcript_this_segment: bool = False
    over_agent: bool = False  # this speech segment began while the agent was talking
    long_enough: bool = False  # it has lasted min_interruption_duration
    barged_in: bool = False

    def text(self) -> str:
        return " ".join(self.finals).strip()

    def words(self) -> int:
        return len((self.text() + " " + self.interim).split())


@attrs.define(eq=False)
class CascadingPipeline:
    """Listen with a VAD and an STT, decide turns, think with an LLM and tools, speak with a TTS.

    Args:
        stt: streaming speech-to-text.
        llm: streaming chat model.
        tts: text-to-speech.
        vad: voice activity detection (default `EnergyVAD` at the STT's rate).
        turn_detector: end-of-turn decision (default `SilenceTurnDetector()`: 0.5 s / 0.8 s).
        allow_interruptions: whether user speech can interrupt the agent.
        min_interruption_duration: user speech must last this long to interrupt the agent.
        min_interruption_words: and (when > 0) the transcript must hold this many words.
        false_interruption_timeout: on a barge-in the voice is paused; if no transcript comes
            within this many seconds it resumes. None: interrupt at once.
        max_tool_steps: LLM rounds that may call tools before the LLM must answer in words.
    """

    stt: STT
    llm: LLM
    tts: TTS
    vad: VAD | None = None
    turn_detector: TurnDetector | None = None
    allow_interruptions: bool = True
    min_interruption_duration: float = 0.5
    min_interruption_words: int = 0
    false_interruption_timeout: float | None = 2.0
    max_tool_steps: int = 3
    _agent: Agent | None = attrs.field(init=False, default=None)
    _flow: ConversationFlow | None = attrs.field(init=False, default=None)
    _session: AgentSession | None = attrs.field(init=False, default=None)
    _turn: _TurnState = attrs.field(init=False, factory=_TurnState)
    _eou_deadline: float = attrs.field(init=False, default=math.inf)
    _barge_deadline: float = attrs.field(init=False, default=math.inf)
    _resume_deadline: float = attrs.field(init=False, default=math.inf)
    _paused: UtteranceHandle | None = attrs.field(init=False, default=None)
    _turn_count: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.vad is None:
            self.vad = EnergyVAD(sample_rate=self.stt.sample_rate)
        if self.turn_detector is None:
            self.turn_detector = SilenceTurnDetector()

    # -- wiring ------------------------------------------------------------------------------
    def set_agent(self, agent: Agent) -> None:
        self._agent = agent

    def set_conversation_flow(self, flow: ConversationFlow | None) -> None:
        self._flow = flow

    @property
    def session(self) -> AgentSession:
        if self._session is None:
            raise RuntimeError("the pipeline is not running in a session")
        return self._session

    @property
    def agent(self) -> Agent:
        if self._agent is None:
            raise RuntimeError("the pipeline has no agent")
        return self._agent

    async def cleanup(self) -> None:
        self._paused = None
        await trio.lowlevel.checkpoint()

    def interrupt(self) -> None:
        self._paused = None
        self._barge_deadline = self._resume_deadline = math.inf

    # -- listening ---------------------------------------------------------------------------
    async def run(self, session: AgentSession, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._session = session
        assert self.vad is not None
        stt_send, stt_receive = trio.open_memory_channel[AudioFrame](500)
        transcript_send, transcript_receive = trio.open_memory_channel[TranscriptEvent](100)
        event_send, event_receive = trio.open_memory_channel[VADEvent | TranscriptEvent | None](1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.stt.run, stt_receive, transcript_send)
            nursery.start_soon(self._forward_transcripts, transcript_receive, event_send.clone())
            nursery.start_soon(self._control, event_receive)
            task_status.started()
            await self._read_input(session, stt_send, event_send)
            # Input over: let the STT finish, then stop the controller once no turn is pending.
            nursery.cancel_scope.deadline = math.inf

    async def _read_input(
        self,
        session: AgentSession,
        stt_send: trio.MemorySendChannel[AudioFrame],
        event_send: trio.MemorySendChannel[VADEvent | TranscriptEvent | None],
    ) -> None:
        assert self.vad is not None
        rate = session.transport.input_sample_rate
        to_stt = StreamResampler(rate, self.stt.sample_rate)
        to_vad = to_stt if self.vad.sample_rate == self.stt.sample_rate else StreamResampler(rate, self.vad.sample_rate)
        async with stt_send, event_send:
            async for frame in session.transport.audio_in:
                if frame.sample_rate != rate:
                    _log.error("dropped a %d Hz input frame: the transport said %d Hz", frame.sample_rate, rate)
                    continue
                frame = frame.to_mono()
                stt_frame = to_stt.process(frame)
                vad_frame = stt_frame if to_vad is to_stt else to_vad.process(frame)
                # VAD events first: the controller must see "speech started" before any
                # transcript the STT makes from the same audio.
                for event in self.vad.process(vad_frame):
                    await event_send.send(event)
                try:
                    stt_send.send_nowait(stt_frame)  # the common case: no task switch per frame
                except trio.WouldBlock:
                    await stt_send.send(stt_frame)  # the STT is behind: back-pressure

    async def _forward_transcripts(
        self,
        receive: trio.MemoryReceiveChannel[TranscriptEvent],
        send: trio.MemorySendChannel[VADEvent | TranscriptEvent | None],
    ) -> None:
        async with receive, send:
            async for event in receive:
                await send.send(event)

    async def _control(self, events: trio.MemoryReceiveChannel[VADEvent | TranscriptEvent | None]) -> None:
        async with events:
            while True:
                deadline = min(self._eou_deadline, self._barge_deadline, self._resume_deadline)
                with trio.move_on_at(deadline):
                    try:
                        event = await events.receive()
                    except trio.EndOfChannel:
                        if deadline == math.inf:
                            return
                        await trio.sleep_until(deadline)
                        event = None
                    if isinstance(event, VADEvent):
                        self._on_vad(event)
                    elif isinstance(event, TranscriptEvent):
                        self._on_transcript(event)
                    if event is not None:
                        continue
                self._on_timers(trio.current_time())

    # -- turn taking (the controller's handlers; none of them awaits) ------------------------
    def _agent_audible(self) -> bool:
        """The current utterance has started playing and is not finished."""
        h = self.session.current_utterance
        return h is not None and not h.done() and h._voice is not None and h._voice.started_at is not None

    def _on_vad(self, event: VADEvent) -> None:
        session = self.session
        turn = self._turn
        if event.kind == "start":
            turn.speaking = True
            turn.speech_start = event.time
            turn.speech_end = None
            turn.transcript_this_segment = False
            turn.barged_in = False
            turn.long_enough = False
            self._eou_deadline = math.inf
            session._wake_pause("user")
            session._emit_user_state(UserState.SPEAKING)
            handle = session.current_utterance
            turn.over_agent = False
            if handle is not None and not handle.done() and self.allow_interruptions:
                if self._agent_audible():
                    turn.over_agent = True
                    self._barge_deadline = event.time + self.min_interruption_duration
                else:
                    # Not playing yet: a stale answer must never start over the user.
                    handle.interrupt("user started speaking")
            if session.agent_state in (AgentState.IDLE,):
                session._emit_agent_state(AgentState.LISTENING)
        else:
            turn.speaking = False
            turn.speech_end = event.time
            self._barge_deadline = math.inf
            session._wake_resume("user", since=event.time)
            agent_talking = self._agent_audible()
            session._emit_user_state(UserState.LISTENING if agent_talking else UserState.IDLE)
            if session.agent_state is AgentState.LISTENING:
                session._emit_agent_state(AgentState.IDLE)
            if turn.over_agent and not turn.barged_in:
                if self.min_interruption_words and event.time - (turn.speech_start or event.time) >= self.min_interruption_duration:
                    turn.long_enough = True  # long enough; the final transcript decides
                    return
                # A backchannel ("mm-hmm") over the agent: not a turn (its late final is
                # dropped too, since over_agent stays set until the next speech starts).
                turn.finals.clear()
                turn.interim = ""
                return
            self._schedule_end_of_turn()

    def _on_transcript(self, event: TranscriptEvent) -> None:
        turn = self._turn
        if not event.text.strip():
            return
        turn.transcript_this_segment = True
        if event.is_final:
            turn.finals.append(event.text.strip())
            turn.interim = ""
            turn.stt_final_at = event.time
        else:
            turn.interim = event.text.strip()
        if self._paused is not None:
            # Words arrived: the barge-in was real.
            self._confirm_barge_in()
        elif turn.over_agent and turn.long_enough and not turn.barged_in:
            # Long enough already, but we were waiting for enough words.
            self._try_barge_in()
        if event.is_final and not turn.speaking:
            if turn.over_agent and not turn.barged_in:
                turn.finals.clear()
                return
            self._schedule_end_of_turn()

    def _schedule_end_of_turn(self) -> None:
        turn = self._turn
        if turn.speaking or turn.speech_end is None or not turn.finals:
            return
        assert self.turn_detector is not None
        delay = self.turn_detector.endpointing_delay(turn.text(), self.agent.chat_context)
        self._eou_deadline = max(turn.speech_end + delay, trio.current_time())

    def _on_timers(self, now: float) -> None:
        if now >= self._barge_deadline:
            self._barge_deadline = math.inf
            if self._turn.speaking:
                assert self.vad is not None
                missing = self.min_interruption_duration - self.vad.speech_duration - _INPUT_SLACK
                if missing > 1e-9:
                    # Trailing silence so far (the VAD has not ended the segment yet): look
                    # again once enough more speech could have been heard.
                    self._barge_deadline = now + missing
                else:
                    self._turn.long_enough = True
                    self._try_barge_in()
        if now >= self._resume_deadline:
            self._resume_deadline = math.inf
            handle, self._paused = self._paused, None
            if handle is not None and handle._voice is not None and not handle.done():
                _log.info("false interruption: resuming %s", handle.id)
                handle._voice.resume()
            self._turn.over_agent = False
        if now >= self._eou_deadline:
            self._eou_deadline = math.inf
            self._end_of_turn(now)

    def _try_barge_in(self) -> None:
        turn = self._turn
        handle = self.session.current_utterance
        if handle is None or handle.done() or handle._voice is None:
            return
        if self.min_interruption_words and turn.words() < self.min_interruption_words:
            return  # checked again as transcripts arrive
        turn.barged_in = True
        if turn.transcript_this_segment or self.false_interruption_timeout is None:
            self._interrupt(handle)
            return
        self.session._clear_output(handle)
        handle._voice.pause()
        self._paused = handle
        self._resume_deadline = trio.current_time() + self.false_interruption_timeout

    def _confirm_barge_in(self) -> None:
        handle, self._paused = self._paused, None
        self._resume_deadline = math.inf
        if handle is not None:
            self._interrupt(handle)

    def _interrupt(self, handle: UtteranceHandle) -> None:
        handle.interrupt("barge-in")
        self.session._clear_output(handle)
        if self._turn.speaking:
            self.session._emit_user_state(UserState.SPEAKING)

    def _end_of_turn(self, now: float) -> None:
        turn = self._turn
        text = turn.text()
        if not text or self.session.closing:
            return
        self._turn_count += 1
        metrics = TurnMetrics(
            turn_id=f"turn_{self._turn_count}",
            user_text=text,
            user_speech_start=turn.speech_start,
            user_speech_end=turn.speech_end,
            stt_final_at=turn.stt_final_at,
            end_of_turn_at=now,
        )
        self._turn = _TurnState()
        self.session.emit("on_speech_in", {"text": text, "start": metrics.user_speech_start, "end": metrics.user_speech_end})
        self.session._start_reply(None, user_text=text, metrics=metrics)

    # -- speaking ----------------------------------------------------------------------------
    async def say(self, text: str, handle: UtteranceHandle) -> None:
        send, receive = trio.open_memory_channel[str](math.inf)
        splitter = _SentenceSplitter()
        with send:
            for sentence in splitter.push(text) + splitter.flush():
                send.send_nowait(sentence)
        await self._speak(receive, handle, None)

    async def reply(self, instructions: str | None, handle: UtteranceHandle, *, user_text: str | None = None) -> None:
        session = self.session
        agent = self.agent
        flow = self._flow
        metrics: TurnMetrics = handle._turn_metrics or TurnMetrics(turn_id=handle.id)
        if user_text is not None:
            if flow is not None:
                processed = await flow.process_transcript(user_text)
                if processed is None:
                    return
                user_text = processed
            agent.chat_context.add_message(role=ChatRole.USER, content=user_text)
            if flow is not None:
                await flow.on_turn_start(user_text)
        session._emit_agent_state(AgentState.THINKING)
        await session.start_thinking_audio()
        llm_context = agent.chat_context
        if instructions:
            llm_context = agent.chat_context.copy()
            llm_context.add_message(role=ChatRole.SYSTEM, content=instructions)
        state = {"metrics": metrics}
        send, receive = trio.open_memory_channel[str](math.inf)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._speak, receive, handle, state)
                with send:
                    await self._think(llm_context, handle, send, state)
        finally:
            message = handle._chat_message
            if message is not None and not message.content.strip() and message in agent.chat_context.items:
                agent.chat_context.items.remove(message)  # nothing was heard: nothing was said
            with trio.CancelScope(shield=True):
                await session.stop_thinking_audio()
            m: TurnMetrics = state["metrics"]
            voice = handle._voice
            state["metrics"] = attrs.evolve(
                m,
                agent_text=handle.spoken_text,
                interrupted=handle.interrupted,
                first_audio_at=voice.started_at if voice is not None else None,
            )
            session._emit_metrics(state["metrics"])
            if user_text is not None and flow is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(session.close_grace):
                    await flow.on_turn_end()

    async def _think(self, context: ChatContext, handle: UtteranceHandle, sentences: trio.MemorySendChannel[str], state: dict[str, Any]) -> None:
        """The LLM tool loop: stream text into sentences, run tools, feed results back."""
        agent = self.agent
        splitter = _SentenceSplitter()
        for step in range(self.max_tool_steps + 1):
            tools = agent.tools if step < self.max_tool_steps else []
            calls: list[ToolCall] = []
            state["metrics"] = attrs.evolve(state["metrics"], llm_started_at=state["metrics"].llm_started_at or trio.current_time())
            stream = self._flow.run_llm(self.llm, context, tools) if self._flow is not None else self.llm.chat(context, tools)
            async with aclosing(stream) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    if isinstance(chunk, TextDelta):
                        if state["metrics"].llm_first_token_at is None:
                            state["metrics"] = attrs.evolve(state["metrics"], llm_first_token_at=trio.current_time())
                        handle.text += chunk.text
                        if handle._chat_message is None:
                            handle._chat_message = agent.chat_context.add_message(role=ChatRole.ASSISTANT, content="")
                        handle._chat_message.content = handle.text.strip()
                        for sentence in splitter.push(chunk.text):
                            sentences.send_nowait(sentence)
                    elif isinstance(chunk, ToolCall):
                        calls.append(chunk)
            if not calls:
                break
            state["metrics"] = attrs.evolve(state["metrics"], tool_calls=state["metrics"].tool_calls + len(calls))
            handoff = None
            for i, call in enumerate(calls):
                arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
                call_id = call.call_id or f"{handle.id}_{step}_{i}"
                self._add_to_both(context, "call", name=call.name, arguments=arguments, call_id=call_id)
                tool = agent.tool(call.name)
                if tool is None:
                    output, is_error, value = f"error: there is no tool named {call.name!r}", True, None
                else:
                    result = await tool.call(arguments)
                    output, is_error, value = result.output, result.is_error, result.value
                from ..agent import Agent

                if isinstance(value, Agent):
                    handoff = value
                    output = f"transferred to {type(value).__name__}"
                self._add_to_both(context, "output", name=call.name, call_id=call_id, output=output, is_error=is_error)
            if handoff is not None:
                self.session._request_handoff(handoff)
                break
        for sentence in splitter.flush():
            sentences.send_nowait(sentence)

    def _add_to_both(self, context: ChatContext, kind: str, **fields: Any) -> None:
        """Tool items go into the LLM's context and, when that is a copy, the agent's too."""
        targets = [context] if context is self.agent.chat_context else [context, self.agent.chat_context]
        for ctx in targets:
            if kind == "call":
                ctx.add_function_call(**fields)
            else:
                ctx.add_function_output(**fields)

    async def _speak(self, sentences: trio.MemoryReceiveChannel[str], handle: UtteranceHandle, state: dict[str, Any] | None) -> None:
        """Synthesise sentences as they come and play them; return when played out."""
        session = self.session
        voice: MixerSource = session.mixer.add_source(self.tts.sample_rate, voice=True, name=handle.id)
        handle._voice = voice
        spoken = _Spoken()
        first = True
        try:
            async with sentences:
                async for sentence in sentences:
                    if state is not None and state["metrics"].tts_started_at is None:
                        state["metrics"] = attrs.evolve(state["metrics"], tts_started_at=trio.current_time())
                    duration = 0.0
                    async with aclosing(self.tts.synthesize(sentence)) as frames:  # type: ignore[type-var]
                        async for frame in frames:
                            if frame.sample_rate != self.tts.sample_rate:
                                raise ProviderError(
                                    f"{type(self.tts).__name__} said {self.tts.sample_rate} Hz but sent {frame.sample_rate} Hz",
                                    provider=type(self.tts).__name__,
                                )
                            if first:
                                first = False
                                if self._turn.speaking:
                                    handle.interrupt("user is speaking")  # never start over the user
                                    return
                                if state is not None:
                                    state["metrics"] = attrs.evolve(state["metrics"], tts_first_byte_at=trio.current_time())
                                session._stop_thinking_audio_nowait()  # fades out as the voice starts
                                session._emit_agent_state(AgentState.SPEAKING)
                                if session.user_state is UserState.IDLE:
                                    session._emit_user_state(UserState.LISTENING)
                                session.emit("on_speech_out", {"text": handle.text, "utterance_id": handle.id})
                            voice.push(frame)
                            duration += frame.duration
                    spoken.segments.append((sentence, duration))
            voice.end()
            await voice.wait_played_out()
            handle.started_at = voice.started_at
        finally:
            voice.stop()
            handle.started_at = voice.started_at
            if handle.interrupted:
                # What left the mixer, less what the listener never heard (still buffered in
                # the network or the phone when the output was cleared).
                handle.spoken_text = spoken.played_text(max(0.0, voice.played_duration - handle._unheard))
                message = handle._chat_message
                if message is not None:
                    message.content = handle.spoken_text
                    message.interrupted = True
            else:
                handle.spoken_text = " ".join(s for s, _ in spoken.segments)

