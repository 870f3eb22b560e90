"""Cost of one 20 ms mixer tick at 48 kHz, resampling included.

Each tick, every source receives one 20 ms frame at its own rate (24 kHz voice, 44.1 kHz
background, 16 kHz thinking, in turn), which the source resamples to 48 kHz on push; then the
mixer mixes one frame. The figure is the median wall time of push + mix per tick.

Run: python bench/mixer.py
"""

from __future__ import annotations

import platform
import statistics
import time

import numpy as np

from trioagent import AudioFrame
from trioagent.audio import Mixer

RATES = (24000, 44100, 16000)
TICK = 0.02


def tick_cost(n_sources: int, ticks: int = 3000) -> float:
    mixer = Mixer(sample_rate=48000)
    rng = np.random.default_rng(0)
    sources = []
    frames = []
    for i in range(n_sources):
        rate = RATES[i % len(RATES)]
        sources.append(mixer.add_source(rate, voice=(i == 0), gain=0.5))
        n = round(rate * TICK)
        frames.append(AudioFrame(rng.integers(-8000, 8000, n).astype(np.int16), rate))
    costs = []
    for k in range(ticks):
        t = time.perf_counter()
        for s, f in zip(sources, frames):
            s.push(f)
        mixer.mix(k * TICK)
        costs.append(time.perf_counter() - t)
    return statistics.median(costs[200:])


def main() -> None:
    print(f"machine: {platform.machine()} {platform.processor() or ''} python {platform.python_version()}")
    print("sources  median tick (us)  sessions/core (real time)")
    for n in (1, 2, 3, 4, 8):
        c = tick_cost(n)
        print(f"{n:7d}  {c * 1e6:16.1f}  {TICK / c:12.0f}")


if __name__ == "__main__":
    main()
