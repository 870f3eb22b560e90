"""Shared pieces of the benchmarks (real time, zero-latency fakes)."""

from __future__ import annotations

import gc
import platform

import trio

from trioagent import AudioFrame
from trioagent.transports import MemoryTransport


class TimedTransport(MemoryTransport):
    """Records when each output frame actually reached the transport (trio clock), and drops
    the audio itself so long runs stay small."""

    def __init__(self, *args: object, threshold: int = 300, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.threshold = threshold
        self.loud_arrivals: list[tuple[float, float]] = []  # (tick time, arrival time) of loud frames
        self.frames = 0

    async def send_audio(self, frame: AudioFrame) -> None:
        self.frames += 1
        if int(abs(frame.samples).max(initial=0)) > self.threshold:
            self.loud_arrivals.append((frame.timestamp, trio.current_time()))
        await trio.lowlevel.checkpoint_if_cancelled()


def machine() -> str:
    import os

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.machine()} {cpu} ({os.cpu_count()} cores), Python {platform.python_version()}, trio {trio.__version__}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Gen2Pauses:
    """Counts full (generation 2) collections and how long each stopped the event loop."""

    def __init__(self) -> None:
        self.pauses_ms: list[float] = []
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        import time

        if info["generation"] != 2:
            return
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses_ms.append((time.perf_counter() - self._start) * 1000)


def tune_gc() -> None:
    """What NOTES.md ("GC pauses") tells a server to do once it is up: move the long-lived
    objects out of the collector's way and make full collections rare."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
