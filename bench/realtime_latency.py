"""What the realtime path adds, in real time, with a zero-latency model: tests/realtime_fake.py's
scripted Realtime server (on in-memory streams, in this process: no network, no model), behind
`RealTimePipeline` and a full `AgentSession`.

- Reply latency: from the moment the server commits the user's turn (it has heard the end of
  speech and its silence) to the first loud frame of the answer at the transport: the
  `response.create` round trip, the routing of the audio into the mixer, the wait for the next
  20 ms tick.
- Barge-in latency: from the moment the server sends `speech_started` over the agent's answer to
  the last loud frame at the transport (with its 10 ms fade).

10 sessions side by side, 20 turns each (100 replies, 100 barge-ins), the garbage collector tuned
as for `bench/latency.py`. Run: python bench/realtime_latency.py [--sessions N] [--default-gc]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import Gen2Pauses, TimedTransport, machine, percentile, tune_gc  # noqa: E402
from tests.realtime_fake import FakeRealtime  # noqa: E402
from trioagent import Agent, AgentSession, RealTimePipeline  # noqa: E402
from trioagent.providers import OpenAIRealtime  # noqa: E402
from trioagent.testing import silence, speech  # noqa: E402

SESSIONS = int(sys.argv[sys.argv.index("--sessions") + 1]) if "--sessions" in sys.argv else 10
TURNS = 20


async def one_session(reply_lat: list[float], barge_lat: list[float]) -> None:
    script: list[str | None] = []
    for turn in range(TURNS):
        script += ["ok"] if turn % 2 == 0 else [" ".join(["word"] * 30), "ok"]
    fake = FakeRealtime(script, seconds_per_word=0.1)
    transport = TimedTransport(input_sample_rate=16000, output_sample_rate=24000)
    model = OpenAIRealtime(base_url="ws://fake/v1", api_key="", open_stream=fake.open_stream, transcription_model=None)
    session = AgentSession(Agent(), RealTimePipeline(model=model), transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        async with session:
            for turn in range(TURNS):
                await transport.send_user_audio(speech(0.3))
                await transport.send_user_audio(silence(0.8))
                committed = [t for t, kind in fake.sent if kind == "input_audio_buffer.committed"][-1]
                first = next(arr for tick, arr in transport.loud_arrivals if arr >= committed)
                if turn % 2 == 0:
                    reply_lat.append(first - committed)
                    await transport.send_user_audio(silence(0.3))
                    continue
                await transport.send_user_audio(speech(0.7))
                started = [t for t, kind in fake.sent if kind == "input_audio_buffer.speech_started"][-1]
                last = max(arr for tick, arr in transport.loud_arrivals if first <= arr < started + 0.2)
                barge_lat.append(last + 0.01 - started)
                await transport.send_user_audio(silence(1.5))
            await session.close()


async def main() -> None:
    reply: list[float] = []
    barge: list[float] = []
    if "--default-gc" not in sys.argv:
        tune_gc()
    pauses = Gen2Pauses()
    async with trio.open_nursery() as nursery:
        for _ in range(SESSIONS):
            nursery.start_soon(one_session, reply, barge)
    print(machine())
    print(f"garbage collector: {'default' if '--default-gc' in sys.argv else 'tuned'}; full collections: {len(pauses.pauses_ms)}")
    for name, values in [("reply (commit -> first audio)", reply), ("barge-in (speech_started -> silence)", barge)]:
        ms = [v * 1000 for v in values]
        print(f"{name:<38} n={len(ms)}  median {statistics.median(ms):6.1f} ms  p99 {percentile(ms, 99):6.1f} ms  max {max(ms):6.1f} ms")


if __name__ == "__main__":
    trio.run(main)
