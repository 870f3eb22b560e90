"""Work that holds the GIL runs in worker processes on the real clock, inline in virtual time."""

from __future__ import annotations

import os

import numpy as np
import trio
import trio.testing

from trioagent._compute import outside_world, run_in_process
from trioagent.providers import pocketsphinx
from trioagent.providers.pocketsphinx import DEMO_GRAMMAR

from .test_local_providers import spoken


async def test_a_decode_runs_in_a_worker_process_and_gives_the_inline_result() -> None:
    clip = np.concatenate([np.zeros(4800, np.int16), await spoken("what is the weather in paris", voice="en-us+m3", rate=150), np.zeros(4800, np.int16)])
    pcm = clip.tobytes()
    assert await run_in_process(os.getpid) != os.getpid()  # the real clock: another process
    pocketsphinx._DECODERS.clear()
    there = await run_in_process(pocketsphinx.decode, DEMO_GRAMMAR, pcm)
    assert pocketsphinx._DECODERS == {}  # nothing was built here
    here = pocketsphinx.decode(DEMO_GRAMMAR, pcm)
    # (eSpeak's output depends on what it said before in this process: compare, do not expect)
    assert there == here and here.startswith("what is the weather")


async def test_virtual_time_runs_it_inline(autojump_clock: trio.testing.MockClock) -> None:
    assert await run_in_process(os.getpid) == os.getpid()


async def test_outside_world_holds_virtual_time_still_and_gives_the_clock_back(autojump_clock: trio.testing.MockClock) -> None:
    with outside_world():
        assert autojump_clock.autojump_threshold == float("inf")
        with outside_world(real_time=True):  # (nested, as in two tasks)
            assert autojump_clock.rate == 1.0
            t = trio.current_time()
            await trio.to_thread.run_sync(lambda: None)  # a real wait: time passes at the real rate
            assert trio.current_time() > t
        assert autojump_clock.rate == 0.0
        t = trio.current_time()
        await trio.to_thread.run_sync(lambda: None)  # held still: no jump while it waits
        assert trio.current_time() == t
    assert autojump_clock.autojump_threshold == 0 and autojump_clock.rate == 0.0
    await trio.sleep(5)  # autojumps again
    assert trio.current_time() >= 5


async def test_outside_world_does_nothing_on_the_real_clock() -> None:
    with outside_world(real_time=True):
        assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
