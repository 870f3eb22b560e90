"""Run blocking, CPU-heavy calls without stalling the event loop.

On the real clock a call goes to a worker thread (`trio.to_thread.run_sync`), so the mixer keeps
ticking. Under `trio.testing.MockClock` (virtual time) it runs inline: virtual time stands still
while it computes, which is exactly what a deterministic simulation wants, whereas a thread would
let an autojump clock race ahead while the work is still under way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio
import trio.testing

T = TypeVar("T")


def virtual_time() -> bool:
    """Whether the current trio run uses a `MockClock`."""
    return isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)


async def run_blocking(fn: Callable[..., T], *args: object, abandon_on_cancel: bool = False) -> T:
    """Call `fn(*args)` off the event loop (inline under a MockClock). A checkpoint.

    With `abandon_on_cancel`, a cancelled caller returns at once and the thread finishes on its
    own; `fn` must then notice (e.g. through a flag the caller sets) and stop early.
    """
    if virtual_time():
        await trio.lowlevel.checkpoint()
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=abandon_on_cancel)
