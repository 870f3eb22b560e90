"""Word error rate and speed of the offline STTs, on phrases spoken by a neural voice (Piper's
en_US-joe-medium: not the eSpeak NG voice the demo's caller has, so no STT here was tuned to
it). PocketSphinx is measured with its general US English model and, on the phrases its grammar
covers, with the demo's JSGF grammar; Whisper is tiny.en (int8, greedy) from `.[whisper]`.
RTF = processing time / audio duration (lower is faster), one decode at a time.

Run: python bench/stt_wer.py
"""

from __future__ import annotations

import re
import time

import numpy as np
import trio

from _common import machine
from local_providers import word_errors
from trioagent import AudioFrame
from trioagent.audio import resample
from trioagent.providers.local_models import PiperTTS, WhisperSTT
from trioagent.providers.pocketsphinx import DEMO_GRAMMAR
from trioagent.providers.pocketsphinx import decode as pocketsphinx_decode

DEMO_PHRASES = ["hello there", "what time is it", "what is the weather in paris", "what is the date today", "thank you goodbye",
                "how are you doing", "is it going to rain in london", "what day is it", "good morning", "tell me the weather in tokyo"]
HELD_OUT = ["could you book a table for two at eight", "my flight leaves from gate twelve", "please read me the last message",
            "turn the lights off in the kitchen", "how far is the station from here", "remind me to call my sister tomorrow",
            "the package should arrive on monday", "i would like to change my password", "what is the score of the game",
            "play some quiet music please"]  # fmt: skip


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z']+", text.lower().replace("-", " ")))


async def main() -> None:
    print(f"machine: {machine()}")
    tts = PiperTTS()
    clips: dict[str, bytes] = {}
    for phrase in DEMO_PHRASES + HELD_OUT:
        frames = [f async for f in tts.synthesize(phrase)]
        audio = resample(AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate), 16000).samples
        pad = np.zeros(4800, np.int16)
        clips[phrase] = np.concatenate([pad, audio, pad]).astype("<i2").tobytes()
    whisper = WhisperSTT()
    whisper._decode(clips[DEMO_PHRASES[0]])  # (load the model before timing)
    pocketsphinx_decode(None, clips[DEMO_PHRASES[0]])
    pocketsphinx_decode(DEMO_GRAMMAR, clips[DEMO_PHRASES[0]])
    systems = [
        ("PocketSphinx, general model", lambda pcm: pocketsphinx_decode(None, pcm), DEMO_PHRASES + HELD_OUT),
        ("PocketSphinx, demo grammar", lambda pcm: pocketsphinx_decode(DEMO_GRAMMAR, pcm), DEMO_PHRASES),
        ("Whisper tiny.en (faster-whisper int8)", whisper._decode, DEMO_PHRASES + HELD_OUT),
    ]
    print(f"{'STT':<40} {'phrases':>7} {'WER all':>8} {'WER demo':>9} {'WER held-out':>13} {'RTF':>6}")
    for name, decode, phrases in systems:
        errors = {"demo": [0, 0], "held": [0, 0]}
        spent = audio_s = 0.0
        for phrase in phrases:
            pcm = clips[phrase]
            t = time.perf_counter()
            hypothesis = words(decode(pcm))
            spent += time.perf_counter() - t
            audio_s += len(pcm) / 32000
            group = errors["demo" if phrase in DEMO_PHRASES else "held"]
            group[0] += word_errors(phrase, hypothesis)
            group[1] += len(phrase.split())
        total = [errors["demo"][0] + errors["held"][0], errors["demo"][1] + errors["held"][1]]

        def rate(e: list[int]) -> str:
            return f"{100 * e[0] / e[1]:.1f}%" if e[1] else "-"

        print(f"{name:<40} {len(phrases):>7} {rate(total):>8} {rate(errors['demo']):>9} {rate(errors['held']):>13} {spent / audio_s:>6.2f}")


if __name__ == "__main__":
    trio.run(main)
