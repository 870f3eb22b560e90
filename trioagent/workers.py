"""``trioagent serve --workers N``: one supervisor process and N worker processes, each one trio
thread running a `Server`.

How this works. The supervisor owns the listening socket and accepts; each connection goes to
the worker with the fewest sessions, passed as a file descriptor over a Unix socket pair
(``SCM_RIGHTS``). A worker reports its load on that socket as soon as it changes: its sessions
and its connections not yet sessions, and how many connections it has taken from the socket;
the supervisor adds those handed to it and not yet taken. Each worker takes its share of
``--max-sessions``, and one that has reached it is passed over while another has room.
Placing by least sessions, not by chance, is why the supervisor accepts: with
``SO_REUSEPORT`` the kernel spreads connections by a hash, and a worker at capacity would
refuse calls another worker could take.

A worker is ready at its first report (its factory has run and its server is up). One that
dies is restarted (its calls are lost, no others); so is one whose event loop is stuck (a
blocking call in an agent, an endless loop): a worker reports at least every `REPORT_EVERY`
seconds, and one silent for `worker_timeout` is killed (as gunicorn's ``--timeout`` does).
New connections go to ready workers that have reported lately, if any: not to one still
starting (its factory may load a model for a minute) nor to one that is stuck. A worker that
dies before it is ready (a bad deploy, a missing model) is started again after a pause that
doubles at each such failure in a row (`RETRY_FIRST` up to `RETRY_MAX`), not in a loop.
SIGTERM: the supervisor stops accepting and tells every worker to drain (their calls get
``--grace`` seconds, then 1001); it exits when they have. SIGHUP: a rolling restart, worker by
worker: the old one drains only once its replacement is ready, so no connection is refused or
kept waiting; a replacement that fails to start stops the roll, and the old workers go on. The
roll does not wait for a draining worker's calls to end (they may last as long as ``--grace``):
the next replacement starts at once, so new calls reach the new code within the workers'
start-up times, while up to N old workers finish their calls beside the N new ones.

Metrics: with prometheus-client installed, the workers share a `PROMETHEUS_MULTIPROC_DIR` the
supervisor makes (and removes at exit), so ``GET /metrics``, answered by any worker, counts all.
"""

from __future__ import annotations

import array
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import trio

from .observe import MULTIPROC_DIR, metrics_available, retire_worker
from .server import accept_patiently

__all__ = ["FdListener", "Supervisor", "usable_cores"]

_log = logging.getLogger("trioagent.workers")

CONNECTION = b"c"
DRAIN = b"d"
REPORT_EVERY = 1.0
"""A worker reports its load at least this often (seconds), so the supervisor knows it runs."""
HAND_WAIT = 1.0
"""How long a connection may wait for a worker to take it (all backed up) before it is closed."""
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
"""A worker that died before it was ready is started again after RETRY_FIRST seconds, doubled at
each such failure in a row, up to RETRY_MAX."""


class FdListener(trio.abc.Listener[trio.abc.Stream]):
    """A worker's side: connections arrive as descriptors on its Unix socket; a drain message
    calls `on_drain`; `report(load)` tells the supervisor the worker's load (sessions and
    connections not yet sessions) and how many connections it has taken from the socket."""

    def __init__(self, fd: int, on_drain: Any) -> None:
        self._sock = trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
        self._on_drain = on_drain
        self._closed = False
        self.taken = 0
        """Connections taken from the supervisor's socket (lost ones too)."""
        self.lost = 0
        """Connections handed over that this process had no descriptor for (the kernel closed them)."""
        self._lost_logged_at = -float("inf")

    async def accept(self) -> trio.abc.Stream:
        while True:
            message, ancillary, flags, _ = await self._sock.recvmsg(1, socket.CMSG_LEN(array.array("i", [0]).itemsize))
            if flags & socket.MSG_CTRUNC:  # (at the open-file limit: the descriptor did not come)
                self.taken += 1
                self._lose()
                continue
            if not message:
                self._on_drain()  # (the supervisor is gone: finish what runs, take nothing new)
                await trio.sleep_forever()
            if message == DRAIN:
                self._on_drain()
                continue
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                    self.taken += 1
                    return trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fds[0])))

    def _lose(self) -> None:
        self.lost += 1
        now = trio.current_time()
        if now - self._lost_logged_at >= 1.0:  # (a flood is not a log flood)
            self._lost_logged_at = now
            _log.error("a connection was lost: this worker is at its open-file limit (ulimit -n; %d lost so far)", self.lost)

    async def report(self, load: int) -> None:
        await self._sock.send(f"{load} {self.taken}\n".encode())

    async def aclose(self) -> None:
        self._closed = True
        await trio.lowlevel.checkpoint()


