"""`AgentSession`: one conversation, one nursery.

How this works: entering ``async with AgentSession(...)`` opens the outer nursery and starts one
task, `_run_tasks`, which opens the session's own (inner) nursery. Every task of the session
lives there: the mixer pump and output forwarder, the pipeline, the wake-up timer, audio
players, and one task per utterance running inside its handle's cancel scope. `close()` runs the
cleanup steps under a shielded, bounded scope, cancels the inner nursery and waits for it to
finish, so after `close()` returns nothing the session started is running.

The wake-up timer is one task looping on a cancel scope whose deadline is moved: reset = deadline
``now + wake_up``; pause = deadline ``inf``. It fires once per arming.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .agent import Agent
from .audio.frame import AudioFrame
from .audio.mixer import Mixer, TickClock
from .audio.player import BackgroundAudioHandlerConfig, BackgroundAudioPlayer
from .chat import ChatRole
from .errors import SessionClosed
from .events import EventEmitter
from .flow import ConversationFlow
from .metrics import TurnMetrics
from .pipeline.base import Pipeline
from .states import AgentState, UserState
from .transports.base import NullTransport, Transport
from .utterance import UtteranceHandle

__all__ = ["AgentSession", "AgentState", "UserState"]

_log = logging.getLogger("trioagent.session")


class AgentSession(EventEmitter):
    """Runs an agent over a pipeline and a transport.

    Use it as an async context manager: entering starts the session (STARTING -> MCP tools ->
    pipeline -> `on_enter` -> wake-up timer -> IDLE), leaving closes it.

    Args:
        agent: the agent in charge at the start.
        pipeline: the engine (`CascadingPipeline`).
        conversation_flow: hooks around each user turn.
        wake_up: seconds of silence after which `on_wake_up` is called (None: never).
        background_audio: played from the start, ducked under the agent's voice.
        transport: where audio comes from and goes to (default: no input, output discarded).
        close_grace: bound on the graceful part of `close()`, in seconds.
        close_on_input_end: close once the transport's input ends and the agent has finished.
        tick_clock: a clock shared by many sessions of one process (see `TickClock`); by
            default the session's mixer keeps its own time.
    """

    event_names = frozenset({"user_state_changed", "agent_state_changed", "on_speech_in", "on_speech_out", "metrics_collected"})

    def __init__(
        self,
        agent: Agent,
        pipeline: Pipeline,
        conversation_flow: ConversationFlow | None = None,
        wake_up: float | None = None,
        background_audio: BackgroundAudioHandlerConfig | None = None,
        *,
        transport: Transport | None = None,
        close_grace: float = 2.0,
        close_on_input_end: bool = True,
        tick_clock: TickClock | None = None,
    ) -> None:
        super().__init__()
        if wake_up is not None and wake_up <= 0:
            raise ValueError(f"wake_up must be positive seconds, got {wake_up!r}")
        self.agent = agent
        self.pipeline = pipeline
        self.conversation_flow = conversation_flow
        self.wake_up = wake_up
        self.background_audio_config = background_audio
        self.transport: Transport = transport if transport is not None else NullTransport()
        self.close_grace = close_grace
        self.close_on_input_end = close_on_input_end
        self.tick_clock = tick_clock
        self.on_wake_up: Callable[[], Any] | None = None
        self.mixer = Mixer(sample_rate=self.transport.output_sample_rate)
        self.current_utterance: UtteranceHandle | None = None
        self.metrics: list[TurnMetrics] = []
        """Every turn's metrics, in order."""
        self.failure: Exception | None = None
        """What ended the session, if its pipeline failed (a provider's stream died)."""
        agent.session = self
        self._agent_state = AgentState.IDLE
        self._user_state = UserState.IDLE
        self._reply_in_progress = False
        self._nursery: trio.Nursery | None = None
        self._tasks_task: trio.lowlevel.Task | None = None
        self._outer_cm: Any = None
        self._started = False
        self._close_started = False
        self._closed = trio.Event()
        self._tasks_done = trio.Event()
        self._wake_deadline = math.inf
        self._wake_scope: trio.CancelScope | None = None
        self._wake_pauses: set[str] = set()
        self._thinking_player: BackgroundAudioPlayer | None = None
        self._background_player: BackgroundAudioPlayer | None = None
        self._thinking_was_playing = False

    # -- states -------------------------------------------------------------------------------
    @property
    def agent_state(self) -> AgentState:
        return self._agent_state

    @property
    def user_state(self) -> UserState:
        return self._user_state

    @property
    def is_background_audio_enabled(self) -> bool:
        """Always True: every session mixes its output, so background audio can play."""
        return True

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def closing(self) -> bool:
        """True from the moment `close()` starts."""
        return self._close_started

    def _emit_agent_state(self, state: AgentState, data: dict[str, Any] | None = None) -> None:
        if state != self._agent_state:
            self._agent_state = state
            self.emit("agent_state_changed", {"state": state.value, **(data or {})})

    def _emit_user_state(self, state: UserState, data: dict[str, Any] | None = None) -> None:
        if state != self._user_state:
            self._user_state = state
            self.emit("user_state_changed", {"state": state.value, **(data or {})})

    def _emit_metrics(self, metrics: TurnMetrics) -> None:
        self.metrics.append(metrics)
        self.emit("metrics_collected", metrics)

    # -- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> AgentSession:
        if self._started:
            raise RuntimeError("an AgentSession can be entered only once")
        self._started = True
        self._outer_cm = trio.open_nursery()
        outer = await self._outer_cm.__aenter__()
        try:
            self._nursery = await outer.start(self._run_tasks)
            await self._start()
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self.close()
            await self._exit_outer(exc)
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        try:
            await self.close()
        finally:
            # Always leave the outer nursery, even if close() was cancelled (trio's nursery
            # stack must unwind in order).
            suppressed = await self._exit_outer(exc)
        return suppressed

    async def _exit_outer(self, exc: BaseException | None) -> bool:
        """Leave the outer nursery; an exception from the `async with` body comes out as itself,
        not wrapped in an ExceptionGroup (the session's own tasks never fail into it)."""
        try:
            return bool(await self._outer_cm.__aexit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None))
        except BaseExceptionGroup as group:
            if exc is None or len(group.exceptions) != 1 or group.exceptions[0] is not exc:
                raise
            context = exc.__context__
            try:
                raise exc
            finally:
                exc.__context__ = context
                del exc, group

    async def run(self) -> None:
        """Enter, wait until closed (by `close()`, `leave()` or the end of input), exit."""
        async with self:
            await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the session has closed. A checkpoint."""
        await self._closed.wait()

    async def _run_tasks(self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED) -> None:
        self._tasks_task = trio.lowlevel.current_task()
        try:
            async with trio.open_nursery() as nursery:
                self._callback_nursery = nursery
                task_status.started(nursery)
                await trio.sleep_forever()
        finally:
            self._callback_nursery = None
            self._tasks_done.set()

    async def _start(self) -> None:
        nursery = self._require_nursery()
        self._emit_agent_state(AgentState.STARTING)
        await self.agent.initialize_mcp()
        self.pipeline.set_agent(self.agent)
        self.pipeline.set_conversation_flow(self.conversation_flow)
        self._hook_agent(self.agent)
        await nursery.start(self._pump_output)
        await nursery.start(self._run_pipeline)
        if self.background_audio_config is not None:
            await self.play_background_audio(self.background_audio_config, override_thinking=False)
        await self.agent.on_enter()
        if self.wake_up is not None:
            await nursery.start(self._wake_up_timer)
        if self._agent_state is AgentState.STARTING:
            self._emit_agent_state(AgentState.IDLE)

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None or self._close_started:
            raise SessionClosed("the session is not running (use `async with AgentSession(...)`)")
        return self._nursery

    def _hook_agent(self, agent: Agent) -> None:
        self.on("on_speech_in", agent.on_speech_in)
        self.on("on_speech_out", agent.on_speech_out)

    def _unhook_agent(self, agent: Agent) -> None:
        self.off("on_speech_in", agent.on_speech_in)
        self.off("on_speech_out", agent.on_speech_out)

    async def _pump_output(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The pump sends straight to the transport: no extra task or channel hop per tick.
        await self.mixer.run(_TransportSink(self.transport), clock=self.tick_clock, task_status=task_status)

    async def _run_pipeline(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self.pipeline.run(self, task_status=task_status)
        except Exception as exc:
            # A provider's stream failed (an STT that died, say): this session ends cleanly;
            # nothing outside it is touched.
            _log.exception("the pipeline failed; closing the session")
            self.failure = exc
            await self.close()
            return
        # The input has ended (the caller hung up, the file is over).
        if self.close_on_input_end:
            while self.current_utterance is not None and not self.current_utterance.done():
                await self.current_utterance.wait()
            await self.close()

    async def close(self) -> None:
        """Close the session: interrupt, run every cleanup step, stop every task.

        Idempotent. Each step runs even when an earlier one raised (the error is logged); all the
        steps together are bounded by `close_grace` seconds, even when a provider hangs. When
        called from outside the session, returns after every session task has finished.
        """
        inside = self._called_from_inside()
        if self._close_started:
            if not inside:
                await self._closed.wait()
            return
        self._close_started = True
        self._emit_agent_state(AgentState.CLOSING)
        deadline = trio.current_time() + self.close_grace
        with trio.CancelScope(shield=True):
            if self.current_utterance is not None:
                self.current_utterance.interrupt("session closing")
            self._wake_pause("closing")
            self._unhook_agent(self.agent)
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("agent.on_exit", self.agent.on_exit),
                ("thinking audio", self.stop_thinking_audio),
                ("background audio", self._stop_background_player),
                ("pipeline.cleanup", self.pipeline.cleanup),
            ]
            if self.conversation_flow is not None:
                steps.append(("conversation_flow.cleanup", self.conversation_flow.cleanup))
            steps += [("agent.cleanup", self.agent.cleanup), ("transport.aclose", self.transport.aclose)]
            for name, step in steps:
                # Each step in its own scope: one that hangs is cut at the shared deadline and
                # the next ones still run (those after the deadline up to their first checkpoint).
                with trio.move_on_at(deadline) as bound:
                    try:
                        await step()
                    except Exception:
                        _log.exception("%s raised during close", name)
                if bound.cancelled_caught:
                    _log.warning("close: %s did not finish within the %.1f s grace period", name, self.close_grace)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            if not inside:
                with trio.CancelScope(shield=True):
                    await self._tasks_done.wait()
        self.on_wake_up = None
        self._closed.set()

    def _called_from_inside(self) -> bool:
        """Whether the current task is one of this session's own (a tool, a callback...)."""
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            if task is self._tasks_task:
                return True
            nursery = task.parent_nursery
            task = nursery.parent_task if nursery is not None else None
        return False

    async def leave(self) -> None:
        """Hang up the transport, then close."""
        self._emit_agent_state(AgentState.CLOSING)
        with trio.move_on_after(self.close_grace) as scope:
            scope.shield = True
            try:
                await self.transport.hang_up()
            except Exception:
                _log.exception("transport.hang_up raised")
        await self.close()

    # -- speaking ------------------------------------------------------------------------------
    async def say(self, message: str) -> UtteranceHandle:
        """Speak `message`, interrupting whatever the agent is saying. Returns at once with the
        utterance's handle; ``await handle`` waits for the playout. A checkpoint."""
        nursery = self._require_nursery()
        if self.current_utterance is not None and not self.current_utterance.done():
            self.current_utterance.interrupt("replaced by say()")
        handle = UtteranceHandle()
        handle.text = message
        self.current_utterance = handle
        message_item = self.agent.chat_context.add_message(role=ChatRole.ASSISTANT, content=message)
        handle._chat_message = message_item
        self._wake_pause("agent")
        nursery.start_soon(self._run_utterance, handle, self.pipeline.say, message)
        await trio.lowlevel.checkpoint()
        return handle

    async def reply(self, instructions: str, wait_for_playback: bool = True) -> UtteranceHandle:
        """Answer from the chat context with extra `instructions`.

        A reply while another reply runs returns the running one's handle; an empty
        `instructions` returns a done handle. With `wait_for_playback`, returns when the answer
        has played out (or was interrupted). The wake-up timer is paused meanwhile.
        """
        if not instructions:
            handle = UtteranceHandle("empty_reply")
            handle._mark_done()
            return handle
        if self._reply_in_progress and self.current_utterance is not None:
            return self.current_utterance
        handle = self._start_reply(instructions)
        if wait_for_playback:
            await handle.wait()
        else:
            await trio.lowlevel.checkpoint()
        return handle

    def _start_reply(self, instructions: str | None, user_text: str | None = None, metrics: Any = None) -> UtteranceHandle:
        """Start a reply (to `instructions`, or to the user's turn `user_text`). Not a checkpoint."""
        nursery = self._require_nursery()
        if self.current_utterance is not None and not self.current_utterance.done():
            self.current_utterance.interrupt("replaced by a new reply")
        handle = UtteranceHandle()
        handle._turn_metrics = metrics
        self.current_utterance = handle
        self._reply_in_progress = True
        self._wake_pause("agent")
        nursery.start_soon(self._run_utterance, handle, self._reply_work, (instructions, user_text))
        return handle

    async def _reply_work(self, args: tuple[str | None, str | None], handle: UtteranceHandle) -> None:
        instructions, user_text = args
        await self.pipeline.reply(instructions, handle, user_text=user_text)

    async def _run_utterance(self, handle: UtteranceHandle, work: Callable[[Any, UtteranceHandle], Awaitable[None]], arg: Any) -> None:
        try:
            with handle._scope:
                await work(arg, handle)
        except Exception:
            # A provider failed: this utterance ends, the session goes on.
            _log.exception("utterance %s failed", handle.id)
        finally:
            handle._mark_done()
            if handle is self.current_utterance:
                self._reply_in_progress = False
                if not self._close_started:
                    self._emit_agent_state(AgentState.LISTENING if self._user_state is UserState.SPEAKING else AgentState.IDLE)
                    if self._user_state is UserState.LISTENING:
                        self._emit_user_state(UserState.IDLE)
                # Re-arm from the exact tick the audio finished on, not from when this task
                # woke up to notice (the pump wakes a hair after each tick).
                voice = handle._voice
                self._wake_resume("agent", since=voice.played_out_at if voice is not None else None)

    def interrupt(self) -> None:
        """Interrupt the agent's current speech (and drop output queued in the transport)."""
        handle = self.current_utterance
        if handle is not None and not handle.interrupted:
            handle.interrupt("session.interrupt()")
        self.pipeline.interrupt()
        self._clear_output(handle)

    def _clear_output(self, handle: UtteranceHandle | None) -> None:
        """Drop output queued downstream (barge-in), first noting how much of `handle`'s audio
        had been sent but not heard, for a transport that tracks playout (`unplayed()`)."""
        unplayed = getattr(self.transport, "unplayed", None)
        voice = handle._voice if handle is not None else None
        # (Once paused by a suspected barge-in, what is in flight is silence: counted already.)
        if handle is not None and voice is not None and not voice.paused and callable(unplayed):
            handle._unheard += float(unplayed())
        self.transport.clear()

    # -- background and thinking audio ---------------------------------------------------------------
    async def play_background_audio(self, config: BackgroundAudioHandlerConfig, override_thinking: bool = False) -> None:
        """Play `config` under everything else (ducked while the agent speaks).

        Raises:
            FileNotFoundError, AudioFormatError: the file cannot be played.
        """
        nursery = self._require_nursery()
        if override_thinking and self._thinking_player is not None and self._thinking_player.is_playing:
            await self.stop_thinking_audio()
            self._thinking_was_playing = True
        await self._stop_background_player()
        player = BackgroundAudioPlayer(config, self.mixer, name="background")
        await player.start(nursery)
        self._background_player = player

    async def stop_background_audio(self) -> None:
        """Stop the background audio (with a fade); resume thinking audio it had overridden."""
        await self._stop_background_player()
        if self._thinking_was_playing:
            self._thinking_was_playing = False
            await self.start_thinking_audio()

    async def _stop_background_player(self) -> None:
        player, self._background_player = self._background_player, None
        if player is not None:
            await player.stop()

    async def start_thinking_audio(self) -> None:
        """Play the agent's thinking audio, unless background audio is playing or none is set."""
        if self._background_player is not None and self._background_player.is_playing:
            return
        config = self.agent.thinking_audio
        if config is None or (self._thinking_player is not None and self._thinking_player.is_playing):
            return
        player = BackgroundAudioPlayer(config, self.mixer, name="thinking")
        await player.start(self._require_nursery())
        self._thinking_player = player

    async def stop_thinking_audio(self) -> None:
        """Stop the thinking audio; returns once its fade-out has played."""
        player, self._thinking_player = self._thinking_player, None
        if player is not None:
            await player.stop()

    def _stop_thinking_audio_nowait(self) -> None:
        player, self._thinking_player = self._thinking_player, None
        if player is not None:
            player.stop_nowait()

    # -- the wake-up timer -----------------------------------------------------------------------
    async def _wake_up_timer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.wake_up is not None
        if not self._wake_pauses:
            self._wake_deadline = trio.current_time() + self.wake_up
        task_status.started()
        while True:
            with trio.CancelScope(deadline=self._wake_deadline) as scope:
                self._wake_scope = scope
                await trio.sleep_forever()
            self._wake_scope = None
            self._wake_deadline = math.inf  # fired: disarmed until the next reset
            callback = self.on_wake_up
            if callback is None or self._wake_pauses:
                continue
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                _log.exception("on_wake_up raised")

    def _set_wake_deadline(self, deadline: float) -> None:
        self._wake_deadline = deadline
        if self._wake_scope is not None:
            self._wake_scope.deadline = deadline

    def _wake_pause(self, reason: str) -> None:
        self._wake_pauses.add(reason)
        self._set_wake_deadline(math.inf)

    def _wake_resume(self, reason: str, since: float | None = None) -> None:
        """Lift one pause; when none is left, arm the timer `wake_up` seconds after `since` (now)."""
        self._wake_pauses.discard(reason)
        if not self._wake_pauses and self.wake_up is not None:
            self._set_wake_deadline((trio.current_time() if since is None else since) + self.wake_up)

    # -- hand-over -----------------------------------------------------------------------------
    def _request_handoff(self, new_agent: Agent) -> None:
        self._require_nursery().start_soon(self._handoff, new_agent)

    async def _handoff(self, new_agent: Agent) -> None:
        old = self.agent
        try:
            await old.on_exit()
        except Exception:
            _log.exception("on_exit of %s raised during hand-over", type(old).__name__)
        self._unhook_agent(old)
        old.session = None
        new_agent.session = self
        new_agent.chat_context.items.extend(
            i for i in old.chat_context.items if not (getattr(i, "role", None) is ChatRole.SYSTEM)
        )
        self.agent = new_agent
        self.pipeline.set_agent(new_agent)
        self._hook_agent(new_agent)
        await new_agent.on_enter()


class _TransportSink(trio.abc.SendChannel[AudioFrame]):
    """The mixer's output channel, writing straight into the transport."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def send(self, value: AudioFrame) -> None:
        await self._transport.send_audio(value)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
