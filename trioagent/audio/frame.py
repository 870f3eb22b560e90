"""`AudioFrame`: the one value that carries audio through trioagent."""

from __future__ import annotations

import attrs
import numpy as np
import numpy.typing as npt

FRAME_DURATION = 0.02
"""Seconds of audio in one frame wherever trioagent chooses the size: the mixer's tick, network
audio re-cut for the VAD and STT, synthetic test audio."""

Int16Array = npt.NDArray[np.int16]
Float32Array = npt.NDArray[np.float32]
INT16 = np.dtype(np.int16)  # the samples' dtype (one object: hot paths compare it with `is`)


def _check_rate(sample_rate: int) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")


def _check_channels(channels: int) -> None:
    if not isinstance(channels, (int, np.integer)) or channels <= 0:
        raise ValueError(f"channels must be a positive integer, got {channels!r}")


def _arrays_equal(a: Int16Array, b: Int16Array) -> bool:
    return bool(np.array_equal(a, b))


@attrs.frozen
class AudioFrame:
    """A block of int16 PCM audio with its rate, channel count and session-clock timestamp.

    `samples` has shape ``(n,)`` for mono or ``(n, channels)`` for more channels. Use the named
    constructors (`from_pcm16`, `silence`, `from_float`) at the edges; change with `attrs.evolve`.

    Raises:
        ValueError: the samples are not int16, their shape does not match `channels`, or the
            rate or channel count is not positive.
    """

    samples: Int16Array = attrs.field(eq=attrs.cmp_using(eq=_arrays_equal))
    sample_rate: int
    channels: int = 1
    timestamp: float = 0.0

    def __attrs_post_init__(self) -> None:
        _check_rate(self.sample_rate)
        _check_channels(self.channels)
        s = self.samples
        if not isinstance(s, np.ndarray):
            raise ValueError(f"samples must be a numpy array, got {type(s).__name__}")
        if s.dtype != np.int16:
            raise ValueError(f"samples must have dtype int16, got {s.dtype}")
        if self.channels == 1:
            if s.ndim != 1:
                raise ValueError(f"mono samples must have shape (n,), got {s.shape}")
        elif s.ndim != 2 or s.shape[1] != self.channels:
            raise ValueError(
                f"samples for {self.channels} channels must have shape (n, {self.channels}), got {s.shape}"
            )

    @classmethod
    def _trusted(cls, samples: Int16Array, sample_rate: int, channels: int, timestamp: float) -> AudioFrame:
        """Build without validation, for hot paths whose values are right by construction."""
        frame = object.__new__(cls)
        object.__setattr__(frame, "samples", samples)
        object.__setattr__(frame, "sample_rate", sample_rate)
        object.__setattr__(frame, "channels", channels)
        object.__setattr__(frame, "timestamp", timestamp)
        return frame

    # -- named constructors -------------------------------------------------------------
    @classmethod
    def from_pcm16(
        cls, data: bytes, sample_rate: int, channels: int = 1, timestamp: float = 0.0
    ) -> AudioFrame:
        """Build a frame from little-endian interleaved 16-bit PCM bytes."""
        _check_rate(sample_rate)
        _check_channels(channels)
        width = 2 * channels
        if len(data) % width:
            raise ValueError(
                f"PCM16 data of {len(data)} bytes is not a whole number of "
                f"{channels}-channel samples ({width} bytes each)"
            )
        samples = np.frombuffer(data, dtype="<i2").astype(np.int16, copy=True)
        if channels > 1:
            samples = samples.reshape(-1, channels)
        return cls(samples, sample_rate, channels, timestamp)

    @classmethod
    def silence(
        cls, duration: float, sample_rate: int, channels: int = 1, timestamp: float = 0.0
    ) -> AudioFrame:
        """A frame of `duration` seconds of digital silence (rounded to whole samples)."""
        _check_rate(sample_rate)
        _check_channels(channels)
        if duration < 0:
            raise ValueError(f"duration must be >= 0, got {duration!r}")
        n = round(duration * sample_rate)
        shape: tuple[int, ...] = (n,) if channels == 1 else (n, channels)
        return cls(np.zeros(shape, np.int16), sample_rate, channels, timestamp)

    @classmethod
    def from_float(
        cls, array: npt.ArrayLike, sample_rate: int, timestamp: float = 0.0
    ) -> AudioFrame:
        """Build a frame from float samples in [-1, 1] (values outside are clipped).

        The channel count comes from the shape: ``(n,)`` is mono, ``(n, c)`` has c channels.
        """
        a = np.asarray(array)
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"from_float expects a floating-point array, got {a.dtype}")
        if a.ndim not in (1, 2):
            raise ValueError(f"from_float expects shape (n,) or (n, channels), got {a.shape}")
        channels = 1 if a.ndim == 1 else a.shape[1]
        if a.ndim == 2 and channels == 1:
            a = a[:, 0]
        scaled = np.clip(np.rint(a * 32768.0), -32768, 32767).astype(np.int16)
        return cls(scaled, sample_rate, channels, timestamp)

    # -- views ----------------------------------------------------------------------------
    def to_pcm16(self) -> bytes:
        """Little-endian interleaved 16-bit PCM bytes."""
        return self.samples.astype("<i2", copy=False).tobytes()

    def to_float(self) -> Float32Array:
        """float32 samples in [-1, 1), same shape as `samples`."""
        return np.multiply(self.samples, np.float32(1.0 / 32768.0), dtype=np.float32)

    @property
    def samples_per_channel(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return float(self.samples.shape[0] / self.sample_rate)

    @property
    def end_time(self) -> float:
        """`timestamp + duration`."""
        return self.timestamp + self.duration

    def to_mono(self) -> AudioFrame:
        """Average the channels into one (a no-op for mono)."""
        if self.channels == 1:
            return self
        mixed = self.samples.astype(np.int32).mean(axis=1)
        return AudioFrame(np.rint(mixed).astype(np.int16), self.sample_rate, 1, self.timestamp)

    def __len__(self) -> int:
        return self.samples_per_channel

    def __repr__(self) -> str:
        return (
            f"AudioFrame({self.samples_per_channel} samples, {self.sample_rate} Hz, "
            f"{self.channels} ch, t={self.timestamp:.3f})"
        )

