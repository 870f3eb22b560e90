"""Transports over a WebSocket: the browser protocol and Twilio Media Streams.

How this works: each transport has one reader loop (`run`) that turns incoming messages into
`AudioFrame`s on `audio_in` or the session's `input_hook` (and control actions); on a server
with a `ReadPoller`, audio messages are taken in the poller's task (`_take_message`) and the
loop wakes only for the rest (control messages, input the session does not take at once); sends go through the connection
(`_wire.ServerWebSocket`): audio straight to the socket when nothing is queued, otherwise behind
a short queue (back-pressure beyond it) that a writer task empties; control messages in their
own bounded queue, sent first. `clear()` drops the queued audio in O(1) of the control traffic
and, for Twilio, asks Twilio to drop what it has buffered. Incoming control messages are
rate-limited per connection. Bad input raises `ProtocolError`, which the server turns into a
close code and reason for this one connection.
"""

from __future__ import annotations

import collections
import logging
import math
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import trio

from .._proto import browser as bp
from .._proto import openai_realtime as rt
from .._proto.twilio import TwilioDtmf, TwilioMark, TwilioMedia, TwilioProtocol, TwilioStart, TwilioStop
from ..audio.frame import FRAME_DURATION, INT16, AudioFrame
from ..audio.mixer import is_idle
from ..chat import ChatMessage, ChatRole
from ..errors import CloseCode, ProtocolError
from ..events import AgentSpeechStarted
from ._wire import ConnectionClosed, ServerWebSocket
from .base import HandsInputOff, InputHandOff

if TYPE_CHECKING:
    from ..agent import AgentSessionAPI

__all__ = ["BrowserTransport", "RealtimeTransport", "TwilioTransport"]

_log = logging.getLogger("trioagent.transports.websocket")

_MAX_PENDING_MARKS = 64  # 12.8 s of audio at one mark per 200 ms
_ANSWER = "Answer the user."
_PCM16 = np.dtype("<i2")  # (a dtype object: frombuffer parses a string each call)
INPUT_QUEUE = 500  # 10 s of 20 ms input frames waiting for the session: beyond, reading waits


