"""`UtteranceHandle`: one thing the agent says, and the cancel scope that owns its work."""

from __future__ import annotations

import uuid
from collections.abc import Generator
from typing import Any

import trio

from .audio.mixer import MixerSource
from .chat import ChatMessage

__all__ = ["UtteranceHandle"]


class UtteranceHandle:
    """Tracks one utterance (a `say()` or a reply) from its first LLM token to its last sample.

    The handle owns the cancel scope of the utterance's LLM, tool, TTS and playout work.
    `interrupt()` cancels that scope and stops the voice track at once: the next mixer tick fades
    it out. `await handle` returns when the audio has finished playing or was interrupted; it never
    raises.
    """

    def __init__(self, utterance_id: str | None = None) -> None:
        self.id = utterance_id or f"utt_{uuid.uuid4().hex[:8]}"
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._interrupted = False
        self._voice: MixerSource | None = None
        # Audio of this utterance that had left the mixer but that the listener had not heard
        # when output was cleared (the transport's `unplayed()`, where it can tell).
        self._unheard = 0.0
        self.text = ""
        """Everything the utterance was asked to say (filled in as the LLM writes)."""
        self.spoken_text = ""
        """What was actually played; equals `text` unless interrupted."""
        self.started_at: float | None = None
        """Session time its first audio frame was played."""
        # Set by the session: the chat message to trim on interruption, the turn's metrics.
        self._chat_message: ChatMessage | None = None
        self._turn_metrics: Any = None

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    def done(self) -> bool:
        """True once the audio has finished playing or the utterance was interrupted."""
        return self._done.is_set()

    def interrupt(self, reason: str = "interrupted") -> None:
        """Stop the utterance now. Idempotent; a no-op on a finished one. Not a checkpoint."""
        if self.done():
            return
        self._interrupted = True
        if self._voice is not None:
            self._voice.stop()
        self._scope.cancel()
        self._done.set()

    async def wait(self) -> None:
        """Wait until done (played out or interrupted). A checkpoint."""
        await self._done.wait()

    def __await__(self) -> Generator[Any, None, None]:
        return self._done.wait().__await__()

    def _mark_done(self) -> None:
        self._done.set()

    def __repr__(self) -> str:
        state = "interrupted" if self._interrupted else "done" if self.done() else "running"
        return f"<UtteranceHandle {self.id} {state}>"
