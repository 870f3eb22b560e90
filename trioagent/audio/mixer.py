"""The clock-driven mixer.

How this works: `Mixer` is a sans-IO core plus one pump. The core (`add_source`, `remove_source`,
`mix(now)`) never awaits and never reads a clock: time is passed in. Each `MixerSource` holds its
audio already resampled to the mixer rate (float32), so a tick only slices, scales and adds.
`Mixer.run()` is the pump: it wakes at ``t0 + k * frame_duration`` with `trio.sleep_until` on the
trio clock, mixes one frame and sends it to a memory channel.

Gains move by ramps, never by steps: a source fades in when it starts, fades out when it is
stopped, paused or removed, and background sources are ducked (default -12 dB) with a ramp while
any voice source is audible. The float sum is clipped to int16, so loud mixes saturate instead of
wrapping around.

A source is *played out* when the frame holding its last sample has been played: the tick after
that frame. `await source.wait_played_out()` returns then, which gives exact playout tracking for
utterances.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Protocol, cast

import attrs
import numpy as np
import soxr
import trio

from .frame import FRAME_DURATION, INT16, AudioFrame, Float32Array, Int16Array
from .polyphase import Polyphase

__all__ = ["Mixer", "MixerSource", "MixerStatistics", "TickClock", "is_idle"]

class NowaitSink(Protocol):
    """A frame sink that takes frames without waiting (the clock-driven pump, `Mixer.run`).

    It may also have a `sends_idle` attribute: False while it would leave a frame with nothing to
    play (`is_idle`) unsent, and the pump then does not make one (read at each such tick)."""

    def send_nowait(self, frame: AudioFrame) -> bool:
        """Take `frame` (it is sent or queued); False when more would have to wait."""
        ...

    async def wait_ready(self) -> None:
        """Until more frames can be taken."""
        ...


_WAKE_AFTER = 1e-6  # seconds the pump wakes after each tick's deadline (see Mixer.run)
_FROM_INT16 = np.float32(1.0 / 32768.0)


@attrs.frozen
class MixerStatistics:
    """A snapshot of the mixer's counters.

    Attributes:
        ticks: frames mixed so far.
        underruns: ticks handled a whole frame or more after their time, or skipped.
        active_sources: sources currently in the mix (including ones fading out).
    """

    ticks: int
    underruns: int
    active_sources: int


def _ramp(level: float, target: float, step: float, n: int, steps: Float32Array) -> tuple[float | Float32Array, float]:
    """Gain envelope from `level` toward `target` for one frame of n samples.

    Returns a scalar when the level is already at its target (the common case), else an array.
    """
    if level == target:
        return level, level
    if target > level:
        env = np.minimum(level + step * steps, target)
    else:
        env = np.maximum(level - step * steps, target)
    end = float(env[-1])
    # Reached: the target itself, not its float32 rounding (which would never equal it, and
    # a ducked background would be ramped again at every tick of a voice).
    return env, target if abs(end - target) < 1e-6 else end


@attrs.define(eq=False)
class MixerSource:
    """One input of the mixer: a voice track, a background loop, a thinking sound.

    Created by `Mixer.add_source`. Push audio with `push`, say there is no more with `end`.
    Not thread-safe; use it from the trio thread only.

    Attributes:
        name: for logs and statistics.
        sample_rate: the rate of the frames pushed into it.
        voice: voice sources duck the background while they are audible.
        loop: replay the pushed audio from the start when it runs out after `end()`.
        gain: linear gain applied on top of fades and ducking.
    """

    name: str
    sample_rate: int
    voice: bool
    loop: bool
    gain: float
    _mixer_rate: int
    _stream: Polyphase | _SoxrStream | None = attrs.field(init=False, default=None)
    # Queued audio at the mixer's rate: float32, or int16 as pushed (a frame at the mixer's rate
    # is kept as it came: one voice alone plays it as it is, see `Mixer.mix`).
    _chunks: collections.deque[Float32Array | Int16Array] = attrs.field(init=False, factory=collections.deque)
    _history: list[Float32Array | Int16Array] = attrs.field(init=False, factory=list)
    _offset: int = attrs.field(init=False, default=0)
    _queued: int = attrs.field(init=False, default=0)
    _level: float = attrs.field(init=False, default=0.0)
    _ended: bool = attrs.field(init=False, default=False)
    _stopping: bool = attrs.field(init=False, default=False)
    _paused: bool = attrs.field(init=False, default=False)
    _finished: bool = attrs.field(init=False, default=False)
    _played_out: trio.Event = attrs.field(init=False, factory=trio.Event)
    _marks: list[tuple[int, Callable[[], None]]] = attrs.field(init=False, factory=list)
    played_samples: int = attrs.field(init=False, default=0)
    """Samples (at the mixer rate) of pushed audio that have been mixed so far."""
    started_at: float | None = attrs.field(init=False, default=None)
    """Mixer time of the first frame holding audio of this source."""
    played_out_at: float | None = attrs.field(init=False, default=None)
    """Mixer time at which the source was played out (the tick after its last frame)."""
    stopped: bool = attrs.field(init=False, default=False)
    """True when the source was stopped or removed before all its audio was played."""

    def __attrs_post_init__(self) -> None:
        if self.sample_rate != self._mixer_rate:
            # A voice must start (and answer) without delay: the low-latency filter (0.5-3 ms of
            # lookahead). Background and thinking loops are not latency-bound: soxr, which costs
            # 4-7 us a frame against the filter's 7-40 us (NOTES.md, "Resampler latency").
            self._stream = Polyphase(self.sample_rate, self._mixer_rate) if self.voice else _SoxrStream(self.sample_rate, self._mixer_rate)

    # -- feeding ----------------------------------------------------------------------------
    def push(self, frame: AudioFrame) -> None:
        """Queue a frame; it is resampled to the mixer rate now, not on the tick. A frame at
        the mixer's rate is kept, not copied (frames are values: do not change its samples).

        Raises:
            ValueError: the frame's rate is not this source's `sample_rate`.
            RuntimeError: `end()` was called or the source was stopped.
        """
        if frame.sample_rate != self.sample_rate:
            raise ValueError(
                f"source {self.name!r} takes {self.sample_rate} Hz frames, got {frame.sample_rate} Hz"
            )
        if self._ended or self._stopping:
            raise RuntimeError(f"source {self.name!r} is closed for input")
        if self._stream is None and frame.channels == 1:
            self._queue(frame.samples)
            return
        self._append(frame.to_mono().to_float())

    def push_float(self, samples: Float32Array) -> None:
        """Queue float32 mono samples in [-1, 1) at this source's rate, without copying them
        (the caller must not change the array afterwards). For prepared clips.

        Raises:
            RuntimeError: `end()` was called or the source was stopped.
        """
        if self._ended or self._stopping:
            raise RuntimeError(f"source {self.name!r} is closed for input")
        self._append(np.asarray(samples, np.float32))

    def end(self) -> None:
        """No more audio will be pushed; the source is played out once its queue drains."""
        if self._ended:
            return
        if self._stream is not None:
            self._append(self._stream.flush(), resampled=True)
        self._ended = True

    def _append(self, data: Float32Array, resampled: bool = False) -> None:
        if self._stream is not None and not resampled:
            data = self._stream.process(data)
        self._queue(data)

    def _queue(self, data: Float32Array | Int16Array) -> None:
        if len(data) == 0:
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self.loop:
            self._history.append(data)

    # -- control ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Fade out and leave the mix; queued audio is dropped. Idempotent."""
        if not self._finished:
            self._stopping = True

    def pause(self) -> None:
        """Fade out but keep the queue; `resume()` continues where it stopped."""
        self._paused = True

    def resume(self) -> None:
        """Fade back in after `pause()`."""
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def playing(self) -> bool:
        """Started, and neither finished, paused nor stopped (fading out counts as stopped)."""
        return self.started_at is not None and not (self._finished or self._stopping or self._paused)

    @property
    def queued_duration(self) -> float:
        """Seconds of audio waiting to be mixed."""
        return self._queued / self._mixer_rate

    @property
    def played_duration(self) -> float:
        """Seconds of pushed audio mixed so far."""
        return self.played_samples / self._mixer_rate

    @property
    def played_out(self) -> bool:
        return self._played_out.is_set()

    def call_when_played(self, position: float, callback: Callable[[], None]) -> None:
        """Call `callback` (sync, from the mixer's tick; it must not raise) once `position`
        seconds of this source's audio have been played: at the tick after the frame holding
        that point (as `played_out_at` is for the end), or when it is played out. Dropped if
        the source is stopped first."""
        target = math.ceil(position * self._mixer_rate - 0.5)
        self._marks.append((target, callback))
        self._marks.sort(key=lambda m: m[0])

    def _fire_marks(self) -> None:
        while self._marks and self._marks[0][0] <= self.played_samples:
            self._marks.pop(0)[1]()

    async def wait_played_out(self) -> None:
        """Wait until the last frame holding this source's audio has been played (or it was
        stopped and its fade-out played). A checkpoint."""
        await self._played_out.wait()

    # -- used by the mixer ------------------------------------------------------------------
    @property
    def _audible(self) -> bool:
        return not self._finished and (self._queued > 0 or self._level > 0.0) and not (
            self._paused and self._level == 0.0
        )

    def _take(self, n: int) -> tuple[Float32Array, int]:
        """Up to n queued samples (zero-padded to n), as float32, and how many were real audio."""
        if self._queued == 0:
            self._rewind()
        if self._queued == 0:
            return np.zeros(n, np.float32), 0
        head = self._chunks[0]
        off = self._offset
        left = len(head) - off
        if left > n:
            self._offset = off + n
            self._queued -= n
            return _as_float(head[off : off + n]), n
        if left == n:  # (the common case: a TTS frame of exactly one tick at the mixer's rate)
            self._chunks.popleft()
            self._offset = 0
            self._queued -= n
            return _as_float(head[off:] if off else head), n
        parts: list[Float32Array] = []
        got = 0
        while got < n:
            if not self._chunks and not self._rewind():
                break
            head = self._chunks[0]
            piece = head[self._offset : self._offset + (n - got)]
            parts.append(_as_float(piece))
            got += len(piece)
            if self._offset + len(piece) >= len(head):
                self._chunks.popleft()
                self._offset = 0
            else:
                self._offset += len(piece)
        self._queued -= got  # (a rewind above added what it queued)
        if got < n:
            parts.append(np.zeros(n - got, np.float32))
        return np.concatenate(parts), got

    def _take_as_pushed(self, n: int) -> Int16Array | None:
        """The next n samples as they were pushed, when they are one int16 frame of exactly
        n (a voice at the mixer's rate, steady); else None and nothing taken."""
        if self._offset or self._queued < n:
            return None
        head = self._chunks[0]
        if head.dtype is not INT16 or len(head) != n:
            return None
        self._chunks.popleft()
        self._queued -= n
        return cast(Int16Array, head)

    def _rewind(self) -> bool:
        """Queue the audio again from the start, for a looping source that has ended."""
        if not (self.loop and self._ended and self._history):
            return False
        self._chunks.extend(self._history)
        self._queued += sum(len(c) for c in self._history)
        return True

    def _finish(self, now: float) -> None:
        self.played_out_at = now
        self._finished = True
        self._chunks.clear()
        self._queued = 0
        marks, self._marks = self._marks, []
        if not self.stopped:
            for _, callback in marks:
                callback()
        self._played_out.set()


