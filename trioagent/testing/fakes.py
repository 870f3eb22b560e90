"""Scripted providers: deterministic STT, LLM and TTS that run on the trio clock."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import trio

from ..audio.frame import FRAME_DURATION, AudioFrame
from ..chat import ChatContext
from ..errors import ProviderError
from ..providers.base import LLMChunk, TextDelta, ToolCall, TranscriptEvent, Usage
from ..providers.vad import EnergyVAD
from ..tools import FunctionTool

__all__ = ["ScriptedSTT", "ScriptedLLM", "ToneTTS"]


class ScriptedSTT:
    """The n-th detected speech segment yields the n-th transcript.

    Speech segments are found with an `EnergyVAD` (same defaults as the pipeline's). When a
    segment starts, an interim transcript with its first word is sent; when it ends, the final
    transcript. An empty transcript sends nothing (noise the STT does not understand). Segments
    past the end of the list send nothing either.

    Args:
        transcripts: one per speech segment, in order.
        sample_rate: the rate the STT runs at.
        latency: delay between the end of speech being detected and the final transcript.
    """

    def __init__(self, transcripts: Sequence[str], sample_rate: int = 16000, latency: float = 0.0) -> None:
        self.transcripts = list(transcripts)
        self.sample_rate = sample_rate
        self.latency = latency
        self.vad = EnergyVAD(sample_rate=sample_rate)
        self._index = 0

    async def run(
        self,
        audio: trio.abc.ReceiveChannel[AudioFrame],
        events: trio.abc.SendChannel[TranscriptEvent],
    ) -> None:
        async with audio, events:
            async for frame in audio:
                for ev in self.vad.process(frame):
                    text = self.transcripts[self._index] if self._index < len(self.transcripts) else ""
                    if ev.kind == "start":
                        if text:
                            await events.send(TranscriptEvent(text.split()[0], False, trio.current_time()))
                    else:
                        self._index += 1
                        if text:
                            if self.latency:
                                await trio.sleep(self.latency)
                            await events.send(TranscriptEvent(text, True, trio.current_time()))


class ScriptedLLM:
    """Each call to `chat` plays the next entry of the script.

    An entry is a string (streamed word by word), a `ToolCall`, or a list of strings and
    `ToolCall`s played in order (text before a tool call, parallel calls), or a function of
    the chat context returning one of those (to answer with what a tool returned). Every call waits
    `ttft` seconds before its first chunk and `word_delay` between words. `calls` keeps a copy of
    the chat context each call saw. An entry `None` hangs forever (a provider that never
    answers). With `report_usage`, each call ends with a `Usage` (prompt tokens: the words of
    the context; completion tokens: the words streamed).

    Raises:
        ProviderError: the script is used up.
    """

    def __init__(
        self,
        script: Sequence[str | ToolCall | list[str | ToolCall] | Callable[[ChatContext], str | ToolCall | list[str | ToolCall]] | None],
        ttft: float = 0.0,
        word_delay: float = 0.0,
        report_usage: bool = False,
    ) -> None:
        self.script = list(script)
        self.ttft = ttft
        self.word_delay = word_delay
        self.report_usage = report_usage
        self.calls: list[ChatContext] = []
        self.tools_seen: list[list[str]] = []

    async def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        n = len(self.calls)
        self.calls.append(chat_context.copy())
        self.tools_seen.append([t.name for t in tools])
        if n >= len(self.script):
            raise ProviderError(f"ScriptedLLM: the script has {len(self.script)} entries; call {n + 1} has none", provider="ScriptedLLM")
        entry = self.script[n]
        if callable(entry):
            entry = entry(chat_context)
        prompt = sum(len(m.content.split()) for m in chat_context.messages) if self.report_usage else 0
        await trio.sleep(self.ttft)
        if entry is None:
            await trio.sleep_forever()
        parts: list[str | ToolCall] = entry if isinstance(entry, list) else [entry]
        words = 0
        for j, part in enumerate(parts):
            if isinstance(part, ToolCall):
                yield ToolCall(part.name, part.arguments, part.call_id or f"call_{n}_{j}")
                continue
            for i, word in enumerate(part.split(" ")):
                if (i or words) and self.word_delay:
                    await trio.sleep(self.word_delay)
                words += 1
                yield TextDelta(word if i == 0 else " " + word)
        if self.report_usage:
            yield Usage(prompt_tokens=prompt, completion_tokens=words)


class ToneTTS:
    """A deterministic tone whose length follows the word count.

    Args:
        sample_rate: output rate.
        seconds_per_word: audio length per word.
        ttfb: delay before the first frame.
        frame_duration: size of the frames it yields (all yielded at once after `ttfb`).
        frequency: tone pitch in Hz (250 Hz: whole periods in every 20 ms frame).
    """

    def __init__(self, sample_rate: int = 24000, seconds_per_word: float = 0.25, ttfb: float = 0.0, frame_duration: float = FRAME_DURATION, frequency: float = 250.0) -> None:
        self.sample_rate = sample_rate
        self.seconds_per_word = seconds_per_word
        self.ttfb = ttfb
        self.frame_duration = frame_duration
        self.frequency = frequency
        self.texts: list[str] = []
        self._tones: dict[int, np.ndarray] = {}  # the tone of each length made so far (read-only)

    def duration_of(self, text: str) -> float:
        return len(text.split()) * self.seconds_per_word

    async def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        self.texts.append(text)
        await trio.sleep(self.ttfb)
        n = round(self.duration_of(text) * self.sample_rate)
        pcm = self._tones.get(n)
        if pcm is None:
            # (made once per length: a fake provider should cost next to nothing, and the sine
            # of a whole reply was 2.5% of bench/serve_load.py's server at 150 callers)
            t = np.arange(n) / self.sample_rate
            pcm = np.rint(0.3 * 32767 * np.sin(2 * math.pi * self.frequency * t)).astype(np.int16)
            pcm.flags.writeable = False
            if len(self._tones) < 64:
                self._tones[n] = pcm
        step = round(self.frame_duration * self.sample_rate)
        for i in range(0, n, step):
            yield AudioFrame(pcm[i : i + step], self.sample_rate)
