"""The `Transport` protocol."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import trio

from ..audio.frame import AudioFrame

__all__ = ["Transport", "PlayoutTracking", "NullTransport", "DirectInput", "InputHandOff", "HandsInputOff"]


@runtime_checkable
class Transport(Protocol):
    """Carries a session's audio.

    The session reads user audio from `audio_in` (mono frames at `input_sample_rate`, stamped
    with their capture time on the session clock) and sends the mixer's output with `send_audio`
    (mono frames at `output_sample_rate`, one per tick).
    """

    input_sample_rate: int
    output_sample_rate: int

    @property
    def audio_in(self) -> trio.abc.ReceiveChannel[AudioFrame]: ...

    async def send_audio(self, frame: AudioFrame) -> None:
        """Play one frame. A checkpoint; may block for back-pressure."""
        ...

    def clear(self) -> None:
        """Drop output queued downstream (barge-in). Not a checkpoint."""
        ...

    async def hang_up(self) -> None:
        """End the call or connection from our side."""
        ...

    async def aclose(self) -> None:
        """Release the transport. Idempotent."""
        ...


@runtime_checkable
class PlayoutTracking(Protocol):
    """A transport that can tell how much sent audio the listener has not heard yet (Twilio
    marks, the browser's echoed marks), so a barge-in keeps in the chat context only what was
    heard."""

    def unplayed(self) -> float:
        """Seconds of audio sent but not yet played at the far end (0 when unknown)."""
        ...


class NullTransport:
    """No input, output discarded: for sessions driven only by `say()`/`reply()`."""

    def __init__(self, output_sample_rate: int = 24000, input_sample_rate: int = 16000) -> None:
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = output_sample_rate
        self._send, self._receive = trio.open_memory_channel[AudioFrame](math.inf)

    @property
    def audio_in(self) -> trio.abc.ReceiveChannel[AudioFrame]:
        return self._receive

    async def send_audio(self, frame: AudioFrame) -> None:
        await trio.lowlevel.checkpoint()

    def clear(self) -> None:
        pass

    async def hang_up(self) -> None:
        self._send.close()

    async def aclose(self) -> None:
        self._send.close()


@runtime_checkable
class NowaitAudio(Protocol):
    """A transport that takes output frames without waiting (a socket write, or a short queue
    behind it): on a shared `TickClock` the mixing and sending of every session then happen
    in the clock's own task, with no task switch per session per tick."""

    def send_audio_nowait(self, frame: AudioFrame) -> bool:
        """Send or queue `frame`; False when the queue is full (wait with `wait_send_space`
        before the next). Not a checkpoint."""
        ...

    async def wait_send_space(self) -> None:
        """Until `send_audio_nowait` may be called again."""
        ...


@runtime_checkable
class DirectInput(Protocol):
    """A transport that can hand each input frame to the session's listener in the task that
    read it (the socket reader, say) instead of through `audio_in`: one task switch and channel
    hop less per 20 ms of audio (NOTES.md, "Capacity ... fourth part").

    While `input_hook` is set, each frame is offered to it first; the hook returns False for a
    frame it does not take now (it would have to wait), which then goes through `audio_in`, as
    does every later frame until `audio_in` is empty again: frames arrive in order either way.
    """

    input_hook: Callable[[AudioFrame], bool] | None


class InputHandOff:
    """`audio_in` and `DirectInput.input_hook` together, for a transport's input side."""

    def __init__(self, size: float) -> None:
        self.send, self.receive = trio.open_memory_channel[AudioFrame](size)
        self.hook: Callable[[AudioFrame], bool] | None = None
        self._queued = False  # frames may be waiting in the channel: the hook waits for them
        self._closed = False

    def close(self) -> None:
        """No more input: `audio_in` ends once drained, and nothing more goes to the hook."""
        self._closed = True
        self.send.close()

    def offer(self, frame: AudioFrame) -> bool:
        """Hand `frame` to the hook or queue it; False when the channel is full (the caller
        then waits with ``await self.send.send(frame)``). Not a checkpoint.

        Raises:
            trio.ClosedResourceError: input was closed.
        """
        if self._closed:
            raise trio.ClosedResourceError("input was closed")
        hook = self.hook
        if hook is not None:
            if self._queued and self.send.statistics().current_buffer_used == 0:
                self._queued = False
            if not self._queued and hook(frame):
                return True
        self._queued = True
        try:
            self.send.send_nowait(frame)
        except trio.WouldBlock:
            return False
        return True


class HandsInputOff:
    """`audio_in` and `input_hook` (`DirectInput`) for a transport whose input side is the
    `InputHandOff` in ``self._input``."""

    _input: InputHandOff

    @property
    def audio_in(self) -> trio.abc.ReceiveChannel[AudioFrame]:
        return self._input.receive

    @property
    def input_hook(self) -> Callable[[AudioFrame], bool] | None:
        """See `DirectInput`: frames go to the session in the task that delivers them."""
        return self._input.hook

    @input_hook.setter
    def input_hook(self, hook: Callable[[AudioFrame], bool] | None) -> None:
        self._input.hook = hook


DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""The keypad digits (RFC 4733 events 0-15)."""


@runtime_checkable
class SendsDtmf(Protocol):
    """A transport that can send keypad digits to the far end (`AgentSession.send_dtmf`)."""

    def send_dtmf(self, digits: str) -> None:
        """Queue `digits` for the far end. Not a checkpoint."""
        ...
