"""`RealTimePipeline`: a speech-to-speech model over the OpenAI Realtime protocol.

How this works. `run()` opens the model's WebSocket and owns two tasks: the input pump (the
transport's audio, resampled to 24 kHz, appended frame by frame) and the reader (server events,
parsed by `_proto.openai_realtime`). The server detects the user's turns (`server_vad` or
`semantic_vad`) but is told not to answer or interrupt on its own: its `speech_started`,
`speech_stopped` and `committed` go to the session through the `PipelineHost`, like the
cascading pipeline's VAD and turn detector, so the session's speech queue decides who speaks
when (a turn over a non-interruptible utterance waits its turn; a barge-in cuts only what may
be cut).

A reply or a say is one `response.create` (with instructions to say the text, for a say), run
by the scheduler inside the utterance's cancel scope. The reader routes the events of the one
response in flight to it; its audio goes into the utterance's voice in the session mixer (so
fades, ducking, playout tracking work unchanged). A function call runs the agent's tool in the
utterance's scope, then the output goes back and a new response is asked for. When the
utterance is cut (a barge-in, `interrupt()`), the response is cancelled and its audio item
truncated at the milliseconds the caller heard, so the model remembers what was heard; events
of a cancelled response that are still on their way are dropped.

An `error` event the server sends, a message that breaks the protocol or a dropped socket end
the session (`session.failure`, 1011 on a server); `close()` closes the socket with 1000.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import attrs
import trio
import trio_websocket

from .._proto import openai_realtime as rt
from ..audio.frame import AudioFrame
from ..audio.resample import StreamResampler
from ..chat import ChatMessage, ChatRole
from ..errors import ProtocolError, ProviderError, ProviderTimeout
from ..events import UserTurnEnded
from ..metrics import TurnMetrics
from ..providers.base import VAD, ToolCall
from ..providers.openai_realtime import OpenAIRealtime
from ..providers.vad import EnergyVAD
from ..scheduler import UserSpeechEffect
from ..utterance import UserTurn, Utterance
from ._tools import run_tool_calls

if TYPE_CHECKING:
    from .base import PipelineHost

__all__ = ["RealTimePipeline"]

_log = logging.getLogger("trioagent.realtime")
_PROVIDER = "OpenAIRealtime"
_SEND_GRACE = 1.0  # seconds a cancel or truncate may take to send, from a cancelled reply
_LAST_WORDS = 2.0  # seconds to wait, once the input has ended, for the server to end a turn


@attrs.define(eq=False)
class _Response:
    """One `response.create` in flight: the events the reader routes to the reply that asked."""

    send: trio.MemorySendChannel[rt.ServerEvent]
    id: str | None = None


@attrs.define(eq=False)
class _Voice:
    """What one reply has pushed into its utterance's voice (over all its responses)."""

    opened: bool = False
    item_id: str | None = None
    content_index: int = 0
    item_start: float = 0.0  # the utterance's audio position where the item's audio began
    item_audio: float = 0.0
    unfinished: str | None = None  # a response cut before its end ("" before its id came)


