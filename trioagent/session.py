"""`AgentSession`: one conversation, one nursery.

How this works: entering ``async with AgentSession(...)`` opens the outer nursery and starts one
task, `_run_tasks`, which opens the session's own (inner) nursery. Every task of the session
lives there: the mixer pump, the pipeline, the speech scheduler's runner (which runs each
utterance inside its handle's cancel scope), the wake-up timer and the audio players. `close()`
runs the cleanup steps under a shielded, bounded scope, cancels the inner nursery and waits for
it to finish, so after `close()` returns nothing the session started is running.

Every `say()`, `reply()` and user turn becomes an `UtteranceHandle` on the session's
`SpeechScheduler` (see `trioagent.scheduler`): one plays at a time. The agent and user states are
derived in one place (`_update_states`) from the scheduler and from whether the user is speaking,
after every change to either; the wake-up timer's pauses are kept there too.

The wake-up timer is one task looping on a cancel scope whose deadline is moved: reset = deadline
``now + wake_up``; pause = deadline ``inf``. It fires once per arming.
"""

from __future__ import annotations

import inspect
import logging
import math
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, cast

import attrs
import trio

from .agent import Agent
from .audio.frame import AudioFrame
from .audio.mixer import Mixer, TickClock
from .audio.player import BackgroundAudioHandlerConfig, BackgroundAudioPlayer, load_clip
from .chat import ChatItem, ChatMessage, ChatRole, FunctionCall, FunctionCallOutput
from .errors import ProviderError, SessionClosed, TransportError, sole_error
from .events import AgentSpeechStarted, CloseEvent, ConversationItemAdded, ErrorEvent, EventEmitter, SpeechCreated, UserInputTranscribed, UserTurnEnded
from . import tracing
from .flow import ConversationFlow
from .mcp import MCPServerError
from .metrics import TurnMetrics
from .pipeline.base import Pipeline
from .scheduler import SpeechScheduler, SpeechSource, UserSpeechEffect, UtteranceState, running_handle
from .states import AgentState, UserState
from .transports.base import DTMF_DIGITS, NowaitAudio, NullTransport, PlayoutTracking, SendsDtmf, Transport
from .utterance import SpeechOutlet, UserTurn, Utterance, UtteranceHandle

__all__ = ["AgentSession", "AgentState", "UserState"]

_log = logging.getLogger("trioagent.session")

