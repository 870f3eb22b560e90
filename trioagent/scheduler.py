"""The speech scheduler: one queue of utterances per session, played one at a time.

How this works, in three layers, each usable without the next:

1. **The lifecycle table** (`TRANSITIONS`). Every state an utterance can be in and every move
   between them; a move that is not in the table raises `SpeechStateError` (a bug, never a user
   error)::

       QUEUED --start--> RUNNING --first_audio--> PLAYING --finish--> DONE
                          | ^                      | ^
                       hold resume              pause resume
                          v |                      v |
                          HELD                   PAUSED

       interrupt: from any state but DONE to INTERRUPTED (again on INTERRUPTED: nothing)

   RUNNING: its work (LLM, tools, TTS) runs, nothing heard yet. HELD: the user started speaking
   before its first audio: the work goes on, its audio waits. PLAYING: heard. PAUSED: a suspected
   barge-in faded it out; it resumes where it stopped or is interrupted.

2. **`SpeechQueue`: the rules**, as sync bookkeeping with no I/O and no clock. Each method moves
   handles through the table and returns a `Step`: the handles it interrupted and the one to
   start. The session's rules (seed semantics, with the changes the design names):

   - `say()` / `reply()` from user code interrupt the current utterance if it is interruptible,
     then queue (first come, first played); a non-interruptible one is never cut: they wait.
   - a `reply()` while another reply (or the answer to a user turn) is queued or running returns
     that one's handle (the session asks `pending_reply()`).
   - a user turn queues at the back; a newer turn replaces one still waiting (the session merges
     their texts, so no question is lost).
   - user speech: over a current interruptible utterance not yet heard, it is HELD; over one being
     heard, it is a barge-in candidate (the pipeline measures it); a non-interruptible one plays on.
   - `interrupt()` cuts the current interruptible utterance, `interrupt(force=True)` any; the next
     queued one starts once the cut one's task has exited (its shielded cleanup may still run),
     so two voices never overlap.

3. **`SpeechScheduler`: the trio side.** One runner task in the session's nursery receives started
   handles over a channel and runs each one's work inside the handle's own cancel scope (a scope
   per utterance, never reused). Applying a `Step` cancels the interrupted handles' scopes with a
   reason, silences their voices and wakes their waiters, all without awaiting.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import math
import uuid
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Generic, Protocol, TypeVar

import attrs
import trio

from .errors import TrioAgentError, sole_error

__all__ = [
    "Job",
    "Move",
    "SpeechQueue",
    "SpeechScheduler",
    "SpeechSource",
    "SpeechStateError",
    "Step",
    "TRANSITIONS",
    "UserSpeechEffect",
    "UtteranceHandle",
    "UtteranceState",
    "advance",
    "running_handle",
]

_log = logging.getLogger("trioagent.scheduler")


class SpeechSource(str, enum.Enum):
    """Who asked for an utterance."""

    SAY = "say"  # session.say() from user code
    REPLY = "reply"  # session.reply()
    USER_TURN = "user_turn"  # the answer to the user's turn
    TOOL = "tool"  # session.say() from a tool of the running reply: spoken inside that reply


class UtteranceState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    PLAYING = "playing"
    PAUSED = "paused"
    DONE = "done"
    INTERRUPTED = "interrupted"


class Move(enum.Enum):
    START = "start"
    FIRST_AUDIO = "first_audio"
    HOLD = "hold"
    PAUSE = "pause"
    RESUME = "resume"
    FINISH = "finish"
    INTERRUPT = "interrupt"


S, M = UtteranceState, Move

TRANSITIONS: Mapping[UtteranceState, Mapping[Move, UtteranceState]] = {
    S.QUEUED: {M.START: S.RUNNING, M.INTERRUPT: S.INTERRUPTED},
    S.RUNNING: {M.FIRST_AUDIO: S.PLAYING, M.HOLD: S.HELD, M.FINISH: S.DONE, M.INTERRUPT: S.INTERRUPTED},
    # Held: its audio may arrive (it waits in the paused voice); resuming goes back to RUNNING,
    # then on to PLAYING at once if audio is waiting.
    S.HELD: {M.FIRST_AUDIO: S.HELD, M.HOLD: S.HELD, M.RESUME: S.RUNNING, M.FINISH: S.DONE, M.INTERRUPT: S.INTERRUPTED},
    S.PLAYING: {M.PAUSE: S.PAUSED, M.FINISH: S.DONE, M.INTERRUPT: S.INTERRUPTED},
    S.PAUSED: {M.PAUSE: S.PAUSED, M.RESUME: S.PLAYING, M.FINISH: S.DONE, M.INTERRUPT: S.INTERRUPTED},
    S.DONE: {},
    S.INTERRUPTED: {M.INTERRUPT: S.INTERRUPTED},
}
"""The whole lifecycle: state -> {move: next state}. Anything else is illegal."""

FINAL = frozenset({S.DONE, S.INTERRUPTED})
"""States an utterance never leaves."""

_REPLIES = frozenset({SpeechSource.REPLY, SpeechSource.USER_TURN})

del S, M


class SpeechStateError(TrioAgentError, RuntimeError):
    """An utterance was asked to make a move its lifecycle does not allow (a bug)."""


def advance(state: UtteranceState, move: Move) -> UtteranceState:
    """The state after `move`.

    Raises:
        SpeechStateError: `move` is not allowed in `state`.
    """
    try:
        return TRANSITIONS[state][move]
    except KeyError:
        raise SpeechStateError(f"an utterance cannot {move.value} when {state.value}") from None


class UtteranceHandle:
    """Tracks one utterance (a `say()`, a `reply()` or the answer to a user turn) from the
    moment it is queued to its last sample.

    The handle owns the cancel scope of the utterance's LLM, tool, TTS and playout work:
    `interrupt()` cancels it and silences the voice at once (the next mixer tick fades it out).
    ``await handle`` returns when the audio has finished playing or was interrupted; it never
    raises. Its state moves only through the lifecycle table above.

    Attributes:
        id: unique, for logs and events.
        source: who asked for it (`SpeechSource`: say, reply, user turn, tool).
        interruptible: whether user speech, `say()`, `reply()` and `interrupt()` may cut it
            (`interrupt(force=True)` always may).
        text: everything it was asked to say (filled in as the LLM writes).
        spoken_text: what was heard; equals the text unless interrupted (final once done).
        started_at: session time its first audio frame was played.
        interrupt_reason: why it was cut, if it was.
    """

    def __init__(
        self,
        utterance_id: str | None = None,
        *,
        source: SpeechSource = SpeechSource.SAY,
        interruptible: bool = True,
    ) -> None:
        self.id = utterance_id or f"utt_{uuid.uuid4().hex[:8]}"
        self.source = source
        self.interruptible = interruptible
        self.text = ""
        self.spoken_text = ""
        self.started_at: float | None = None
        self.interrupt_reason: str | None = None
        self._state = UtteranceState.QUEUED
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        # Who can cut it: the scheduler running it (held weakly: a handle kept after its session
        # has gone must not keep the session alive), or for a tool's say, the reply it is in.
        self._owner: weakref.ref[SpeechScheduler[Any]] | None = None
        self._parent: UtteranceHandle | None = None

    @classmethod
    def finished(cls, utterance_id: str, *, source: SpeechSource = SpeechSource.REPLY) -> UtteranceHandle:
        """A handle that is already done (an empty `reply("")`)."""
        handle = cls(utterance_id, source=source)
        handle._move(Move.START)
        handle._end(Move.FINISH)
        return handle

    @property
    def state(self) -> UtteranceState:
        return self._state

    @property
    def is_interruptible(self) -> bool:
        """The seed's name for `interruptible`."""
        return self.interruptible

    @property
    def interrupted(self) -> bool:
        return self._state is UtteranceState.INTERRUPTED

    def done(self) -> bool:
        """True once the audio has finished playing or the utterance was interrupted."""
        return self._state in FINAL

    def interrupt(self, *, force: bool = False) -> None:
        """Cut the utterance now, if it is interruptible (or `force`). Idempotent; a no-op on a
        finished one. Not a checkpoint."""
        if self._parent is not None:
            self._parent.interrupt(force=force)  # a tool's say is part of its reply
            return
        owner = self._owner() if self._owner is not None else None
        if owner is not None:
            owner.interrupt(self, force)

    async def wait(self) -> None:
        """Wait until done (played out or interrupted). A checkpoint."""
        await self._done.wait()

    def __await__(self) -> Generator[Any, None, None]:
        return self._done.wait().__await__()

    def __repr__(self) -> str:
        return f"<UtteranceHandle {self.id} {self.source.value} {self._state.value}>"

    def _move(self, move: Move) -> None:
        self._state = advance(self._state, move)

    def _end(self, move: Move, reason: str | None = None) -> None:
        """Finish or interrupt, wake the waiters (a handle that never ran, or a tool's say)."""
        self._move(move)
        if move is Move.INTERRUPT:
            self.interrupt_reason = self.interrupt_reason or reason
        self._done.set()


