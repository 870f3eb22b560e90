"""What a server exposes to be watched: Prometheus metrics (through `prometheus-client`, the
``.[metrics]`` extra) for ``GET /metrics``, next to ``/healthz`` and ``/readyz``.

Each `Server` has its own registry (tests and several servers in one process stay apart).
Under ``serve --workers N`` the supervisor gives every worker one `PROMETHEUS_MULTIPROC_DIR`
(prometheus-client's multiprocess mode): each worker writes its values there, and whichever
worker answers ``GET /metrics`` reports the sum over all of them (sessions running now: the sum
over the live workers; a worker that died is dropped from it). The
counters move with the sessions' own events: a session's start and end (by close code), each
turn's end-to-end latency, interruptions and how long the agent spoke over the user who cut
it (barge-in latency), provider errors (by provider and stage), the mixer's
underruns (added when a session ends), and the event loop's lag (a task that sleeps one 20 ms
tick and records how late it woke).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .session import AgentSession

__all__ = ["ServerMetrics", "metrics_available"]

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BARGE_IN_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
TICK = 0.02
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def metrics_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


class ServerMetrics:
    """The metrics of one server. Requires prometheus-client."""

    def __init__(self, active: Any) -> None:
        """`active`: a function giving the number of sessions running now."""
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.multiprocess = MULTIPROC_DIR in os.environ  # (values in shared files; see the module doc)
        self._active_now = active
        self.active = Gauge("trioagent_active_sessions", "Sessions running now", registry=r, multiprocess_mode="livesum")
        if not self.multiprocess:
            self.active.set_function(active)
        self.started = Counter("trioagent_sessions_started", "Sessions started", registry=r)
        self.ended = Counter("trioagent_sessions_ended", "Sessions ended, by WebSocket close code", ["code"], registry=r)
        self.turns = Counter("trioagent_turns", "Turns answered (replies that reached the transport or were cut)", registry=r)
        self.interrupted = Counter("trioagent_turns_interrupted", "Answers cut by the user's speech or interrupt()", registry=r)
        self.reply_latency = Histogram(
            "trioagent_reply_latency_seconds", "From the end of the user's speech to the first audio of the answer", buckets=LATENCY_BUCKETS, registry=r
        )
        self.barge_in = Histogram(
            "trioagent_barge_in_seconds",
            "From the start of the user's speech that cut an answer to the cut (min_interruption_duration of it by design)",
            buckets=BARGE_IN_BUCKETS,
            registry=r,
        )
        self.provider_errors = Counter("trioagent_provider_errors", "Provider failures, by provider and stage", ["provider", "stage"], registry=r)
        self.underruns = Counter("trioagent_mixer_underruns", "Mixer ticks handled a frame late or skipped (summed at session end)", registry=r)
        self.loop_lag = Histogram("trioagent_event_loop_lag_seconds", "How late a 20 ms sleep woke up", buckets=LAG_BUCKETS, registry=r)

    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client.multiprocess import MultiProcessCollector

        self.active.set(self._active_now())
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone)  # type: ignore[no-untyped-call]  # (every worker's files)
        return generate_latest(everyone), CONTENT_TYPE_LATEST

    def watch(self, session: AgentSession) -> None:
        """Count `session`'s events (call before it starts)."""
        self.started.inc()
        if self.multiprocess:
            self.active.set(self._active_now())

        def on_metrics(m: Any) -> None:
            self.turns.inc()
            if m.interrupted:
                self.interrupted.inc()
            if m.e2e_latency is not None:
                self.reply_latency.observe(max(0.0, m.e2e_latency))
            if m.barge_in_latency is not None:
                self.barge_in.observe(max(0.0, m.barge_in_latency))

        def on_error(e: Any) -> None:
            provider = getattr(e.error, "provider", "") or type(e.error).__name__
            self.provider_errors.labels(provider=provider, stage=e.stage or "unknown").inc()

        session.on("metrics_collected", on_metrics)
        session.on("error", on_error)

    def session_ended(self, session: AgentSession, code: int) -> None:
        self.ended.labels(code=str(code)).inc()
        self.underruns.inc(session.mixer.statistics().underruns)
        if self.multiprocess:
            self.active.set(self._active_now())

    async def measure_loop_lag(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sleep a tick at a time, forever, recording how late each wake-up is."""
        task_status.started()
        while True:
            due = trio.current_time() + TICK
            await trio.sleep_until(due)
            self.loop_lag.observe(max(0.0, trio.current_time() - due))
