"""`CascadingPipeline`: VAD -> STT -> turn detection -> LLM (+ tools) -> TTS -> mixer.

How this works. `run()` owns three tasks:
- the input task reads the transport, resamples to the STT/VAD rate, runs the (sans-IO) VAD and
  feeds the STT;
- the STT task turns audio into transcript events;
- the controller takes VAD and transcript events in arrival order and owns the turn-taking
  timers (end of turn, barge-in, resume after a false interruption). Each timer is a deadline;
  the controller waits for the next event or the earliest deadline, whichever comes first. It
  tells the session what it heard through the `PipelineHost`; the session's speech scheduler
  decides what that does to the agent's speech.

The user's turn: every final transcript adds to it until its end-of-turn deadline passes. Speech
that starts over an interruptible utterance not heard yet holds it (its audio waits): words
(`min_interruption_words` counted over the whole ongoing turn) cut it and fold its question into
the new turn; no words, and it resumes `false_interruption_timeout` after the hold (never while
the user still speaks). Speech over an utterance being heard must last
`min_interruption_duration` (and bring the words) to be a barge-in. Speech over the agent that
takes no turn is a backchannel: it goes into the chat context, unanswered. Speech over an
utterance that cannot be interrupted is a turn like any other, answered after it.

Replies and says run in their utterance's cancel scope (the scheduler runs them). A reply streams
the LLM into a sentence splitter; a second task synthesises each sentence as soon as it is
complete and pushes its audio, so the first sentence plays while the LLM still writes. Text an
LLM step writes before calling tools is spoken while the tools run (`speak_before_tools`); each
step is its own chat message. Tools run in the reply's scope, so a barge-in cancels them too, and
a tool's `session.say()` is spoken in order inside the reply.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import numpy as np
import trio

from ..audio.frame import FRAME_DURATION, AudioFrame
from ..audio.resample import StreamResampler
from ..chat import ChatContext, ChatMessage, ChatRole
from ..errors import ProviderError, ProviderTimeout
from ..metrics import TurnMetrics
from ..providers.fallback import Switching
from ..providers.base import LLM, STT, TTS, VAD, TextDelta, ToolCall, TranscriptEvent, TurnDetector, Usage, VADEvent
from ..providers.turn import SilenceTurnDetector
from ..providers.vad import EnergyVAD
from ..scheduler import UserSpeechEffect, UtteranceState
from ..sentences import SentenceSplitter
from ..transports.base import DirectInput
from ..utterance import UserTurn, Utterance, UtteranceHandle
from ._tools import run_tool_calls

if TYPE_CHECKING:
    from .base import PipelineHost

__all__ = ["CascadingPipeline"]

_log = logging.getLogger("trioagent.pipeline")

# Input arrives a frame at a time: at the barge-in deadline the last frame may still be in
# flight, so speech that has lasted the minimum duration minus one frame counts as long enough.
_INPUT_SLACK = FRAME_DURATION
# Channel sizes, in items: chunks of audio for the STT (5 s of STT_CHUNK, below: as much as a
# peer may send ahead, back-pressure beyond), transcripts, and VAD + transcript events for
# the controller.
STT_QUEUE = 83
TRANSCRIPT_QUEUE = 100
EVENT_QUEUE = 1000
# A TTS that hands over audio faster than real time (a whole reply at once, as ToneTTS and the
# fast cloud voices do) yields to the other tasks after each slice of this much audio pushed:
# often enough that a reply of any length never holds the loop (0.1 s of voice is a few
# frames' work), seldom enough that a reply is not 50 task steps a second of voice, which is
# what a burst of turns that end together costs (NOTES.md, "Capacity ... third part").
PUSH_SLICE = 0.1
# The STT hears the input in chunks of at least this much audio (three 20 ms frames), not a
# frame at a time: a third of the STT's task steps, and a third of the messages a streaming
# STT sends over its network (LiveKit's Deepgram plugin sends 50 ms). A chunk goes early
# whenever the VAD reports a start or an end and when the input ends, so no turn waits on it;
# words heard mid-speech come at most 40 ms later.
STT_CHUNK = 0.06


def _joined(frames: list[AudioFrame]) -> AudioFrame:
    """The frames as one (mono, same rate, back to back), timed as the first."""
    first = frames[0]
    if len(frames) == 1:
        return first
    return AudioFrame._trusted(np.concatenate([f.samples for f in frames]), first.sample_rate, 1, first.timestamp)


@attrs.define(eq=False)
class _Ears:
    """The pipeline's input side: each frame of user audio to the VAD (its events to the
    controller) and, in chunks of `STT_CHUNK`, to the STT.

    A frame is heard by `hear`, which never waits: what cannot be handed on at once (the STT or
    the controller is behind) is owed and paid by `listen`'s task, which waits for it. With a
    `DirectInput` transport, frames are heard in the transport's reader task (`_hook`), one
    task switch less per frame; the hook refuses a frame (the transport queues it on
    `audio_in`, for `listen`) while anything is owed, while `listen` is busy with a frame of
    its own, and after a failure, which `listen` then raises in the pipeline's task.
    """

    pipeline: CascadingPipeline
    stt_send: trio.MemorySendChannel[AudioFrame]
    event_send: trio.MemorySendChannel[VADEvent | TranscriptEvent]
    _rate: int = attrs.field(init=False)
    _to_stt: StreamResampler = attrs.field(init=False)
    _to_vad: StreamResampler = attrs.field(init=False)
    _resample: bool = attrs.field(init=False)  # the STT or the VAD runs at another rate than the input
    _host: PipelineHost = attrs.field(init=False)
    _chunk_size: int = attrs.field(init=False)  # samples (at the STT's rate) in a chunk
    _chunk: list[AudioFrame] = attrs.field(init=False, factory=list)  # for the STT: up to STT_CHUNK, or a VAD event
    _chunk_samples: int = attrs.field(init=False, default=0)
    _owed_events: list[VADEvent] = attrs.field(init=False, factory=list)
    _owed_stt: AudioFrame | None = attrs.field(init=False, default=None)
    _heard: AudioFrame | None = attrs.field(init=False, default=None)  # heard by the hook, then refused: `listen` skips it
    _failure: Exception | None = attrs.field(init=False, default=None)  # raised by `hear` in the hook: `listen` raises it
    _busy: bool = attrs.field(init=False, default=False)  # `listen` is between taking a frame and being done with it

    def __attrs_post_init__(self) -> None:
        pipeline = self.pipeline
        assert pipeline.vad is not None
        self._rate = pipeline.host.transport.input_sample_rate
        stt_rate = pipeline.stt.sample_rate
        self._to_stt = StreamResampler(self._rate, stt_rate)
        self._to_vad = self._to_stt if pipeline.vad.sample_rate == stt_rate else StreamResampler(self._rate, pipeline.vad.sample_rate)
        self._resample = not (stt_rate == pipeline.vad.sample_rate == self._rate)
        self._host = pipeline.host  # (attached for the pipeline's run, which these ears are part of)
        self._chunk_size = round(STT_CHUNK * stt_rate)

    async def listen(self) -> None:
        """Until the input ends. Raises what hearing a frame raised, and `ProviderTimeout`
        for an STT that takes no audio for `stt_stall_timeout`."""
        transport = self.pipeline.host.transport
        direct: DirectInput | None = transport if isinstance(transport, DirectInput) else None
        if direct is not None:
            direct.input_hook = self._hook
        try:
            async for frame in transport.audio_in:
                self._busy = True
                if frame is self._heard:
                    self._heard = None
                else:
                    await self._pay()  # (owed before this frame: nothing when the hook refused it)
                    self.hear(frame)
                if self._failure is not None:
                    failure, self._failure = self._failure, None
                    raise failure
                await self._pay()
                self._busy = False
        finally:
            if direct is not None:
                direct.input_hook = None
        await self._pay()
        if self._chunk:
            self._owed_stt = _joined(self._chunk)
            self._chunk.clear()
            await self._pay()

    def _hook(self, frame: AudioFrame) -> bool:
        if self._busy or self._owed_events or self._owed_stt is not None or self._failure is not None:
            return False
        try:
            self.hear(frame)
        except Exception as exc:  # raised by `listen`, in the pipeline's task
            self._failure = exc
        if self._failure is None and not self._owed_events and self._owed_stt is None:
            return True
        self._heard = frame
        return False

    def hear(self, frame: AudioFrame) -> None:
        """The VAD hears `frame` and its events go to the controller; it joins the STT's chunk,
        which goes when full or at a VAD event. Not a checkpoint: what cannot go now is owed."""
        if frame.sample_rate != self._rate:
            _log.error("dropped a %d Hz input frame: the transport said %d Hz", frame.sample_rate, self._rate)
            return
        if (tap := self._host.speech_in) is not None:
            tap(frame)
        if frame.channels != 1:
            frame = frame.to_mono()
        if self._resample:
            stt_frame = self._to_stt.process(frame)
            vad_frame = stt_frame if self._to_vad is self._to_stt else self._to_vad.process(frame)
        else:
            stt_frame = vad_frame = frame  # (the usual case: one rate; a frame at 16 kHz, say)
        # VAD events first: the controller must see "speech started" before any transcript the
        # STT makes from the same audio.
        vad = self.pipeline.vad
        assert vad is not None
        events = vad.process(vad_frame)
        for event in events:
            if self._owed_events:
                self._owed_events.append(event)
                continue
            try:
                self.event_send.send_nowait(event)
            except trio.WouldBlock:
                self._owed_events.append(event)
        self._chunk.append(stt_frame)
        self._chunk_samples += stt_frame.samples.shape[0]
        if self._chunk_samples >= self._chunk_size or events:
            chunk = _joined(self._chunk)
            self._chunk.clear()
            self._chunk_samples = 0
            try:
                self.stt_send.send_nowait(chunk)  # the common case: no task switch
            except trio.WouldBlock:
                self._owed_stt = chunk

    async def _pay(self) -> None:
        """Hand on what `hear` could not: wait for the controller and the STT."""
        while self._owed_events:
            await self.event_send.send(self._owed_events.pop(0))
        if (chunk := self._owed_stt) is not None:
            # The STT is 5 s behind: back-pressure, but an STT that takes nothing for
            # `stt_stall_timeout` more is hung, and the session ends (1011 on a server).
            pipeline = self.pipeline
            with trio.move_on_after(pipeline.stt_stall_timeout) as waited:
                await self.stt_send.send(chunk)
            if waited.cancelled_caught:
                name = type(pipeline.stt).__name__
                raise ProviderTimeout(f"{name} took no audio for {pipeline.stt_stall_timeout:g} s", provider=name, stage="stt")
            self._owed_stt = None


@attrs.define(eq=False)
class _TurnState:
    """The controller's view of the user's ongoing turn (from its first word to its end)."""

    speaking: bool = False
    start: float | None = None  # the turn's first speech
    segment_start: float | None = None
    speech_end: float | None = None
    finals: list[str] = attrs.field(factory=list)
    interim: str = ""
    stt_final_at: float | None = None
    carried: UserTurn | None = None  # a turn whose answer was cut before it was heard
    transcript_this_segment: bool = False
    over_agent: bool = False  # some of it was spoken over an interruptible utterance
    long_enough: bool = False  # a segment of it over the agent lasted min_interruption_duration
    barged_in: bool = False

    def new_text(self) -> str:
        return " ".join(self.finals).strip()

    def text(self) -> str:
        return " ".join(t for t in (self.carried.text if self.carried else "", self.new_text()) if t)

    def words(self) -> int:
        """Words of the ongoing turn so far (finals and the latest interim)."""
        return len((self.new_text() + " " + self.interim).split())


@attrs.frozen
class _Piece:
    """A sentence to speak (of `message`), or the end of a tool's say (`child`)."""

    text: str
    message: ChatMessage | None = None
    child: UtteranceHandle | None = None


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
        speak_before_tools: speak the text an LLM step writes before its tool calls while the
            tools run (True), or after they have finished (False).
        llm_timeout: seconds the LLM may take to its first chunk, and between chunks, before the
            reply fails with `ProviderTimeout` (None: no bound).
        tts_timeout: the same for the TTS, for each sentence.
        stt_stall_timeout: an STT that takes no audio for this long, with 5 s of audio waiting,
            ends the session (`ProviderTimeout`).
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
    speak_before_tools: bool = True
    llm_timeout: float | None = 15.0
    tts_timeout: float | None = 10.0
    stt_stall_timeout: float = 5.0
    _host: PipelineHost | None = attrs.field(init=False, default=None)
    _turn: _TurnState = attrs.field(init=False, factory=_TurnState)
    _eou_deadline: float = attrs.field(init=False, default=math.inf)
    _barge_deadline: float = attrs.field(init=False, default=math.inf)
    _resume_deadline: float = attrs.field(init=False, default=math.inf)
    _suspended_at: float | None = attrs.field(init=False, default=None)  # when we held or paused the agent
    _turn_count: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.vad is None:
            self.vad = EnergyVAD(sample_rate=self.stt.sample_rate)
        if self.turn_detector is None:
            self.turn_detector = SilenceTurnDetector()

    # -- wiring ------------------------------------------------------------------------------
    def get_component_configs(self) -> dict[str, dict[str, Any]]:
        """The seed's: each component's public settings by role ("stt", "llm", "tts", "vad",
        "eou"), with its class as "provider" and its "model" (None when it names none). Only
        plain values (text, numbers, flags); nothing named like a key, secret, token or
        password (these settings go to logs and traces)."""
        parts: dict[str, object] = {"stt": self.stt, "llm": self.llm, "tts": self.tts, "vad": self.vad, "eou": self.turn_detector}
        return {role: _settings(part) for role, part in parts.items() if part is not None}

    def attach(self, host: PipelineHost | None) -> None:
        self._host = host
        for provider in (self.stt, self.llm, self.tts):
            if isinstance(provider, Switching):  # (a fallback: its switches are session events)
                provider.on_switch = None if host is None else (lambda event, host=host: host.emit("provider_switched", event))

    @property
    def host(self) -> PipelineHost:
        if self._host is None:
            raise RuntimeError("the pipeline is not attached to a session")
        return self._host

    async def cleanup(self) -> None:
        # Words of a turn that never ended (the session closes first) are still what the user said.
        turn, self._turn = self._turn, _TurnState()
        if turn.text() and self._host is not None:
            self._host.keep_unanswered(self._user_turn(turn, None))
        await trio.lowlevel.checkpoint()

    # -- listening ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.vad is not None
        stt_send, stt_receive = trio.open_memory_channel[AudioFrame](STT_QUEUE)
        transcript_send, transcript_receive = trio.open_memory_channel[TranscriptEvent](TRANSCRIPT_QUEUE)
        event_send, event_receive = trio.open_memory_channel[VADEvent | TranscriptEvent](EVENT_QUEUE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.stt.run, stt_receive, transcript_send)
            nursery.start_soon(self._forward_transcripts, transcript_receive, event_send.clone())
            nursery.start_soon(self._control, event_receive)
            task_status.started()
            async with stt_send, event_send:
                await _Ears(self, stt_send, event_send).listen()

    async def _forward_transcripts(
        self,
        receive: trio.MemoryReceiveChannel[TranscriptEvent],
        send: trio.MemorySendChannel[VADEvent | TranscriptEvent],
    ) -> None:
        async with receive, send:
            async for event in receive:
                await send.send(event)

    async def _control(self, events: trio.MemoryReceiveChannel[VADEvent | TranscriptEvent]) -> None:
        async with events:
            while True:
                deadline = min(self._eou_deadline, self._barge_deadline, self._resume_deadline)
                event: VADEvent | TranscriptEvent | None = None
                with trio.move_on_at(deadline):
                    try:
                        event = await events.receive()
                    except trio.EndOfChannel:
                        if deadline == math.inf:
                            return  # input over and no turn pending
                        await trio.sleep_until(deadline)
                if isinstance(event, VADEvent):
                    self._on_vad(event)
                elif isinstance(event, TranscriptEvent):
                    self._on_transcript(event)
                else:
                    self._on_timers(trio.current_time())

    # -- turn taking (the controller's handlers; none of them awaits) ------------------------
    def _on_vad(self, event: VADEvent) -> None:
        host = self.host
        turn = self._turn
        if event.kind == "start":
            if not (turn.text() or turn.interim):
                # Speech that brought no words (a cough, noise) ends no turn and starts none:
                # this speech begins the turn afresh (its times, its barge-in judgement).
                turn = self._turn = _TurnState()
            turn.speaking = True
            turn.start = turn.start if turn.start is not None else event.time
            turn.segment_start = event.time
            turn.speech_end = None
            turn.transcript_this_segment = False
            self._eou_deadline = math.inf
            effect = host.user_started_speaking(event.time)
            if effect is UserSpeechEffect.HELD:
                turn.over_agent = True
                self._suspend(event.time)
                if self.false_interruption_timeout is None:
                    self._confirm_barge_in()
            elif effect is UserSpeechEffect.AUDIBLE:
                turn.over_agent = True
                self._barge_deadline = event.time + self.min_interruption_duration
            return
        turn.speaking = False
        turn.speech_end = event.time
        self._barge_deadline = math.inf
        host.user_stopped_speaking(event.time)
        if host.speech_state is UtteranceState.HELD and self._suspended_at is None:
            self._suspend(event.time)  # it started while the user spoke and was held then
        if turn.over_agent and not turn.barged_in and turn.segment_start is not None:
            if event.time - turn.segment_start >= self.min_interruption_duration - _INPUT_SLACK:
                turn.long_enough = True
                self._try_barge_in()
        if self._suspended_at is not None and self._resume_deadline == math.inf:
            self._resume_deadline = trio.current_time()  # the hold outlasted its timeout: judge now
        self._schedule_end_of_turn()

    def _on_transcript(self, event: TranscriptEvent) -> None:
        turn = self._turn
        text = event.text.strip()
        if not text:
            return
        self.host.user_transcript(text, event.is_final)
        turn.transcript_this_segment = True
        if event.is_final:
            turn.finals.append(text)
            turn.interim = ""
            turn.stt_final_at = event.time
        else:
            turn.interim = text
        if self._suspended_at is not None:
            if self._enough_words():
                self._confirm_barge_in()  # words: the interruption was real
        elif turn.over_agent and turn.long_enough and not turn.barged_in:
            self._try_barge_in()  # long enough already; these may be the words it waited for
        if event.is_final and not turn.speaking:
            self._schedule_end_of_turn()

    def _enough_words(self) -> bool:
        return self._turn.words() >= max(1, self.min_interruption_words)

    def _schedule_end_of_turn(self) -> None:
        turn = self._turn
        if turn.speaking or turn.speech_end is None or not turn.text():
            return
        assert self.turn_detector is not None
        delay = self.turn_detector.endpointing_delay(turn.text(), self.host.agent.chat_context)
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
            if self._turn.speaking:
                pass  # never resume over the user: judged again when the speech ends
            else:
                self._resume("false interruption")
        if now >= self._eou_deadline:
            self._eou_deadline = math.inf
            self._end_of_turn(now)

    def _suspend(self, now: float) -> None:
        """The agent's speech is held or paused on our account: it resumes after the timeout."""
        self._suspended_at = now
        if self.false_interruption_timeout is not None:
            self._resume_deadline = now + self.false_interruption_timeout

    def _resume(self, why: str) -> None:
        if self._suspended_at is None:
            return
        self._suspended_at = None
        self._resume_deadline = math.inf
        if self.host.speech_state in (UtteranceState.HELD, UtteranceState.PAUSED):
            _log.info("%s: the agent's speech plays on", why)
            self.host.resume_speech()

    def _try_barge_in(self) -> None:
        turn = self._turn
        if self.host.speech_state is not UtteranceState.PLAYING:
            return
        if self.min_interruption_words and turn.words() < self.min_interruption_words:
            return  # checked again as transcripts arrive
        turn.barged_in = True
        if turn.transcript_this_segment or self.false_interruption_timeout is None:
            self._confirm_barge_in()
        elif self.host.pause_speech():
            self._suspend(trio.current_time())

    def _confirm_barge_in(self) -> None:
        """Cut the agent's speech; an answer nobody heard goes back into the user's turn."""
        turn = self._turn
        turn.barged_in = True
        self._suspended_at = None
        self._resume_deadline = math.inf
        unheard = self.host.interrupt_speech("barge-in")
        if unheard is not None:
            turn.carried = unheard if turn.carried is None else turn.carried.merge(unheard)

    def _end_of_turn(self, now: float) -> None:
        host = self.host
        turn = self._turn
        text = turn.text()
        if not text or host.closing:
            return
        self._turn = _TurnState()
        if turn.over_agent and not turn.barged_in and host.speech_interruptible:
            # Spoken over the agent, who is still at it, and not an interruption: a backchannel
            # ("mm-hmm", "right"). Into the context, unanswered; the agent plays on.
            host.keep_unanswered(self._user_turn(turn, now))
            self._resume("backchannel")
            return
        self._resume("end of turn")  # (a hold of something that is not interruptible: none)
        host.user_turn(self._user_turn(turn, now))

    def _user_turn(self, turn: _TurnState, now: float | None) -> UserTurn:
        self._turn_count += 1
        metrics = TurnMetrics(
            turn_id=f"turn_{self._turn_count}",
            user_text=turn.text(),
            user_speech_start=turn.start,
            user_speech_end=turn.speech_end,
            stt_final_at=turn.stt_final_at,
            end_of_turn_at=now,
        )
        new = UserTurn(turn.new_text(), metrics)
        return new if turn.carried is None else turn.carried.merge(new)

    # -- speaking ----------------------------------------------------------------------------
    async def say(self, utterance: Utterance) -> None:
        send, receive = trio.open_memory_channel[_Piece](math.inf)
        message = utterance.begin_message() if utterance.add_to_chat_context else None
        if message is not None:
            message.content = utterance.text
        splitter = SentenceSplitter()
        with send:
            for sentence in splitter.push(utterance.text) + splitter.flush():
                send.send_nowait(_Piece(sentence, message))
        await self._speak(receive, utterance)

    async def reply(self, utterance: Utterance) -> None:
        host = self.host
        flow = host.conversation_flow
        turn = utterance.user_turn
        if turn is not None:
            text: str | None = turn.text
            if flow is not None:
                text = await flow.process_transcript(turn.text)
            if text is None:
                if turn.message is not None and turn.message in host.agent.chat_context.items:
                    host.agent.chat_context.items.remove(turn.message)
                return
            utterance.commit_user_text(text)
            if flow is not None:
                await flow.on_turn_start(text)
        send, receive = trio.open_memory_channel[_Piece](math.inf)
        inline_messages: list[ChatMessage] = []

        def say_inline(text: str, child: UtteranceHandle, keep: bool) -> None:
            # A tool's say(): after what the reply has queued so far; its message goes into the
            # context after the step's tool outputs (a message between a call and its output
            # is not a valid chat history).
            message = utterance.begin_message(in_context=False) if keep else None
            if message is not None:
                message.content = text
                inline_messages.append(message)
            splitter = SentenceSplitter()
            for sentence in splitter.push(text) + splitter.flush():
                send.send_nowait(_Piece(sentence, message))
            send.send_nowait(_Piece("", child=child))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._speak, receive, utterance)
            with send:
                utterance.set_inline(say_inline)
                try:
                    await self._think(utterance, send, inline_messages)
                finally:
                    utterance.set_inline(None)

    def _llm_view(self, utterance: Utterance) -> ChatContext:
        """The context for one LLM call: the agent's, plus the reply's instructions (for this
        call only, never stored)."""
        context = self.host.agent.chat_context
        if not utterance.instructions:
            return context
        view = context.copy()
        view.add_message(role=ChatRole.SYSTEM, content=utterance.instructions)
        return view

    async def _think(self, utterance: Utterance, sentences: trio.MemorySendChannel[_Piece], inline_messages: list[ChatMessage]) -> None:
        """The LLM tool loop: stream each step's text into sentences, run its tools, go on."""
        host = self.host
        agent = host.agent
        flow = host.conversation_flow
        handle = utterance.handle
        for step in range(self.max_tool_steps + 1):
            tools = agent.tools if step < self.max_tool_steps else []
            context = self._llm_view(utterance)
            splitter = SentenceSplitter()
            message: ChatMessage | None = None
            held: list[_Piece] = []  # speak_before_tools=False: this step's text, until its tools are done
            calls: list[ToolCall] = []
            if utterance.metrics.llm_started_at is None:
                utterance.note(llm_started_at=trio.current_time())
            stream = _bounded(
                flow.run_llm(self.llm, context, tools) if flow is not None else self.llm.chat(context, tools),
                self.llm_timeout,
                "llm",
                type(self.llm).__name__,
            )

            def speak(pieces: list[_Piece]) -> None:
                for piece in pieces:
                    (sentences.send_nowait if self.speak_before_tools else held.append)(piece)

            async with stream as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, TextDelta):
                        if utterance.metrics.llm_first_token_at is None:
                            utterance.note(llm_first_token_at=trio.current_time())
                        if message is None:
                            message = utterance.begin_message()
                            if handle.text:
                                handle.text += " "
                        message.content += chunk.text
                        handle.text += chunk.text
                        speak([_Piece(s, message) for s in splitter.push(chunk.text)])
                    elif isinstance(chunk, ToolCall):
                        calls.append(chunk)
                    elif isinstance(chunk, Usage):
                        utterance.note(
                            prompt_tokens=(utterance.metrics.prompt_tokens or 0) + chunk.prompt_tokens,
                            completion_tokens=(utterance.metrics.completion_tokens or 0) + chunk.completion_tokens,
                        )
            utterance.note(llm_ended_at=trio.current_time())
            # The end of a step ends its last sentence: never glued to the next step's text.
            speak([_Piece(s, message) for s in splitter.flush()])
            if message is not None:
                message.content = message.content.strip()
            if not calls:
                for piece in held:
                    sentences.send_nowait(piece)
                break
            handoff = await self._run_tools(utterance, calls, step, inline_messages)
            for piece in held:
                sentences.send_nowait(piece)
            if handoff is not None:
                host.hand_over(handoff)
                break

    async def _run_tools(self, utterance: Utterance, calls: list[ToolCall], step: int, inline_messages: list[ChatMessage]) -> Any:
        """Run one step's tool calls in order; returns an agent to hand over to, if one was returned."""
        handoff, _ = await run_tool_calls(self.host, utterance, calls, step, inline_messages)
        return handoff

    async def _speak(self, pieces: trio.MemoryReceiveChannel[_Piece], utterance: Utterance) -> None:
        """Synthesise sentences as they come and play them; return when played out."""
        utterance.open_voice(self.tts.sample_rate)
        audio = 0.0
        unyielded = 0.0  # seconds of audio pushed since the last checkpoint
        async with pieces:
            async for piece in pieces:
                if piece.child is not None:
                    utterance.when_heard(utterance.audio_position, piece.child)
                    continue
                if utterance.metrics.tts_started_at is None:
                    utterance.note(tts_started_at=trio.current_time())
                duration = 0.0
                async with _bounded(self.tts.synthesize(piece.text), self.tts_timeout, "tts", type(self.tts).__name__) as frames:
                    async for frame in frames:
                        if utterance.metrics.tts_first_byte_at is None:
                            utterance.note(tts_first_byte_at=trio.current_time())
                        utterance.push_audio(frame)
                        seconds = frame.duration
                        duration += seconds
                        unyielded += seconds
                        if unyielded >= PUSH_SLICE:  # (see PUSH_SLICE)
                            unyielded = 0.0
                            await trio.lowlevel.checkpoint()
                utterance.spoken(piece.text, duration, piece.message)
                audio += duration
                utterance.note(tts_audio_seconds=audio)
        utterance.end_audio()
        await utterance.wait_played_out()




