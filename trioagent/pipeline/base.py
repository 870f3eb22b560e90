"""The two sides of the contract between a session and its pipeline.

`Pipeline` is what the session calls; `PipelineHost` is everything a pipeline may call back.
A pipeline holds no reference to the session itself: the cascading pipeline and the realtime one
use the same host, and neither reaches into private session or handle state.

Who owns what: the session runs `run()` in its nursery (listening and turn taking), and the
speech scheduler runs `say()`/`reply()` for one `Utterance` at a time inside that utterance's
cancel scope, so interrupting it cancels the pipeline's LLM, tools, TTS and playout together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

if TYPE_CHECKING:
    from ..agent import Agent
    from ..audio.frame import AudioFrame
    from ..flow import ConversationFlow
    from ..scheduler import UserSpeechEffect, UtteranceState
    from ..transports.base import Transport
    from ..utterance import UserTurn, Utterance

__all__ = ["Pipeline", "PipelineHost"]


@runtime_checkable
class PipelineHost(Protocol):
    """What a pipeline may use of its session (`AgentSession` gives one to `Pipeline.attach`).

    None of the methods awaits but `wait_idle`; each is safe to call from any of the session's
    tasks.
    """

    @property
    def agent(self) -> Agent:
        """The agent now in charge (it changes on a hand-over)."""
        ...

    @property
    def conversation_flow(self) -> ConversationFlow | None: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def closing(self) -> bool:
        """The session is closing: take no new turn."""
        ...

    @property
    def close_grace(self) -> float:
        """Seconds a cleanup step may take."""
        ...

    # -- listening ---------------------------------------------------------------------------
    speech_in: Callable[[AudioFrame], None] | None
    """Call it with each input frame as it is heard (the ``on_speech_in`` tap); None while
    nobody listens, so a pipeline reads it per frame and skips it at no cost."""

    def user_started_speaking(self, time: float) -> UserSpeechEffect:
        """The user's speech began at session time `time`. Returns what it does to the agent's
        current utterance: nothing (none, or not interruptible), held (not heard yet: its audio
        waits until `resume_speech` or `interrupt_speech`), or audible (being heard: the pipeline
        decides whether this is a barge-in)."""
        ...

    def user_stopped_speaking(self, time: float) -> None: ...

    def user_transcript(self, text: str, is_final: bool) -> None:
        """An interim or final transcript of the user's speech (`user_input_transcribed`)."""
        ...

    @property
    def speech_state(self) -> UtteranceState | None:
        """The current utterance's state (None when there is none): PLAYING is being heard,
        HELD and PAUSED wait for `resume_speech` or `interrupt_speech`."""
        ...

    @property
    def speech_interruptible(self) -> bool:
        """There is a current utterance and user speech may cut it."""
        ...

    def pause_speech(self) -> bool:
        """A suspected barge-in: fade the current utterance out, keep the rest, and drop the
        output already queued in the transport. Returns whether there was one to pause."""
        ...

    def resume_speech(self) -> None:
        """Not a barge-in after all: the held or paused utterance plays on."""
        ...

    def interrupt_speech(self, reason: str) -> UserTurn | None:
        """A barge-in: cut the current (interruptible) utterance and drop queued output. When
        it answered a user turn and nothing of it was heard, returns that turn, so the pipeline
        can fold it into the user's new one."""
        ...

    def user_turn(self, turn: UserTurn) -> None:
        """The user's turn is over: queue its answer (after any utterance that cannot be cut; a
        turn still waiting for its answer is merged into this one)."""
        ...

    async def wait_idle(self) -> None:
        """Wait until no utterance runs or waits (a checkpoint): the input has ended, and a
        pipeline that answers through a connection keeps it until the answers are out."""
        ...

    def keep_unanswered(self, turn: UserTurn) -> None:
        """User speech that takes no turn (a backchannel, "mm-hmm", over the agent; or words
        still pending when the session closes): into the chat context, unanswered."""
        ...

    # -- answering -----------------------------------------------------------------------------
    def emit(self, name: str, payload: Any) -> None:
        """Emit one of the session's events (`function_tools_executed`, ...)."""
        ...

    def hand_over(self, agent: Agent) -> None:
        """A tool returned a new agent: it takes over once the current utterance has ended."""
        ...


@runtime_checkable
class Pipeline(Protocol):
    """The engine behind a session (`CascadingPipeline`, later `RealTimePipeline`).

    Attributes:
        allow_interruptions: when False, no utterance of the session can be cut by user speech,
            `say()`, `reply()` or `interrupt()` (only `interrupt(force=True)`).
    """

    allow_interruptions: bool

    def attach(self, host: PipelineHost | None) -> None:
        """Called once, before `run`, with the session's side of the contract; and with None
        once the session is over (let go of it)."""
        ...

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Process the session's input (listening, turn taking) until cancelled or the input
        ends; report started once it listens."""
        ...

    async def say(self, utterance: Utterance) -> None:
        """Speak `utterance.text`; return when it has played out."""
        ...

    async def reply(self, utterance: Utterance) -> None:
        """Answer from the chat context (plus `utterance.instructions`, or the user's turn
        `utterance.user_turn`); return when the answer has played out."""
        ...

    async def cleanup(self) -> None:
        """Release provider resources; called once when the session closes."""
        ...