@attrs.define(eq=False)
class Mixer:
    """Mixes any number of sources into one mono int16 stream at `sample_rate`.

    Args:
        sample_rate: output rate in Hz.
        frame_duration: length of one tick, in seconds (default 20 ms).
        duck_db: gain applied to background sources while a voice source is audible.
        fade_duration: length of every fade (start, stop, pause, removal, ducking), >= 5 ms.
    """

    sample_rate: int = 48000
    frame_duration: float = FRAME_DURATION
    duck_db: float = -12.0
    fade_duration: float = 0.01
    _sources: list[MixerSource] = attrs.field(init=False, factory=list)
    _duck_level: float = attrs.field(init=False, default=1.0)
    _ticks: int = attrs.field(init=False, default=0)
    _underruns: int = attrs.field(init=False, default=0)
    _frame_samples: int = attrs.field(init=False)
    _steps: Float32Array = attrs.field(init=False)
    _fade_step: float = attrs.field(init=False)
    _acc: Float32Array = attrs.field(init=False)
    _silence: Int16Array = attrs.field(init=False)
    _duck: float = attrs.field(init=False)
    tap: Callable[[AudioFrame], None] | None = attrs.field(init=False, default=None)
    """Called with each mixed frame as it is made (the session's ``on_speech_out``); None: nothing."""

    def __attrs_post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.fade_duration < 0.005:
            raise ValueError(f"fade_duration must be >= 5 ms to avoid clicks, got {self.fade_duration}")
        n = round(self.sample_rate * self.frame_duration)
        if n <= 0 or not math.isclose(n, self.sample_rate * self.frame_duration):
            raise ValueError(
                f"frame_duration {self.frame_duration} s is not a whole number of samples at {self.sample_rate} Hz"
            )
        self._frame_samples = n
        self._steps = np.arange(1, n + 1, dtype=np.float32)
        self._fade_step = 1.0 / (self.fade_duration * self.sample_rate)
        self._acc = np.zeros(n, np.float32)
        self._silence = _idle_samples(n)
        self._duck = float(10.0 ** (self.duck_db / 20.0))

    @property
    def frame_samples(self) -> int:
        return self._frame_samples

    @property
    def duck_gain(self) -> float:
        return self._duck

    # -- sources ----------------------------------------------------------------------------
    def add_source(
        self,
        sample_rate: int,
        *,
        gain: float = 1.0,
        loop: bool = False,
        voice: bool = False,
        name: str = "",
    ) -> MixerSource:
        """Add a source; it fades in on the next tick that has audio for it. Not a checkpoint."""
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        source = MixerSource(name or f"source{len(self._sources)}", sample_rate, voice, loop, gain, self.sample_rate)
        self._sources.append(source)
        return source

    def remove_source(self, source: MixerSource) -> None:
        """Fade the source out and drop it (same as `source.stop()`)."""
        source.stop()

    @property
    def sources(self) -> tuple[MixerSource, ...]:
        return tuple(self._sources)

    def statistics(self) -> MixerStatistics:
        return MixerStatistics(ticks=self._ticks, underruns=self._underruns, active_sources=len(self._sources))

    # -- the core ---------------------------------------------------------------------------
    def mix(self, now: float) -> AudioFrame:
        """Mix one frame starting at time `now` (seconds on the session clock). Not a checkpoint.

        With no source, the frame's samples are one shared read-only array of zeros (the same
        object at every such tick: a transport may keep what it made of it)."""
        sources = self._sources
        if not sources and self._duck_level == 1.0:
            # Silence, most of a call's ticks: none of the work below.
            return self._out(self._silence, now)
        n = self._frame_samples
        if len(sources) == 1:
            s = sources[0]
            if s.voice and s.gain == 1.0 and s._level == 1.0 and not (s._stopping or s._paused or s.loop):
                if s._marks:
                    s._fire_marks()
                samples = s._take_as_pushed(n)
                if samples is not None:
                    # One voice alone, steady, and its next frame as a TTS pushed it (int16,
                    # at the mixer's rate): the mixed frame is that frame, bit for bit what
                    # the float path below makes of it, without its eight numpy calls.
                    s.played_samples += n
                    if s._ended and s._queued == 0:
                        s._level = 0.0  # played out on the next tick
                    if self._duck_level != self._duck:
                        _, self._duck_level = _ramp(self._duck_level, self._duck, self._fade_step, n, self._steps)
                    return self._out(samples, now)
        step = self._fade_step
        steps = self._steps
        acc = self._acc
        acc.fill(0.0)
        voice_on = False
        for s in sources:
            if s.voice and s._audible and not s._stopping and not s._paused:
                voice_on = True
                break
        duck, self._duck_level = _ramp(self._duck_level, self._duck if voice_on else 1.0, step, n, steps)
        keep: list[MixerSource] = []
        for s in sources:
            if s._level == 1.0 and s._queued >= n and not (s._stopping or s._paused):
                # The steady state: a full frame queued, no fade under way.
                if s._marks:
                    s._fire_marks()
                chunk, got = s._take(n)
                s.played_samples += got
                acc += chunk * (s.gain if s.voice else s.gain * duck)
                if s._ended and s._queued == 0 and not s.loop:
                    s._level = 0.0  # played out on the next tick
                keep.append(s)
                continue
            if s._finished:
                continue
            if s._marks:
                s._fire_marks()  # (audio mixed in earlier frames has played by now)
            if s._ended and s._queued == 0 and s._level == 0.0 and not s.loop and s.played_samples:
                # Its last sample went out in the previous frame: that frame has now been played.
                s._finish(now)
                continue
            silent = s._stopping or s._paused
            if silent and s._level == 0.0:
                if s._stopping:
                    s.stopped = True
                    s._finish(now)
                    continue
                keep.append(s)  # paused: hold the queue, play nothing
                continue
            if s._queued == 0 and not (s._ended and s.loop):
                if s._ended and s.played_samples == 0 and not s._stopping:
                    s._finish(now)  # ended without ever having audio
                    continue
                s._level = 0.0  # an underflowing stream restarts with a fade-in
                keep.append(s)
                continue
            if silent:
                # Fading out: use only the samples under the ramp, so a paused source resumes
                # exactly where its fade ended (a stopped one drops its queue anyway).
                chunk, got = s._take(min(n, math.ceil(s._level / step - 1e-9)))
                if len(chunk) < n:
                    chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.float32)])
            else:
                chunk, got = s._take(n)
            if s.started_at is None:
                s.started_at = now
            s.played_samples += got
            env, s._level = _ramp(s._level, 0.0 if silent else 1.0, step, n, steps)
            g = s.gain if s.voice else s.gain * duck
            acc += chunk * (g * env)
            if s._ended and s._queued == 0 and not s.loop:
                s._level = 0.0  # played out on the next tick
            keep.append(s)
        self._sources = keep
        np.multiply(acc, 32768.0, out=acc)
        np.minimum(acc, 32767.0, out=acc)  # saturate: no wrap-around (two ufuncs: np.clip's
        np.maximum(acc, -32768.0, out=acc)  # Python wrapper costs more than both)
        np.rint(acc, out=acc)
        return self._out(acc.astype(np.int16), now)

    def _out(self, samples: Int16Array, now: float) -> AudioFrame:
        """The tick's frame: counted, shown to the tap."""
        self._ticks += 1
        frame = AudioFrame._trusted(samples, self.sample_rate, 1, now)
        if self.tap is not None:
            self.tap(frame)
        return frame

    # -- the pump ---------------------------------------------------------------------------
    async def run(
        self,
        send_channel: trio.abc.SendChannel[AudioFrame],
        *,
        clock: TickClock | None = None,
        sink: NowaitSink | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tick every `frame_duration` on the trio clock and send each mixed frame.

        Runs until cancelled or until the receiver closes. Without a `clock`, the first tick is
        at the time `run` starts and tick k is at ``t0 + k * frame_duration`` (the pump wakes 1 µs
        after it; frame timestamps are the exact tick times). With a shared `TickClock`, the
        pump follows that clock's ticks instead, which saves a timer per session when a process
        hosts many. A tick handled a whole frame or more after its time is an underrun (its slot
        is over: a consumer with one frame of buffer hears a gap); the pump then skips ahead
        (each skipped tick is an underrun) rather than sending a burst.

        With a shared `clock` and a `sink` that takes frames without waiting, the frames are
        mixed and handed over inside the clock's own task at each tick (no task switch per
        session per tick; `send_channel` is then unused): this task only waits while the sink
        is full (those ticks are underruns, as when a send blocks) and re-raises what failed.
        A sink whose `sends_idle` is False gets no frame at a tick with nothing to play.
        """
        if clock is not None and not math.isclose(clock.period, self.frame_duration):
            raise ValueError(f"the clock ticks every {clock.period} s but this mixer's frame is {self.frame_duration} s")
        if clock is not None and sink is not None:
            await self._run_on_clock(sink, clock, task_status)
            return
        period = self.frame_duration
        t0 = trio.current_time()
        k = -1 if clock is None else clock.index  # on a shared clock, start at its next tick
        task_status.started()
        async with send_channel:
            while True:
                if clock is not None:
                    tick, deadline = await clock.wait_tick(k)
                    if k >= 0 and tick > k + 1:
                        self._underruns += tick - k - 1
                    k = tick
                else:
                    k += 1
                    deadline = t0 + k * period
                    # Wake a hair after the deadline, so that whatever any task does at exactly
                    # the tick's time t (add a source, stop one) is in the frame for t, whatever
                    # order the scheduler runs tasks in. Under a MockClock this is exact.
                    await trio.sleep_until(deadline + _WAKE_AFTER)
                late = trio.current_time() - deadline - _WAKE_AFTER
                if late >= period:
                    # Slots that are over before their frame was made: gaps downstream. Skip
                    # them (no burst); the frame made now is for the current slot.
                    missed = int(late // period)
                    self._underruns += missed
                    if clock is None:
                        k += missed
                        deadline = t0 + k * period
                frame = self.mix(deadline)
                try:
                    await send_channel.send(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


    async def _run_on_clock(self, sink: NowaitSink, clock: TickClock, task_status: trio.TaskStatus[None]) -> None:
        period = self.frame_duration
        last = clock.index  # (the first tick handled is the clock's next)
        blocked = False
        failure: Exception | None = None
        wake = trio.Event()

        def on_tick(tick: int, deadline: float) -> None:
            nonlocal last, blocked, failure
            try:
                if tick > last + 1 and last >= 0:
                    self._underruns += tick - last - 1
                last = tick
                if blocked or failure is not None:
                    self._underruns += 1  # (the sink is full: this slot gets no frame)
                    return
                late = trio.current_time() - deadline - _WAKE_AFTER
                if late >= period:
                    self._underruns += int(late // period)
                if not (self._sources or self.tap is not None or self._duck_level != 1.0) and not getattr(sink, "sends_idle", True):
                    # Nothing to play (most of a call's ticks), and the sink would not send the
                    # frame: none is made; the tick is counted, late or not, as before.
                    self._ticks += 1
                    return
                if not sink.send_nowait(self.mix(deadline)):
                    blocked = True
                    wake.set()
            except Exception as exc:  # (raised in this session's task, never in the clock's)
                failure = exc
                wake.set()

        token = clock.subscribe(on_tick)
        task_status.started()
        try:
            while True:
                await wake.wait()
                wake = trio.Event()
                if failure is not None:
                    raise failure
                if blocked:
                    await sink.wait_ready()
                    blocked = False
        finally:
            clock.unsubscribe(token)


class _SoxrStream:
    """soxr's stream with the `Polyphase` interface (mono float32)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32")

    def process(self, x: Float32Array) -> Float32Array:
        out: Float32Array = self._stream.resample_chunk(x)
        return out

    def flush(self) -> Float32Array:
        out: Float32Array = self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
        self._stream.clear()
        return out


