"""How many real-time sessions one core sustains before the mixers underrun.

Each session: user audio at 50 frames/s (1 s of speech, 2 s of silence, repeated) through the
full CascadingPipeline (energy VAD, a pass-through STT that only drains audio and sends one
transcript per burst, endpointing, scripted LLM, tone TTS), and a mixer at 24 kHz (`--rate=48000` for 48 kHz) with three
sources (a 44.1 kHz background loop, a 16 kHz "thinking" loop, and the 24 kHz voice whenever
the agent answers: about a quarter of the time). All sessions share one trio thread (one core)
and one `TickClock`, as under `trioagent serve`; one feeder task delivers every session's input
frame each 20 ms, spread over the 20 ms as packets from independent callers are. A level passes when fewer than 1% of all ticks were underruns
(handled a whole frame late, or skipped) and the input kept real time (the feeder finished less
than 1% late).

Run: python bench/sessions.py [N ...]
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import trio

from _common import TimedTransport, machine
from trioagent import Agent, AgentSession, AudioFrame, BackgroundAudioHandlerConfig, CascadingPipeline
from trioagent.audio import TickClock, write_wav
from trioagent.providers import TranscriptEvent
from trioagent.testing import ScriptedLLM, ToneTTS, silence, speech

DURATION = 12.0
OUTPUT_RATE = 24000
SLOTS = 10  # the feeder delivers to a tenth of the callers every 2 ms
PATTERN_FRAMES = 150  # 1 s of speech + 2 s of silence, in 20 ms frames


def make_loop(path: Path, rate: int, freq: float) -> None:
    t = np.arange(rate * 2) / rate
    write_wav(path, AudioFrame.from_float(0.1 * np.sin(2 * np.pi * freq * t), rate))


class PassThroughSTT:
    """Drains audio; sends a final transcript 0.3 s after each 1 s burst of speech ends (the
    feeding pattern is fixed, so frame counting is enough)."""

    sample_rate = 16000

    def __init__(self, phase: int) -> None:
        # The caller starts `phase` frames into the pattern; bursts end at frame 50 of it.
        self.first = (50 + 15 - phase) % PATTERN_FRAMES or PATTERN_FRAMES

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        async with audio, events:
            n = 0
            async for _ in audio:
                n += 1
                if n == self.first or (n > self.first and (n - self.first) % PATTERN_FRAMES == 0):
                    await events.send(TranscriptEvent("what is on today", True, trio.current_time()))


async def one_session(
    index: int, tmp: Path, clock: TickClock, sessions: dict[int, AgentSession], transports: dict[int, TimedTransport], done: trio.Event
) -> None:
    transport = TimedTransport(input_sample_rate=16000, output_sample_rate=OUTPUT_RATE)
    turns = int(DURATION / 3) + 2
    pipeline = CascadingPipeline(stt=PassThroughSTT((7 * index) % PATTERN_FRAMES), llm=ScriptedLLM(["Sure, here you go."] * turns), tts=ToneTTS(seconds_per_word=0.2))
    config = BackgroundAudioHandlerConfig(tmp / "bg.wav", volume=0.3, looping=True)
    session = AgentSession(Agent(), pipeline, transport=transport, background_audio=config, tick_clock=clock)
    async with session:
        thinking = session.mixer.add_source(16000, loop=True, gain=0.2, name="thinking")
        thinking.push(AudioFrame.from_float(0.1 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000), 16000))
        thinking.end()
        sessions[index] = session
        transports[index] = transport
        await done.wait()
        await session.close()


async def run_level(n: int, tmp: Path) -> tuple[float, float, float]:
    sessions: dict[int, AgentSession] = {}
    transports: dict[int, TimedTransport] = {}
    done = trio.Event()
    pattern = speech(1.0) + silence(2.0)
    async with trio.open_nursery() as nursery:
        clock = TickClock()
        await nursery.start(clock.run)
        for i in range(n):
            nursery.start_soon(one_session, i, tmp, clock, sessions, transports, done)
        while len(sessions) < n:
            await trio.sleep(0.01)
        await trio.sleep(1.0)  # warm-up: let every session settle before measuring
        # What a server should do once its sessions are up (NOTES.md, "GC pauses"): move the
        # long-lived objects out of the collector's way, so a full collection does not stall
        # the event loop for tens of milliseconds.
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(10_000, 50, 100)
        if "--nogc" in sys.argv: gc.disable()
        before = [(s.mixer.statistics().ticks, s.mixer.statistics().underruns) for s in sessions.values()]
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        # One feeder for all sessions: each gets a 20 ms frame every 20 ms, as from the network.
        t0 = trio.current_time()
        for k in range(int(DURATION / 0.02)):
            for slot in range(SLOTS):
                # Callers' packets are not synchronised: spread the deliveries over the 20 ms.
                await trio.sleep_until(t0 + (k + 1) * 0.02 + slot * 0.02 / SLOTS)
                for i in range(slot, n, SLOTS):
                    # Each caller is at a different point of the pattern, as real callers are.
                    transports[i].send_user_audio_nowait([pattern[(k + 7 * i) % len(pattern)]])
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        after = [(s.mixer.statistics().ticks, s.mixer.statistics().underruns) for s in sessions.values()]
        done.set()
        nursery.cancel_scope.deadline = trio.current_time() + 5
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    ticks = sum(a[0] - b[0] for a, b in zip(after, before))
    late = sum(a[1] - b[1] for a, b in zip(after, before))
    # The feeder's own lateness shows whether input kept real time as well.
    return late / max(ticks, 1), wall / DURATION - 1, cpu / wall


def main() -> None:
    global OUTPUT_RATE
    args = sys.argv[1:]
    if args and args[0].startswith("--rate="):
        OUTPUT_RATE = int(args.pop(0).split("=", 1)[1])
    levels = [int(a) for a in args if not a.startswith("--")] or [100, 150, 200, 250, 300, 350]
    print(f"machine: {machine()}")
    print(f"{DURATION:.0f} s of real-time conversation per level, mixer at {OUTPUT_RATE} Hz, 3 sources")
    print("sessions  underruns  input lag  cpu/wall")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        make_loop(tmp / "bg.wav", 44100, 110.0)
        best = 0
        for n in levels:
            ratio, lag, cpu = trio.run(run_level, n, tmp)
            ok = ratio < 0.01 and lag < 0.01
            print(f"{n:8d}  {ratio * 100:8.2f}%  {lag * 100:8.2f}%  {cpu:7.2f}   {'ok' if ok else 'NOT REAL TIME'}")
            if not ok:
                break
            best = n
        print(f"sustained: {best} real-time sessions on one core")


if __name__ == "__main__":
    main()
