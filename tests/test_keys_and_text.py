"""Input that is not speech, in virtual time: keypad digits (DTMF) from Twilio and the browser
protocol as `dtmf` events and `Agent.on_dtmf`, `session.send_dtmf` where the transport can send
them; typed turns (`session.send_text`, the browser protocol's `text` message)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
import trio.testing

from trioagent import Agent, CascadingPipeline, TransportError
from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS

from .kit import make_session
from .netkit import TWILIO_CONNECTED, TWILIO_STOP, Client, browser_client, open_ws, start_memory_server, twilio_start


class Menu(Agent):
    """Press 1 for sales: says which key it heard."""

    def __init__(self) -> None:
        super().__init__(instructions="A phone menu.")
        self.digits: list[tuple[str, float]] = []

    async def on_dtmf(self, digit: str) -> None:
        self.digits.append((digit, trio.current_time()))
        if digit == "9":
            raise RuntimeError("a bug in the menu")
        await self.session.say(f"You pressed {digit}")


async def test_a_digit_is_an_event_and_the_agents_hook(autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    agent = Menu()
    session, transport, _, tts = make_session(agent)
    events: list[dict[str, Any]] = []
    session.on("dtmf", events.append)
    async with session:
        await trio.sleep(0.5)
        session.dtmf_received("1")
        with pytest.raises(ValueError, match="not a keypad digit"):
            session.dtmf_received("x")
        await trio.sleep(2.0)
        with caplog.at_level(logging.ERROR, logger="trioagent.session"):
            session.dtmf_received("9")  # the hook fails: logged, the session goes on
            await trio.sleep(0.1)
        session.dtmf_received("#")
        await trio.sleep(2.0)
        with pytest.raises(TransportError, match="MemoryTransport cannot send DTMF"):
            session.send_dtmf("123")
        with pytest.raises(ValueError, match="keypad digits"):
            session.send_dtmf("12x")
    assert events == [{"digit": "1"}, {"digit": "9"}, {"digit": "#"}]
    assert agent.digits == [("1", 0.5), ("9", 2.5), ("#", 2.6)]
    assert tts.texts == ["You pressed 1", "You pressed #"]
    assert "Menu.on_dtmf('9') failed" in caplog.text and "a bug in the menu" in caplog.text
    segments = transport.voice_segments()
    assert len(segments) == 2 and segments[0][0] == pytest.approx(0.5, abs=0.03) and segments[1][0] == pytest.approx(2.6, abs=0.03)


def menu_factory() -> tuple[Agent, CascadingPipeline]:
    return Menu(), CascadingPipeline(stt=ScriptedSTT([]), llm=ScriptedLLM([]), tts=ToneTTS())


async def test_digits_from_twilio_and_from_the_browser(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    agents: list[Menu] = []
    server, listener = await start_memory_server(nursery, menu_factory, on_session=lambda s: agents.append(s.agent))

    async with trio.open_nursery() as calls:
        ws = await open_ws(calls, listener, "/twilio")
        twilio = Client(ws)
        calls.start_soon(twilio.read)
        for message in (TWILIO_CONNECTED, twilio_start()):
            await ws.send_message(message)
        await trio.sleep(0.3)
        await ws.send_message(json.dumps({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "4"}}))
        await trio.sleep(2.0)
        await ws.send_message(TWILIO_STOP)

        ws, browser = await browser_client(calls, listener)
        await trio.sleep(0.3)
        await ws.send_message(json.dumps({"type": "dtmf", "digit": "*"}))
        await trio.sleep(2.0)
        server.transports[-1].session.send_dtmf("12#")  # type: ignore[union-attr]
        await trio.sleep(0.1)
        await ws.send_message(json.dumps({"type": "dtmf", "digit": "55"}))  # not one digit: 1007
        await trio.sleep(1.0)
    assert [a.digits[0][0] for a in agents] == ["4", "*"]
    assert browser.of("dtmf") == [{"type": "dtmf", "digits": "12#"}]
    assert [m["text"] for m in browser.of("agent_text")] == ["You pressed *"]
    assert browser.closed is not None and browser.closed.code == 1007 and "dtmf" in (browser.closed.reason or "")
    assert twilio.of("media")  # (the answer to 4 was spoken to the caller)


# -- typed turns (the same kind of input: not speech) -----------------------------------------
async def test_a_typed_turn_is_answered_like_a_spoken_one(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent import ChatRole

    session, transport, llm, tts = make_session(script=["A long answer that goes on and on and on.", "Paris."])
    agent = session.agent  # (the session lets go of it when it closes)
    async with session:
        await session.say("Welcome to the help line, how can I help you today?")
        await trio.sleep(0.5)
        handle = await session.send_text("  what is the   capital of France? ")
        assert handle is not None
        await handle
        with pytest.raises(ValueError, match="needs some text"):
            await session.send_text("   ")
    assert tts.texts[0] == "Welcome to the help line, how can I help you today?"
    assert [(m.role, m.content) for m in agent.chat_context.messages][1:3] == [
        (ChatRole.ASSISTANT, "Welcome to"),  # (cut by the typed turn at 0.5 s: the two words heard)
        (ChatRole.USER, "what is the capital of France?"),
    ]
    assert llm.calls[0].messages[-1].content == "what is the capital of France?"
    assert session.metrics[0].user_text == "what is the capital of France?" and session.metrics[0].e2e_latency is not None


async def test_typed_text_from_the_browser(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    _, listener = await start_memory_server(nursery, lambda: (Agent(instructions="x"), CascadingPipeline(stt=ScriptedSTT([]), llm=ScriptedLLM(["It is Paris."]), tts=ToneTTS())))
    async with trio.open_nursery() as calls:
        ws, browser = await browser_client(calls, listener)
        await trio.sleep(0.2)
        await ws.send_message(json.dumps({"type": "text", "text": "capital of France?"}))
        await trio.sleep(2.0)
        await ws.send_message(json.dumps({"type": "text", "text": "x" * 2001}))
        await trio.sleep(0.5)
    assert [m["text"] for m in browser.of("agent_text")] == ["It is Paris."]
    assert browser.audio and browser.closed is not None and browser.closed.code == 1007
