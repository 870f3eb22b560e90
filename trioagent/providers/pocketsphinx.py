"""`PocketsphinxSTT`: offline streaming speech recognition with the model in the pocketsphinx wheel.

How this works: an `EnergyVAD` finds each speech segment; the segment handed to the decoder starts
`preroll` (0.3 s) before the onset the VAD reports, from a ring of recent audio long enough to
reach back past the VAD's detection delay, so the first sound of the first word is never lost. While the user speaks, each `interim_interval`
of new audio is decoded live (in a worker thread: pocketsphinx holds the GIL for a whole call, so
the calls are kept small) for an interim transcript. When the VAD ends the segment, the whole
segment is decoded once more in one call for the final transcript: live decoding estimates the
cepstral mean as it goes and is much less accurate (on the demo's first question it heard "what"
for "hello there"). A segment of a few seconds decodes in a few hundred milliseconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import trio

from .._compute import run_in_process
from ..audio.frame import AudioFrame
from ..errors import ProviderError
from .base import VAD, TranscriptEvent
from .vad import EnergyVAD, PreRoll

__all__ = ["PocketsphinxSTT", "DEMO_GRAMMAR"]


DEMO_GRAMMAR = (Path(__file__).parent / "demo.gram").read_text()
"""The JSGF grammar of the demo's domain (greetings, time, date, weather in a few cities)."""


_DECODERS: dict[str | None, tuple[Any, str]] = {}  # per process, per grammar: a decoder, its initial CMN


def _new_decoder(grammar: str | None = None) -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise ProviderError("PocketsphinxSTT needs the pocketsphinx wheel: pip install -e '.[local]' (from a clone of trioagent)", provider="PocketsphinxSTT") from None
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    if grammar is not None:
        try:
            decoder.add_jsgf_string("grammar", grammar)
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"PocketsphinxSTT: bad JSGF grammar ({exc})", provider="PocketsphinxSTT") from None
        decoder.activate_search("grammar")
    return decoder


def decoder(grammar: str | None) -> tuple[Any, str]:
    """This process's decoder for `grammar` (built on first use), and its initial CMN."""
    found = _DECODERS.get(grammar)
    if found is None:
        d = _new_decoder(grammar)
        found = _DECODERS[grammar] = (d, str(d.get_cmn(False)))
    return found


def decode(grammar: str | None, pcm: bytes) -> str:
    """Decode a whole segment of 16 kHz PCM16 (runs in a worker process).

    The result depends on this segment only, never on what the decoder heard before, so any
    worker may take any call: the cepstral mean goes back to its initial value, then one pass
    without search (features only, cheap) fits it to this segment, then the real pass decodes.
    Fitting it first is worth having: on eSpeak phrases, word errors fall from 19% to 9% with
    the demo grammar and from 70% to 54% with the general model (NOTES.md).
    """
    d, initial_cmn = decoder(grammar)
    d.set_cmn(initial_cmn)
    d.start_utt()
    d.process_raw(pcm, True, False)
    d.end_utt()
    d.start_utt()
    d.process_raw(pcm, False, True)
    d.end_utt()
    hyp = d.hyp()
    return str(hyp.hypstr).strip() if hyp is not None else ""


class PocketsphinxSTT:
    """Streaming STT with CMU PocketSphinx (US English model shipped in its wheel).

    Args:
        interim_interval: seconds of speech between interim transcripts; None: finals only.
        interim_window: an interim decodes at most the last this many seconds (a decode's cost
            grows with its length).
        preroll: seconds of audio before the VAD's onset fed to the decoder (the ring reaches
            back this much plus one second, past any VAD's detection delay).
        vad: segments speech (default `EnergyVAD()` with the pipeline's defaults; `SileroVAD()` ignores noise).
        grammar: a JSGF grammar to restrict what can be heard (e.g. `DEMO_GRAMMAR`); far more
            accurate inside its domain, blind outside it. None: the general US English model.
    """

    sample_rate = 16000

    def __init__(
        self,
        interim_interval: float | None = 0.5,
        preroll: float = 0.3,
        vad: VAD | None = None,
        grammar: str | None = None,
        interim_window: float = 3.0,
    ) -> None:
        self.grammar = grammar
        self.interim_interval = interim_interval
        self.interim_window = interim_window
        self.preroll = preroll
        self.vad = vad or EnergyVAD(sample_rate=self.sample_rate)

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        async with audio, events:
            recent = PreRoll(seconds=self.preroll + 1.0)
            utterance: list[AudioFrame] = []  # the whole segment, for the final decode
            since_interim = 0.0
            in_speech = False
            last_interim = ""
            async for frame in audio:
                if frame.sample_rate != self.sample_rate:
                    raise ProviderError(f"PocketsphinxSTT takes {self.sample_rate} Hz, got {frame.sample_rate} Hz", provider="PocketsphinxSTT")
                recent.push(frame)
                for event in self.vad.process(frame):
                    if event.kind == "start":
                        in_speech = True
                        utterance = recent.since(event.time - self.preroll)
                        since_interim = sum(f.duration for f in utterance)
                        last_interim = ""
                    elif in_speech:
                        in_speech = False
                        text = await run_in_process(decode, self.grammar, _pcm(utterance))
                        utterance = []
                        if text:
                            await events.send(TranscriptEvent(text, True, trio.current_time()))
                if not in_speech:
                    continue
                if utterance[-1].end_time < frame.end_time:  # (the pre-roll may hold it already)
                    utterance.append(frame)
                    since_interim += frame.duration
                if self.interim_interval is not None and since_interim >= self.interim_interval - 1e-9:
                    since_interim = 0.0
                    window = utterance[-max(1, round(self.interim_window / frame.duration)) :]
                    text = await run_in_process(decode, self.grammar, _pcm(window))
                    if text and text != last_interim:
                        last_interim = text
                        await events.send(TranscriptEvent(text, False, trio.current_time()))


def _pcm(frames: list[AudioFrame]) -> bytes:
    return np.concatenate([f.samples for f in frames]).astype("<i2").tobytes() if frames else b""
