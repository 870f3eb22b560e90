"""Voice activity detection: `EnergyVAD` (numpy, the default) and the `Segmenter` that any
window-by-window detector (`SileroVAD` too) uses to turn decisions into start and end events."""

from __future__ import annotations

import collections

import attrs
import numpy as np

from ..audio.frame import AudioFrame
from .base import VADEvent

__all__ = ["EnergyVAD", "PreRoll", "Segmenter"]

# EnergyVAD's shortcut for a quiet frame: the whole frame's sum of squares and a window's are
# rounded differently (float32), so a frame just under the threshold goes the long way and
# both ways decide every window alike.
_MARGIN = 1 - 1e-4


@attrs.define(eq=False)
class Segmenter:
    """Speech windows in, start and end events out. A start needs `min_speech_duration` of
    consecutive speech windows, an end `min_silence_duration` of non-speech ones; event times are
    the true onset and offset (window precision).

    The durations are of audio heard, not of time passed: input that came late is stamped when
    it came (a transport re-anchors to the clock), and the gap before it is no speech and no
    silence. Counted by the clock, a caller whose network stalled for 0.3 s on the quiet of a
    plosive ("in | Paris") had their turn cut in two.
    """

    min_speech_duration: float = 0.1
    min_silence_duration: float = 0.3
    speaking: bool = attrs.field(init=False, default=False)
    _run_start: float | None = attrs.field(init=False, default=None)
    _run_heard: float = attrs.field(init=False, default=0.0)  # seconds of the speech run heard
    _silence_start: float | None = attrs.field(init=False, default=None)
    _silence_heard: float = attrs.field(init=False, default=0.0)  # seconds of the silence heard
    _processed_until: float = attrs.field(init=False, default=0.0)

    @property
    def in_speech_run(self) -> bool:
        """Speaking, or in a run of speech windows that may become speech."""
        return self.speaking or self._run_start is not None

    @property
    def speech_duration(self) -> float:
        if not self.speaking or self._run_start is None:
            return 0.0
        end = self._silence_start if self._silence_start is not None else self._processed_until
        return max(0.0, end - self._run_start)

    def reset(self) -> None:
        self.speaking = False
        self._run_start = self._silence_start = None

    def feed_windows(self, t: float, w: float, voiced: list[bool]) -> list[VADEvent]:
        """Consecutive windows of `w` seconds from `t`: the events they complete. The same as
        `feed` for each, without a call per window in the steady states (quiet while not
        speaking, voiced while speaking), where a window changes nothing but the time."""
        if not self.speaking:
            if self._run_start is None and not any(voiced):
                self._processed_until = t + len(voiced) * w
                return []
        elif self._silence_start is None and all(voiced):
            self._processed_until = t + len(voiced) * w
            return []
        events = []
        for i, v in enumerate(voiced):
            event = self.feed(t + i * w, w, v)
            if event is not None:
                events.append(event)
        return events

    def feed(self, t: float, w: float, voiced: bool) -> VADEvent | None:
        """One window [t, t + w): speech or not. Returns the event it completes, if any."""
        self._processed_until = t + w
        if voiced:
            self._silence_start = None
            if not self.speaking:
                if self._run_start is None:
                    self._run_start, self._run_heard = t, 0.0
                self._run_heard += w
                if self._run_heard >= self.min_speech_duration - 1e-9:
                    self.speaking = True
                    return VADEvent("start", self._run_start)
            return None
        if not self.speaking:
            self._run_start = None
            return None
        if self._silence_start is None:
            self._silence_start, self._silence_heard = t, 0.0
        self._silence_heard += w
        if self._silence_heard >= self.min_silence_duration - 1e-9:
            end, self._silence_start, self._run_start = self._silence_start, None, None
            self.speaking = False
            return VADEvent("end", end)
        return None


@attrs.define(eq=False)
class PreRoll:
    """The last `seconds` of a stream, so a speech segment can start where the speech did.

    A VAD is sure of speech only some time after it began (`min_speech_duration`, plus its
    window), and reports the true onset then; an STT that decodes segments must reach back to
    that onset and a little before it, or it loses the first word's first sound. Keep `seconds`
    at least the pre-roll wanted plus the VAD's detection delay.
    """

    seconds: float = 1.0
    _frames: collections.deque[AudioFrame] = attrs.field(init=False, factory=collections.deque)

    def push(self, frame: AudioFrame) -> None:
        self._frames.append(frame)
        while self._frames and self._frames[0].end_time <= frame.end_time - self.seconds:
            self._frames.popleft()

    def since(self, t: float) -> list[AudioFrame]:
        """The audio kept from session time `t` on (cut to the sample); from the oldest kept
        when `t` is older."""
        out: list[AudioFrame] = []
        for frame in self._frames:
            if frame.end_time <= t:
                continue
            if frame.timestamp < t:
                skip = min(len(frame.samples), round((t - frame.timestamp) * frame.sample_rate))
                frame = AudioFrame(frame.samples[skip:], frame.sample_rate, frame.channels, frame.timestamp + skip / frame.sample_rate)
            out.append(frame)
        return out


@attrs.define(eq=False)
class EnergyVAD:
    """Speech is audio louder than `threshold_db` (dBFS RMS over `window` seconds).

    A start needs `min_speech_duration` of continuous loud windows; an end needs
    `min_silence_duration` of quiet ones. Event times are the true onset and offset (window
    precision, 10 ms by default), taken from the frames' timestamps. Sans-IO; not a checkpoint.
    """

    sample_rate: int = 16000
    threshold_db: float = -40.0
    min_speech_duration: float = 0.1
    min_silence_duration: float = 0.3
    window: float = 0.01
    _segmenter: Segmenter = attrs.field(init=False)
    _win: int = attrs.field(init=False)
    _threshold: float = attrs.field(init=False)
    _ones: np.ndarray = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._segmenter = Segmenter(self.min_speech_duration, self.min_silence_duration)
        self._win = max(1, round(self.window * self.sample_rate))
        self._ones = np.ones(self._win, np.float32)
        self._threshold = (10 ** (self.threshold_db / 20) * 32768.0) ** 2

    @property
    def speaking(self) -> bool:
        return self._segmenter.speaking

    @property
    def speech_duration(self) -> float:
        """Seconds of the current speech segment heard so far, not counting trailing silence
        (0 when not speaking)."""
        return self._segmenter.speech_duration

    def reset(self) -> None:
        self._segmenter.reset()

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"EnergyVAD runs at {self.sample_rate} Hz, got a {frame.sample_rate} Hz frame")
        samples = frame.samples if frame.channels == 1 else frame.to_mono().samples
        win = self._win
        n = len(samples) // win
        if n == 0:
            return []
        x = (samples if len(samples) == n * win else samples[: n * win]).astype(np.float32)
        # Loud windows: sum of squares over the threshold (times the window: no division).
        limit = self._threshold * win
        seg = self._segmenter
        if not seg.in_speech_run and x.dot(x) < limit * _MARGIN:
            # Quiet, and no window is loud when the whole frame is not (most of a call): one
            # numpy call, not four (27k -> 15k instructions a 20 ms frame). In speech, the
            # windows straight away.
            loud = [False] * n
        else:
            x = x.reshape(n, win)
            x *= x
            # Each window's sum: a matrix-vector product (BLAS: a third of what np.add.reduce
            # over an axis costs); compared in Python (two or three windows: less than a numpy
            # call costs).
            loud = [e > limit for e in x.dot(self._ones).tolist()]
        return seg.feed_windows(frame.timestamp, win / self.sample_rate, loud)
