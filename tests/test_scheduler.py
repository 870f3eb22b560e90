"""The utterance lifecycle table and the queue's rules, without an event loop (no trio.run)."""

from __future__ import annotations

import itertools

import pytest

from trioagent.scheduler import (
    FINAL,
    TRANSITIONS,
    Move,
    SpeechQueue,
    SpeechSource,
    SpeechStateError,
    UserSpeechEffect,
    UtteranceState,
    advance,
)
from trioagent.utterance import UtteranceHandle

S, M = UtteranceState, Move


def handle(source: SpeechSource = SpeechSource.SAY, interruptible: bool = True) -> UtteranceHandle:
    return UtteranceHandle(source=source, interruptible=interruptible)


def test_every_state_has_a_row_and_final_states_are_final() -> None:
    assert set(TRANSITIONS) == set(UtteranceState)
    for state in FINAL:
        assert all(target in FINAL for target in TRANSITIONS[state].values())
    # Anything not finished can be interrupted; only INTERRUPTED and DONE cannot be left.
    for state in set(UtteranceState) - {S.DONE}:
        assert TRANSITIONS[state][M.INTERRUPT] is S.INTERRUPTED


@pytest.mark.parametrize(("state", "move"), list(itertools.product(UtteranceState, Move)))
def test_moves_outside_the_table_raise(state: UtteranceState, move: Move) -> None:
    if move in TRANSITIONS[state]:
        assert advance(state, move) is TRANSITIONS[state][move]
    else:
        with pytest.raises(SpeechStateError, match=f"cannot {move.value} when {state.value}"):
            advance(state, move)


def test_the_lifecycles_that_happen() -> None:
    def run(*moves: Move) -> UtteranceState:
        state = S.QUEUED
        for move in moves:
            state = advance(state, move)
        return state

    assert run(M.START, M.FIRST_AUDIO, M.FINISH) is S.DONE
    assert run(M.START, M.HOLD, M.FIRST_AUDIO, M.RESUME, M.FIRST_AUDIO, M.FINISH) is S.DONE  # held, then heard
    assert run(M.START, M.FIRST_AUDIO, M.PAUSE, M.RESUME, M.FINISH) is S.DONE  # a false interruption
    assert run(M.START, M.FIRST_AUDIO, M.PAUSE, M.INTERRUPT) is S.INTERRUPTED  # a real one
    assert run(M.INTERRUPT, M.INTERRUPT) is S.INTERRUPTED  # idempotent
    assert run(M.START, M.FINISH) is S.DONE  # a reply that had nothing to say


def test_first_come_first_played_and_the_slot_is_freed_when_the_task_exits() -> None:
    q = SpeechQueue()
    a, b = handle(interruptible=False), handle()
    assert q.submit(a).start is a and a.state is S.RUNNING
    step = q.submit(b)
    assert step.start is None and step.interrupted == () and q.waiting == (b,)
    q.move(a, M.FIRST_AUDIO)
    assert q.task_exited(a).start is b
    assert a.state is S.DONE and q.current is b


def test_say_cuts_an_interruptible_utterance_but_waits_for_its_task() -> None:
    q = SpeechQueue()
    a, b = handle(), handle()
    q.submit(a)
    q.move(a, M.FIRST_AUDIO)
    step = q.submit(b)
    assert step.interrupted == (a,) and step.start is None  # a's task has not exited yet
    assert q.current is None and not q.idle
    assert q.task_exited(a).start is b
    assert a.state is S.INTERRUPTED


def test_a_user_turn_never_cuts_and_queues_at_the_back() -> None:
    q = SpeechQueue()
    a = handle()
    q.submit(a)
    turn = handle(SpeechSource.USER_TURN)
    step = q.submit(turn)
    assert step.interrupted == () and step.start is None
    assert a.state is S.RUNNING and q.waiting == (turn,)
    assert q.waiting_user_turn() is turn


def test_pending_reply_sees_running_and_waiting_replies() -> None:
    q = SpeechQueue()
    say = handle(interruptible=False)
    q.submit(say)
    assert q.pending_reply() is None
    reply = handle(SpeechSource.REPLY)
    q.submit(reply)
    assert q.pending_reply() is reply  # waiting behind the say
    q.task_exited(say)
    assert q.pending_reply() is reply  # running


def test_interrupt_respects_interruptible_unless_forced() -> None:
    q = SpeechQueue()
    a = handle(interruptible=False)
    q.submit(a)
    assert q.interrupt_current().interrupted == ()
    assert q.interrupt_current(force=True).interrupted == (a,)
    assert q.interrupt(a, force=True).interrupted == ()  # already done: nothing
    waiting = handle()
    q.submit(waiting)
    assert q.interrupt(waiting).interrupted == (waiting,) and q.waiting == ()
    assert q.interrupt(handle()).interrupted == ()  # not ours


def test_user_speech_holds_what_was_not_heard_and_leaves_the_rest() -> None:
    q = SpeechQueue()
    assert q.user_started_speaking() is UserSpeechEffect.NONE
    a = handle()
    q.submit(a)
    assert q.user_started_speaking() is UserSpeechEffect.HELD and a.state is S.HELD
    q.move(a, M.RESUME)
    q.move(a, M.FIRST_AUDIO)
    assert q.user_started_speaking() is UserSpeechEffect.AUDIBLE and a.state is S.PLAYING
    q.task_exited(a)
    b = handle(interruptible=False)
    q.submit(b)
    assert q.user_started_speaking() is UserSpeechEffect.NONE and b.state is S.RUNNING


def test_close_cuts_everything_and_starts_nothing() -> None:
    q = SpeechQueue()
    a, b, c = handle(interruptible=False), handle(SpeechSource.REPLY), handle(SpeechSource.USER_TURN)
    for h in (a, b, c):
        q.submit(h)
    step = q.close()
    assert set(step.interrupted) == {a, b, c} and step.start is None
    assert q.task_exited(a).start is None and q.idle
    assert all(h.state is S.INTERRUPTED for h in (a, b, c))


def test_misuse_is_an_error() -> None:
    q = SpeechQueue()
    a = handle()
    q.submit(a)
    with pytest.raises(SpeechStateError, match="only a new handle"):
        q.submit(a)
    with pytest.raises(SpeechStateError, match="not the active"):
        q.move(handle(), M.FIRST_AUDIO)
    with pytest.raises(SpeechStateError, match="inside its reply"):
        q.submit(handle(SpeechSource.TOOL))
    with pytest.raises(SpeechStateError, match="cannot pause when running"):
        q.move(a, M.PAUSE)
