"""Resampling `AudioFrame`s: streams with the low-latency `Polyphase` filter (mono) or soxr
(several channels, or a soxr quality asked for by name); whole clips with soxr."""

from __future__ import annotations

import attrs
import numpy as np
import soxr

from .frame import AudioFrame, Int16Array
from .polyphase import Polyphase

__all__ = ["StreamResampler"]


@attrs.define(eq=False)
class StreamResampler:
    """Convert a stream of frames from one sample rate to another, frame by frame.

    The filter keeps its state between calls, so resampling a signal in 20 ms frames gives the
    same samples as resampling it in one go: there are no clicks at frame edges. `process` returns
    every sample whose input has arrived (the default low-latency filter holds back only its
    lookahead, 0.5-3 ms; soxr's stream holds back 20-115 ms, see NOTES.md); `flush` returns the
    rest at the end of the stream. When both rates are equal, frames pass through untouched.

    Output timestamps follow the input: each output frame carries the timestamp of the input
    frame that produced it.

    Args:
        from_rate: input sample rate in Hz.
        to_rate: output sample rate in Hz.
        channels: channel count of every input frame.
        quality: ``"LL"`` (default): the low-latency polyphase filter (about 85 dB of
            stop-band, flat to 0.4 of the lower rate), mono only, several channels fall back to
            soxr HQ; or a soxr quality, one of ``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``.
    """

    from_rate: int
    to_rate: int
    channels: int = 1
    quality: str = "LL"
    _stream: soxr.ResampleStream | None = attrs.field(init=False, default=None)
    _filter: Polyphase | None = attrs.field(init=False, default=None)
    _last_timestamp: float = attrs.field(init=False, default=0.0)

    def __attrs_post_init__(self) -> None:
        if self.from_rate <= 0 or self.to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {self.from_rate} -> {self.to_rate}")
        if self.from_rate == self.to_rate:
            return
        if self.quality == "LL" and self.channels == 1:
            self._filter = Polyphase(self.from_rate, self.to_rate)
        else:
            quality = "HQ" if self.quality == "LL" else self.quality
            self._stream = soxr.ResampleStream(self.from_rate, self.to_rate, self.channels, dtype="int16", quality=quality)

    def process(self, frame: AudioFrame) -> AudioFrame:
        """Resample one frame; not a checkpoint.

        Raises:
            ValueError: the frame's rate or channel count is not what this resampler was made for.
        """
        if frame.sample_rate != self.from_rate:
            raise ValueError(
                f"frame is {frame.sample_rate} Hz but this resampler takes {self.from_rate} Hz"
            )
        if frame.channels != self.channels:
            raise ValueError(
                f"frame has {frame.channels} channels but this resampler takes {self.channels}"
            )
        self._last_timestamp = frame.timestamp
        if self._filter is not None:
            return AudioFrame(_to_int16(self._filter.process(frame.samples.astype(np.float32))), self.to_rate, 1, frame.timestamp)
        if self._stream is None:
            return frame
        out = self._stream.resample_chunk(frame.samples, last=False)
        return AudioFrame(np.ascontiguousarray(out, np.int16), self.to_rate, self.channels, frame.timestamp)

    def flush(self) -> AudioFrame:
        """Return the samples still in the filter; the resampler is ready for a new stream after."""
        shape: tuple[int, ...] = (0,) if self.channels == 1 else (0, self.channels)
        if self._filter is not None:
            return AudioFrame(_to_int16(self._filter.flush()), self.to_rate, 1, self._last_timestamp)
        if self._stream is None:
            return AudioFrame(np.zeros(shape, np.int16), self.to_rate, self.channels, self._last_timestamp)
        out = self._stream.resample_chunk(np.zeros(shape, np.int16), last=True)
        self._stream.clear()
        return AudioFrame(np.ascontiguousarray(out, np.int16), self.to_rate, self.channels, self._last_timestamp)


def _to_int16(x: np.ndarray) -> Int16Array:
    out: Int16Array = np.clip(np.rint(x), -32768, 32767).astype(np.int16)
    return out


def resample(frame: AudioFrame, to_rate: int, quality: str = "HQ") -> AudioFrame:
    """Resample a whole frame in one shot."""
    if frame.sample_rate == to_rate:
        return frame
    out = soxr.resample(frame.samples, frame.sample_rate, to_rate, quality=quality)
    return AudioFrame(np.ascontiguousarray(out, np.int16), to_rate, frame.channels, frame.timestamp)
