"""One thing the agent says, as the pipeline producing it sees it: `Utterance`.

How this works: the session makes an `UtteranceHandle` (the public side, defined with the
lifecycle in `trioagent.scheduler`) and an `Utterance` for every `say()`, `reply()` and user turn,
and queues them on its `SpeechScheduler`. The `Utterance` is the pipeline's side, a small
protocol a pipeline uses instead of reaching into the session: open a voice in the session's
mixer, push audio (the first frame makes the utterance heard, unless the user's speech holds it),
say which text each piece of audio carries (so an interruption keeps in the chat context only
what was heard), and record metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import trio

from .audio.frame import AudioFrame
from .audio.mixer import Mixer, MixerSource
from .chat import ChatContext, ChatMessage, ChatRole
from .errors import ProviderError
from .metrics import TurnMetrics
from .scheduler import Move, SpeechScheduler, SpeechSource, UtteranceHandle, UtteranceState

__all__ = ["UtteranceHandle", "Utterance", "UserTurn", "SpeechOutlet"]


@attrs.define(eq=False)
class UserTurn:
    """The user's side of a turn: what they said and when, on its way to an answer.

    `message` is set once the turn is in the chat context; a turn that replaces an unanswered one
    (the user went on speaking before the answer was heard) carries both texts and updates the
    same message, so the context holds the question once.
    """

    text: str
    metrics: TurnMetrics
    message: ChatMessage | None = None

    def merge(self, newer: UserTurn) -> UserTurn:
        """This turn followed by `newer`, as one turn."""
        text = f"{self.text} {newer.text}".strip()
        metrics = attrs.evolve(newer.metrics, user_text=text, user_speech_start=self.metrics.user_speech_start)
        return UserTurn(text, metrics, self.message)


@attrs.frozen
class SpeechOutlet:
    """What an utterance needs from its session (the session makes one)."""

    scheduler: SpeechScheduler[Utterance]
    mixer: Mixer
    chat_context: Callable[[], ChatContext]
    """The chat context of the agent now in charge."""
    on_first_audio: Callable[[Utterance], None]
    on_item: Callable[[Any], None]
    """Called with each chat item as it is committed (`conversation_item_added`)."""


@attrs.define(eq=False)
class _Segment:
    text: str
    duration: float
    message: ChatMessage | None


class Utterance:
    """One utterance's work, as the pipeline producing it sees it.

    The session hands one to the pipeline's `say()` or `reply()`, which runs inside the handle's
    cancel scope. A pipeline uses only what is documented here (the realtime pipeline the same).

    What to produce: `handle`, `source`, `text` (for a say), `instructions` (for a reply),
    `user_turn` (for the answer to one), `clip` (audio to play as it is), `add_to_chat_context`.
    """

    def __init__(
        self,
        handle: UtteranceHandle,
        outlet: SpeechOutlet,
        *,
        text: str = "",
        instructions: str | None = None,
        user_turn: UserTurn | None = None,
        add_to_chat_context: bool = True,
        clip: AudioFrame | None = None,
    ) -> None:
        self.handle = handle
        self.clip = clip
        """Audio to play as the voice instead of synthesising `text` (background audio in
        ``"playback"`` mode)."""
        self.text = text
        self.instructions = instructions
        self.user_turn = user_turn
        self.add_to_chat_context = add_to_chat_context
        self.metrics = user_turn.metrics if user_turn is not None else TurnMetrics(turn_id=handle.id)
        """The turn's metrics so far (`note()` adds to them)."""
        self._outlet = outlet
        self._scheduler = outlet.scheduler
        self._voice: MixerSource | None = None
        self._held = False
        self._paused = False
        self._silenced = False
        self._has_audio = False
        self._pushed = 0.0
        self._segments: list[_Segment] = []
        self._messages: list[ChatMessage] = []
        self._unheard = 0.0
        self._settled = False
        self._inline: Callable[[str, UtteranceHandle, bool], None] | None = None
        self._children: list[UtteranceHandle] = []

    @property
    def source(self) -> SpeechSource:
        return self.handle.source

    # -- audio ----------------------------------------------------------------------------------
    def open_voice(self, sample_rate: int) -> None:
        """Add this utterance's voice to the session's mixer (once, before the first frame)."""
        if self._voice is not None:
            raise RuntimeError(f"{self.handle.id} already has a voice")
        self._voice = self._outlet.mixer.add_source(sample_rate, voice=True, name=self.handle.id)
        if self._held or self.handle.done():
            self._voice.pause()
        if self.handle.done():
            self._voice.stop()

    def push_audio(self, frame: AudioFrame) -> None:
        """Queue a frame of the voice. The first one makes the utterance heard (PLAYING) unless
        the user's speech is holding it. Not a checkpoint.

        Raises:
            ProviderError: the frame's rate is not the voice's (the TTS said one rate, sent another).
        """
        voice = self._voice
        if voice is None:
            raise RuntimeError("open_voice() first")
        if frame.sample_rate != voice.sample_rate:
            raise ProviderError(f"{self.handle.id}: the voice is {voice.sample_rate} Hz but a {frame.sample_rate} Hz frame came")
        voice.push(frame)
        self._pushed += frame.duration
        if not self._has_audio:
            self._has_audio = True
            if not self._held:
                self._first_audio()

    @property
    def audio_position(self) -> float:
        """Seconds of voice pushed so far."""
        return self._pushed

    def end_audio(self) -> None:
        """No more audio will come."""
        if self._voice is not None:
            self._voice.end()

    async def wait_played_out(self) -> None:
        """Wait until the voice has played its last frame (at once if there is no voice). A
        checkpoint."""
        if self._voice is None:
            await trio.lowlevel.checkpoint()
            return
        await self._voice.wait_played_out()

    @property
    def audible(self) -> bool:
        """Heard now or about to be: it has sent audio and is neither held, paused nor stopped."""
        return self._has_audio and not (self._held or self._paused or self._silenced)

    @property
    def played_duration(self) -> float:
        """Seconds of its audio that have left the mixer."""
        return self._voice.played_duration if self._voice is not None else 0.0

    @property
    def heard_duration(self) -> float:
        """Seconds of its audio the listener heard: what left the mixer, less what was cleared
        from the transport before it was played."""
        return max(0.0, self.played_duration - self._unheard)

    @property
    def played_out_at(self) -> float | None:
        return self._voice.played_out_at if self._voice is not None else None

    # -- text -------------------------------------------------------------------------------------
    def begin_message(self, *, in_context: bool = True) -> ChatMessage:
        """A new assistant message of this utterance (one per LLM step or say).

        It is added to the chat context now when `in_context` (else the utterance adds it once
        something of it has been heard). When the utterance ends it holds what was heard.
        """
        message = ChatMessage(ChatRole.ASSISTANT, "")
        self._messages.append(message)
        if in_context:
            self._outlet.chat_context().items.append(message)
        return message

    def spoken(self, text: str, duration: float, message: ChatMessage | None) -> None:
        """`text` (part of `message`, or of no message) was just pushed as `duration` seconds
        of audio."""
        self._segments.append(_Segment(text, duration, message))

    def spoken_so_far(self, text: str, duration: float, message: ChatMessage) -> None:
        """All of `message` pushed so far is `text` over `duration` seconds of audio (for audio
        and text that stream side by side, as from a speech-to-speech model): replaces what an
        earlier call said of the same message, so an interruption keeps the heard share."""
        last = self._segments[-1] if self._segments else None
        if last is not None and last.message is message:
            last.text, last.duration = text, duration
        else:
            self._segments.append(_Segment(text, duration, message))

    def commit_user_text(self, text: str) -> ChatMessage:
        """Put the user's turn into the chat context (once: a merged turn updates its message)."""
        turn = self.user_turn
        if turn is None:
            raise RuntimeError("this utterance answers no user turn")
        context = self._outlet.chat_context()
        if turn.message is not None and turn.message in context.items:
            turn.message.content = text
        else:
            turn.message = context.add_message(role=ChatRole.USER, content=text)
        self._outlet.on_item(turn.message)
        return turn.message

    def note(self, **fields: Any) -> None:
        """Add to the turn's metrics (`TurnMetrics` field names)."""
        self.metrics = attrs.evolve(self.metrics, **fields)

    # -- a say() from a tool ------------------------------------------------------------------------
    def set_inline(self, sink: Callable[[str, UtteranceHandle, bool], None] | None) -> None:
        """While set, a `say()` from a tool of this utterance calls ``sink(text, handle,
        add_to_chat_context)`` to speak inside it (in order with what it already queued)."""
        self._inline = sink

    def say_inline(self, text: str, add_to_chat_context: bool) -> UtteranceHandle | None:
        """Speak `text` as part of this utterance; None when it cannot (no sink, or finished)."""
        if self._inline is None or self.handle.done():
            return None
        child = self._scheduler.add_child(self.handle, text)
        self._children.append(child)
        self._inline(text, child, add_to_chat_context)
        return child

    def when_heard(self, position: float, child: UtteranceHandle) -> None:
        """Mark `child` done once the voice has played up to `position` seconds."""
        voice = self._voice
        if voice is None or position <= voice.played_duration + 1e-9:
            self._scheduler.end_child(child, interrupted=False)
            return
        voice.call_when_played(position, lambda: self._scheduler.end_child(child, interrupted=False))

    # -- driven by the scheduler ----------------------------------------------------------------
    def _first_audio(self) -> None:
        self._scheduler.move(self.handle, Move.FIRST_AUDIO)
        self._outlet.on_first_audio(self)

    def hold(self) -> None:
        """The user spoke before this utterance was heard: keep its audio back."""
        self._held = True
        if self._voice is not None:
            self._voice.pause()

    def pause(self) -> None:
        """A suspected barge-in: fade out, keep the rest."""
        self._scheduler.move(self.handle, Move.PAUSE)
        self._paused = True
        if self._voice is not None:
            self._voice.pause()

    def resume(self) -> None:
        """Play on (after a hold or a pause)."""
        if self.handle.state is UtteranceState.HELD:
            self._held = False
            self._scheduler.move(self.handle, Move.RESUME)
            if self._voice is not None:
                self._voice.resume()
            if self._has_audio:
                self._first_audio()
        elif self.handle.state is UtteranceState.PAUSED:
            self._paused = False
            self._scheduler.move(self.handle, Move.RESUME)
            if self._voice is not None:
                self._voice.resume()

    def add_unheard(self, seconds: float) -> None:
        """Audio that had left the mixer but that the listener never heard (cleared from the
        transport's buffer)."""
        self._unheard += seconds

    def silence(self) -> None:
        """Stop the voice now (interrupted)."""
        self._silenced = True
        if self._voice is not None:
            self._voice.stop()

    def settle(self) -> None:
        """The utterance is over: keep in the chat context only what was heard. Idempotent."""
        if self._settled:
            return
        self._settled = True
        handle = self.handle
        voice = self._voice
        if voice is not None and voice.started_at is not None:
            handle.started_at = voice.started_at
        if handle.interrupted:
            heard = self._heard(self.heard_duration)
        else:
            heard = {id(s): s.text for s in self._segments}
        handle.spoken_text = " ".join(t for t in (heard.get(id(s), "") for s in self._segments) if t)
        context = self._outlet.chat_context()
        for message in self._messages:
            if handle.interrupted:
                said = [heard.get(id(s), "") for s in self._segments if s.message is message]
                text = " ".join(t for t in said if t)
                if text != " ".join(message.content.split()):
                    message.interrupted = True
                message.content = text
            if not message.content.strip():
                if message in context.items:
                    context.items.remove(message)  # nothing was heard: nothing was said
                continue
            if message not in context.items:
                context.items.append(message)
            self._outlet.on_item(message)
        for child in self._children:
            self._scheduler.end_child(child, interrupted=handle.interrupted, reason=handle.interrupt_reason)

    def _heard(self, played: float) -> dict[int, str]:
        heard: dict[int, str] = {}
        for segment in self._segments:
            if played >= segment.duration - 1e-9:
                heard[id(segment)] = segment.text
                played -= segment.duration
                continue
            words = segment.text.split()
            if segment.duration > 0 and played > 0:
                heard[id(segment)] = " ".join(words[: round(len(words) * played / segment.duration)])
            break
        return heard

    def __repr__(self) -> str:
        return f"<Utterance {self.handle!r}>"
