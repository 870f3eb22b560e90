"""What the pipeline needs from each provider, as `typing.Protocol`s.

Every provider is used from the trio thread. Blocking or CPU-heavy work (a local decoder, a
synthesiser) belongs in `trio.to_thread.run_sync`, in small pieces, so the mixer never stalls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol, Union, runtime_checkable

import attrs
import trio

from ..audio.frame import AudioFrame
from ..chat import ChatContext
from ..tools import FunctionTool

__all__ = ["VADEvent", "VAD", "TranscriptEvent", "STT", "TurnDetector", "TextDelta", "ToolCall", "Usage", "LLMChunk", "LLM", "TTS"]


@attrs.frozen
class VADEvent:
    """Speech started or ended. `time` is when it really did (session clock), which is earlier
    than when the VAD could be sure of it (after its minimum speech or silence duration)."""

    kind: Literal["start", "end"]
    time: float


@runtime_checkable
class VAD(Protocol):
    """Voice activity detection, sans-IO: frames in, events out. Not a checkpoint."""

    sample_rate: int

    @property
    def speech_duration(self) -> float:
        """Seconds of the current speech segment so far, without trailing silence (0 if none)."""
        ...

    def process(self, frame: AudioFrame) -> list[VADEvent]:
        """Feed one mono frame at `sample_rate`; return the events it completes."""
        ...

    def reset(self) -> None:
        """Forget all state (a new stream)."""
        ...


@attrs.frozen
class TranscriptEvent:
    """An interim or final transcript of the current user speech. `time` is when it was made."""

    text: str
    is_final: bool
    time: float


@runtime_checkable
class STT(Protocol):
    """Streaming speech-to-text.

    `run` reads mono frames at `sample_rate` from `audio` and sends transcripts to `events` until
    `audio` ends; it closes `events` when it returns.
    """

    sample_rate: int

    async def run(
        self,
        audio: trio.abc.ReceiveChannel[AudioFrame],
        events: trio.abc.SendChannel[TranscriptEvent],
    ) -> None: ...


@runtime_checkable
class TurnDetector(Protocol):
    """Decides how long to wait after the user stops speaking before taking the turn."""

    def endpointing_delay(self, transcript: str, chat_context: ChatContext) -> float:
        """Seconds of silence after the end of speech that end the user's turn."""
        ...


@attrs.frozen
class TextDelta:
    """A piece of the LLM's answer."""

    text: str


@attrs.frozen
class ToolCall:
    """The LLM asks for a tool. `arguments` is JSON text (or an already parsed dict)."""

    name: str
    arguments: str | dict[str, Any] = attrs.field(factory=dict)
    call_id: str = ""


@attrs.frozen
class Usage:
    """Tokens one LLM call used, when the model reports them (usually its last chunk)."""

    prompt_tokens: int
    completion_tokens: int


LLMChunk = Union[TextDelta, ToolCall, Usage]


@runtime_checkable
class LLM(Protocol):
    """A streaming chat model.

    `chat` returns an async iterator of text deltas, tool calls and (optionally) `Usage`. The pipeline consumes it
    inside the reply's cancel scope and closes it (``aclose()``) when the reply ends or is
    interrupted, so an implementation should release its connection in ``finally``.
    """

    def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]: ...


@runtime_checkable
class TTS(Protocol):
    """Streaming text-to-speech: one text in, mono frames at `sample_rate` out."""

    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]: ...