class UserSpeechEffect(str, enum.Enum):
    """What the user's speech does to the current utterance."""

    NONE = "none"  # there is none, or it cannot be interrupted: it plays on
    HELD = "held"  # not heard yet: its audio is held until the speech is judged
    AUDIBLE = "audible"  # being heard: a barge-in if the speech lasts (the pipeline judges)


@attrs.frozen
class Step:
    """What a queue operation decided: `interrupted` were cut (their work must be cancelled,
    their audio silenced), `start` must start now."""

    interrupted: tuple[UtteranceHandle, ...] = ()
    start: UtteranceHandle | None = None


class SpeechQueue:
    """Which utterance plays, which wait, which are cut. Bookkeeping only: no awaits, no clock.

    The *active* handle is the one whose task runs; it keeps its slot until `task_exited`, even
    once interrupted, so the next one cannot start while the old one's cleanup still runs.
    """

    def __init__(self) -> None:
        self._active: UtteranceHandle | None = None
        self._waiting: list[UtteranceHandle] = []
        self.last: UtteranceHandle | None = None
        """The most recently started handle (the seed's `current_utterance` after it ends)."""

    # -- reading ------------------------------------------------------------------------------
    @property
    def active(self) -> UtteranceHandle | None:
        """The handle whose task runs (it may be interrupted already, its cleanup running)."""
        return self._active

    @property
    def current(self) -> UtteranceHandle | None:
        """The utterance being worked on or heard, if it is not finished."""
        h = self._active
        return h if h is not None and h.state not in FINAL else None

    @property
    def waiting(self) -> tuple[UtteranceHandle, ...]:
        return tuple(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing runs (no task either) and nothing waits."""
        return self._active is None and not self._waiting

    def pending(self) -> tuple[UtteranceHandle, ...]:
        """The current utterance (if not finished) and the waiting ones, in order."""
        current = self.current
        return ((current,) if current is not None else ()) + tuple(self._waiting)

    def pending_reply(self) -> UtteranceHandle | None:
        """A reply or turn answer that is running or waiting, if any."""
        return next((h for h in self.pending() if h.source in _REPLIES), None)

    def waiting_user_turn(self) -> UtteranceHandle | None:
        """The answer to a user turn that has not started yet, if any."""
        return next((h for h in self._waiting if h.source is SpeechSource.USER_TURN), None)

    # -- the rules ----------------------------------------------------------------------------
    def submit(self, handle: UtteranceHandle) -> Step:
        """Queue a new utterance (`say`, `reply` or a user turn's answer).

        A say or reply from user code cuts the current utterance when it is interruptible; a
        user turn never does (when it follows speech that did not interrupt, it waits).
        """
        if handle.state is not UtteranceState.QUEUED:
            raise SpeechStateError(f"only a new handle can be queued, not one that is {handle.state.value}")
        if handle.source is SpeechSource.TOOL:
            raise SpeechStateError("a tool's say() is spoken inside its reply, never queued")
        cut: list[UtteranceHandle] = []
        current = self.current
        if handle.source is not SpeechSource.USER_TURN and current is not None and current.interruptible:
            self._move(current, Move.INTERRUPT)
            cut.append(current)
        self._waiting.append(handle)
        return Step(tuple(cut), self._start_next())

    def interrupt(self, handle: UtteranceHandle, *, force: bool = False) -> Step:
        """Cut `handle` (running or waiting) if it is interruptible or `force`; else nothing."""
        if handle.state in FINAL or not (handle.interruptible or force):
            return Step()
        if handle in self._waiting:
            self._waiting.remove(handle)
        elif handle is not self._active:
            return Step()  # not one of ours
        self._move(handle, Move.INTERRUPT)
        return Step((handle,))

    def interrupt_current(self, *, force: bool = False) -> Step:
        current = self.current
        return self.interrupt(current, force=force) if current is not None else Step()

    def user_started_speaking(self) -> UserSpeechEffect:
        """The user started speaking: hold the current utterance if nobody has heard it yet."""
        current = self.current
        if current is None or not current.interruptible:
            return UserSpeechEffect.NONE
        if current.state in (UtteranceState.RUNNING, UtteranceState.HELD):
            self._move(current, Move.HOLD)
            return UserSpeechEffect.HELD
        return UserSpeechEffect.AUDIBLE

    def move(self, handle: UtteranceHandle, move: Move) -> None:
        """Move the active handle (first audio, hold, pause, resume, finish).

        Raises:
            SpeechStateError: `handle` is not the active one, or the table forbids the move.
        """
        if handle is not self._active:
            raise SpeechStateError(f"{handle!r} is not the active utterance")
        self._move(handle, move)

    def task_exited(self, handle: UtteranceHandle) -> Step:
        """The active handle's task has exited (normally or not): its slot is free."""
        if handle is not self._active:
            raise SpeechStateError(f"{handle!r} is not the active utterance")
        if handle.state not in FINAL:
            self._move(handle, Move.FINISH)
        self._active = None
        return Step((), self._start_next())

    def close(self) -> Step:
        """Cut everything, interruptible or not. Nothing starts afterwards."""
        cut = self.pending()
        self._waiting.clear()
        for h in cut:
            self._move(h, Move.INTERRUPT)
        return Step(cut)

    # -- internals ----------------------------------------------------------------------------
    def _start_next(self) -> UtteranceHandle | None:
        if self._active is not None or not self._waiting:
            return None
        handle = self._waiting.pop(0)
        self._move(handle, Move.START)
        self._active = self.last = handle
        return handle

    @staticmethod
    def _move(handle: UtteranceHandle, move: Move) -> None:
        handle._move(move)


# The handle whose work runs in this task (and the tasks it starts): how a say() from a tool
# finds the reply it belongs to.
_running: contextvars.ContextVar[UtteranceHandle | None] = contextvars.ContextVar("trioagent_utterance", default=None)


def running_handle() -> UtteranceHandle | None:
    """The utterance whose work the calling task belongs to, if any."""
    return _running.get()


class Job(Protocol):
    """What the scheduler needs of an utterance's work besides its handle (`Utterance` is one)."""

    @property
    def handle(self) -> UtteranceHandle: ...

    @property
    def audible(self) -> bool:
        """Being heard right now (not held, paused or silenced)."""
        ...

    def hold(self) -> None:
        """Keep the audio back (the user spoke before it was heard)."""
        ...

    def silence(self) -> None:
        """Stop the audio now (interrupted)."""
        ...

    def settle(self) -> None:
        """The utterance is over: record what was heard. Idempotent."""
        ...


J = TypeVar("J", bound=Job)


class SpeechScheduler(Generic[J]):
    """Runs a session's utterances one at a time, each in its own cancel scope.

    Args:
        work: does one utterance's work (the session's: the pipeline's `say` or `reply`); runs
            in the runner task, inside the handle's cancel scope.
        on_change: called (sync) after any handle changed state; the session derives its agent
            and user states there.
        on_interrupted: called (sync) for each utterance cut, with whether it was being heard
            (the session clears the transport's queued output then).
        on_finished: called (sync) when an utterance's task has exited.
        on_failed: called (sync) when an utterance's work raised (logged already); the
            utterance ends interrupted and the next one starts.
    """

    def __init__(
        self,
        work: Callable[[J], Awaitable[None]],
        *,
        on_change: Callable[[], None],
        on_interrupted: Callable[[J, bool], None],
        on_finished: Callable[[J], None],
        on_failed: Callable[[J, Exception], None],
    ) -> None:
        self.queue = SpeechQueue()
        self._work = work
        self._on_change = on_change
        self._on_interrupted = on_interrupted
        self._on_finished = on_finished
        self._on_failed = on_failed
        self._jobs: dict[UtteranceHandle, J] = {}
        self._start_send, self._start_receive = trio.open_memory_channel[UtteranceHandle](math.inf)
        self._closed = False
        self._idle = trio.Event()
        self._idle.set()

    @property
    def current(self) -> UtteranceHandle | None:
        return self.queue.current

    @property
    def closed(self) -> bool:
        return self._closed

    def job(self, handle: UtteranceHandle) -> J:
        """The work of a handle that is running or waiting.

        Raises:
            KeyError: it is not (any more).
        """
        return self._jobs[handle]

    def owns(self, handle: UtteranceHandle) -> bool:
        """Whether `handle` is running or waiting here."""
        return handle in self._jobs

    # -- commands (sync: none of them awaits) ----------------------------------------------------
    def submit(self, job: J) -> None:
        handle = job.handle
        if self._closed:
            handle._end(Move.INTERRUPT, "session closed")
            return
        handle._owner = weakref.ref(self)
        self._jobs[handle] = job
        if self._idle.is_set():
            self._idle = trio.Event()
        self._apply(self.queue.submit(handle), "replaced")

    def interrupt(self, handle: UtteranceHandle, force: bool = False, reason: str = "interrupted") -> bool:
        """Cut `handle` (if interruptible, or `force`). Returns whether it was cut."""
        step = self.queue.interrupt(handle, force=force)
        self._apply(step, reason)
        return bool(step.interrupted)

    def interrupt_current(self, *, force: bool = False, reason: str = "interrupted") -> UtteranceHandle | None:
        """Cut the current utterance (if interruptible, or `force`); returns it if it was cut."""
        step = self.queue.interrupt_current(force=force)
        self._apply(step, reason)
        return step.interrupted[0] if step.interrupted else None

    def user_started_speaking(self) -> UserSpeechEffect:
        effect = self.queue.user_started_speaking()
        current = self.queue.current
        if effect is UserSpeechEffect.HELD and current is not None:
            self._jobs[current].hold()
        self._on_change()
        return effect

    def move(self, handle: UtteranceHandle, move: Move) -> None:
        self.queue.move(handle, move)
        self._on_change()

    def hold(self, handle: UtteranceHandle) -> None:
        """Hold the active utterance's audio (it starts while the user is speaking)."""
        self.queue.move(handle, Move.HOLD)
        self._jobs[handle].hold()
        self._on_change()

    def close(self) -> None:
        """Cut every utterance (forced); no new one starts. Idempotent; not a checkpoint."""
        self._closed = True
        self._apply(self.queue.close(), "session closing")
        self._start_send.close()

    def release(self) -> None:
        """Drop the callbacks into the session (after close), so nothing here keeps it alive."""
        self._jobs.clear()
        self.queue.last = None
        self._work = _nothing_to_do
        self._on_change = _pass
        self._on_interrupted = self._on_finished = self._on_failed = _pass

    async def wait_idle(self) -> None:
        """Wait until nothing runs or waits. A checkpoint."""
        await self._idle.wait()

    # -- a tool's say(): part of its reply, never queued ----------------------------------------
    def add_child(self, parent: UtteranceHandle, text: str) -> UtteranceHandle:
        """A handle for speech a tool adds to the running `parent` (source TOOL): interrupting
        it interrupts the parent; it ends when its audio has played, or with the parent."""
        child = UtteranceHandle(source=SpeechSource.TOOL, interruptible=parent.interruptible)
        child.text = text
        child._move(Move.START)
        child._parent = parent
        return child

    @staticmethod
    def end_child(child: UtteranceHandle, *, interrupted: bool, reason: str | None = None) -> None:
        if not child.done():
            if not interrupted:
                child.spoken_text = child.text
            child._end(Move.INTERRUPT if interrupted else Move.FINISH, reason)

    # -- the runner --------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The one task that runs utterances, in the session's nursery."""
        task_status.started()
        async with self._start_receive:
            async for handle in self._start_receive:
                await self._run_one(handle)

    async def _run_one(self, handle: UtteranceHandle) -> None:
        job = self._jobs[handle]
        token = _running.set(handle)
        try:
            with handle._scope:
                if not handle.done():
                    await self._work(job)
        except Exception as exc:
            # A provider failed: this utterance ends, the session goes on.
            _log.exception("utterance %s failed", handle.id)
            if not handle.done():
                self._apply(self.queue.interrupt(handle, force=True), "failed")
            failure = sole_error(exc)
            self._on_failed(job, failure if isinstance(failure, Exception) else exc)
        finally:
            _running.reset(token)
            # On any exit, cancellation included: free the slot, then settle the rest.
            step = self.queue.task_exited(handle)
            job.settle()
            handle._done.set()
            del self._jobs[handle]
            self._on_finished(job)
            self._apply(step, "replaced")

    # -- applying a step (no awaits) ------------------------------------------------------------
    def _apply(self, step: Step, reason: str) -> None:
        for handle in step.interrupted:
            job = self._jobs[handle]
            handle.interrupt_reason = handle.interrupt_reason or reason
            audible = job.audible
            job.silence()
            handle._scope.cancel(reason=f"utterance {handle.id}: {handle.interrupt_reason}")
            self._on_interrupted(job, audible)  # (notes audio sent but not yet heard)
            job.settle()  # what was heard is known now: `await handle` may read it
            handle._done.set()
            if handle is not self.queue.active:
                del self._jobs[handle]  # it never ran: no task will
        if step.start is not None:
            self._start_send.send_nowait(step.start)
        if self.queue.idle:
            self._idle.set()
        self._on_change()


async def _nothing_to_do(job: Any) -> None:
    await trio.lowlevel.checkpoint()


def _pass(*args: Any) -> None:
    pass