_THINKING_STATES = (UtteranceState.RUNNING, UtteranceState.HELD)
_REPLY_SOURCES = (SpeechSource.REPLY, SpeechSource.USER_TURN)


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
        answer_turns: answer each user turn (False: the user's words go into the chat context
            and the answer waits for `reply()`, as a Realtime client with `create_response`
            off asks). May be changed while the session runs.
        tick_clock: a clock shared by many sessions of one process (see `TickClock`); by
            default the session's mixer keeps its own time.

    Events (`session.on(name, callback)`; payloads in `trioagent.events`):
        agent_state_changed, user_state_changed: ``{"state": "..."}`` (seed form).
        user_input_transcribed: `UserInputTranscribed` (interim and final).
        conversation_item_added: `ConversationItemAdded`, every chat item as it is committed.
        function_tools_executed: `FunctionToolsExecuted`, the calls and outputs of one LLM step.
        speech_created: `SpeechCreated`, an utterance entered the queue.
        error: `ErrorEvent`, a reply failed (the session goes on) or the session failed.
        metrics_collected: `TurnMetrics` of each reply.
        user_turn_ended: `UserTurnEnded`, the text of each user turn as it is taken.
        agent_speech_started: `AgentSpeechStarted`, an utterance starts to be heard.
        on_speech_in: ``{"frame": AudioFrame}``, every input frame as the pipeline hears it
            (the transport's rate); on_speech_out: ``{"frame": AudioFrame}``, every output
            frame as the mixer hands it to the transport (the agent's voice over any background
            audio: what the user hears). Audio taps, as in the seed, for recording, avatars or
            analytics (`trioagent.recording.record`); free when nobody listens.
        provider_switched: `ProviderSwitched` (a fallback moved a stage to another provider).
        close: `CloseEvent`, once.
    """

    event_names = frozenset(
        {
            "user_state_changed",
            "agent_state_changed",
            "on_speech_in",
            "on_speech_out",
            "user_turn_ended",
            "agent_speech_started",
            "metrics_collected",
            "user_input_transcribed",
            "conversation_item_added",
            "function_tools_executed",
            "speech_created",
            "error",
            "provider_switched",
            "dtmf",
            "close",
        }
    )

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
        answer_turns: bool = True,
        tick_clock: TickClock | None = None,
    ) -> None:
        super().__init__()
        if wake_up is not None and wake_up <= 0:
            raise ValueError(f"wake_up must be positive seconds, got {wake_up!r}")
        self.agent: Agent | None = agent
        """The agent in charge (it changes on a hand-over); None once the session has closed."""
        self.pipeline: Pipeline | None = pipeline
        """None once the session has closed (as in the seed: nothing here keeps it alive)."""
        self.conversation_flow = conversation_flow
        self.wake_up = wake_up
        self.background_audio_config = background_audio
        self.transport: Transport = transport if transport is not None else NullTransport()
        self.close_grace = close_grace
        self.close_on_input_end = close_on_input_end
        self.answer_turns = answer_turns
        self._typed = 0  # typed turns (send_text)
        self.tick_clock = tick_clock
        self.on_wake_up: Callable[[], Any] | None = None
        self.mixer = Mixer(sample_rate=self.transport.output_sample_rate)
        self.metrics: list[TurnMetrics] = []
        """Every turn's metrics, in order."""
        self._span: tracing.Span | None = None
        self._turn_spans: dict[str, tracing.Span | None] = {}
        self.failure: Exception | None = None
        """What ended the session, if its pipeline failed (a provider's stream died)."""
        agent.session = self  # (mypy checks AgentSession offers all AgentSessionAPI names)
        # What the session gives its parts reaches it through a weak proxy: nothing it owns
        # points back at it, so a finished session is freed by reference counting at once
        # (no cycle for the garbage collector to find later).
        me = cast(AgentSession, weakref.proxy(self))
        self._scheduler: SpeechScheduler[Utterance] = SpeechScheduler(
            lambda utterance: me._produce(utterance),
            on_change=lambda: me._update_states(),
            on_interrupted=lambda utterance, audible: me._on_interrupted(utterance, audible),
            on_finished=lambda utterance: me._on_finished(utterance),
            on_failed=lambda utterance, exc: me._reply_failed(utterance, exc),
        )
        self._outlet = SpeechOutlet(
            scheduler=self._scheduler,
            mixer=self.mixer,
            chat_context=lambda: me._agent_now.chat_context,
            on_first_audio=lambda utterance: me._on_first_audio(utterance),
            on_item=lambda item: me._item_added(item),
        )
        self._host = _Host(me)
        # The taps reach the session through the proxy too (the mixer must not hold it).
        self._tap_in: Callable[[AudioFrame], None] = lambda frame: me.emit("on_speech_in", {"frame": frame})
        self._tap_out: Callable[[AudioFrame], None] = lambda frame: me.emit("on_speech_out", {"frame": frame})
        self._agent_state = AgentState.IDLE  # (as in the seed, until started)
        self._user_state = UserState.IDLE
        self._starting = True
        self._user_speaking = False
        self._user_speech_end: float | None = None
        self._user_speech_start: float | None = None  # (the onset of the user's speech under way or last)
        self._last_speech_end: float | None = None
        self._handoff: Agent | None = None
        self._nursery: trio.Nursery | None = None
        self._tasks_task: trio.lowlevel.Task | None = None
        self._outer_cm: Any = None
        self._started = False
        self._close_started = False
        self._close_reason = "closed"
        self._closed = trio.Event()
        self._tasks_done = trio.Event()
        self._wake_deadline = math.inf
        self._wake_scope: trio.CancelScope | None = None
        self._wake_pauses: set[str] = set()
        self._thinking_player: BackgroundAudioPlayer | None = None
        self._background_player: BackgroundAudioPlayer | None = None
        self._thinking_was_playing = False

    @property
    def _agent_now(self) -> Agent:
        agent = self.agent
        if agent is None:
            raise SessionClosed("the session has closed")
        return agent

    @property
    def _pipeline_now(self) -> Pipeline:
        pipeline = self.pipeline
        if pipeline is None:
            raise SessionClosed("the session has closed")
        return pipeline

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

    @property
    def current_utterance(self) -> UtteranceHandle | None:
        """The utterance being prepared or heard; once none is, the last one that ran."""
        return self._scheduler.current or self._scheduler.queue.last

    @property
    def speech_queue(self) -> tuple[UtteranceHandle, ...]:
        """The utterances waiting their turn, in order (the current one not included)."""
        return self._scheduler.queue.waiting

    def _derive_agent_state(self) -> AgentState:
        if self._close_started:
            return AgentState.CLOSING
        if self._starting:
            return AgentState.STARTING
        current = self._scheduler.current
        if current is not None:
            if current.state is UtteranceState.PLAYING:
                return AgentState.SPEAKING
            if current.state in _THINKING_STATES and current.source in _REPLY_SOURCES and not self._user_speaking:
                return AgentState.THINKING
        if self._user_speaking or (current is not None and current.state is UtteranceState.PAUSED):
            return AgentState.LISTENING
        return AgentState.IDLE

    def _update_states(self) -> None:
        """The one place the agent and user states change (and the wake-up timer's pauses)."""
        agent = self._derive_agent_state()
        if agent is not self._agent_state:
            self._agent_state = agent
            self.emit("agent_state_changed", {"state": agent.value})
        if self._user_speaking:
            user = UserState.SPEAKING
        elif agent is AgentState.SPEAKING:
            user = UserState.LISTENING
        else:
            user = UserState.IDLE
        if user is not self._user_state:
            self._user_state = user
            self.emit("user_state_changed", {"state": user.value})
        if not self._scheduler.queue.idle:
            self._wake_pause("agent")
        elif "agent" in self._wake_pauses:
            # Re-arm from the exact tick the audio finished on, not from when a task woke up to
            # notice (the pump wakes a hair after each tick).
            self._wake_resume("agent", since=self._last_speech_end)
        if self._user_speaking:
            self._wake_pause("user")
        elif "user" in self._wake_pauses:
            self._wake_resume("user", since=self._user_speech_end)

    def _emit_metrics(self, metrics: TurnMetrics) -> None:
        self.metrics.append(metrics)
        self.emit("metrics_collected", metrics)

    def _count_switch(self) -> None:
        """A fallback switched providers: count it in the metrics of the utterance it served
        (the one whose task this is), if any."""
        handle = running_handle()
        if handle is None:
            return
        try:
            job = self._scheduler.job(handle)
        except KeyError:
            return  # (already over)
        job.note(provider_switches=job.metrics.provider_switches + 1)

    def _reply_failed(self, utterance: Utterance, exc: Exception) -> None:
        """One utterance failed (logged already): say so, and apologise if the agent has words
        for it (`Agent.apology`); the session goes on."""
        self.emit("error", ErrorEvent(exc, _stage(exc), fatal=False))
        apology = self._agent_now.apology
        if apology and utterance.source in _REPLY_SOURCES and not self._close_started:
            self._require_nursery().start_soon(self._apologise, apology)

    async def _apologise(self, apology: str) -> None:
        try:
            await self.say(apology, add_to_chat_context=False)
        except SessionClosed:
            pass  # (closed meanwhile: nobody to apologise to)

    def _item_added(self, item: ChatItem) -> None:
        self.emit("conversation_item_added", ConversationItemAdded(item))

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
        except SessionClosed:
            if not self._close_started:
                raise  # (cannot happen: only a close makes the session refuse work)
            # Closed while starting (the caller hung up at once, say): a normal close. The
            # session is entered, and closed: `run()` returns at once, `say()` raises.
            _log.info("the session was closed while it started")
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Enter, wait until closed (by `close()`, `leave()` or the end of input), exit.

        Started (for ``await nursery.start(session.run)``) once the session runs: the agent's
        `on_enter` has returned and the wake-up timer is armed. What stopped it starting is
        raised (by `nursery.start` too).
        """
        async with self:
            task_status.started()
            await self.wait_closed()

    async def start(self, nursery: trio.Nursery) -> None:
        """The seed's ``await session.start()``: run the session in `nursery` and return once it
        runs (``await nursery.start(session.run)``). The nursery owns it: it ends when the
        session closes, or when the nursery is cancelled.

        Raises:
            Exception: what stopped the session starting (an MCP server that is required and
                could not start, say).
        """
        await nursery.start(self.run)

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
        self._span = tracing.start("trioagent.session", self._span_attributes())
        self._update_states()
        await self._connect_mcp(self._agent_now)
        self._pipeline_now.attach(self._host)
        self._hook_agent(self._agent_now)
        await nursery.start(self._pump_output)
        await nursery.start(self._scheduler.run)
        await nursery.start(self._run_pipeline)
        if self.background_audio_config is not None:
            await self.play_background_audio(self.background_audio_config, override_thinking=False)
        await self._agent_now.on_enter()
        if self.wake_up is not None:
            await nursery.start(self._wake_up_timer)
        self._starting = False
        self._update_states()

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None or self._close_started:
            raise SessionClosed("the session is not running (use `async with AgentSession(...)`)")
        return self._nursery

    def _hook_agent(self, agent: Agent) -> None:
        # Only an agent that overrides a tap listens to it: an idle tap costs nothing.
        for name in ("on_speech_in", "on_speech_out"):
            if getattr(type(agent), name) is not getattr(Agent, name):
                self.on(name, getattr(agent, name))

    def _unhook_agent(self, agent: Agent) -> None:
        self.off("on_speech_in", agent.on_speech_in)
        self.off("on_speech_out", agent.on_speech_out)

    # -- audio taps ---------------------------------------------------------------------------
    def on(self, name: str, callback: Callable[[Any], Any] | None = None) -> Any:
        registered = super().on(name, callback)
        self._retap()
        return registered

    def off(self, name: str, callback: Callable[[Any], Any]) -> None:
        super().off(name, callback)
        self._retap()

    def _retap(self) -> None:
        """Turn the audio taps on while someone listens to them, off when nobody does."""
        handlers = self._handlers
        self.mixer.tap = self._tap_out if handlers.get("on_speech_out") else None
        self._host.speech_in = self._tap_in if handlers.get("on_speech_in") else None

    async def _pump_output(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The pump sends straight to the transport: no extra task or channel hop per tick.
        nowait = _NowaitSink(self.transport) if isinstance(self.transport, NowaitAudio) else None
        await self.mixer.run(_TransportSink(self.transport), clock=self.tick_clock, sink=nowait, task_status=task_status)

    async def _run_pipeline(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._pipeline_now.run(task_status=task_status)
        except Exception as exc:
            # A provider's stream failed (an STT that died, say): this session ends cleanly;
            # nothing outside it is touched.
            _log.exception("the pipeline failed; closing the session")
            sole = sole_error(exc)  # (the one error, not the nurseries it came through)
            self.failure = sole if isinstance(sole, Exception) else exc
            self.emit("error", ErrorEvent(self.failure, _stage(self.failure) or "stt", fatal=True))
            await self._close("pipeline failed", self.failure)
            return
        # The input has ended (the caller hung up, the file is over).
        if self.close_on_input_end:
            await self._scheduler.wait_idle()
            await self._close("input ended")

    async def close(self) -> None:
        """Close the session: interrupt, run every cleanup step, stop every task.

        Idempotent. Each step runs even when an earlier one raised (the error is logged); all the
        steps together are bounded by `close_grace` seconds, even when a provider hangs. When
        called from outside the session, returns after every session task has finished.
        Utterances still queued end interrupted; the `close` event is emitted once.
        """
        await self._close("closed")

    async def _close(self, reason: str, error: BaseException | None = None) -> None:
        inside = self._called_from_inside()
        if self._close_started:
            if not inside:
                await self._closed.wait()
            return
        self._close_started = True
        self._close_reason = reason
        self._update_states()
        deadline = trio.current_time() + self.close_grace
        with trio.CancelScope(shield=True):
            # Turns that will never be answered are still what the user said: keep them.
            for handle in self._scheduler.queue.pending():
                turn = self._scheduler.job(handle).user_turn
                if turn is not None and turn.message is None:
                    self._keep_unanswered(turn)
            self._scheduler.close()
            self._wake_pause("closing")
            self._unhook_agent(self._agent_now)
            steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                ("agent.on_exit", self._agent_now.on_exit),
                ("MCP servers", self._stop_mcp),
                ("thinking audio", self.stop_thinking_audio),
                ("background audio", self._stop_background_player),
                ("pipeline.cleanup", self._pipeline_now.cleanup),
            ]
            if self.conversation_flow is not None:
                steps.append(("conversation_flow.cleanup", self.conversation_flow.cleanup))
            steps += [("agent.cleanup", self._agent_now.cleanup), ("transport.aclose", self.transport.aclose)]
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
            self._nursery.cancel_scope.cancel(reason=f"session closed: {reason}")
            if not inside:
                with trio.CancelScope(shield=True):
                    await self._tasks_done.wait()
        self.on_wake_up = None
        self._closed.set()
        for span in self._turn_spans.values():
            tracing.end(span, {"trioagent.interrupted": True})
        self._turn_spans.clear()
        tracing.end(self._span, {"trioagent.close_reason": reason, "trioagent.turns": len(self.metrics)}, error)
        self._span = None
        # Every session task has ended, so async callbacks of `close` run here (bounded).
        with trio.move_on_after(self.close_grace, shield=True):
            await self.emit_and_wait("close", CloseEvent(reason, error))
        self._release()

    def _release(self) -> None:
        """The session is over: let go of what could point back at it (the callbacks users
        registered, the tracebacks of a failure), so it is freed as soon as nobody holds it."""
        self._handlers.clear()  # no more events; a callback may well hold the session
        self._retap()
        if self.pipeline is not None:
            self.pipeline.attach(None)
        # As in the seed: the session lets go of its agent and pipeline (and with them the chat
        # context, the providers' clients and models), so a caller that keeps the session for
        # its metrics does not keep those alive.
        self.agent = None
        self.pipeline = None
        self.conversation_flow = None
        if self.failure is not None:
            _drop_tracebacks(self.failure)  # (logged already) its frames hold this session's tasks

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
        await self.hangup("left")

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call through the transport (the phone call or connection ends from our
        side), then close the session with `reason` (in the `close` event)."""
        with trio.move_on_after(self.close_grace) as scope:
            scope.shield = True
            try:
                await self.transport.hang_up()
            except Exception:
                _log.exception("transport.hang_up raised")
        await self._close(reason)

    # -- speaking ------------------------------------------------------------------------------
    async def say(self, message: str, interruptible: bool = True, add_to_chat_context: bool = True) -> UtteranceHandle:
        """Speak `message`. Returns at once with its handle; ``await handle`` waits for the
        playout. A checkpoint.

        From user code it interrupts the current utterance if that one is interruptible and
        speaks next (after one that is not). From a tool of the running reply it speaks inside
        that reply, in order with what the reply has said so far, and the reply goes on.

        Args:
            interruptible: whether user speech, `say()`, `reply()` and `interrupt()` may cut it
                (the pipeline's ``allow_interruptions=False`` makes it False).
            add_to_chat_context: keep it in the agent's chat context (as heard).

        Raises:
            SessionClosed: the session is not running.
        """
        self._require_nursery()
        running = running_handle()
        if running is not None and self._scheduler.owns(running):
            inline = self._scheduler.job(running).say_inline(message, add_to_chat_context)
            if inline is not None:
                self.emit("speech_created", SpeechCreated(inline, SpeechSource.TOOL))
                await trio.lowlevel.checkpoint()
                return inline
        handle = UtteranceHandle(source=SpeechSource.SAY, interruptible=interruptible and self._pipeline_now.allow_interruptions)
        handle.text = message
        self._submit(Utterance(handle, self._outlet, text=message, add_to_chat_context=add_to_chat_context))
        await trio.lowlevel.checkpoint()
        return handle

    async def reply(self, instructions: str, wait_for_playback: bool = True, interruptible: bool = True) -> UtteranceHandle:
        """Answer from the chat context with extra `instructions`.

        A reply while another reply (or the answer to a user turn) is queued or running returns
        that one's handle; an empty `instructions` returns a done handle. Otherwise it
        interrupts the current interruptible utterance and is answered next. With
        `wait_for_playback`, returns when the answer has played out (or was interrupted). The
        wake-up timer is paused meanwhile. A checkpoint.

        Raises:
            SessionClosed: the session is not running.
        """
        if not instructions:
            await trio.lowlevel.checkpoint()
            return UtteranceHandle.finished("empty_reply")
        self._require_nursery()
        pending = self._scheduler.queue.pending_reply()
        if pending is not None:
            await trio.lowlevel.checkpoint()
            return pending
        handle = UtteranceHandle(source=SpeechSource.REPLY, interruptible=interruptible and self._pipeline_now.allow_interruptions)
        self._submit(Utterance(handle, self._outlet, instructions=instructions))
        if wait_for_playback:
            await handle.wait()
        else:
            await trio.lowlevel.checkpoint()
        return handle

    def _span_attributes(self) -> dict[str, Any]:
        pipeline = self._pipeline_now
        parts = {f"trioagent.{part}": type(getattr(pipeline, part)).__name__ for part in ("stt", "llm", "tts", "vad", "model") if getattr(pipeline, part, None) is not None}
        mcp = self._agent_now.mcp_manager
        return {
            "trioagent.agent": type(self._agent_now).__name__,
            "trioagent.pipeline": type(pipeline).__name__,
            **parts,
            "trioagent.function_tools": [t.name for t in self._agent_now.own_tools],
            "trioagent.mcp_servers": [server.label for server in mcp.servers] if mcp is not None else None,
        }

    def _submit(self, utterance: Utterance) -> None:
        if self._span is not None:
            self._turn_spans[utterance.handle.id] = tracing.start(
                "trioagent.utterance", {"trioagent.source": utterance.source.value, "trioagent.agent": type(self._agent_now).__name__}, self._span
            )
        self.emit("speech_created", SpeechCreated(utterance.handle, utterance.source))
        self._scheduler.submit(utterance)

    async def send_text(self, text: str) -> UtteranceHandle | None:
        """A typed user turn (the seed pipeline's ``send_text_message``): it cuts the agent's
        interruptible speech, goes into the chat context and is answered like a spoken turn
        (its handle; None when the session does not answer turns, `answer_turns=False`). A
        checkpoint.

        Raises:
            ValueError: the text is empty.
            SessionClosed: the session is not running.
        """
        text = " ".join(text.split())
        if not text:
            raise ValueError("send_text needs some text")
        self._require_nursery()
        self._typed += 1
        now = trio.current_time()
        self.interrupt()
        turn = UserTurn(text, TurnMetrics(turn_id=f"typed_{self._typed}", user_text=text, user_speech_end=now, end_of_turn_at=now))
        handle = self._submit_user_turn(turn)
        await trio.lowlevel.checkpoint()
        return handle

    def _submit_user_turn(self, turn: UserTurn) -> UtteranceHandle | None:
        if self._close_started:
            return None
        if turn.text:  # (a speech-to-speech pipeline's transcript may come later: it emits then)
            self._turn_ended(turn)
        if not self.answer_turns:
            self._keep_unanswered(turn)
            return None
        waiting = self._scheduler.queue.waiting_user_turn()
        if waiting is not None:
            # The user spoke again before the last turn was even started: one turn, one answer.
            earlier = self._scheduler.job(waiting).user_turn
            self._scheduler.interrupt(waiting, force=True, reason="merged into the user's next turn")
            if earlier is not None:
                turn = earlier.merge(turn)
        handle = UtteranceHandle(source=SpeechSource.USER_TURN, interruptible=self._pipeline_now.allow_interruptions)
        self._submit(Utterance(handle, self._outlet, user_turn=turn))
        return handle

    def _turn_ended(self, turn: UserTurn) -> None:
        self.emit("user_turn_ended", UserTurnEnded(turn.text, turn.metrics.user_speech_start, turn.metrics.user_speech_end))

    def _keep_unanswered(self, turn: UserTurn) -> None:
        """Put a user turn into the chat context without answering it (once)."""
        context = self._agent_now.chat_context
        if turn.message is not None and turn.message in context.items:
            turn.message.content = turn.text
        else:
            turn.message = context.add_message(role=ChatRole.USER, content=turn.text)
        self._item_added(turn.message)

    def dtmf_received(self, digit: str) -> None:
        """A keypad digit from the caller (transports call this): the ``dtmf`` event
        (``{"digit": ...}``), then `Agent.on_dtmf(digit)` in the session's nursery (one that
        raises is logged and the session goes on). Not a checkpoint.

        Raises:
            ValueError: not a keypad digit.
        """
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"{digit!r} is not a keypad digit (0-9, *, #, A-D)")
        if self._close_started or self._nursery is None:
            return
        self.emit("dtmf", {"digit": digit})
        self._nursery.start_soon(self._on_dtmf, self._agent_now, digit)

    async def _on_dtmf(self, agent: Agent, digit: str) -> None:
        try:
            await agent.on_dtmf(digit)
        except SessionClosed:
            pass  # (closed meanwhile)
        except Exception:
            _log.exception("%s.on_dtmf(%r) failed", type(agent).__name__, digit)

    def send_dtmf(self, digits: str) -> None:
        """Send keypad digits to the far end, where the transport can (the browser protocol
        can; Twilio Media Streams cannot). Not a checkpoint.

        Raises:
            ValueError: something in `digits` is not a keypad digit.
            TransportError: this transport cannot send digits.
        """
        if not digits or any(d not in DTMF_DIGITS for d in digits):
            raise ValueError(f"{digits!r}: keypad digits are 0-9, *, #, A-D")
        if not isinstance(self.transport, SendsDtmf):
            raise TransportError(f"{type(self.transport).__name__} cannot send DTMF")
        self.transport.send_dtmf(digits)

    def interrupt(self, *, force: bool = False) -> None:
        """Interrupt the agent's current speech if it is interruptible (any, with `force`), and
        drop output queued in the transport. The next queued utterance then starts. Not a
        checkpoint."""
        self._scheduler.interrupt_current(force=force, reason="session.interrupt()")

    def get_context_history(self, include_function_calls: bool = False, include_system_messages: bool = False) -> list[dict[str, Any]]:
        """The conversation so far as plain dicts, oldest first.

        Messages are ``{"role", "content", "interrupted"}``; with `include_function_calls`,
        tool calls ``{"type": "function_call", "name", "arguments", "call_id"}`` and their
        outputs ``{"type": "function_call_output", "name", "call_id", "output", "is_error"}``
        are included too.
        """
        out: list[dict[str, Any]] = []
        for item in self._agent_now.chat_context.items:
            if isinstance(item, ChatMessage):
                if item.role is ChatRole.SYSTEM and not include_system_messages:
                    continue
                out.append({"role": item.role.value, "content": item.content, "interrupted": item.interrupted})
            elif include_function_calls and isinstance(item, FunctionCall):
                out.append({"type": "function_call", "name": item.name, "arguments": item.arguments, "call_id": item.call_id})
            elif include_function_calls and isinstance(item, FunctionCallOutput):
                out.append(
                    {"type": "function_call_output", "name": item.name, "call_id": item.call_id, "output": item.output, "is_error": item.is_error}
                )
        return out

    # -- the scheduler's callbacks ---------------------------------------------------------------
    async def _produce(self, utterance: Utterance) -> None:
        """One utterance's work, in the scheduler's runner inside the handle's cancel scope."""
        if self._user_speaking and utterance.handle.interruptible:
            self._scheduler.hold(utterance.handle)  # never start over the user: judged at the end of the speech
        if utterance.clip is not None:  # background audio in "playback" mode: the clip is the voice
            utterance.open_voice(utterance.clip.sample_rate)
            utterance.push_audio(utterance.clip)
            utterance.end_audio()
            await utterance.wait_played_out()
            return
        if utterance.source is SpeechSource.SAY:
            await self._pipeline_now.say(utterance)
            return
        flow = self.conversation_flow
        await self.start_thinking_audio()
        try:
            await self._pipeline_now.reply(utterance)
        finally:
            self._stop_thinking_audio_nowait()  # (fades out on its own)
            if utterance.user_turn is not None and utterance.user_turn.message is not None and flow is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(self.close_grace):
                    try:
                        await flow.on_turn_end()
                    except Exception:
                        _log.exception("conversation_flow.on_turn_end raised")

    def _on_first_audio(self, utterance: Utterance) -> None:
        self._stop_thinking_audio_nowait()  # fades out as the voice starts
        self.emit("agent_speech_started", AgentSpeechStarted(utterance.handle.text, utterance.handle))

    def _on_interrupted(self, utterance: Utterance, audible: bool) -> None:
        if audible:
            self._clear_output(utterance)

    def _on_finished(self, utterance: Utterance) -> None:
        self._last_speech_end = utterance.played_out_at or trio.current_time()
        handle = utterance.handle
        if handle.source in _REPLY_SOURCES:
            utterance.note(
                agent_text=handle.spoken_text,
                interrupted=handle.interrupted,
                first_audio_at=handle.started_at,
            )
            self._emit_metrics(utterance.metrics)
        m = utterance.metrics
        tracing.end(
            self._turn_spans.pop(utterance.handle.id, None),
            {
                "trioagent.interrupted": utterance.handle.interrupted,
                "trioagent.e2e_latency": m.e2e_latency,
                "trioagent.barge_in_latency": m.barge_in_latency,
                "trioagent.end_of_utterance_delay": m.end_of_utterance_delay,
                "trioagent.stt_final_latency": m.stt_final_latency,
                "trioagent.llm_ttft": m.llm_ttft,
                "trioagent.tts_ttfb": m.tts_ttfb,
                "trioagent.tool_calls": m.tool_calls,
                "trioagent.prompt_tokens": m.prompt_tokens,
                "trioagent.completion_tokens": m.completion_tokens,
                "trioagent.provider_switches": m.provider_switches,
            },
        )
        agent, self._handoff = self._handoff, None
        if agent is not None and not self._close_started:
            self._require_nursery().start_soon(self._hand_over, agent)

    def _clear_output(self, utterance: Utterance | None) -> None:
        """Drop output queued downstream (barge-in), first noting how much of `utterance`'s
        audio had been sent but not heard, for a transport that tracks playout."""
        if utterance is not None and isinstance(self.transport, PlayoutTracking):
            utterance.add_unheard(self.transport.unplayed())
        self.transport.clear()

    # -- background and thinking audio ---------------------------------------------------------------
    async def play_background_audio(self, config: BackgroundAudioHandlerConfig, override_thinking: bool = False) -> None:
        """Play `config` under everything else, ducked while the agent speaks (``"mixing"``), or
        as the agent's voice in the speech queue (``"playback"``, cut like speech). A missing or
        undecodable file is a warning and plays nothing."""
        nursery = self._require_nursery()
        if config.mode == "playback":
            if not config.enabled:
                await trio.lowlevel.checkpoint()
                return
            clip = load_clip(config, self.mixer.sample_rate)
            if clip is not None:
                frame = AudioFrame.from_float(clip * config.volume, self.mixer.sample_rate)
                handle = UtteranceHandle(source=SpeechSource.SAY, interruptible=True)
                self._submit(Utterance(handle, self._outlet, clip=frame, add_to_chat_context=False))
            await trio.lowlevel.checkpoint()
            return
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
        config = self._agent_now.thinking_audio
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

    # -- MCP servers and hand-over -------------------------------------------------------------
    async def _connect_mcp(self, agent: Agent) -> None:
        """Connect `agent`'s MCP servers, in this session's nursery (their tools join the
        agent's), then run its `initialize_mcp` hook.

        Raises:
            MCPServerError: a required server did not start, or a tool name clashes.
        """
        if agent.mcp_manager is not None:
            await agent.mcp_manager.aclose()  # (an agent handed back to: its last run must be over)
            await self._require_nursery().start(agent.mcp_manager.run, [t.name for t in agent.own_tools])
        await agent.initialize_mcp()

    async def _stop_mcp(self) -> None:
        """Start disconnecting the agent's MCP servers: they finish (a stdio server exits) while
        the other close steps run, and the session waits for them with its other tasks."""
        if self._agent_now.mcp_manager is not None:
            self._agent_now.mcp_manager.close_nowait()
        await trio.lowlevel.checkpoint()

    async def _hand_over(self, new_agent: Agent) -> None:
        old = self._agent_now
        try:
            await old.on_exit()
        except Exception:
            _log.exception("on_exit of %s raised during hand-over", type(old).__name__)
        if old.mcp_manager is not None:
            old.mcp_manager.close_nowait()  # (the new agent need not wait for old servers to exit)
        self._unhook_agent(old)
        old.session = None
        new_agent.session = self
        new_agent.chat_context.items.extend(
            i for i in old.chat_context.items if not (isinstance(i, ChatMessage) and i.role is ChatRole.SYSTEM)
        )
        self.agent = new_agent  # (assigned: released at close)
        self._hook_agent(new_agent)
        try:
            await self._connect_mcp(new_agent)
        except MCPServerError as exc:
            # The new agent cannot work without its servers: the session ends, saying why.
            _log.error("hand-over to %s failed: %s", type(new_agent).__name__, exc)
            self.failure = exc
            self.emit("error", ErrorEvent(exc, "mcp", fatal=True))
            await self._close("hand-over failed", exc)
            return
        await new_agent.on_enter()


