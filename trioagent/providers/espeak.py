"""`EspeakTTS`: eSpeak NG through ctypes, from the `espeakng-loader` wheel (no system package).

How this works: libespeak-ng runs in synchronous mode; `espeak_Synth` calls our callback with
blocks of 22.05 kHz int16 samples. The library is process-global and not thread-safe, so calls
are serialised by a lock; each sentence is synthesised in a worker thread (inline under a
MockClock), and a cancelled synthesis is aborted from the callback at its next block.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import trio

from .._compute import run_blocking
from ..audio.frame import FRAME_DURATION, AudioFrame
from ..errors import ProviderError

__all__ = ["EspeakTTS"]

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1
_PITCH = 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_lib: Any = None
_rate = 0


def _library() -> tuple[Any, int]:
    global _lib, _rate
    if _lib is None:
        try:
            import espeakng_loader
        except ImportError:
            raise ProviderError(
                "EspeakTTS needs the espeakng-loader wheel: pip install -e '.[local]' (from a clone of trioagent)", provider="EspeakTTS"
            ) from None
        lib = ctypes.cdll.LoadLibrary(str(espeakng_loader.get_library_path()))
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 100, str(espeakng_loader.get_data_path()).encode(), 0)
        if rate <= 0:
            raise ProviderError(f"espeak_Initialize failed ({rate})", provider="EspeakTTS")
        _lib, _rate = lib, rate
    return _lib, _rate


class EspeakTTS:
    """Text to speech with eSpeak NG, 22.05 kHz mono; about 10 ms to the first audio.

    Args:
        voice: an eSpeak NG voice name, e.g. ``"en-us"``, ``"en"``, ``"en-us+f3"``.
        rate: words per minute (80..450).
        pitch: 0..100.
        frame_duration: size of the frames it yields.
    """

    sample_rate = 22050

    def __init__(self, voice: str = "en-us", rate: int = 175, pitch: int = 50, frame_duration: float = FRAME_DURATION) -> None:
        self.voice = voice
        self.rate = rate
        self.pitch = pitch
        self.frame_duration = frame_duration

    def _synth(self, text: str, cancelled: threading.Event) -> np.ndarray:
        lib, rate = _library()
        if rate != self.sample_rate:
            raise ProviderError(f"eSpeak NG runs at {rate} Hz, expected {self.sample_rate}", provider="EspeakTTS")
        blocks: list[np.ndarray] = []

        def on_audio(wav: Any, n: int, events: Any) -> int:
            if n > 0 and wav:
                blocks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 1 if cancelled.is_set() else 0

        callback = _CALLBACK(on_audio)
        data = text.encode("utf-8") + b"\0"
        with _lock:
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise ProviderError(f"eSpeak NG has no voice {self.voice!r}", provider="EspeakTTS")
            lib.espeak_SetParameter(_RATE, self.rate, 0)
            lib.espeak_SetParameter(_PITCH, self.pitch, 0)
            err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0 and not cancelled.is_set():
            raise ProviderError(f"espeak_Synth failed ({err})", provider="EspeakTTS")
        return np.concatenate(blocks).astype(np.int16) if blocks else np.zeros(0, np.int16)

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        cancelled = threading.Event()
        try:
            samples = await run_blocking(self._synth, text, cancelled, abandon_on_cancel=True)
        finally:
            cancelled.set()  # a cancelled call aborts at the library's next block
        step = round(self.frame_duration * self.sample_rate)
        for i in range(0, len(samples), step):
            yield AudioFrame(samples[i : i + step], self.sample_rate)
            await trio.lowlevel.checkpoint()