@attrs.define(eq=False)
class RealTimePipeline:
    """Listen, think and speak with one speech-to-speech model (see the module docstring).

    Args:
        model: the model and its server (`OpenAIRealtime`).
        vad: with the model's `turn_detection=None`, the session's own VAD decides the turns
            (default `EnergyVAD`): the pipeline commits the input `endpointing` seconds after
            the speech ends, and the server only answers.
        endpointing: see `vad`.
        allow_interruptions: whether user speech can interrupt the agent.
        max_tool_steps: responses that may call tools before the model must answer.
        response_timeout: seconds to wait for a response's next event before the reply fails
            with `ProviderTimeout` (None: no bound).
    """

    model: OpenAIRealtime = attrs.field(factory=OpenAIRealtime)
    vad: VAD | None = None
    endpointing: float = 0.5
    allow_interruptions: bool = True
    max_tool_steps: int = 3
    response_timeout: float | None = 15.0
    _host: PipelineHost | None = attrs.field(init=False, default=None)
    _ws: trio_websocket.WebSocketConnection | None = attrs.field(init=False, default=None)
    _active: _Response | None = attrs.field(init=False, default=None)
    _dropped: set[str] = attrs.field(init=False, factory=set)  # ids of responses cancelled
    _origin: float | None = attrs.field(init=False, default=None)  # session time of input audio 0 ms
    _speaking: bool = attrs.field(init=False, default=False)
    _spoke: trio.Event = attrs.field(init=False, factory=trio.Event)  # set when the user stops speaking
    _turn_start: float | None = attrs.field(init=False, default=None)
    _speech_end: float | None = attrs.field(init=False, default=None)
    _carried: UserTurn | None = attrs.field(init=False, default=None)
    _turns: dict[str, UserTurn] = attrs.field(init=False, factory=dict)  # committed, not transcribed yet
    _replying: Utterance | None = attrs.field(init=False, default=None)
    _answered: set[UserTurn] = attrs.field(init=False, factory=set)  # replied to before their transcript came
    _declared: Any = attrs.field(init=False, default=None)
    _unknown: set[str] = attrs.field(init=False, factory=set)
    _closing: bool = attrs.field(init=False, default=False)
    _commit_at: float = attrs.field(init=False, default=math.inf)  # (own VAD) when to commit the turn
    _committed: trio.Event = attrs.field(init=False, factory=trio.Event)  # set at each `committed`

    def __attrs_post_init__(self) -> None:
        if self.model.turn_detection is None and self.vad is None:
            self.vad = EnergyVAD()

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, host: PipelineHost | None) -> None:
        self._host = host

    @property
    def host(self) -> PipelineHost:
        if self._host is None:
            raise RuntimeError("the pipeline is not attached to a session")
        return self._host

    async def cleanup(self) -> None:
        """Close the socket with 1000 (bounded by the session's close grace)."""
        await self._close_socket("session closed")

    async def _close_socket(self, reason: str) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None and ws.closed is None:
            with trio.move_on_after(self.host.close_grace if self._host is not None else 2.0):
                await ws.aclose(1000, reason)
        await trio.lowlevel.checkpoint()

    # -- the connection ---------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            try:
                self._ws = await self.model.connect(nursery)
            except (OSError, trio.TooSlowError, trio_websocket.HandshakeError) as exc:
                raise ProviderError(
                    f"cannot open the Realtime connection to {self.model.base_url}: {type(exc).__name__} {exc}".strip(),
                    provider=_PROVIDER,
                    stage="llm",
                ) from None
            await self._declare(force=True)
            nursery.start_soon(self._read_events)
            task_status.started()
            await self._pump_input()
            # The input is over: what the user said last is still to be answered.
            if self._speaking or self._commit_at != math.inf:
                self._commit_at = math.inf
                self._committed = trio.Event()
                await self._send(rt.audio_commit())
                with trio.move_on_after(_LAST_WORDS):
                    await self._committed.wait()
            await self.host.wait_idle()
            await self._close_socket("input ended")  # (while the connection's reader still runs)
            nursery.cancel_scope.cancel(reason="input ended")

    async def _send(self, event: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            raise RuntimeError("the Realtime connection is not open")
        try:
            await ws.send_message(rt.encode(event))
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed_error(exc) from None

    def _closed_error(self, exc: trio_websocket.ConnectionClosed) -> ProviderError:
        reason = exc.reason
        what = f"{reason.code} {reason.reason or ''}".strip() if reason is not None else "no close frame"
        return ProviderError(f"the Realtime server closed the connection ({what})", provider=_PROVIDER, stage="llm")

    async def _pump_input(self) -> None:
        transport = self.host.transport
        rate = transport.input_sample_rate
        to_model = StreamResampler(rate, rt.RATE)
        own_vad = self.vad is not None and self.model.turn_detection is None
        to_vad = StreamResampler(rate, self.vad.sample_rate) if own_vad and self.vad is not None else None
        async for frame in transport.audio_in:
            if frame.sample_rate != rate:
                _log.error("dropped a %d Hz input frame: the transport said %d Hz", frame.sample_rate, rate)
                continue
            if self._origin is None:
                self._origin = frame.timestamp
            if (tap := self.host.speech_in) is not None:
                tap(frame)
            frame = frame.to_mono()
            out = to_model.process(frame)
            try:
                if len(out.samples):
                    await self._send(rt.audio_append(out.to_pcm16()))
                if to_vad is not None:
                    await self._own_turns(to_vad.process(frame))
            except ProviderError:
                await trio.sleep_forever()  # the socket is gone: the reader says so, once

    async def _own_turns(self, frame: AudioFrame) -> None:
        """Turn taking by the session's VAD: speech starts and stops here, and the input is
        committed once it has been quiet for `endpointing` (the server answers `committed`)."""
        assert self.vad is not None
        for event in self.vad.process(frame):
            if event.kind == "start":
                self._commit_at = math.inf
                self._user_started(event.time)
            else:
                self._user_stopped(event.time)
                self._commit_at = event.time + self.endpointing
        if frame.end_time >= self._commit_at:
            self._commit_at = math.inf
            await self._send(rt.audio_commit())

    async def _read_events(self) -> None:
        ws = self._ws
        assert ws is not None
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if self._closing:
                    return
                raise self._closed_error(exc) from None
            try:
                event = rt.parse_server(message)
            except ProtocolError as exc:
                raise ProviderError(f"the Realtime server broke the protocol: {exc}", provider=_PROVIDER, stage="llm") from None
            self._dispatch(event)

    # -- server events (none of the handlers awaits) --------------------------------------------
    def _time(self, ms: int) -> float:
        return (self._origin if self._origin is not None else 0.0) + ms / 1000

    def _dispatch(self, event: rt.ServerEvent) -> None:
        host = self.host
        if isinstance(event, rt.SpeechStarted):
            self._user_started(self._time(event.audio_start_ms))
        elif isinstance(event, rt.SpeechStopped):
            self._user_stopped(self._time(event.audio_end_ms))
        elif isinstance(event, rt.Committed):
            metrics = TurnMetrics(
                turn_id=event.item_id,
                user_speech_start=self._turn_start,
                user_speech_end=self._speech_end,
                end_of_turn_at=trio.current_time(),
            )
            turn = UserTurn("", metrics)
            if self._carried is not None:
                turn, self._carried = self._carried.merge(turn), None
            self._turns[event.item_id] = turn
            host.user_turn(turn)
            self._committed.set()
        elif isinstance(event, rt.InputTranscript):
            host.user_transcript(event.transcript, True)
            pending = self._turns.pop(event.item_id, None)
            if pending is not None:
                pending.text = f"{pending.text} {event.transcript.strip()}".strip()
                pending.metrics = attrs.evolve(pending.metrics, user_text=pending.text, stt_final_at=trio.current_time())
                metrics = pending.metrics
                host.emit("user_turn_ended", UserTurnEnded(pending.text, metrics.user_speech_start, metrics.user_speech_end))
                replying = self._replying
                if replying is not None and replying.user_turn is pending:
                    replying.commit_user_text(pending.text)  # (before the answer: that goes in when heard)
                    replying.note(user_text=pending.text, stt_final_at=trio.current_time())
                elif pending in self._answered:
                    self._answered.discard(pending)
                    host.agent.chat_context.add_message(role=ChatRole.USER, content=pending.text)  # (late: after its answer)
        elif isinstance(event, rt.ResponseCreated | rt.AudioDelta | rt.TranscriptDelta | rt.FunctionCallDone | rt.ResponseDone):
            self._route(event)
        elif isinstance(event, rt.Error):
            if event.benign:
                _log.debug("Realtime server: %s (%s)", event.message, event.code)
                return
            raise ProviderError(f"the Realtime server reported an error: {event.type} {event.code}: {event.message}", provider=_PROVIDER, stage="llm")
        elif event.type not in self._unknown:
            self._unknown.add(event.type)
            _log.debug("Realtime server event %r ignored", event.type)

    def _user_started(self, time: float) -> None:
        host = self.host
        self._speaking = True
        self._spoke = trio.Event()
        self._turn_start = time
        effect = host.user_started_speaking(time)
        if effect is not UserSpeechEffect.NONE and self.allow_interruptions:
            carried = host.interrupt_speech("barge-in")
            if carried is not None:
                self._carried = carried if self._carried is None else self._carried.merge(carried)

    def _user_stopped(self, time: float) -> None:
        self._speaking = False
        self._speech_end = time
        self.host.user_stopped_speaking(time)
        self._spoke.set()

    def _route(self, event: rt.ResponseCreated | rt.AudioDelta | rt.TranscriptDelta | rt.FunctionCallDone | rt.ResponseDone) -> None:
        if event.response_id in self._dropped:
            if isinstance(event, rt.ResponseDone):
                self._dropped.discard(event.response_id)
            return
        active = self._active
        if active is not None and active.id is None and isinstance(event, rt.ResponseCreated):
            active.id = event.response_id
        if active is None or active.id != event.response_id:
            _log.debug("dropped %s of response %s: not the one in flight", type(event).__name__, event.response_id)
            return
        active.send.send_nowait(event)

    # -- answering ---------------------------------------------------------------------------
    async def say(self, utterance: Utterance) -> None:
        instructions = f"Say exactly this, word for word, and nothing else: {utterance.text}"
        await self._respond(utterance, instructions=instructions, out_of_band=not utterance.add_to_chat_context)

    async def reply(self, utterance: Utterance) -> None:
        await self._respond(utterance, instructions=utterance.instructions, out_of_band=False)

    async def _respond(self, utterance: Utterance, *, instructions: str | None, out_of_band: bool) -> None:
        await self._declare()
        turn = utterance.user_turn
        if turn is not None and turn.text:
            utterance.commit_user_text(turn.text)
            utterance.note(user_text=turn.text, stt_final_at=turn.metrics.stt_final_at)
        self._replying = utterance
        voice = _Voice()
        inline: list[ChatMessage] = []
        finished = False
        try:
            for step in range(self.max_tool_steps + 1):
                calls = await self._one_response(utterance, voice, rt.response_create(instructions=instructions, out_of_band=out_of_band))
                if not calls:
                    break
                tool_calls = [ToolCall(c.name, c.arguments, c.call_id) for c in calls]
                handoff, outputs = await run_tool_calls(self.host, utterance, tool_calls, step, inline)
                for output in outputs:
                    await self._send(rt.function_call_output(output.call_id, output.output))
                if handoff is not None:
                    self.host.hand_over(handoff)
                    break
                instructions = None
            utterance.end_audio()
            await utterance.wait_played_out()
            finished = True
        finally:
            self._replying = None
            if turn is not None and turn.message is None:
                self._answered.add(turn)  # its transcript has not come yet
            if not finished:
                await self._cut(voice, utterance)

    async def _one_response(self, utterance: Utterance, voice: _Voice, create: dict[str, Any]) -> list[rt.FunctionCallDone]:
        """Ask for one response and play it into `utterance`; returns its function calls."""
        send, receive = trio.open_memory_channel[rt.ServerEvent](math.inf)
        response = self._active = _Response(send)
        text = ""
        audio = 0.0
        message: ChatMessage | None = None
        calls: list[rt.FunctionCallDone] = []
        done = False
        try:
            utterance.note(llm_started_at=utterance.metrics.llm_started_at or trio.current_time())
            await self._send(create)
            with receive:
                while not done:
                    with trio.move_on_after(self.response_timeout if self.response_timeout is not None else math.inf) as waited:
                        event = await receive.receive()
                    if waited.cancelled_caught:
                        raise ProviderTimeout(f"the Realtime model sent nothing for {self.response_timeout:g} s", provider=_PROVIDER, stage="llm")
                    # (a value taken just as the utterance was cut must not reach its closed voice)
                    await trio.lowlevel.checkpoint_if_cancelled()
                    if isinstance(event, rt.AudioDelta):
                        if not voice.opened:
                            utterance.open_voice(rt.RATE)
                            voice.opened = True
                        if event.item_id != voice.item_id:
                            voice.item_id, voice.content_index = event.item_id, event.content_index
                            voice.item_start, voice.item_audio = utterance.audio_position, 0.0
                        frame = AudioFrame.from_pcm16(event.audio, rt.RATE)
                        if utterance.metrics.llm_first_token_at is None:
                            utterance.note(llm_first_token_at=trio.current_time())
                        utterance.push_audio(frame)
                        audio += frame.duration
                        voice.item_audio += frame.duration
                    elif isinstance(event, rt.TranscriptDelta):
                        text += event.delta
                    if isinstance(event, rt.AudioDelta | rt.TranscriptDelta):
                        message = message or utterance.begin_message(in_context=False)
                        message.content = text.strip()
                        utterance.spoken_so_far(message.content, audio, message)
                    elif isinstance(event, rt.FunctionCallDone):
                        calls.append(event)
                    elif isinstance(event, rt.ResponseDone):
                        done = True
                        utterance.note(
                            prompt_tokens=_add(utterance.metrics.prompt_tokens, event.input_tokens),
                            completion_tokens=_add(utterance.metrics.completion_tokens, event.output_tokens),
                            llm_ended_at=trio.current_time(),
                            tts_audio_seconds=utterance.metrics.tts_audio_seconds + audio,
                        )
                        if event.status == "failed":
                            raise ProviderError(f"the Realtime model failed the response: {event.reason or 'no reason given'}", provider=_PROVIDER, stage="llm")
        finally:
            self._active = None
            if not done:
                voice.unfinished = response.id or ""
                if response.id is not None:
                    self._dropped.add(response.id)  # (its events still on the way are dropped)
        return calls

    async def _cut(self, voice: _Voice, utterance: Utterance) -> None:
        """The reply was cut (a barge-in, `interrupt()`, a failure): stop the response still
        being made, and truncate the audio item at what the caller heard, so that the model
        remembers only that."""
        with trio.move_on_after(_SEND_GRACE, shield=True):
            try:
                if voice.unfinished is not None:
                    await self._send(rt.response_cancel(voice.unfinished or None))
                if voice.item_id is not None:
                    heard = min(voice.item_audio, max(0.0, utterance.heard_duration - voice.item_start))
                    if heard < voice.item_audio - 1e-6:
                        await self._send(rt.item_truncate(voice.item_id, voice.content_index, round(heard * 1000)))
            except ProviderError:
                pass  # the socket is gone: the reader reports that

    async def _declare(self, *, force: bool = False) -> None:
        """Send `session.update` when the agent (after a hand-over), its instructions or its
        tools (MCP tools included) changed since the last one."""
        agent = self.host.agent
        tools = agent.tools
        key = (id(agent), agent.instructions, tuple((t.name, t.description, repr(t.parameters)) for t in tools))
        if key == self._declared and not force:
            return
        self._declared = key
        declared = [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters} for t in tools]
        await self._send(
            rt.session_update(
                instructions=agent.instructions,
                voice=self.model.voice,
                tools=declared,
                turn_detection=self.model.turn_detection_config(),
                transcription_model=self.model.transcription_model,
            )
        )


def _add(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else a + b