@attrs.define(eq=False)
class _Host:
    """The session as its pipeline sees it (`PipelineHost`): nothing else of the session."""

    _session: AgentSession
    speech_in: Callable[[AudioFrame], None] | None = None
    """The input tap (``on_speech_in``), None while nobody listens."""

    @property
    def agent(self) -> Agent:
        return self._session._agent_now

    @property
    def conversation_flow(self) -> ConversationFlow | None:
        return self._session.conversation_flow

    @property
    def transport(self) -> Transport:
        return self._session.transport

    @property
    def closing(self) -> bool:
        return self._session.closing

    @property
    def close_grace(self) -> float:
        return self._session.close_grace

    def _current(self) -> Utterance | None:
        scheduler = self._session._scheduler
        handle = scheduler.current
        return scheduler.job(handle) if handle is not None else None

    def user_started_speaking(self, time: float) -> UserSpeechEffect:
        session = self._session
        session._user_speaking = True
        session._user_speech_end = None
        session._user_speech_start = time
        return session._scheduler.user_started_speaking()  # (updates the states)

    def user_stopped_speaking(self, time: float) -> None:
        session = self._session
        session._user_speaking = False
        session._user_speech_end = time
        session._update_states()

    def user_transcript(self, text: str, is_final: bool) -> None:
        self._session.emit("user_input_transcribed", UserInputTranscribed(text, is_final, trio.current_time()))

    @property
    def speech_state(self) -> UtteranceState | None:
        current = self._session._scheduler.current
        return current.state if current is not None else None

    @property
    def speech_interruptible(self) -> bool:
        current = self._session._scheduler.current
        return current is not None and current.interruptible

    def pause_speech(self) -> bool:
        current = self._current()
        if current is None or not current.audible or not current.handle.interruptible:
            return False
        self._session._clear_output(current)
        current.pause()
        self._note_cut(current)
        return True

    def resume_speech(self) -> None:
        current = self._current()
        if current is not None:
            if current.handle.state is UtteranceState.PAUSED:
                current.note(barge_in_at=None, cut_at=None)  # (a false interruption: no cut)
            current.resume()

    def interrupt_speech(self, reason: str) -> UserTurn | None:
        current = self._current()
        if current is None:
            return None
        unheard = current.handle.state in _THINKING_STATES
        audible = current.audible
        if not self._session._scheduler.interrupt(current.handle, reason=reason):
            return None
        if audible:
            self._note_cut(current)
        return current.user_turn if unheard else None

    def _note_cut(self, utterance: Utterance) -> None:
        """The user's speech cut `utterance` while it was heard (paused, or stopped): when,
        and when that speech began. A pause and then the interruption is one cut, the pause's."""
        if utterance.metrics.cut_at is None:
            utterance.note(barge_in_at=self._session._user_speech_start, cut_at=trio.current_time())

    def user_turn(self, turn: UserTurn) -> None:
        self._session._submit_user_turn(turn)

    async def wait_idle(self) -> None:
        await self._session._scheduler.wait_idle()

    def keep_unanswered(self, turn: UserTurn) -> None:
        self._session._keep_unanswered(turn)

    def emit(self, name: str, payload: Any) -> None:
        if name == "provider_switched":
            self._session._count_switch()
        self._session.emit(name, payload)

    def hand_over(self, agent: Agent) -> None:
        self._session._handoff = agent


def _stage(exc: BaseException) -> str | None:
    return exc.stage if isinstance(exc, ProviderError) else None


def _drop_tracebacks(exc: BaseException) -> None:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += [e.__cause__, e.__context__, *(e.exceptions if isinstance(e, BaseExceptionGroup) else ())]


class _TransportSink(trio.abc.SendChannel[AudioFrame]):
    """The mixer's output channel, writing straight into the transport."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def send(self, value: AudioFrame) -> None:
        await self._transport.send_audio(value)


    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


class _NowaitSink:
    """The same, for the clock-driven pump (`Mixer.run` with a `sink`)."""

    def __init__(self, transport: NowaitAudio) -> None:
        self.send_nowait = transport.send_audio_nowait
        self.wait_ready = transport.wait_send_space
        self._transport = transport

    @property
    def sends_idle(self) -> bool:
        return bool(getattr(self._transport, "send_silence", True))  # (the WebSocket transports' option)
