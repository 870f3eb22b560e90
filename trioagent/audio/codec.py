"""G.711 (mu-law, A-law) codecs and WAV files.

How this works: the G.711 encoders are two 65,536-entry lookup tables (one code byte for every
int16 input) built once, vectorised, from the ITU-T G.191 reference algorithm
(`ulaw_compress` / `alaw_compress` in g711.c); the decoders are 256-entry tables built the same
way from `ulaw_expand` / `alaw_expand`. Encoding or decoding a frame is then one numpy take.
"""

from __future__ import annotations

import os
import wave

import numpy as np
import numpy.typing as npt

from ..errors import AudioFormatError
from .frame import AudioFrame, Int16Array

__all__ = [
    "ulaw_encode",
    "ulaw_decode",
    "alaw_encode",
    "alaw_decode",
    "read_wav",
    "write_wav",
]


def _bit_length(x: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Number of significant bits of non-negative ints (0 for 0)."""
    out = np.zeros_like(x)
    v = x.copy()
    while np.any(v):
        nz = v != 0
        out[nz] += 1
        v >>= 1
    return out


def _ulaw_compress(linear: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # G.191 ulaw_compress: 14-bit magnitude (one's complement for negatives), biased by 33.
    absno = np.where(linear < 0, (~linear) >> 2, linear >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = _bit_length(absno >> 6) + 1
    high = 8 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    code = np.where(linear >= 0, code | 0x80, code)
    out: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return out


def _ulaw_expand(code: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    sign = np.where(code < 0x80, -1, 1)
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa = mantissa & 0x0F
    step = 4 << segment
    value = sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)
    out: npt.NDArray[np.int16] = value.astype(np.int16)
    return out


def _alaw_compress(linear: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # G.191 alaw_compress: 12-bit magnitude (one's complement for negatives).
    ix = np.where(linear < 0, (~linear) >> 4, linear >> 4)
    # Segment: 0 for ix <= 15, else the number of halvings needed to get ix <= 31, plus one.
    iexp = np.where(ix > 15, np.maximum(_bit_length(ix) - 4, 1), 0)
    mant = np.where(iexp > 0, (ix >> np.maximum(iexp - 1, 0)) - 16, ix)
    code = np.where(iexp > 0, mant + (iexp << 4), ix)
    code = np.where(linear >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


def _alaw_expand(code: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    mant = np.where(iexp > 0, mant + 16, mant)
    mant = (mant << 4) + 0x08
    mant = np.where(iexp > 1, mant << np.maximum(iexp - 1, 0), mant)
    return np.where(code > 127, mant, -mant).astype(np.int16)


# Tables indexed by the int16 input reinterpreted as uint16 (encoders) or by the code (decoders).
_ALL_INT16 = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
_ALL_CODES = np.arange(256, dtype=np.int32)
_ULAW_ENC = _ulaw_compress(_ALL_INT16)
_ULAW_DEC = _ulaw_expand(_ALL_CODES)
_ALAW_ENC = _alaw_compress(_ALL_INT16)
_ALAW_DEC = _alaw_expand(_ALL_CODES)


def _as_int16(samples: npt.ArrayLike | AudioFrame) -> Int16Array:
    if isinstance(samples, AudioFrame):
        return samples.samples
    a = np.asarray(samples)
    if a.dtype != np.int16:
        raise ValueError(f"G.711 encoders take int16 samples, got {a.dtype}")
    return a


def ulaw_encode(samples: npt.ArrayLike | AudioFrame) -> bytes:
    """Encode int16 samples (or a frame) as G.711 mu-law bytes, one byte per sample."""
    return _ULAW_ENC[_as_int16(samples).reshape(-1).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes) -> Int16Array:
    """Decode G.711 mu-law bytes to int16 samples."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(samples: npt.ArrayLike | AudioFrame) -> bytes:
    """Encode int16 samples (or a frame) as G.711 A-law bytes, one byte per sample."""
    return _ALAW_ENC[_as_int16(samples).reshape(-1).view(np.uint16)].tobytes()


def alaw_decode(data: bytes) -> Int16Array:
    """Decode G.711 A-law bytes to int16 samples."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


# -- WAV ----------------------------------------------------------------------------------


def read_wav(path: str | os.PathLike[str]) -> AudioFrame:
    """Read a PCM WAV file (8- or 16-bit, any channel count up to 2, any rate).

    Not a checkpoint: it blocks on the file system; wrap it in `trio.to_thread.run_sync` for
    large files inside a running session.

    Raises:
        FileNotFoundError: the file does not exist.
        AudioFormatError: the file is not a WAV file, or holds a format other than 8/16-bit PCM
            mono or stereo.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise AudioFormatError(f"{path}: not a readable PCM WAV file ({exc})") from None
    if channels not in (1, 2):
        raise AudioFormatError(f"{path}: {channels} channels; only mono and stereo are supported")
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    elif width == 1:
        samples = ((np.frombuffer(raw, dtype=np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    else:
        raise AudioFormatError(f"{path}: {8 * width}-bit samples; only 8- and 16-bit PCM are supported")
    if channels == 2:
        samples = samples[: len(samples) // 2 * 2].reshape(-1, 2)
    return AudioFrame(samples, rate, channels)


def write_wav(path: str | os.PathLike[str], frame: AudioFrame) -> None:
    """Write a frame as a 16-bit PCM WAV file (mono or stereo).

    Raises:
        AudioFormatError: the frame has more than two channels.
    """
    if frame.channels not in (1, 2):
        raise AudioFormatError(f"cannot write {frame.channels} channels; only mono and stereo")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(frame.channels)
        w.setsampwidth(2)
        w.setframerate(frame.sample_rate)
        w.writeframes(frame.to_pcm16())
