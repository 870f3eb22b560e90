"""Small helpers shared by the tests (not part of the public test kit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import trio

from trioagent import AudioFrame
from trioagent.audio import Mixer


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> AudioFrame:
    t = np.arange(round(seconds * rate)) / rate
    return AudioFrame.from_float(amplitude * np.sin(2 * np.pi * freq * t), rate)


def dc(seconds: float, rate: int, value: int) -> AudioFrame:
    return AudioFrame(np.full(round(seconds * rate), value, np.int16), rate)


class Recorder:
    """Collects every frame the mixer sends."""

    def __init__(self) -> None:
        self.frames: list[AudioFrame] = []

    async def collect(self, receive: trio.MemoryReceiveChannel[AudioFrame]) -> None:
        async with receive:
            async for frame in receive:
                self.frames.append(frame)

    def loud_ticks(self, threshold: int = 1) -> list[float]:
        return [f.timestamp for f in self.frames if np.abs(f.samples.astype(np.int32)).max(initial=0) >= threshold]

    def frame_at(self, t: float) -> AudioFrame:
        return next(f for f in self.frames if abs(f.timestamp - t) < 1e-9)


@asynccontextmanager
async def running_mixer(mixer: Mixer) -> AsyncIterator[Recorder]:
    rec = Recorder()
    async with trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel[AudioFrame](4)
        nursery.start_soon(rec.collect, receive)
        await nursery.start(mixer.run, send)
        yield rec
        nursery.cancel_scope.cancel()
