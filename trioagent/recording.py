"""Record a session to a stereo WAV file: the user on the left, the agent on the right.

How this works: the recording listens to the session's audio taps (``on_speech_in``: each input
frame as the pipeline hears it; ``on_speech_out``: each output frame as the mixer makes it, the
agent's voice over any background audio). Each side is a track of int16 pieces placed on one
timeline by session time (an output frame at its tick, an input frame ending when it arrived);
frames that arrive back to back are laid back to back, a real pause in the input stays a pause.
What is older than `hold` seconds is written once a second, from the output tap (the mixer
ticks all through a session: no task of its own), and the rest when the recording stops. It
writes inline, not in a worker thread: a second of 24 kHz stereo is 96 KB
into the page cache (tens of microseconds, see NOTES.md), less than a thread hand-off costs, and
it keeps a recording deterministic under a fake clock (a thread's real time lets an autojump
clock run on). Record to a local disk: one that stalls stalls this process. The taps do no
more than a resample (input only, when its rate differs) and a list append.

    async with trioagent.recording.record(session, "call.wav"):
        async with session:
            ...

or, in a nursery, ``await nursery.start(record(session, path).run)``.
"""

from __future__ import annotations

import logging
import math
import os
import wave
from collections import deque
from typing import Any, BinaryIO

import attrs
import numpy as np
import trio

from .audio.frame import AudioFrame, Int16Array
from .audio.resample import StreamResampler
from .events import EventEmitter

__all__ = ["Recording", "record"]

_log = logging.getLogger("trioagent.recording")

FLUSH_EVERY = 1.0
"""Seconds between writes."""


def record(session: EventEmitter, path: str | os.PathLike[str], *, sample_rate: int | None = None, hold: float = 0.5) -> Recording:
    """A stereo 16-bit WAV recording of `session` (user left, agent right) at `path`.

    Use it as an async context manager around the part to record (the whole session: around
    ``async with session``), or run it in a nursery (``await nursery.start(rec.run)``; it writes
    the rest and closes the file when cancelled). Entering opens the file (an `OSError` is
    raised there); leaving writes the rest and closes it. A recording runs once.

    Args:
        session: an `AgentSession` (any emitter of ``on_speech_in`` / ``on_speech_out``).
        path: where to write; an existing file is replaced.
        sample_rate: the file's rate (default: the session transport's output rate, or 16 kHz).
        hold: seconds of audio kept in memory before writing, so that an input frame that
            comes a little late is still placed in time.
    """
    if sample_rate is None:
        transport = getattr(session, "transport", None)
        sample_rate = int(getattr(transport, "output_sample_rate", 16000))
    return Recording(session, os.fspath(path), sample_rate, hold)


@attrs.define(eq=False)
class _Track:
    """One side's audio, as pieces placed on the recording's timeline (sample positions)."""

    rate: int
    slack: int
    pieces: deque[tuple[int, Int16Array]] = attrs.field(init=False, factory=deque)
    cursor: int = attrs.field(init=False, default=0)
    """Where the last piece ended."""
    _resampler: StreamResampler | None = attrs.field(init=False, default=None)

    def add(self, frame: AudioFrame, position: float, written: int, *, ends_at: bool) -> None:
        """Place `frame` at `position` seconds of the recording (its start, or its end when
        `ends_at`)."""
        frame = frame.to_mono()
        if frame.sample_rate != self.rate:
            if self._resampler is None or self._resampler.from_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, self.rate)
            frame = self._resampler.process(frame)
        samples = frame.samples
        n = len(samples)
        if n == 0:
            return
        at = round(position * self.rate) - (n if ends_at else 0)
        if at <= self.cursor + self.slack:
            at = self.cursor  # back to back (early or a little late): no overlap, no gap
        at = max(at, written)
        self.pieces.append((at, samples))
        self.cursor = at + n

    def take(self, out: Int16Array, start: int, upto: int) -> None:
        """Move the audio before sample `upto` into `out` (which starts at sample `start`)."""
        pieces = self.pieces
        while pieces and pieces[0][0] < upto:
            at, samples = pieces.popleft()
            end = at + len(samples)
            if end > upto:
                pieces.appendleft((upto, samples[upto - at :]))
                samples, end = samples[: upto - at], upto
            out[at - start : end - start] = samples


@attrs.define(eq=False)
class Recording:
    """A running recording (made by `record`)."""

    session: EventEmitter
    path: str
    sample_rate: int
    hold: float
    _user: _Track = attrs.field(init=False)
    _agent: _Track = attrs.field(init=False)
    _t0: float = attrs.field(init=False, default=math.nan)
    _written: int = attrs.field(init=False, default=0)
    _file: wave.Wave_write | None = attrs.field(init=False, default=None)
    _raw: BinaryIO | None = attrs.field(init=False, default=None)
    _opened: bool = attrs.field(init=False, default=False)
    _flush_samples: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        slack = round(0.06 * self.sample_rate)  # three 20 ms frames of jitter
        self._user = _Track(self.sample_rate, slack)
        self._agent = _Track(self.sample_rate, slack)
        self._flush_samples = round(FLUSH_EVERY * self.sample_rate)

    @property
    def duration(self) -> float:
        """Seconds written to the file so far."""
        return self._written / self.sample_rate

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Record until cancelled, then write the rest and close the file.

        Raises:
            OSError: the file could not be opened (before `task_status.started()`).
            RuntimeError: this recording already ran.
        """
        self._start()
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._finish()

    async def __aenter__(self) -> Recording:
        self._start()
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._finish()

    def _start(self) -> None:
        self._open()
        self._t0 = trio.current_time()
        self.session.on("on_speech_in", self._heard)
        self.session.on("on_speech_out", self._played)

    def _finish(self) -> None:
        self.session.off("on_speech_in", self._heard)
        self.session.off("on_speech_out", self._played)
        self._write(max(self._user.cursor, self._agent.cursor, self._written))
        self._close_file()

    # -- the taps (sync, at each frame) -------------------------------------------------------
    def _heard(self, data: dict[str, AudioFrame]) -> None:
        # An input frame has been heard in full when it arrives: it ends now.
        self._user.add(data["frame"], trio.current_time() - self._t0, self._written, ends_at=True)

    def _played(self, data: dict[str, AudioFrame]) -> None:
        frame = data["frame"]  # made at its tick: its timestamp is when it starts to play
        self._agent.add(frame, frame.timestamp - self._t0, self._written, ends_at=False)
        # The mixer ticks all through a session: its tap is the recording's clock for writes.
        upto = round((trio.current_time() - self._t0 - self.hold) * self.sample_rate)
        if upto - self._written >= self._flush_samples:
            self._write(upto)

    # -- the file -----------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            raise RuntimeError("a Recording runs once")
        self._opened = True
        self._raw = open(self.path, "wb")  # noqa: SIM115 (closed by _close_file)
        w = wave.open(self._raw, "wb")
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(self.sample_rate)
        self._file = w

    def _close_file(self) -> None:
        assert self._file is not None and self._raw is not None
        try:
            self._file.close()  # (writes the header's sizes)
        finally:
            self._raw.close()

    def _write(self, upto: int) -> None:
        start = self._written
        if upto <= start:
            return
        out = np.zeros((upto - start, 2), np.int16)
        self._user.take(out[:, 0], start, upto)
        self._agent.take(out[:, 1], start, upto)
        self._written = upto
        assert self._file is not None
        self._file.writeframes(out.tobytes())
