"""What a server exposes to be watched: Prometheus metrics (through `prometheus-client`, the
``.[metrics]`` extra) for ``GET /metrics``, next to ``/healthz`` and ``/readyz``.

Each `Server` has its own registry (tests and several servers in one process stay apart).
Under ``serve --workers N`` the supervisor gives every worker one `PROMETHEUS_MULTIPROC_DIR`
(prometheus-client's multiprocess mode): each worker writes its values there, and whichever
worker answers ``GET /metrics`` reports the sum over all of them (sessions running now: the sum
over the live workers; a worker that died is dropped from it). A dead worker's counters and
histograms are folded into one archive file per kind by the supervisor (`retire_worker`), so
the files a scrape reads (in the worker's event loop, between audio ticks) do not grow with
every restart and rolling restart of a long-lived server. The
counters move with the sessions' own events: a session's start and end (by close code), each
turn's end-to-end latency, interruptions and how long the agent spoke over the user who cut
it (barge-in latency), provider errors (by provider and stage), the mixer's
underruns (added when a session ends), and the event loop's lag (a task that sleeps one 20 ms
tick and records how late it woke).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .session import AgentSession

__all__ = ["ServerMetrics", "metrics_available", "retire_worker"]

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
        with _files_locked(os.environ[MULTIPROC_DIR], exclusive=False):  # (not while a dead worker's are folded)
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


ARCHIVE = "archive"
"""The dead workers' counters and histograms, summed: ``counter_archive.db``, ``histogram_archive.db``."""


@contextlib.contextmanager
def _files_locked(path: str, *, exclusive: bool, name: str = ".lock") -> Iterator[None]:
    """Scrapes read the files under a shared lock; folding a dead worker's files in (two
    renames) takes it exclusively, so no scrape counts that worker twice or not at all. (With
    `name` ".fold": the folds' own lock, one at a time; scrapes do not take it.)"""
    import fcntl  # (Unix: where `serve --workers` runs)

    fd = os.open(os.path.join(path, name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # (and the lock with it)


def retire_worker(path: str, pid: int) -> None:
    """After worker `pid` has exited: drop its live gauge (prometheus-client's
    `mark_process_dead`) and add its counters and histograms to the archive files, removing its
    own, so their sums stay and the files stay as many as the live workers' plus two. Blocking
    (file I/O, and the lock a scrape may hold for a few milliseconds): run it in a thread. Safe
    to run for several workers at once (each reads and replaces the archive: one at a time)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    with _files_locked(path, exclusive=True, name=".fold"):
        _fold(path, pid)


def _fold(path: str, pid: int) -> None:
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    for kind in ("counter", "histogram"):
        dead = os.path.join(path, f"{kind}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = os.path.join(path, f"{kind}_{ARCHIVE}.db")
        # Not cumulated: buckets are stored per bucket (as the workers write them), not as exposed.
        merged = multiprocess.MultiProcessCollector.merge([f for f in (archive, dead) if os.path.exists(f)], accumulate=False)  # type: ignore[no-untyped-call]
        new = os.path.join(path, f"{kind}_{ARCHIVE}.new")  # (not *.db: no scrape reads it half-written)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(new)
        out = MmapedDict(new)  # type: ignore[no-untyped-call]
        try:
            for metric in merged:
                for sample in metric.samples:
                    key = mmap_key(metric.name, sample.name, list(sample.labels), list(sample.labels.values()), metric.documentation)
                    out.write_value(key, sample.value, sample.timestamp or 0.0)  # type: ignore[no-untyped-call]
        finally:
            out.close()  # type: ignore[no-untyped-call]
        with _files_locked(path, exclusive=True):
            os.replace(new, archive)
            os.unlink(dead)