T = TypeVar("T")


class _bounded(Generic[T]):  # noqa: N801 - used as a function
    """`stream`, where each item must come within `timeout` seconds, and any failure of the
    provider is a `ProviderError` naming its `stage`. Used as
    `async with _bounded(...) as items: async for item in items: ...`; leaving the block
    closes the provider's stream.

    One cancel scope covers the whole stream and its deadline is moved on at each item (a
    scope per item cost a third of a TTS frame's way to the mixer: a reply of 50 frames
    entered and left 50 scopes). The deadline is moved only once the clock has gone on by
    1% of `timeout` since it was last set, so an item may be given up on up to 1% early; the
    loop's body runs under the same deadline, so it must not wait long (the pipeline's
    bodies push a frame or queue a sentence).

    Raises:
        ProviderTimeout: an item took longer.
        ProviderError: the provider raised (its own error, tagged; anything else, wrapped).
    """

    def __init__(self, stream: AsyncIterator[T], timeout: float | None, stage: str, provider: str) -> None:
        self._iterator = aiter(stream)
        self._timeout = timeout
        self._stage = stage
        self._provider = provider
        self._scope = trio.CancelScope()
        self._armed = -math.inf
        self._slack = 0.01 * timeout if timeout is not None else math.inf

    async def __aenter__(self) -> _bounded[T]:
        if self._timeout is not None:
            self._scope.__enter__()
        return self

    async def __aexit__(self, etype: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        timed_out = False
        try:
            if self._timeout is not None:
                self._scope.__exit__(etype, exc, tb)
                timed_out = self._scope.cancelled_caught  # (its own deadline: nothing else cancels it)
        finally:
            await self.aclose()
        if timed_out:
            raise ProviderTimeout(f"{self._provider} gave nothing for {self._timeout:g} s", provider=self._provider, stage=self._stage) from None
        return False

    def __aiter__(self) -> _bounded[T]:
        return self

    async def __anext__(self) -> T:
        if self._timeout is not None:
            now = trio.current_time()
            if now - self._armed > self._slack:
                self._scope.deadline = now + self._timeout
                self._armed = now
        try:
            return await anext(self._iterator)
        except StopAsyncIteration:
            raise
        except ProviderError as exc:
            exc.stage = exc.stage or self._stage
            raise
        except Exception as exc:
            raise ProviderError(f"{self._provider} failed: {type(exc).__name__}", provider=self._provider, stage=self._stage) from exc

    async def aclose(self) -> None:
        """Release the provider's stream (an async generator, as providers write them, has
        aclose(): its connection goes)."""
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            await trio.lowlevel.checkpoint()


_SECRET_WORDS = ("key", "secret", "token", "password")


def _settings(part: object) -> dict[str, Any]:
    """A component's public plain-valued settings (see `get_component_configs`)."""
    cls = type(part)
    if attrs.has(cls):
        fields = {f.name: getattr(part, f.name) for f in attrs.fields(cls)}
    else:
        fields = dict(getattr(part, "__dict__", {}))  # (a plain class: its instance attributes)
    out: dict[str, Any] = {"provider": type(part).__name__, "model": None}
    for name, value in fields.items():
        if name.startswith("_") or any(word in name.lower() for word in _SECRET_WORDS):
            continue
        if value is None or isinstance(value, str | int | float | bool):
            out[name] = value
    return out
