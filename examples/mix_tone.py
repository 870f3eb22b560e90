"""A tiny example: mix a voice tone over a background hum for one second of virtual time and
write the result to mix.wav. Run: python examples/mix_tone.py"""

from __future__ import annotations

import numpy as np
import trio
import trio.testing

from trioagent import AudioFrame
from trioagent.audio import Mixer, write_wav


def tone(seconds: float, rate: int, freq: float, amplitude: float) -> AudioFrame:
    t = np.arange(round(seconds * rate)) / rate
    return AudioFrame.from_float(amplitude * np.sin(2 * np.pi * freq * t), rate)


async def main() -> None:
    mixer = Mixer(sample_rate=48000)
    send, receive = trio.open_memory_channel[AudioFrame](64)
    frames: list[AudioFrame] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(mixer.run, send)
        hum = mixer.add_source(44100, loop=True, name="hum")
        hum.push(tone(0.5, 44100, 110.0, 0.3))
        hum.end()
        await trio.sleep(0.2)
        voice = mixer.add_source(24000, voice=True, name="voice")
        voice.push(tone(0.5, 24000, 440.0, 0.5))
        voice.end()
        async with receive:
            while len(frames) < 50:
                frames.append(await receive.receive())
        print(f"voice played out at t = {voice.played_out_at:.2f} s; {mixer.statistics()}")
        nursery.cancel_scope.cancel()
    out = AudioFrame(np.concatenate([f.samples for f in frames]), 48000)
    write_wav("mix.wav", out)
    print(f"wrote mix.wav ({out.duration:.2f} s)")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