def _as_float(samples: Float32Array | Int16Array) -> Float32Array:
    """Queued samples as float32 in [-1, 1) (int16 ones scaled: exact)."""
    if samples.dtype == INT16:
        return np.multiply(samples, _FROM_INT16, dtype=np.float32)
    return cast(Float32Array, samples)


_IDLE: dict[int, Int16Array] = {}


def _idle_samples(n: int) -> Int16Array:
    """The read-only zeros a mixer's frame of `n` samples holds when nothing plays (one array
    per length, shared by every mixer)."""
    samples = _IDLE.get(n)
    if samples is None:
        samples = _IDLE[n] = np.zeros(n, np.int16)
        samples.flags.writeable = False
    return samples


def is_idle(frame: AudioFrame) -> bool:
    """True for a frame a `Mixer` made with nothing to play (not even a fade or a ducked
    background): a transport may leave it unsent. Not true of silence some source played."""
    samples = frame.samples
    return samples is _IDLE.get(len(samples))


@attrs.define(eq=False)
class TickClock:
    """One timer for many mixers: a process hosting many sessions runs one `TickClock` task and
    passes the clock to every session, so each tick costs one timer wake-up in all, not one per
    session, and all mixers tick together.

    Run it in a nursery that outlives the sessions using it: ``await nursery.start(clock.run)``.
    """

    period: float = FRAME_DURATION
    phase: float = 0.0
    """Where in the period this clock ticks, as a fraction of it: a server runs a few clocks at
    different phases so that its sessions' mixing does not all land on the same instant."""
    _lot: trio.lowlevel.ParkingLot = attrs.field(init=False, factory=trio.lowlevel.ParkingLot)
    _subscribers: dict[int, Callable[[int, float], None]] = attrs.field(init=False, factory=dict)
    _next_token: int = attrs.field(init=False, default=0)
    _index: int = attrs.field(init=False, default=-1)
    _time: float = attrs.field(init=False, default=-math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled; tick k is at ``t0 + (k + phase) * period`` (woken 1 µs after)."""
        t0 = trio.current_time() + self.phase * self.period
        k = 0
        task_status.started()
        while True:
            deadline = t0 + k * self.period
            await trio.sleep_until(deadline + _WAKE_AFTER)
            late = trio.current_time() - deadline - _WAKE_AFTER
            if late >= self.period:
                k += int(late // self.period)
                deadline = t0 + k * self.period
            self._index, self._time = k, deadline
            self._lot.unpark_all()
            for on_tick in list(self._subscribers.values()):
                on_tick(k, deadline)
            k += 1

    def subscribe(self, on_tick: Callable[[int, float], None]) -> int:
        """Call ``on_tick(index, time)`` in the clock's task at every tick, until
        `unsubscribe(token)`. It must not raise or wait. Not a checkpoint."""
        self._next_token += 1
        self._subscribers[self._next_token] = on_tick
        return self._next_token

    def unsubscribe(self, token: int) -> None:
        """Stop the calls `subscribe` returned `token` for. Not a checkpoint."""
        self._subscribers.pop(token, None)

    @property
    def index(self) -> int:
        """The number of the latest tick (-1 before the first)."""
        return self._index

    async def wait_tick(self, after: int) -> tuple[int, float]:
        """Wait for a tick newer than index `after`; return its index and time. A checkpoint."""
        if self._index <= after:
            await self._lot.park()
        else:
            await trio.lowlevel.checkpoint()
        return self._index, self._time
