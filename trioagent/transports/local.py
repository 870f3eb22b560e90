"""`LocalAudioTransport`: the computer's microphone and speakers, through PortAudio.

How this works: `sounddevice` (imported only when a transport is made, so ``import trioagent``
never needs PortAudio) runs one raw input and one raw output stream. Their callbacks run on
PortAudio's audio thread and never block: the input callback hands each block to trio with
`TrioToken.run_sync_soon`; the output callback takes bytes from a small locked buffer that
`send_audio` fills and `clear()` empties (barge-in silences the speaker at once). The buffer is
bounded, so if the sound card's clock runs slower than the trio clock the oldest audio goes,
rather than latency growing without end.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import trio

from ..audio.frame import FRAME_DURATION, AudioFrame
from ..errors import TransportError

__all__ = ["LocalAudioTransport", "load_sounddevice"]


def load_sounddevice() -> Any:
    """Import `sounddevice`, or raise `TransportError` saying what to install."""
    try:
        import sounddevice
    except ImportError:
        raise TransportError("LocalAudioTransport needs sounddevice: pip install -e '.[console]' (from a clone of trioagent)") from None
    except OSError as exc:  # sounddevice is there, the PortAudio library is not
        raise TransportError(f"LocalAudioTransport needs the PortAudio library ({exc}); on Debian/Ubuntu: apt install libportaudio2") from None
    return sounddevice


class LocalAudioTransport:
    """Microphone in, speakers out. Make it inside `trio.run` (it captures the trio token).

    Args:
        input_sample_rate, output_sample_rate: the rates asked of the sound card.
        frame_duration: size of the frames handed to the session.
        max_buffered: seconds of output held for the speaker at most (older audio is dropped).
        input_device, output_device: PortAudio device names or indices (None: the defaults).
    """

    def __init__(
        self,
        input_sample_rate: int = 16000,
        output_sample_rate: int = 24000,
        *,
        frame_duration: float = FRAME_DURATION,
        max_buffered: float = 0.2,
        input_device: int | str | None = None,
        output_device: int | str | None = None,
    ) -> None:
        sd = load_sounddevice()
        self.input_sample_rate = input_sample_rate
        self.output_sample_rate = output_sample_rate
        self._token = trio.lowlevel.current_trio_token()
        self._in_send, self._in_receive = trio.open_memory_channel[AudioFrame](math.inf)
        self._lock = threading.Lock()
        self._out = bytearray()
        self._max_out = round(max_buffered * output_sample_rate) * 2
        self.dropped_output = 0.0  # seconds of output dropped because the card ran slow
        self.underruns = 0  # output callbacks that found too little audio (silence played)
        self._next_start = -math.inf
        self._closed = False
        self._playing = False
        block_in = round(input_sample_rate * frame_duration)
        self._input = sd.RawInputStream(
            samplerate=input_sample_rate, channels=1, dtype="int16", blocksize=block_in, device=input_device, callback=self._on_input
        )
        self._output = sd.RawOutputStream(
            samplerate=output_sample_rate, channels=1, dtype="int16", blocksize=round(output_sample_rate * frame_duration),
            device=output_device, callback=self._on_output,
        )
        self._input.start()
        self._output.start()

    # -- PortAudio's thread: never block ---------------------------------------------------------
    def _on_input(self, data: Any, frames: int, time_info: Any, status: Any) -> None:
        pcm = bytes(data)
        try:
            self._token.run_sync_soon(self._deliver, pcm)
        except trio.RunFinishedError:
            pass

    def _on_output(self, data: Any, frames: int, time_info: Any, status: Any) -> None:
        need = frames * 2
        with self._lock:
            take = bytes(self._out[:need])
            del self._out[:need]
        if len(take) < need:
            if take or self._playing:
                self.underruns += 1
            take += bytes(need - len(take))
        self._playing = len(take) > 0 and any(take)
        data[:] = take

    # -- trio's side -----------------------------------------------------------------------------
    def _deliver(self, pcm: bytes) -> None:
        if self._closed:
            return
        samples = np.frombuffer(pcm, "<i2").copy()
        duration = len(samples) / self.input_sample_rate
        start = max(trio.current_time() - duration, self._next_start)  # a continuous stream
        self._next_start = start + duration
        self._in_send.send_nowait(AudioFrame(samples, self.input_sample_rate, 1, start))

    @property
    def audio_in(self) -> trio.abc.ReceiveChannel[AudioFrame]:
        return self._in_receive

    async def send_audio(self, frame: AudioFrame) -> None:
        if frame.sample_rate != self.output_sample_rate:
            raise ValueError(f"LocalAudioTransport plays {self.output_sample_rate} Hz, got {frame.sample_rate} Hz")
        with self._lock:
            self._out += frame.to_pcm16()
            excess = len(self._out) - self._max_out
            if excess > 0:
                del self._out[:excess]
                self.dropped_output += excess / 2 / self.output_sample_rate
        await trio.lowlevel.checkpoint()

    def clear(self) -> None:
        with self._lock:
            self._out.clear()

    async def hang_up(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._in_send.close()
            # Stopping waits for PortAudio's callback thread; keep it off the event loop.
            await trio.to_thread.run_sync(self._stop)
        else:
            await trio.lowlevel.checkpoint()

    def _stop(self) -> None:
        for stream in (self._input, self._output):
            stream.stop()
            stream.close()
