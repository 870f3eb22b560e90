"""The default turn detector: silence-based endpointing with an optional model."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ..chat import ChatContext

__all__ = ["SilenceTurnDetector"]


@attrs.define(eq=False)
class SilenceTurnDetector:
    """End the user's turn after a silence.

    Without a model every turn ends `min_endpointing_delay` after the end of speech. With a model
    (a callable giving the probability that the transcript is a complete turn), a likely-complete
    turn ends after `min_endpointing_delay` and an unlikely one after `max_endpointing_delay`.
    """

    min_endpointing_delay: float = 0.5
    max_endpointing_delay: float = 0.8
    model: Callable[[str, ChatContext], float] | None = None
    threshold: float = 0.5

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.min_endpointing_delay <= self.max_endpointing_delay:
            raise ValueError("need 0 <= min_endpointing_delay <= max_endpointing_delay")

    def endpointing_delay(self, transcript: str, chat_context: ChatContext) -> float:
        if self.model is None:
            return self.min_endpointing_delay
        done = self.model(transcript, chat_context) >= self.threshold
        return self.min_endpointing_delay if done else self.max_endpointing_delay
