"""`ConversationFlow`: hooks around each user turn."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from .chat import ChatContext
from .providers.base import LLM, LLMChunk
from .tools import FunctionTool

if TYPE_CHECKING:
    from .agent import Agent

__all__ = ["ConversationFlow"]


class ConversationFlow:
    """Override these to shape each user turn. Every hook runs inside the turn's cancel scope,
    so a barge-in cancels it like the rest of the turn.

    Order for a user turn: `process_transcript` -> `on_turn_start` -> `run_llm` (once per LLM
    step of the tool loop) -> speech -> `on_turn_end`.
    """

    def __init__(self, agent: Agent | None = None) -> None:
        self.agent = agent

    async def process_transcript(self, transcript: str) -> str | None:
        """Rewrite the user's final transcript; return None to ignore the turn."""
        return transcript

    async def on_turn_start(self, transcript: str) -> None:
        """The user's turn is taken; the agent is about to think."""

    async def on_turn_end(self) -> None:
        """The agent's answer finished playing (or was interrupted)."""

    def run_llm(self, llm: LLM, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        """Intercept the LLM call: return any stream of chunks (default: the LLM's own)."""
        return llm.chat(chat_context, tools)

    async def cleanup(self) -> None:
        """Called when the session closes."""
