"""The `Pipeline` protocol: exactly what `AgentSession` calls."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import trio

if TYPE_CHECKING:
    from ..agent import Agent
    from ..flow import ConversationFlow
    from ..session import AgentSession
    from ..utterance import UtteranceHandle

__all__ = ["Pipeline"]


@runtime_checkable
class Pipeline(Protocol):
    """The engine behind a session (`CascadingPipeline`, later `RealTimePipeline`).

    The session owns every task: it runs `run` in its nursery, and runs `say`/`reply` inside the
    cancel scope of the utterance's handle, so interrupting the handle cancels them.
    """

    def set_agent(self, agent: Agent) -> None:
        """The agent now in charge (called at start and on every hand-over)."""
        ...

    def set_conversation_flow(self, flow: ConversationFlow | None) -> None: ...

    async def run(self, session: AgentSession, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process the session's input (listening, turn taking) until cancelled or the input ends."""
        ...

    async def say(self, text: str, handle: UtteranceHandle) -> None:
        """Speak `text`; return when it has played out. Runs in the handle's scope."""
        ...

    async def reply(self, instructions: str | None, handle: UtteranceHandle, *, user_text: str | None = None) -> None:
        """Answer from the chat context (plus `instructions`, or the user's turn `user_text`);
        return when the answer has played out. Runs in the handle's scope."""
        ...

    def interrupt(self) -> None:
        """Drop any pending turn state (the session has already interrupted the utterance)."""
        ...

    async def cleanup(self) -> None:
        """Release provider resources; called once when the session closes."""
        ...
