"""Framework-added latency, in real time, with zero-latency fakes.

- Reply latency: from the end of the user's speech to the moment the first loud frame of the
  answer reached the transport, minus the configured end-of-turn delay (0.5 s). What is left is
  what trioagent adds (including the wait for the next 20 ms mixer tick).
- Barge-in latency: from the moment the interruption is due (speech onset + 0.5 s) to the last
  loud frame of the interrupted voice reaching the transport (includes the 10 ms fade).

10 sessions run side by side, 20 turns each (200 turns). The process's garbage collector is set
up as NOTES.md ("GC pauses") tells a server to (`--default-gc` leaves it alone): a full collection
here stops the event loop for 35-40 ms, and whether it lands in a reply's window or between
two decides the p99 otherwise. Run: python bench/latency.py [--default-gc]
"""

from __future__ import annotations

import statistics
import sys

import trio

from _common import Gen2Pauses, TimedTransport, machine, percentile, tune_gc
from trioagent import Agent, AgentSession, CascadingPipeline
from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech

SESSIONS = 10
TURNS = 20
ENDPOINTING = 0.5
MIN_INTERRUPTION = 0.5


async def one_session(reply_lat: list[float], barge_lat: list[float]) -> None:
    transport = TimedTransport(input_sample_rate=16000, output_sample_rate=24000)
    script: list[str] = []
    for turn in range(TURNS):
        # Even turns: a short answer, timed. Odd turns: a 3 s answer that the user barges into,
        # then a short answer to the barge-in itself.
        script += ["ok"] if turn % 2 == 0 else [" ".join(["word"] * 30), "ok"]
    llm = ScriptedLLM(script)
    stt = ScriptedSTT([f"words {i}" for i in range(len(script))])
    pipeline = CascadingPipeline(stt=stt, llm=llm, tts=ToneTTS(seconds_per_word=0.1))
    session = AgentSession(Agent(), pipeline, transport=transport)
    async with session:
        for turn in range(TURNS):
            speech_end = trio.current_time() + 0.3
            await transport.send_user_audio(speech(0.3))
            await transport.send_user_audio(silence(0.8))
            first = next(arr for tick, arr in transport.loud_arrivals if tick >= speech_end)
            if turn % 2 == 0:
                reply_lat.append(first - speech_end - ENDPOINTING)
                await transport.send_user_audio(silence(0.3))
                continue
            answer_start = next(tick for tick, arr in transport.loud_arrivals if tick >= speech_end)
            onset = trio.current_time()
            await transport.send_user_audio(speech(0.7))
            due = onset + MIN_INTERRUPTION
            last = max(arr for tick, arr in transport.loud_arrivals if answer_start <= tick < due + 0.1)
            barge_lat.append(last + 0.01 - due)  # the last loud frame holds the 10 ms fade
            await transport.send_user_audio(silence(1.5))
        await session.close()


async def main() -> None:
    reply_lat: list[float] = []
    barge_lat: list[float] = []
    pauses = Gen2Pauses()
    if "--default-gc" not in sys.argv:
        tune_gc()
    async with trio.open_nursery() as nursery:
        for _ in range(SESSIONS):
            nursery.start_soon(one_session, reply_lat, barge_lat)
    print(f"machine: {machine()}")
    print(f"garbage collector: {'default' if '--default-gc' in sys.argv else 'tuned'}; full collections: {len(pauses.pauses_ms)}"
          + (f" ({', '.join(f'{p:.0f}' for p in pauses.pauses_ms)} ms)" if pauses.pauses_ms else ""))
    for name, values in (("reply (framework-added)", reply_lat), ("barge-in (to silence)", barge_lat)):
        ms = [v * 1000 for v in values]
        print(f"{name:26s} n={len(ms):3d}  median {statistics.median(ms):6.1f} ms  p99 {percentile(ms, 0.99):6.1f} ms  max {max(ms):6.1f} ms")


if __name__ == "__main__":
    trio.run(main)
