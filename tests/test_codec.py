"""G.711 against a straight port of the ITU-T G.191 reference (g711.c), and WAV files."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from trioagent import AudioFormatError, AudioFrame
from trioagent.audio import alaw_decode, alaw_encode, read_wav, ulaw_decode, ulaw_encode, write_wav


def ref_ulaw_compress(x: int) -> int:
    absno = ((~x) >> 2) + 33 if x < 0 else (x >> 2) + 33
    absno = min(absno, 0x1FFF)
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 0x08 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    code = (high << 4) | low
    return code | 0x80 if x >= 0 else code


def ref_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def ref_alaw_compress(x: int) -> int:
    ix = (~x) >> 4 if x < 0 else x >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def ref_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


ALL = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_encode_every_int16() -> None:
    expected = bytes(ref_ulaw_compress(int(x)) for x in ALL)
    assert ulaw_encode(ALL) == expected


def test_alaw_encode_every_int16() -> None:
    expected = bytes(ref_alaw_compress(int(x)) for x in ALL)
    assert alaw_encode(ALL) == expected


def test_decode_every_code() -> None:
    codes = bytes(range(256))
    assert ulaw_decode(codes).tolist() == [ref_ulaw_expand(c) for c in range(256)]
    assert alaw_decode(codes).tolist() == [ref_alaw_expand(c) for c in range(256)]


def test_known_values() -> None:
    # Textbook values: silence is 0xFF in mu-law and 0xD5 in A-law; full scale decodes to +-32124 / +-32256.
    assert ulaw_encode(np.array([0], np.int16)) == b"\xff"
    assert alaw_encode(np.array([0], np.int16)) == b"\xd5"
    assert ulaw_decode(b"\x00\x80").tolist() == [-32124, 32124]
    assert alaw_decode(b"\x2a\xaa").tolist() == [-32256, 32256]
    # Decoding then re-encoding is the identity on codes (except mu-law's two zeros).
    codes = bytes(range(256))
    assert alaw_encode(alaw_decode(codes)) == codes
    reenc = ulaw_encode(ulaw_decode(codes))
    assert [a for a, b in zip(reenc, codes) if a != b] == [0xFF]  # 0x7F (-0) re-encodes as +0


def test_encoder_rejects_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="int16"):
        ulaw_encode(np.zeros(4, np.float32))


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (22050, 1)])
def test_wav_round_trip(tmp_path: Path, rate: int, channels: int) -> None:
    rng = np.random.default_rng(1)
    shape = (1000,) if channels == 1 else (1000, channels)
    frame = AudioFrame(rng.integers(-32768, 32767, shape).astype(np.int16), rate, channels)
    write_wav(tmp_path / "x.wav", frame)
    back = read_wav(tmp_path / "x.wav")
    assert back == frame


def test_wav_8bit(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "u8.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes([128, 255, 0]))
    assert read_wav(tmp_path / "u8.wav").samples.tolist() == [0, 127 << 8, -32768]


def test_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(AudioFormatError, match="not a readable PCM WAV"):
        read_wav(tmp_path / "junk.wav")
    with wave.open(str(tmp_path / "s24.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(8000)
        w.writeframes(b"\x00" * 30)
    with pytest.raises(AudioFormatError, match="24-bit"):
        read_wav(tmp_path / "s24.wav")