class _WebSocketTransport(HandsInputOff):
    """What both protocols share: the input channel, playout marks, the control rate limit.

    Output is the mixer's frames as they are made, except the frames it makes with nothing to
    play (`is_idle`): those are not sent unless `send_silence`. A peer plays what comes when it
    comes (the page, Twilio, a Realtime client all do), so the wire carries the agent's voice
    and sounds only: a call is mostly the user speaking or nobody, and that is 3/4 of the
    bytes, messages and writes of both ends saved (NOTES.md, "Capacity ... fifth part").
    """

    input_sample_rate: int
    output_sample_rate: int
    _keeps_audio_messages = True  # (False where a message is more than its samples: a Realtime delta's ids)

    def __init__(
        self,
        ws: ServerWebSocket,
        *,
        max_queued: int = 10,
        max_frame_duration: float = 0.5,
        frame_duration: float = FRAME_DURATION,
        mark_every: int = 10,
        max_ahead: float = 5.0,
        control_rate: float = 20.0,
        control_burst: int = 40,
        send_silence: bool = False,
    ) -> None:
        self.ws = ws
        self.send_silence = send_silence
        ws.max_queued = max_queued
        self.max_ahead = max_ahead  # seconds of audio a peer may send ahead of real time (bursts)
        self._session: weakref.ref[AgentSessionAPI] | None = None  # (weak: the session owns the transport)
        self.max_frame_duration = max_frame_duration
        self._input = InputHandOff(INPUT_QUEUE)  # (`audio_in`, or the session's hook: `DirectInput`)
        self._in_send = self._input.send
        self.control_rate = control_rate
        self.control_burst = control_burst
        self._allowance = float(control_burst)
        self._allowance_at = -math.inf
        self.hung_up = False
        self.frames_in = 0
        self.frame_duration = frame_duration
        # Playout tracking: after every `mark_every` output frames a mark named after the end of
        # the last frame (session time) goes out; the peer echoes it once that audio has played.
        self.mark_every = mark_every
        self.played_until: float | None = None  # session time of the audio last heard (at its echo)
        self.marks_echoed = 0
        self._echo_at = 0.0  # when that echo came
        self._sent_until = -math.inf  # end of the last frame sent
        self._frames_out = 0
        self._marks_pending: dict[str, None] = {}  # oldest first; a peer may never echo (optional)
        self._next_start = -math.inf
        self._remainder = np.zeros(0, np.int16)
        self._kept: tuple[object, str | bytes] | None = None  # (a read-only frame's samples, its message)
        self._owed: collections.deque[AudioFrame] = collections.deque()  # input the session did not take yet
        self._step = 0  # samples in an input frame (`_frame_step`)
        self._fast_step = -1
        self._step_duration = 0.0
        ws.on_message = self._take_message  # (in the poller's task, when the server has one)

    @property
    def session(self) -> AgentSessionAPI | None:
        """The session this transport reports to (`attach`), while it exists."""
        return self._session() if self._session is not None else None

    def _messages_for(self, frame: AudioFrame) -> tuple[str | bytes, ...]:
        """What goes out for one output frame: the frame, and after every `mark_every` frames
        a mark (dropped by clear() like the audio before it); () when nothing is to be sent."""
        if not self.send_silence and is_idle(frame):
            return ()
        self._sent_until = frame.end_time
        self._frames_out += 1
        if self.mark_every and self._frames_out % self.mark_every == 0:
            name = f"t={frame.end_time:.3f}"
            self._marks_pending[name] = None
            if len(self._marks_pending) > _MAX_PENDING_MARKS:
                del self._marks_pending[next(iter(self._marks_pending))]
            return (self._audio_message_of(frame), self._mark_message(name))
        return (self._audio_message_of(frame),)

    def _audio_message_of(self, frame: AudioFrame) -> str | bytes:
        """`_audio_message`, kept for a frame whose samples are read-only (the mixer's silence:
        one shared array, most of a call's ticks) and made again only for other samples."""
        samples = frame.samples
        kept = self._kept
        if kept is not None and kept[0] is samples:
            return kept[1]
        message = self._audio_message(frame)
        if not samples.flags.writeable and self._keeps_audio_messages:
            self._kept = (samples, message)
        return message

    async def send_audio(self, frame: AudioFrame) -> None:
        """Send a frame (one non-blocking write, usually), after waiting while the queue is
        full. A checkpoint."""
        messages = self._messages_for(frame)
        if not messages:
            await trio.lowlevel.checkpoint()
            return
        await self.ws.send_droppable(messages)

    def send_audio_nowait(self, frame: AudioFrame) -> bool:
        """Send or queue a frame; False when the queue is full (see `NowaitAudio`)."""
        messages = self._messages_for(frame)
        return self.ws.send_droppable_nowait(messages) if messages else True

    async def wait_send_space(self) -> None:
        await self.ws.wait_space()

    def unplayed(self) -> float:
        """Seconds of audio sent that the listener has not heard yet (0 until a mark has come
        back): the position heard is the last echoed mark's, advanced in real time since."""
        if self.played_until is None:
            return 0.0
        heard = self.played_until + (trio.current_time() - self._echo_at)
        return max(0.0, self._sent_until - heard)

    def _on_mark(self, name: str) -> None:
        if name not in self._marks_pending:
            return  # a mark we did not send, or one for audio that clear() dropped
        del self._marks_pending[name]
        self.played_until = float(name[2:])
        self._echo_at = trio.current_time()
        self.marks_echoed += 1

    def attach(self, session: AgentSessionAPI) -> None:
        """Report to `session` (held weakly: the session owns the transport)."""
        self._session = weakref.ref(session)

    def _audio_message(self, frame: AudioFrame) -> str | bytes:
        raise NotImplementedError

    def _mark_message(self, name: str) -> str:
        raise NotImplementedError

    def send_control(self, message: str) -> None:
        """Queue a JSON text message, sent before queued audio and never dropped by `clear()`
        (a peer that reads nothing loses the oldest beyond 256). Not a checkpoint."""
        self.ws.send_soon(message)

    def _drop_queued_audio(self) -> None:
        self.ws.drop_droppable()
        self._marks_pending.clear()  # what was sent before is dropped by the peer: no echoes count

    def _count_control(self) -> None:
        """One control message from the peer: a token bucket of `control_rate` a second, up to
        `control_burst` at once.

        Raises:
            ProtocolError: (1008) more than that.
        """
        now = trio.current_time()
        self._allowance = min(float(self.control_burst), self._allowance + (now - self._allowance_at) * self.control_rate)
        self._allowance_at = now
        if self._allowance < 1.0:
            raise ProtocolError(f"too many control messages (over {self.control_rate:g} a second)", close_code=CloseCode.POLICY_VIOLATION)
        self._allowance -= 1.0

    def _deliver(self, samples: np.ndarray) -> None:
        """Cut incoming audio (messages of any length) into `frame_duration` frames, the size
        the VADs and STTs are tuned to (a remainder waits for the next message), and offer them
        to the session; what it does not take now is owed (`_pay`), in order. Not a checkpoint.

        `samples` are int16 (`np.frombuffer` of the message, or decoded): contiguous."""
        rate = self.input_sample_rate
        step = self._step or self._frame_step()
        if len(samples) == self._fast_step and not len(self._remainder) and not self._owed and samples.dtype is INT16:
            # The usual message: one frame (a browser's or Twilio's 20 ms), nothing left over,
            # nothing owed: the general path below, without its cutting.
            now = trio.current_time()
            duration = self._step_duration
            start = now - duration
            if start < self._next_start:
                start = self._next_start
                if start + duration - now > self.max_ahead:
                    raise self._too_far_ahead()
            self._next_start = start + duration
            self.frames_in += 1
            frame = AudioFrame._trusted(samples, rate, 1, start)
            if not self._input.offer(frame):
                self._owed.append(frame)
                self.ws.wake_reader()
            return
        duration = len(samples) / self.input_sample_rate
        if duration > self.max_frame_duration:
            raise ProtocolError(f"an audio message of {duration:.2f} s is longer than {self.max_frame_duration} s")
        # Audio is a continuous stream even when the network bunches it up: it starts where
        # the audio before ended, unless it came later than that (a gap: re-anchor to the clock).
        pending = len(self._remainder) / self.input_sample_rate
        now = trio.current_time()
        start = max(now - duration - pending, self._next_start)
        if start + duration - now > self.max_ahead:
            raise self._too_far_ahead()
        samples = np.ascontiguousarray(samples, np.int16)
        # (int16, one channel, contiguous slices of one array, the rate checked at the hello:
        # valid by construction, so no validation per frame)
        data = np.concatenate([self._remainder, samples]) if len(self._remainder) else samples
        whole = len(data) - len(data) % step
        frames = [AudioFrame._trusted(data[i : i + step], rate, 1, start + i / rate) for i in range(0, whole, step)]
        self._remainder = data[whole:].copy()
        self._next_start = start + whole / rate
        self.frames_in += len(frames)
        if self._owed:
            self._owed.extend(frames)
            return
        offer = self._input.offer
        for i, frame in enumerate(frames):
            if not offer(frame):
                # The session is not taking audio (a hung STT: the session ends it): the reader
                # task waits to hand these over (`_pay`), and the peer's sends wait behind it
                # (TCP back-pressure): nothing piles up.
                self._owed.extend(frames[i:])
                self.ws.wake_reader()
                return

    def _too_far_ahead(self) -> ProtocolError:
        return ProtocolError(f"audio arrives faster than real time (over {self.max_ahead:.0f} s ahead)", close_code=CloseCode.POLICY_VIOLATION)

    def _frame_step(self) -> int:
        """Samples in a frame at the input rate (known once the peer said its rate)."""
        step = self._step = round(self.input_sample_rate * self.frame_duration)
        self._step_duration = step / self.input_sample_rate
        # (a frame longer than a message may be: every message goes the general way, and fails)
        self._fast_step = step if self._step_duration <= self.max_frame_duration else -1
        return step

    async def _pay(self) -> None:
        """Hand over the frames the session did not take at once, waiting for it. A checkpoint
        when there are some."""
        owed = self._owed
        while owed:
            try:
                await self._in_send.send(owed[0])
            except trio.ClosedResourceError:
                owed.clear()  # (the session hung up: nobody hears it)
                return
            owed.popleft()

    def _take_message(self, message: str | bytes) -> bool:
        """`ServerWebSocket.on_message`: take what can be handled without waiting (audio)."""
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read until the peer closes (input then ends) or sends something invalid.

        Raises:
            ProtocolError: bad input; the caller closes the connection with a reason.
        """
        failure: ProtocolError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.ws.writer)
            task_status.started()
            try:
                while not self.hung_up:  # until the peer ends the call ("end", Twilio "stop")
                    await self._pay()
                    try:
                        message = await self.ws.receive_message()
                    except ConnectionClosed:
                        break
                    if message is not None:  # (None: woken, to pay or to stop)
                        await self.receive(message)
                await self._pay()
            except ProtocolError as exc:
                failure = exc  # raised bare below, not wrapped in the nursery's group
            finally:
                self._input.close()
                self.ws.shut_output()  # from now on output is dropped, never waited on
                nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def receive(self, message: str | bytes) -> None:
        """Handle one message from the peer.

        Raises:
            ProtocolError: it is not what the protocol allows (or too many control messages).
        """
        raise NotImplementedError

    def clear(self) -> None:
        self._drop_queued_audio()

    async def hang_up(self) -> None:
        self.hung_up = True
        self._input.close()
        self.ws.wake_reader()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._input.close()
        self.ws.wake_reader()
        await trio.lowlevel.checkpoint()


class BrowserTransport(_WebSocketTransport):
    """The browser protocol (docs/protocol.md): binary PCM16 both ways, JSON for the rest."""

    def __init__(self, ws: ServerWebSocket, hello: bp.Hello, **options: Any) -> None:
        super().__init__(ws, **options)
        self.input_sample_rate = hello.sample_rate
        self.output_sample_rate = hello.output_sample_rate

    def attach(self, session: AgentSessionAPI) -> None:
        """Forward the session's events to the page."""
        self._session = weakref.ref(session)
        session.on("agent_state_changed", lambda d: self.send_control(bp.message("agent_state", state=d["state"])))
        session.on("user_state_changed", lambda d: self.send_control(bp.message("user_state", state=d["state"])))
        session.on("user_turn_ended", lambda e: self.send_control(bp.message("transcript", text=e.text, final=True)))
        session.on("agent_speech_started", lambda e: self.send_control(bp.message("agent_text", text=e.text)))
        session.on("metrics_collected", lambda m: self.send_control(bp.message("metrics", **m.as_dict())))
        session.on("error", lambda e: self.send_control(bp.message("error", stage=e.stage, reason=e.reason, fatal=e.fatal)))

    def _audio_message(self, frame: AudioFrame) -> bytes:
        return frame.to_pcm16()

    def _mark_message(self, name: str) -> str:
        return bp.message("mark", name=name)

    def send_dtmf(self, digits: str) -> None:
        """Send keypad digits to the page (``{"type": "dtmf", "digits": ...}``). Not a checkpoint."""
        self.send_control(bp.message("dtmf", digits=digits))

    def clear(self) -> None:
        self._drop_queued_audio()
        self.send_control(bp.message("clear"))

    def _take_message(self, message: str | bytes) -> bool:
        if not isinstance(message, bytes):
            return False
        if len(message) % 2:
            raise ProtocolError(f"an audio message of {len(message)} bytes is not whole 16-bit samples")
        self._deliver(np.frombuffer(message, _PCM16))
        return True

    async def receive(self, message: str | bytes) -> None:
        if self._take_message(message):
            await self._pay()
            return
        assert isinstance(message, str)
        self._count_control()
        control = bp.parse_control(message)
        if control.type == "mark":
            self._on_mark(control.name)
        elif (session := self.session) is None:
            return
        elif control.type == "interrupt":
            session.interrupt()
        elif control.type == "dtmf":
            session.dtmf_received(control.name)
        elif control.type == "text":
            await session.send_text(control.name)
        else:
            self.hung_up = True
            self._input.close()


