"""Background and thinking audio: a WAV file streamed into the mixer by its own task."""

from __future__ import annotations

import os

import attrs
import trio

from .codec import read_wav
from .frame import AudioFrame
from .mixer import Mixer, MixerSource

__all__ = ["BackgroundAudioHandlerConfig", "BackgroundAudioPlayer"]


def _check_volume(_: object, __: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"volume must be within 0..1, got {value!r}")


@attrs.frozen
class BackgroundAudioHandlerConfig:
    """What to play as background (or "thinking") audio.

    Attributes:
        file_path: a PCM WAV file (8/16-bit, mono or stereo, any rate).
        volume: linear gain, 0..1.
        looping: start again from the beginning at the end of the file.
        enabled: when False, playing this config does nothing.
    """

    file_path: str | os.PathLike[str]
    volume: float = attrs.field(default=1.0, validator=_check_volume)
    looping: bool = True
    enabled: bool = True


@attrs.define(eq=False)
class BackgroundAudioPlayer:
    """Streams one WAV file into a mixer from its own task and cancel scope.

    `start()` reads the file first, so a missing or unreadable file raises to the caller before
    anything touches the mixer. `stop()` cancels the player's scope; its source fades out.

    Args:
        config: what to play.
        mixer: where to play it.
        name: the mixer source's name.
        chunk_duration: how much audio is pushed at a time.
        lead: how much audio the player keeps queued in the mixer ahead of the clock.
    """

    config: BackgroundAudioHandlerConfig
    mixer: Mixer
    name: str = "background"
    chunk_duration: float = 0.1
    lead: float = 0.2
    _scope: trio.CancelScope | None = attrs.field(init=False, default=None)
    _source: MixerSource | None = attrs.field(init=False, default=None)

    @property
    def is_playing(self) -> bool:
        return self._source is not None and not self._source.played_out and not self._source.stopped

    @property
    def source(self) -> MixerSource | None:
        return self._source

    async def start(self, nursery: trio.Nursery) -> None:
        """Read the file and start streaming it in a task of `nursery`.

        Raises:
            FileNotFoundError: the file is missing.
            AudioFormatError: the file is not a PCM WAV file trioagent can read.
        """
        if not self.config.enabled:
            return
        if self._scope is not None:
            raise RuntimeError("this player was already started")
        # Read in this thread: background clips are small, and a thread hop would let a
        # MockClock jump while the file loads, which breaks virtual-time determinism.
        clip = read_wav(self.config.file_path)
        await nursery.start(self._run, clip.to_mono())

    async def _run(self, clip: AudioFrame, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        source = self.mixer.add_source(clip.sample_rate, gain=self.config.volume, name=self.name)
        self._source = source
        step = max(1, round(self.chunk_duration * clip.sample_rate))
        total = clip.samples_per_channel
        with trio.CancelScope() as self._scope:
            task_status.started()
            try:
                pos = 0
                while total:
                    while source.queued_duration < self.lead:
                        end = min(pos + step, total)
                        source.push(AudioFrame(clip.samples[pos:end], clip.sample_rate))
                        pos = end
                        if pos >= total:
                            if not self.config.looping:
                                source.end()
                                await source.wait_played_out()
                                return
                            pos = 0
                    await trio.sleep(self.chunk_duration)
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
