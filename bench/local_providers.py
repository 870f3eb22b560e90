"""Word error rate and speed of the offline providers, on speech made by the offline TTS.

The caller's voice is eSpeak NG ("en-us+m3", 150 words/min), as in the demo. PocketSphinx is
measured with its general US English model and with the demo's JSGF grammar. Real-time factor
(RTF) = processing time / audio duration (lower is faster).

Run: python bench/local_providers.py
"""

from __future__ import annotations

import time

import numpy as np

from _common import machine
from trioagent import AudioFrame
from trioagent.audio import resample
from trioagent.providers.espeak import EspeakTTS
from trioagent.providers.pocketsphinx import DEMO_GRAMMAR
from trioagent.providers.pocketsphinx import decode as pocketsphinx_decode
from trioagent.providers.pocketsphinx import decoder as pocketsphinx_decoder

PHRASES = ["hello there", "what time is it", "what is the weather in paris", "what is the date today", "thank you goodbye",
           "how are you doing", "is it going to rain in london", "what day is it", "good morning", "tell me the weather in tokyo"]


def word_errors(ref: str, hyp: str) -> int:
    r, h = ref.split(), hyp.split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
    return d[-1]


def main() -> None:
    print(f"machine: {machine()}")
    tts = EspeakTTS(voice="en-us+m3", rate=150)
    clips = []
    tts_time = first_audio = audio_s = 0.0
    for phrase in PHRASES:
        t = time.perf_counter()
        samples = tts._synth(phrase, __import__("threading").Event())
        tts_time += time.perf_counter() - t
        audio_s += len(samples) / tts.sample_rate
        clips.append(resample(AudioFrame(samples, tts.sample_rate), 16000).samples)
    t = time.perf_counter()
    tts._synth("Hello.", __import__("threading").Event())
    first_audio = time.perf_counter() - t
    print(f"EspeakTTS: RTF {tts_time / audio_s:.4f} ({audio_s:.1f} s of speech in {tts_time * 1000:.0f} ms); a one-word sentence in {first_audio * 1000:.1f} ms")
    pad = np.zeros(3200, np.int16)
    for name, grammar in (("general model", None), ("demo grammar", DEMO_GRAMMAR)):
        pocketsphinx_decoder(grammar)  # built once per process, as in a worker
        errors = words = 0
        decode = 0.0
        for phrase, clip in zip(PHRASES, clips):
            pcm = np.concatenate([pad, clip, pad]).tobytes()
            t = time.perf_counter()
            hyp = pocketsphinx_decode(grammar, pcm)  # what a worker process runs for each segment
            decode += time.perf_counter() - t
            errors += word_errors(phrase, hyp)
            words += len(phrase.split())
        speech = sum(len(c) + 2 * len(pad) for c in clips) / 16000
        print(f"PocketsphinxSTT, {name:13s}: WER {100 * errors / words:5.1f}% ({errors}/{words} words), RTF {decode / speech:.3f}")
    vad_bench(clips, pad)


def vad_bench(clips: list[np.ndarray], pad: np.ndarray) -> None:
    """Both VADs over the phrases (20 ms frames): cost per frame and how many phrases each found."""
    from trioagent.providers import EnergyVAD, SileroVAD

    audio = np.concatenate([np.concatenate([pad, c, pad]) for c in clips])
    frames = [AudioFrame(audio[i : i + 320], 16000, 1, i / 16000) for i in range(0, len(audio) - 319, 320)]
    for vad in (EnergyVAD(), SileroVAD()):
        t = time.perf_counter()
        starts = sum(e.kind == "start" for f in frames for e in vad.process(f))
        cost = time.perf_counter() - t
        print(f"{type(vad).__name__:10s}: {cost / len(frames) * 1e6:6.1f} us per 20 ms frame (RTF {cost / (len(audio) / 16000):.4f}); {starts} speech segments in {len(clips)} phrases")


if __name__ == "__main__":
    main()