@attrs.define(eq=False)
class _Worker:
    number: int
    process: Any
    sock: Any  # (trio's, to read its reports)
    raw: socket.socket  # (the same socket, to hand over without waiting)
    reported_load: int = 0  # its sessions and connections not yet sessions, at its last report
    handed: int = 0  # connections passed to it, in all
    taken: int = 0  # of those, taken from its socket at its last report
    taking: bool = True
    replace: bool = True  # started again if it dies unasked (a rolling restart's new worker: once ready)
    reported_at: float | None = None  # its last report (None: starting, its factory may take long)
    settled: trio.Event = attrs.field(factory=trio.Event)  # ready (its first report) or exited
    exited: trio.Event = attrs.field(factory=trio.Event)

    @property
    def load(self) -> int:
        return self.reported_load + self.handed - self.taken  # (+ those on their way)


@attrs.define(eq=False)
class Supervisor:
    """Runs the workers (`worker_argv` plus ``--fd N``) and passes them connections."""

    worker_argv: Sequence[str]
    workers: int
    grace: float = 10.0
    worker_timeout: float = 30.0
    """A worker that has not reported for this long (seconds) is stuck: it is killed and replaced."""
    worker_sessions: float = math.inf
    """Each worker's `max_sessions`: a worker this loaded is passed over while another has room."""
    worker_env: Mapping[str, str] = attrs.field(factory=dict)
    """Set in each worker's environment (a secret goes there: a command line is any local user's to read)."""
    _pool: list[_Worker] = attrs.field(factory=list)
    _nursery: trio.Nursery | None = None
    _accepting: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    _rolling: trio.Lock = attrs.field(factory=trio.Lock)
    _roll_waiting: bool = False
    _numbers: int = 0
    _stopping: bool = False
    _failed_starts: int = 0  # replacements in a row that died before they were ready
    restarts: int = 0
    unhanded: int = 0
    """Connections closed because no worker could take them (none taking, or all backed up)."""
    _unhanded_logged_at: float = -math.inf
    metrics_dir: str | None = None
    """Where the workers keep their metrics (prometheus-client's multiprocess mode), when it is installed."""

    async def _spawn(self, nursery: trio.Nursery, *, replace: bool = True) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._numbers += 1
        env = {**os.environ, **self.worker_env}
        if self.metrics_dir is not None:
            env[MULTIPROC_DIR] = self.metrics_dir
        process = await trio.lowlevel.open_process([*self.worker_argv, "--fd", str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        worker = _Worker(self._numbers, process, trio.socket.from_stdlib_socket(ours), ours, replace=replace)
        self._pool.append(worker)
        nursery.start_soon(self._watch, worker, nursery)
        _log.info("worker %d started (pid %d)", worker.number, process.pid)
        return worker

    async def _watch(self, worker: _Worker, nursery: trio.Nursery) -> None:
        """Read its reports until it exits; restart it if it died unasked."""
        buffer = b""
        while True:
            data = b""
            with trio.move_on_after(self.worker_timeout if worker.reported_at is not None else math.inf) as waited:
                try:
                    data = await worker.sock.recv(4096)
                except OSError:
                    pass
            if waited.cancelled_caught and worker.process.returncode is None:
                _log.error(
                    "worker %d (pid %d) has not reported for %g s: its event loop is stuck; killing it", worker.number, worker.process.pid, self.worker_timeout
                )
                worker.process.kill()
            if not data:
                break
            if worker.reported_at is None:  # ready
                self._failed_starts = 0
                worker.settled.set()
            worker.reported_at = trio.current_time()
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            if lines:
                self._read_report(worker, lines[-1])
        code = await worker.process.wait()
        worker.sock.close()
        self._pool.remove(worker)
        worker.settled.set()
        worker.exited.set()
        if self.metrics_dir is not None:  # (its live gauge goes, its counts join the archive)
            nursery.start_soon(self._retire, worker, self.metrics_dir)
        if not worker.taking or self._stopping:
            return
        if worker.reported_at is not None:
            self.restarts += 1
            _log.error("worker %d (pid %d) died with status %s; its calls are lost; starting another", worker.number, worker.process.pid, code)
            await self._spawn(nursery)
            return
        if not worker.replace:
            return  # (a rolling restart's new worker: the roll stops, the old workers go on)
        self._failed_starts += 1
        pause = min(RETRY_MAX, RETRY_FIRST * 2 ** (self._failed_starts - 1))
        _log.error(
            "worker %d (pid %d) exited with status %s before it was ready (%d in a row); starting another in %g s",
            worker.number, worker.process.pid, code, self._failed_starts, pause,
        )  # fmt: skip
        await trio.sleep(pause)
        if not self._stopping:
            self.restarts += 1
            await self._spawn(nursery)

    @staticmethod
    async def _retire(worker: _Worker, metrics_dir: str) -> None:
        try:
            await trio.to_thread.run_sync(retire_worker, metrics_dir, worker.process.pid)
        except Exception:  # (a full disk, say: its counts stay in its own files)
            _log.exception("could not fold the metrics of worker %d (pid %d) into the archive", worker.number, worker.process.pid)

    @staticmethod
    def _read_report(worker: _Worker, line: bytes) -> None:
        """``load taken``. Lenient: this supervisor outlives its workers' code (SIGHUP starts
        workers of a newer version under it), so fields it does not know are ignored, and a
        line it cannot read is logged and skipped rather than ending the supervisor."""
        try:
            fields = [int(f) for f in line.split()[:2]]
            worker.reported_load = fields[0]
            if len(fields) > 1:
                worker.taken = fields[1]
        except (ValueError, IndexError):
            _log.warning("worker %d sent a report this supervisor cannot read: %r", worker.number, line[:80])

    async def _hand(self, stream: trio.SocketStream) -> None:
        """Pass the connection to the best worker that can take it now. Never waits on one
        worker: a stuck worker's socket fills up (a few hundred connections), and waiting on it
        would stop the accept loop, every other worker's calls included, until its timeout."""
        message = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [stream.socket.fileno()]))]
        with trio.move_on_after(HAND_WAIT):
            while True:
                for worker in self._choices():
                    try:
                        worker.raw.sendmsg([CONNECTION], message, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        continue  # (backed up: the next best)
                    except OSError:
                        _log.warning("could not pass a connection to worker %d", worker.number)
                        continue
                    worker.handed += 1
                    await stream.aclose()  # (the worker has its own copy)
                    return
                if not any(w.taking for w in self._pool):
                    break
                await trio.sleep(0.01)  # (every worker backed up: a moment, then again)
        self.unhanded += 1
        now = trio.current_time()
        if now - self._unhanded_logged_at >= 1.0:  # (a flood is not a log flood)
            self._unhanded_logged_at = now
            _log.error("a connection was closed: no worker could take it (%d so far)", self.unhanded)
        await stream.aclose()

    def _choices(self) -> list[_Worker]:
        """The workers taking connections, best first: ones with room before full ones (which
        would refuse the call), and among those ready ones that report, by least load, then
        ones still starting (the call waits for the factory), then ones that have missed their
        reports (stuck, until their timeout)."""
        now = trio.current_time()

        def rank(w: _Worker) -> tuple[bool, int, int]:
            load = w.load
            if w.reported_at is None:
                return load >= self.worker_sessions, 1, load
            return load >= self.worker_sessions, (0 if now - w.reported_at <= 2 * REPORT_EVERY else 2), load

        return sorted((w for w in self._pool if w.taking), key=rank)

    async def run(self, listeners: Sequence[trio.SocketListener], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, pass them connections until `drain()` (SIGTERM), then wait for
        them to finish."""
        if self.metrics_dir is None and metrics_available():
            self.metrics_dir = tempfile.mkdtemp(prefix="trioagent-metrics-")
        try:
            await self._run(listeners, task_status)
        finally:
            if self.metrics_dir is not None:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)

    async def _run(self, listeners: Sequence[trio.SocketListener], task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for _ in range(self.workers):
                await self._spawn(nursery)
            with self._accepting:
                async with trio.open_nursery() as accepting:
                    for listener in listeners:
                        accepting.start_soon(self._accept, listener)
                    task_status.started()
            for listener in listeners:
                await listener.aclose()
            with trio.move_on_after(self.grace + 10):
                while self._pool:
                    await self._pool[0].exited.wait()
            for worker in list(self._pool):
                worker.process.kill()
            nursery.cancel_scope.cancel()

    async def _accept(self, listener: trio.SocketListener) -> None:
        while True:
            await self._hand(await accept_patiently(listener))

    async def drain(self) -> None:
        """Stop accepting; every worker finishes its calls (within its --grace) and exits."""
        self._stopping = True
        self._accepting.cancel()
        for worker in list(self._pool):
            await self._tell_drain(worker)

    async def _tell_drain(self, worker: _Worker) -> None:
        worker.taking = False
        try:
            await worker.sock.send(DRAIN)
        except OSError:
            worker.process.kill()

    async def roll(self) -> bool:
        """Replace the workers one by one: each old one drains once its replacement is ready,
        and the next replacement starts then, not once the old one's calls have ended.
        Returns whether every worker was replaced: not if a replacement failed to start (the
        roll stops there, the workers not yet replaced go on serving, the error is logged) or
        the supervisor began to drain meanwhile. A roll asked while one is under way waits for
        it; one asked while another already waits joins that one (returns False at once)."""
        assert self._nursery is not None
        if self._roll_waiting:  # (it will start the newest code: one more would do it all again)
            _log.warning("a rolling restart is already waiting for the one under way: this one joins it")
            return False
        self._roll_waiting = True
        async with self._rolling:  # (a second SIGHUP waits for the first roll)
            self._roll_waiting = False
            for old in [w for w in self._pool if w.taking]:
                if self._stopping:
                    return False
                new = await self._spawn(self._nursery, replace=False)
                await new.settled.wait()
                if new.reported_at is None:  # (it exited before it was ready)
                    if not self._stopping:
                        _log.error(
                            "rolling restart stopped: the new worker %d exited with status %s before it was ready; the old workers go on serving",
                            new.number, new.process.returncode,
                        )  # fmt: skip
                    return False
                new.replace = True
                if old in self._pool:  # (it may have died meanwhile, and been replaced)
                    await self._tell_drain(old)
            # An old worker that died during the roll was restarted as well as replaced: one
            # too many now (all of them run the new code), so the newest extra ones drain.
            for extra in [w for w in self._pool if w.taking][self.workers :]:
                if not self._stopping:
                    await self._tell_drain(extra)
            return not self._stopping


def worker_argv(args: Sequence[str]) -> list[str]:
    """The command line of a worker: this Python, ``-m trioagent serve`` with `args`."""
    return [sys.executable, "-m", "trioagent", "serve", *args]



def usable_cores(cgroups: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> int:
    """How many cores this process may use: `--workers 0` starts that many. The CPUs it may run
    on (its affinity: a cpuset, `taskset`), and no more than its cgroup's CPU quota allows,
    rounded up: a container limited to 2 CPUs on a 64-core host (Docker's ``--cpus``, a
    Kubernetes CPU limit) gets 2 workers, not 64 that would share two cores and the memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        cores = os.cpu_count() or 1
    quota = _cpu_quota(cgroups, root)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def _cpu_quota(cgroups: str, root: str) -> float | None:
    """The tightest CPU quota (in cores) of this process's cgroup and its ancestors: cgroup v2's
    ``cpu.max``, v1's ``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``; None without one."""
    try:
        with open(cgroups) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2 (on a hybrid system, mounted at unified/)
            base = root if os.path.exists(os.path.join(root, "cgroup.controllers")) else os.path.join(root, "unified")
        elif "cpu" in controllers.split(","):
            base = os.path.join(root, controllers) if os.path.isdir(os.path.join(root, controllers)) else os.path.join(root, "cpu")
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):  # (the process's own cgroup, then each parent)
            where = os.path.join(base, *parts[:depth])
            try:
                if controllers == "":
                    with open(os.path.join(where, "cpu.max")) as f:
                        limit, period = f.read().split()
                    if limit != "max":
                        quotas.append(int(limit) / int(period))
                else:
                    with open(os.path.join(where, "cpu.cfs_quota_us")) as f, open(os.path.join(where, "cpu.cfs_period_us")) as g:
                        limit, period = f.read().strip(), g.read().strip()
                    if int(limit) > 0:
                        quotas.append(int(limit) / int(period))
            except (OSError, ValueError):
                continue  # (not mounted here, or no such file: no limit known at this level)
    return min(quotas) if quotas else None
