"""Run blocking, CPU-heavy calls without stalling the event loop.

On the real clock a call goes to a worker thread (`run_blocking`: for libraries that release the
GIL, such as eSpeak through ctypes) or to a worker process (`run_in_process`: for those that hold
it, such as PocketSphinx, which holds it for a whole decode and for the half second it takes to
build a decoder; a thread would stall every session's mixer meanwhile). Worker processes come
from trio-parallel's pool, started once and reused, so a process-wide cache in a worker (a
decoder) lasts. Under `trio.testing.MockClock` (virtual time) both run inline: virtual time
stands still while it computes, which is exactly what a deterministic simulation wants, whereas a
thread or a process would let an autojump clock race ahead while the work is still under way.

A program that uses `run_in_process` on the real clock must start under ``if __name__ ==
"__main__":`` (worker processes are spawned, and import the main module).

Waiting on the outside world (a subprocess, a socket: an MCP server) is the same problem the other
way round: under an autojump clock, a task blocked on real I/O looks idle, so the clock jumps to
the next deadline (a timeout, the next mixer tick) and races on while the answer is on its way.
`outside_world()` holds virtual time still for the wait instead, so the call takes no virtual
time, as an inline computation does.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Callable, Iterator
from typing import TypeVar

import attrs
import trio
import trio.testing

from .errors import ProviderError

T = TypeVar("T")


def virtual_time() -> bool:
    """Whether the current trio run uses a `MockClock`."""
    return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


@attrs.define
class _Hold:
    threshold: float
    rate: float
    holds: int = 0
    real: int = 0


_holds: weakref.WeakKeyDictionary[trio.testing.MockClock, _Hold] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def outside_world(*, real_time: bool = False) -> Iterator[None]:
    """Hold virtual time still while the body waits on something real (on the real clock: does
    nothing). Under a `MockClock` the clock stops autojumping until the last such body ends
    (bodies in several tasks nest), then gets its settings back. A timeout inside cannot fire
    meanwhile: timeouts of real waits are for the real clock.

    With `real_time`, virtual time runs at the real rate instead of standing still, for a body
    whose own waits must pass (a library's grace period while a subprocess exits, say).
    """
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        yield
        return
    hold = _holds.get(clock)
    if hold is None:
        hold = _holds[clock] = _Hold(clock.autojump_threshold, clock.rate)
        clock.autojump_threshold = math.inf
    hold.holds += 1
    hold.real += real_time
    if hold.real:
        clock.rate = max(hold.rate, 1.0)
    try:
        yield
    finally:
        hold.holds -= 1
        hold.real -= real_time
        if not hold.real:
            clock.rate = hold.rate
        if not hold.holds:
            del _holds[clock]
            clock.autojump_threshold = hold.threshold


async def run_blocking(fn: Callable[..., T], *args: object, abandon_on_cancel: bool = False) -> T:
    """Call `fn(*args)` off the event loop (inline under a MockClock). A checkpoint.

    With `abandon_on_cancel`, a cancelled caller returns at once and the thread finishes on its
    own; `fn` must then notice (e.g. through a flag the caller sets) and stop early.
    """
    if virtual_time():
        await trio.lowlevel.checkpoint()
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon_on_cancel)


async def run_in_process(fn: Callable[..., T], *args: object) -> T:
    """Call the module-level function `fn(*args)` in a worker process (inline under a
    MockClock). Arguments and result are pickled. Cancelling the caller kills that worker (a new
    one takes its place when next needed). A checkpoint.

    Raises:
        ProviderError: trio-parallel is not installed, or the worker process died.
    """
    if virtual_time():
        await trio.lowlevel.checkpoint()
        return fn(*args)
    try:
        import trio_parallel
    except ImportError:
        raise ProviderError("running off the event loop needs trio-parallel: pip install -e '.[local]'") from None
    try:
        result: T = await trio_parallel.run_sync(fn, *args, kill_on_cancel=True)
        return result
    except trio_parallel.BrokenWorkerError as exc:
        raise ProviderError(f"a worker process died: {exc}", retryable=True) from None