class TwilioTransport(_WebSocketTransport):
    """Twilio Media Streams: 8 kHz mu-law in and out; `clear` on barge-in; marks track playout.

    Args:
        mark_every: send a mark after this many output frames; Twilio echoes it once the audio
            before it has played, which gives `played_until` and `unplayed()`.
    """

    input_sample_rate = 8000
    output_sample_rate = 8000

    def __init__(self, ws: ServerWebSocket, **options: Any) -> None:
        super().__init__(ws, **options)
        self.proto = TwilioProtocol()
        self.started = trio.Event()
        self.start: TwilioStart | None = None
        self.dtmf: list[str] = []

    def _messages_for(self, frame: AudioFrame) -> tuple[str | bytes, ...]:
        if self.proto.stream_sid is None:
            return ()  # no stream yet: nowhere to play it
        return super()._messages_for(frame)

    def _audio_message(self, frame: AudioFrame) -> str:
        return self.proto.media(frame.samples)

    def _mark_message(self, name: str) -> str:
        return self.proto.mark(name)

    def clear(self) -> None:
        self._drop_queued_audio()
        if self.proto.stream_sid is not None:
            self.send_control(self.proto.clear())

    async def receive(self, message: str | bytes) -> None:
        self._handle(message)
        await self._pay()

    def _take_message(self, message: str | bytes) -> bool:
        """Every Twilio message is handled without waiting (media offered, the rest is state);
        the server's task reads up to ``start`` itself."""
        if self.start is None:
            return False
        self._handle(message)
        return True

    def _handle(self, message: str | bytes) -> None:
        event = self.proto.receive(message)
        if not isinstance(event, TwilioMedia):
            self._count_control()
        if isinstance(event, TwilioStart):
            self.start = event
            self.started.set()
        elif isinstance(event, TwilioMedia):
            self._deliver(event.samples)
        elif isinstance(event, TwilioMark):
            self._on_mark(event.name)
        elif isinstance(event, TwilioDtmf):
            self.dtmf.append(event.digit)
            if (session := self.session) is not None:
                session.dtmf_received(event.digit)
        elif isinstance(event, TwilioStop):
            self.hung_up = True
            self._input.close()
            self.ws.wake_reader()  # (its loop ends)


