"""A small event emitter whose failing callbacks are logged, never fatal; and the typed payloads
of the session's events."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .chat import ChatItem, FunctionCall, FunctionCallOutput
from .errors import ProviderError, ProviderTimeout

if TYPE_CHECKING:
    from .scheduler import SpeechSource, UtteranceHandle

__all__ = [
    "EventEmitter",
    "UserInputTranscribed",
    "ConversationItemAdded",
    "FunctionToolsExecuted",
    "SpeechCreated",
    "UserTurnEnded",
    "AgentSpeechStarted",
    "CloseEvent",
    "ErrorEvent",
]


@attrs.frozen
class UserInputTranscribed:
    """`user_input_transcribed`: the STT's interim or final text of the user's current speech."""

    transcript: str
    is_final: bool
    time: float
    """Session time the transcript was made."""


@attrs.frozen
class ConversationItemAdded:
    """`conversation_item_added`: a chat item as it is committed: a user message when its turn is
    taken (or, for speech that did not take a turn, when it ends), an assistant message when its
    utterance has ended (holding what was heard, `interrupted` if cut), a backchannel too."""

    item: ChatItem


@attrs.frozen
class FunctionToolsExecuted:
    """`function_tools_executed`: the tool calls of one LLM step and their outputs, in order."""

    calls: tuple[FunctionCall, ...]
    outputs: tuple[FunctionCallOutput, ...]


@attrs.frozen
class SpeechCreated:
    """`speech_created`: an utterance entered the session's speech queue."""

    handle: UtteranceHandle
    source: SpeechSource


@attrs.frozen
class UserTurnEnded:
    """`user_turn_ended`: the user's turn as it is taken (typed or spoken): its whole text and
    when the speech began and ended (session time; None for a typed turn's start). A
    speech-to-speech model's transcript may come after its answer has begun: then it is emitted
    when it comes."""

    text: str
    start: float | None
    end: float | None


@attrs.frozen
class AgentSpeechStarted:
    """`agent_speech_started`: an utterance's first audio is heard; `text` is what is known of
    it then (a streamed reply's first words, a `say()`'s whole text)."""

    text: str
    handle: UtteranceHandle


@attrs.frozen
class ErrorEvent:
    """`error`: something failed. Not `fatal`: one reply failed (an LLM or TTS error or
    timeout) and the session goes on; `fatal`: the session ends (its STT stream died, say)."""

    error: BaseException
    stage: str | None
    """``"stt"``, ``"llm"``, ``"tts"``, ``"mcp"``, or None when it is not known."""
    fatal: bool

    @property
    def reason(self) -> str:
        """One line for a user: what failed, never a provider's own message (it may hold URLs,
        keys or a server's reply)."""
        what = {"stt": "speech recognition", "llm": "the language model", "tts": "speech synthesis", "mcp": "an MCP server"}.get(self.stage or "", "the agent")
        who = f" ({self.error.provider})" if isinstance(self.error, ProviderError) and self.error.provider else ""
        how = "timed out" if isinstance(self.error, ProviderTimeout) else "failed"
        return f"{what}{who} {how}"


@attrs.frozen
class CloseEvent:
    """`close`: the session closed (emitted once). `error` is what ended it, if it failed."""

    reason: str
    error: BaseException | None = None

_log = logging.getLogger("trioagent.events")

Callback = Callable[[Any], Any]


class EventEmitter:
    """`on(name, callback)` / `off(name, callback)` / `emit(name, payload)`.

    Only the names in `event_names` are accepted, so a typo fails loudly at `on()`. A sync callback
    runs inline; an async one runs as a task in `nursery` (the session's), so it has an owner. A
    callback that raises is logged with its traceback and the others still run.
    """

    event_names: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callback]] = {}
        self._callback_nursery: trio.Nursery | None = None

    def on(self, name: str, callback: Callback | None = None) -> Any:
        """Register `callback` for `name`; usable as a decorator when `callback` is omitted."""
        self._check(name)
        if callback is None:
            def deco(cb: Callback) -> Callback:
                self.on(name, cb)
                return cb

            return deco
        self._handlers.setdefault(name, []).append(callback)
        return callback

    def off(self, name: str, callback: Callback) -> None:
        """Unregister a callback; unknown callbacks are ignored."""
        self._check(name)
        handlers = self._handlers.get(name, [])
        if callback in handlers:
            handlers.remove(callback)

    def emit(self, name: str, payload: Any = None) -> None:
        self._check(name)
        for cb in list(self._handlers.get(name, ())):
            try:
                if inspect.iscoroutinefunction(cb):
                    if self._callback_nursery is None:
                        _log.warning("async %s callback %r dropped: the session is not running", name, cb)
                        continue
                    self._callback_nursery.start_soon(self._run_async, name, cb, payload)
                else:
                    cb(payload)
            except Exception:
                _log.exception("%s callback %r raised", name, cb)

    async def emit_and_wait(self, name: str, payload: Any = None) -> None:
        """Emit, awaiting async callbacks here in turn (for an event after which no task of
        the emitter is left to run them, such as `close`). The caller bounds the wait."""
        self._check(name)
        for cb in list(self._handlers.get(name, ())):
            if inspect.iscoroutinefunction(cb):
                await self._run_async(name, cb, payload)
                continue
            try:
                cb(payload)
            except Exception:
                _log.exception("%s callback %r raised", name, cb)

    async def _run_async(self, name: str, cb: Callback, payload: Any) -> None:
        try:
            await cb(payload)
        except Exception:
            _log.exception("%s callback %r raised", name, cb)

    def _check(self, name: str) -> None:
        if self.event_names and name not in self.event_names:
            raise ValueError(f"unknown event {name!r}; known: {', '.join(sorted(self.event_names))}")
