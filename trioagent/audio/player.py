"""Background and thinking audio: a clip (WAV, or MP3, OGG/Vorbis, FLAC... through soundfile)
streamed into the mixer by its own task."""

from __future__ import annotations

import functools
import logging
import os

import attrs
import trio

from ..errors import AudioFormatError
from .codec import read_wav
from .frame import AudioFrame, Float32Array
from .mixer import Mixer, MixerSource
from .resample import resample

__all__ = ["BackgroundAudioHandlerConfig", "BackgroundAudioPlayer", "load_clip"]

_log = logging.getLogger("trioagent.audio.player")


def _check_volume(_: object, __: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"volume must be within 0..1, got {value!r}")


@attrs.frozen
class BackgroundAudioHandlerConfig:
    """What to play as background (or "thinking") audio.

    Attributes:
        file_path: an audio file at any rate, mono or stereo: PCM WAV always; MP3, OGG/Vorbis,
            FLAC and the other formats libsndfile reads with `soundfile` installed (the
            ``.[audio-files]`` extra). A file that is missing or cannot be decoded is a
            warning in the log and plays nothing, as in the seed.
        volume: linear gain, 0..1.
        looping: start again from the beginning at the end of the file (the seed's default:
            no; thinking audio set from a file loops).
        enabled: when False, playing this config does nothing.
    """

    file_path: str | os.PathLike[str]
    volume: float = attrs.field(default=1.0, validator=_check_volume)
    looping: bool = False
    enabled: bool = True
    mode: str = attrs.field(default="mixing", validator=attrs.validators.in_(("mixing", "playback")))
    """``"mixing"``: under everything else, ducked while the agent speaks. ``"playback"``: the
    clip is the agent's voice, in the speech queue, cut by a barge-in or `interrupt()` like speech
    (played once; `looping` applies to mixing)."""


def decode(path: str) -> AudioFrame:
    """The whole file as one mono frame at its own rate.

    Raises:
        FileNotFoundError: it is missing.
        AudioFormatError: it cannot be decoded (or needs soundfile, which is not installed).
    """
    if path.lower().endswith((".wav", ".wave")):
        try:
            return read_wav(path).to_mono()
        except AudioFormatError:
            pass  # (a float or 24-bit WAV: soundfile reads those)
    try:
        import soundfile
    except ImportError:
        raise AudioFormatError(f"{path}: only PCM WAV without soundfile: pip install -e '.[audio-files]'") from None
    try:
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        if not os.path.exists(path):
            raise FileNotFoundError(path) from None
        raise AudioFormatError(f"{path}: {exc}") from None
    return AudioFrame.from_float(samples.mean(axis=1), int(rate))


@functools.lru_cache(maxsize=32)
def _load_clip(path: str, mtime_ns: int, size: int, rate: int) -> Float32Array:
    """A clip as read-only float32 mono at `rate`, resampled once and shared by every session
    that plays it (keyed by path, modification time and size: an edited file is read again)."""
    data = resample(decode(path), rate).to_float()
    data.flags.writeable = False
    return data


def load_clip(config: BackgroundAudioHandlerConfig, rate: int, name: str = "background") -> Float32Array | None:
    """The clip of `config` at `rate` (shared, read-only), or None with a warning in the log
    when the file is missing or cannot be decoded."""
    path = os.fspath(config.file_path)
    try:
        st = os.stat(path)
        # Read in this thread: clips are small and cached, and a thread hop would let a
        # MockClock jump while the file loads, which breaks virtual-time determinism.
        return _load_clip(path, st.st_mtime_ns, st.st_size, rate)
    except (OSError, AudioFormatError) as exc:
        _log.warning("%s audio not played: %s", name, exc)
        return None


@attrs.define(eq=False)
class BackgroundAudioPlayer:
    """Plays one WAV file into a mixer from its own task and cancel scope.

    `start()` reads the file first: a missing or undecodable one is a warning in the log and
    plays nothing (the seed's behaviour: a wrong hold-music path must not fail a call). The clip is resampled to the mixer rate once and shared by every
    player of the same file (hundreds of sessions playing one hold music cost one copy). The
    player's task owns the mixer source: `stop()` cancels its scope and the source fades out.

    Args:
        config: what to play.
        mixer: where to play it.
        name: the mixer source's name.
    """

    config: BackgroundAudioHandlerConfig
    mixer: Mixer
    name: str = "background"
    _scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _source: MixerSource | None = attrs.field(init=False, default=None)

    @property
    def is_playing(self) -> bool:
        return self._source is not None and not self._source.played_out and not self._source.stopped

    @property
    def source(self) -> MixerSource | None:
        return self._source

    async def start(self, nursery: trio.Nursery) -> None:
        """Load the file and start playing it in a task of `nursery` (a missing or undecodable
        file: a warning, nothing plays)."""
        if not self.config.enabled:
            return
        if self._scope is not None:
            raise RuntimeError("this player was already started")
        data = load_clip(self.config, self.mixer.sample_rate, self.name)
        if data is None:
            await trio.lowlevel.checkpoint()
            return
        await nursery.start(self._run, data)

    async def _run(self, data: Float32Array, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        source = self.mixer.add_source(self.mixer.sample_rate, gain=self.config.volume, loop=self.config.looping, name=self.name)
        self._source = source
        with trio.CancelScope() as self._scope:
            task_status.started()
            try:
                source.push_float(data)
                source.end()
                await source.wait_played_out()
            finally:
                source.stop()

    def stop_nowait(self) -> None:
        """Stop playing now: the source starts fading out on the next tick. Idempotent."""
        if self._scope is not None:
            self._scope.cancel()
        if self._source is not None:
            self._source.stop()

    async def stop(self) -> None:
        """Stop playing; returns once the fade-out has played (bounded). Idempotent."""
        self.stop_nowait()
        if self._source is not None:
            with trio.move_on_after(self.mixer.fade_duration + 3 * self.mixer.frame_duration):
                await self._source.wait_played_out()