class RealtimeTransport(_WebSocketTransport):
    """The OpenAI Realtime protocol, server side: any Realtime client talks to the session.

    The client's `input_audio_buffer.append` audio (PCM16, 24 kHz) is the input; the session's
    own pipeline hears it, decides turns and answers. Its events become the server events a
    Realtime client expects: the user's speech (`speech_started` / `speech_stopped`, then
    `committed` and the transcript), and each thing the agent says as one response (its text as
    the transcript, the mixer's audio as `response.output_audio.delta` while it is heard, then
    `response.done`, `cancelled` when it was cut). `response.create` asks the agent to reply,
    `response.cancel` interrupts it; `session.update` is acknowledged.
    """

    input_sample_rate = rt.RATE
    output_sample_rate = rt.RATE

    def __init__(self, ws: ServerWebSocket, **options: Any) -> None:
        options.setdefault("mark_every", 0)  # (Realtime clients echo no marks)
        super().__init__(ws, **options)
        self.events = rt.ServerEvents()
        self._origin: float | None = None  # session time of input audio 0 ms
        self._items = 0
        self._user_item: str | None = None
        self._response: tuple[str, str] | None = None  # (response id, item id) being heard
        self._cut = False

    def session_created(self) -> str:
        """The first message: `session.created`."""
        return rt.encode(self.events.session("session.created", self._session_config()))

    def _session_config(self) -> dict[str, Any]:
        pcm = {"type": "audio/pcm", "rate": rt.RATE}
        return {"type": "realtime", "object": "realtime.session", "id": f"sess_{id(self):x}", "output_modalities": ["audio"],
                "audio": {"input": {"format": pcm}, "output": {"format": pcm}}}  # fmt: skip

    def _emit(self, event: dict[str, Any]) -> None:
        self.send_control(rt.encode(event))

    def _ms(self) -> int:
        return max(0, round((trio.current_time() - (self._origin if self._origin is not None else trio.current_time())) * 1000))

    def attach(self, session: AgentSessionAPI) -> None:
        """Turn the session's events into the client's server events."""
        self._session = weakref.ref(session)
        session.on("user_state_changed", self._on_user_state)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("conversation_item_added", self._on_item)
        session.on("agent_speech_started", self._on_speech_out)
        session.on("error", lambda e: self._emit(self.events.error("server_error", e.stage or "agent", e.reason)))

    def _on_user_state(self, data: dict[str, Any]) -> None:
        if data["state"] == "speaking" and self._user_item is None:
            self._items += 1
            self._user_item = f"item_user_{self._items}"
            self._emit(self.events.speech_started(self._ms(), self._user_item))
        elif data["state"] != "speaking" and self._user_item is not None:
            self._emit(self.events.speech_stopped(self._ms(), self._user_item))

    def _on_item(self, event: Any) -> None:
        item = event.item
        if not (isinstance(item, ChatMessage) and item.role is ChatRole.USER):
            return
        self._items += 1
        item_id, self._user_item = self._user_item or f"item_user_{self._items}", None
        self._emit(self.events.committed(item_id))
        self._emit(self.events.input_transcript(item_id, item.content))

    def _on_speech_out(self, event: AgentSpeechStarted) -> None:
        self._finish_response()
        response_id, item_id = f"resp_{event.handle.id}", f"item_{event.handle.id}"
        self._response, self._cut = (response_id, item_id), False
        self._emit(self.events.response_created(response_id))
        if event.text:
            self._emit(self.events.transcript_delta(response_id, item_id, event.text))

    def _on_agent_state(self, data: dict[str, Any]) -> None:
        if data["state"] != "speaking":
            self._finish_response()

    def _finish_response(self) -> None:
        if self._response is None:
            return
        (response_id, item_id), self._response = self._response, None
        self._emit(self.events.audio_done(response_id, item_id))
        self._emit(self.events.response_done(response_id, "cancelled" if self._cut else "completed", reason="turn_detected" if self._cut else None))

    def _messages_for(self, frame: AudioFrame) -> tuple[str | bytes, ...]:
        if self._response is None:
            return ()  # nothing is being said: no response to carry it
        return super()._messages_for(frame)

    _keeps_audio_messages = False  # (each delta names its response and item)

    def _audio_message(self, frame: AudioFrame) -> str:
        assert self._response is not None
        response_id, item_id = self._response
        return rt.encode(self.events.audio_delta(response_id, item_id, frame.to_pcm16()))

    def _mark_message(self, name: str) -> str:
        raise AssertionError("no marks on a Realtime connection")

    def clear(self) -> None:
        self._drop_queued_audio()
        if self._response is not None:
            self._cut = True
            self._finish_response()

    async def receive(self, message: str | bytes) -> None:
        event = rt.parse_client(message)
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            if self._origin is None:
                self._origin = trio.current_time()
            self._deliver(np.frombuffer(rt.appended_audio(event), "<i2"))
            await self._pay()
            return
        self._count_control()
        session = self.session
        if kind == "session.update":
            config = self._session_config()
            update = event.get("session")
            if isinstance(update, dict):
                config.update({k: v for k, v in update.items() if k in ("instructions", "tools", "tool_choice")})
                detection = _dig(update, "audio", "input", "turn_detection")
                if isinstance(detection, dict) and session is not None:
                    # The client asks for responses itself (`create_response` off): the agent
                    # hears each turn but answers on `response.create`.
                    session.answer_turns = detection.get("create_response", True) is not False
            self._emit(self.events.session("session.updated", config))
        elif kind == "response.create" and session is not None:
            response = event.get("response")
            instructions = response.get("instructions") if isinstance(response, dict) else None
            # (a reply needs instructions: without any, it is to answer what the user said)
            await session.reply(instructions if isinstance(instructions, str) and instructions else _ANSWER, wait_for_playback=False)
        elif kind == "response.cancel" and session is not None:
            session.interrupt()
        elif kind not in ("input_audio_buffer.commit", "input_audio_buffer.clear", "conversation.item.truncate",
                          "conversation.item.create", "output_audio_buffer.clear", "response.cancel", "response.create"):  # fmt: skip
            self._emit(self.events.error("invalid_request_error", "unknown_event", f"{kind!r} is not an event this server takes"))


def _dig(value: Any, *keys: str) -> Any:
    """``value[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value
