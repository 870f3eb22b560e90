"""A finished session is freed at once by reference counting: nothing it owned points back at
it (no cycle left for the garbage collector), so memory comes back when a call ends."""

from __future__ import annotations

import gc
import json
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trioagent import ProviderError, SessionClosed
from trioagent.testing import ToolCall, silence, speech

from .kit import make_session
from .netkit import browser_client, start_memory_server
from .test_pipeline import WeatherAgent


@contextmanager
def no_collector() -> Iterator[None]:
    """The cyclic collector off; and trioagent's log records too (a test's log capture keeps
    each record, with the traceback of a failure and so the frames of the session's tasks)."""
    gc.collect()
    gc.disable()
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        gc.enable()


class BrokenSTT:
    sample_rate = 16000

    async def run(self, audio: Any, events: Any) -> None:
        async with audio, events:
            raise ProviderError("the STT broke", provider="BrokenSTT")


async def converse(fail: bool) -> dict[str, weakref.ref[Any]]:
    script: list[Any] = [["Let me see.", ToolCall("get_weather", {"city": "Paris"})], "Sunny. " * 20, "Okay.", "Sure.", "Fine."]
    session, transport, _, _ = make_session(WeatherAgent(), transcripts=["weather please", "stop", "thanks"], script=script)
    if fail:
        session.pipeline.stt = BrokenSTT()  # type: ignore[attr-defined]
    session.on("agent_state_changed", lambda d: session.agent_state)  # a callback that holds the session
    refs = {name: weakref.ref(obj) for name, obj in [("session", session), ("agent", session.agent), ("pipeline", session.pipeline), ("transport", transport), ("mixer", session.mixer)]}
    async with session:
        handle = await session.say("Hello there, welcome.")
        if fail:
            await session.wait_closed()  # the pipeline failed: the session closed itself
        else:
            await transport.send_user_audio(speech(1.0) + silence(2.5))  # a turn with a tool
            await transport.send_user_audio(speech(0.8) + silence(1.0))  # a barge-in on the long answer
            await transport.send_user_audio(speech(0.5) + silence(1.0))
    assert handle.done() and (session.failure is not None) == fail
    return refs


async def test_a_closed_session_lets_go_of_its_agent_and_pipeline(autojump_clock: trio.testing.MockClock) -> None:
    """As in the seed: after close, `agent`, `pipeline` and `conversation_flow` are None, so a
    caller that keeps the session (for its metrics, say) does not keep them alive; a `close`
    callback still sees them."""
    with no_collector():
        session, transport, _, _ = make_session(WeatherAgent(), transcripts=["hello"], script=["Hi."])
        refs = [weakref.ref(session.agent), weakref.ref(session.pipeline)]
        seen: list[Any] = []
        session.on("close", lambda e: seen.append(session.agent))
        async with session:
            await transport.send_user_audio(speech(0.5) + silence(1.5))
        assert seen[0] is refs[0]()  # (the close event comes before the release)
        seen.clear()
        assert session.agent is None and session.pipeline is None and session.conversation_flow is None
        assert [r() for r in refs] == [None, None] and len(session.metrics) == 1  # freed; the metrics stay
        with pytest.raises(SessionClosed):
            await session.say("anyone?")


@pytest.mark.parametrize("fail", [False, True])
async def test_a_finished_session_is_freed_without_the_garbage_collector(autojump_clock: trio.testing.MockClock, fail: bool) -> None:
    with no_collector():
        refs = await converse(fail)
        alive = [name for name, ref in refs.items() if ref() is not None]
        assert alive == []
        assert gc.collect() == 0  # and no cycle was left behind either


async def test_a_served_session_is_freed_without_the_garbage_collector(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    refs: list[weakref.ref[Any]] = []
    with no_collector():
        server, listener = await start_memory_server(nursery, on_session=lambda s: refs.append(weakref.ref(s)))
        for _ in range(3):
            async with trio.open_nursery() as client_side:
                ws, client = await browser_client(client_side, listener)
                await client.send_audio(speech(1.0) + silence(2.0))
                await ws.send_message(json.dumps({"type": "end"}))
                await trio.sleep(0.5)
                client_side.cancel_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert len(refs) == 3 and [r() for r in refs] == [None, None, None]
