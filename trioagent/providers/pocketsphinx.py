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

from .._compute import run_blocking
from ..audio.frame import AudioFrame
from ..errors import ProviderError
from .base import VAD, TranscriptEvent
from .vad import EnergyVAD, PreRoll

__all__ = ["PocketsphinxSTT", "DEMO_GRAMMAR"]


DEMO_GRAMMAR = (Path(__file__).parent / "demo.gram").read_text()
"""The JSGF grammar of the demo's domain (greetings, time, date, weather in a few cities)."""


def _new_decoder(grammar: str | None = None) -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise ProviderError("PocketsphinxSTT needs the pocketsphinx wheel: pip install 'trioagent[local]'", provider="PocketsphinxSTT") from None
    decoder = Decoder(samprate=16000, loglevel="FATAL")
    if grammar is not None:
        try:
            decoder.add_jsgf_string("grammar", grammar)
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"PocketsphinxSTT: bad JSGF grammar ({exc})", provider="PocketsphinxSTT") from None
        decoder.activate_search("grammar")
    return decoder


class PocketsphinxSTT:
    """Streaming STT with CMU PocketSphinx (US English model shipped in its wheel).

    Args:
        interim_interval: seconds of speech between interim transcripts (each decodes only the
            new audio, in a worker thread); None: final transcripts only.
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
    ) -> None:
        self.grammar = grammar
        self.interim_interval = interim_interval
        self.preroll = preroll
        self.vad = vad or EnergyVAD(sample_rate=self.sample_rate)

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        async with audio, events:
            decoder = await run_blocking(_new_decoder, self.grammar)
            recent = PreRoll(seconds=self.preroll + 1.0)
            utterance: list[AudioFrame] = []  # the whole segment, for the final decode
            pending: list[AudioFrame] = []  # not yet fed to the live (interim) decode
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
                        pending = list(utterance)
                        last_interim = ""
                        if self.interim_interval is not None:
                            await run_blocking(decoder.start_utt)
                    elif in_speech:
                        in_speech = False
                        text = await run_blocking(self._final, decoder, _pcm(utterance), self.interim_interval is not None)
                        utterance, pending = [], []
                        if text:
                            await events.send(TranscriptEvent(text, True, trio.current_time()))
                if not in_speech:
                    continue
                if utterance[-1].end_time < frame.end_time:  # (the pre-roll may hold it already)
                    utterance.append(frame)
                    pending.append(frame)
                if self.interim_interval is not None and sum(f.duration for f in pending) >= self.interim_interval - 1e-9:
                    text = await run_blocking(self._interim, decoder, _pcm(pending))
                    pending = []
                    if text and text != last_interim:
                        last_interim = text
                        await events.send(TranscriptEvent(text, False, trio.current_time()))

    @staticmethod
    def _interim(decoder: Any, pcm: bytes) -> str:
        decoder.process_raw(pcm, False, False)
        hyp = decoder.hyp()
        return str(hyp.hypstr).strip() if hyp is not None else ""

    @staticmethod
    def _final(decoder: Any, pcm: bytes, live: bool) -> str:
        # Live decoding normalises the cepstrum as it goes and is poor on a first utterance;
        # the final hypothesis decodes the whole segment at once, which is far more accurate.
        if live:
            decoder.end_utt()
        decoder.start_utt()
        decoder.process_raw(pcm, False, True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return str(hyp.hypstr).strip() if hyp is not None else ""


def _pcm(frames: list[AudioFrame]) -> bytes:
    return np.concatenate([f.samples for f in frames]).astype("<i2").tobytes() if frames else b""
