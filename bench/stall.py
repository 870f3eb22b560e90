"""Does one session starting or decoding stall the others? The longest gap in a running call's
audio while new sessions of the offline demo agent start and are spoken to.

A `trioagent serve trioagent.demo:agent_factory` process (PocketSphinx STT, eSpeak TTS) runs on
loopback. One browser-protocol call runs throughout and times every 20 ms output frame it
receives. After 2 s, `--new` (10) more calls connect one every 0.5 s, and each asks "What time
is it?" (eSpeak, 16 kHz): each start builds the STT and TTS of a session, each question is a
PocketSphinx decode. Printed: the running call's largest and 99th-percentile gap between output
frames over the whole window (20 ms is perfect), and how many new calls were answered.

Run: python bench/stall.py [--new N]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import trio
import trio_websocket

from _common import machine, percentile

NEW = int(sys.argv[sys.argv.index("--new") + 1]) if "--new" in sys.argv else 10


async def question_pcm() -> list[bytes]:
    from trioagent import AudioFrame
    from trioagent.audio import resample
    from trioagent.providers.espeak import EspeakTTS

    tts = EspeakTTS(voice="en-us+m3", rate=150)
    frames = [f async for f in tts.synthesize("What time is it?")]
    pcm = resample(AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate), 16000).samples
    pcm = np.concatenate([np.zeros(3200, np.int16), pcm, np.zeros(24000, np.int16)])
    return [pcm[i : i + 320].tobytes() for i in range(0, len(pcm) - 319, 320)]


async def call(port: int, frames: list[bytes], arrivals: list[float] | None, answered: list[bool], stop: trio.Event) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/ws", message_queue_size=256)
        await ws.send_message(json.dumps({"type": "hello", "sample_rate": 16000, "output_sample_rate": 24000}))

        async def reader() -> None:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    if arrivals is not None:
                        arrivals.append(time.perf_counter())
                elif json.loads(message).get("type") == "transcript":
                    answered.append(True)

        nursery.start_soon(reader)
        silence = bytes(640)
        t = trio.current_time()
        k = 0
        while not stop.is_set():
            k += 1
            await trio.sleep_until(t + k * 0.02)
            await ws.send_message(frames[k - 1] if k <= len(frames) else silence)
        await ws.send_message(json.dumps({"type": "end"}))
        nursery.cancel_scope.cancel()


async def main() -> None:
    print(f"machine: {machine()}")
    server = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trioagent", "serve", "trioagent.demo:agent_factory", "--insecure", "--port", "0", "--max-sessions", "100"],
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    line = b""
    while b"\n" not in line:
        line += await server.stdout.receive_some(1)
    found = re.search(rb":(\d+)/", line)
    assert found is not None, line
    port = int(found.group(1))
    frames = await question_pcm()
    arrivals: list[float] = []
    answered: list[bool] = []
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, port, [], arrivals, [], stop)
        await trio.sleep(2.0)
        window = len(arrivals)
        for _ in range(NEW):
            nursery.start_soon(call, port, frames, None, answered, stop)
            await trio.sleep(0.5)
        await trio.sleep(5.0)
        stop.set()
    server.terminate()
    await server.wait()
    gaps = np.diff(np.array(arrivals[window:])) * 1000
    print(f"running call while {NEW} sessions start and are asked a question: largest output gap {gaps.max():.0f} ms, "
          f"p99 {percentile(list(gaps), 0.99):.0f} ms ({len(gaps)} frames); {len(answered)}/{NEW} questions heard")


if __name__ == "__main__":
    trio.run(main)
