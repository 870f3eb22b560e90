"""The `Transport` protocol."""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import trio

from ..audio.frame import AudioFrame

__all__ = ["Transport", "PlayoutTracking", "NullTransport"]


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


DTMF_DIGITS = frozenset("0123456789*#ABCD")
"""The keypad digits (RFC 4733 events 0-15)."""


@runtime_checkable
class SendsDtmf(Protocol):
    """A transport that can send keypad digits to the far end (`AgentSession.send_dtmf`)."""

    def send_dtmf(self, digits: str) -> None:
        """Queue `digits` for the far end. Not a checkpoint."""
        ...
