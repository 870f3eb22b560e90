"""The WebSocket server in virtual time, over in-memory streams: the same server code and the
real trio-websocket client, with exact times. (Real sockets: tests/test_server_loopback.py.)"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket

from trioagent import Agent, CascadingPipeline, ProviderError
from trioagent.audio import AudioFrame, ulaw_decode
from trioagent.auth import mint_token
from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech
from trioagent.transports import Transport
from trioagent.transports.websocket import TwilioTransport

from .kit import all_tasks
from .netkit import (
    LONG, SECRET, TWILIO_CONNECTED, TWILIO_STOP, Client, MemoryListener, browser_client, hello, open_ws, start_memory_server,
    twilio_media, twilio_start,
)


async def browser_conversation(listener: MemoryListener, token: str | None = None, *, stream: trio.abc.Stream | None = None) -> Client:
    """One spoken question and its answer; on `stream` if given (a connection made earlier)."""
    async with trio.open_nursery() as nursery:
        if stream is None:
            ws = await open_ws(nursery, listener, "/ws")
        else:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "localhost", "/ws")
        client = Client(ws)
        await ws.send_message(hello(token))
        nursery.start_soon(client.read)
        await client.send_audio(speech(1.0) + silence(3.5))
        await ws.send_message(json.dumps({"type": "end"}))
        await trio.sleep(1)
        await ws.aclose()
    return client


async def test_browser_conversation(autojump_clock: trio.testing.MockClock) -> None:
    before = len(all_tasks())
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery)
        t0 = trio.current_time()
        client = await browser_conversation(listener)
        assert client.json[0] == {"type": "ready", "sample_rate": 16000, "output_sample_rate": 24000}
        assert [m["text"] for m in client.of("transcript")] == ["hello agent"]
        assert [m["text"] for m in client.of("agent_text")] == ["Hi there. How can I help?"]
        states = [m["state"] for m in client.of("agent_state")]
        order = iter(states)
        assert all(state in order for state in ["starting", "listening", "thinking", "speaking"]), states
        # speech ends at 1.0; the end-of-turn delay is 0.5 s: the agent thinks at exactly 1.5
        (thinking,) = [t for m, t in zip(client.json, client.times) if m.get("state") == "thinking"]
        assert thinking - t0 == pytest.approx(1.5, abs=1e-6)
        assert client.of("metrics")[0]["e2e_latency"] == pytest.approx(0.5, abs=0.021)  # to the first audio frame tick
        voiced = [a for a in client.audio if np.abs(a.astype(np.int32)).max(initial=0) > 3000]
        assert len(voiced) >= 70  # 6 words * 0.25 s = 1.5 s of voice in 20 ms frames at 24 kHz
        assert all(len(a) == 480 for a in client.audio)  # 20 ms at the rate the hello asked for
        assert client.closed is not None and (client.closed.code, client.closed.reason) == (1000, "session ended")
        assert server.sessions_started == 1 and server.active == 0
        server.shutdown()
    assert len(all_tasks()) == before  # nothing left once the server has stopped


async def test_browser_interrupt_message(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    ws, client = await browser_client(nursery, listener)
    await client.send_audio(speech(1.0) + silence(1.0))  # the answer starts at 1.5 s
    await ws.send_message(json.dumps({"type": "interrupt"}))
    sent = trio.current_time()
    await client.send_audio(silence(1.0))
    assert client.time_of("clear") and client.time_of("clear")[0] - sent < 0.021
    n = len(client.audio)
    await client.send_audio(silence(1.0))
    assert all(np.abs(a.astype(np.int32)).max(initial=0) < 3000 for a in client.audio[n:])  # nothing stale plays on
    await ws.aclose()


async def test_twilio_conversation_with_barge_in(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    ws = await open_ws(nursery, listener, "/twilio")
    client = Client(ws)
    await ws.send_message(TWILIO_CONNECTED)
    await ws.send_message(twilio_start())
    nursery.start_soon(client.read)
    await client.send_audio(speech(1.0, 8000) + silence(3.0, 8000), twilio_media)  # turn 1: short answer
    assert not client.of("clear")
    await client.send_audio(speech(1.0, 8000) + silence(1.5, 8000), twilio_media)  # turn 2: 6 s answer from 5.5
    answer_media = len(client.of("media"))
    barge = trio.current_time()
    await client.send_audio(speech(1.0, 8000) + silence(2.0, 8000), twilio_media)  # barge in at 6.5
    (clear,) = client.time_of("clear")
    # min_interruption_duration (0.5 s) of speech, then clear: exactly, although the 8 kHz
    # input is resampled to 16 kHz for the VAD (soxr's stream would add 0.1 s here; NOTES.md,
    # "Resampler latency")
    assert clear - barge == pytest.approx(0.5, abs=1e-6)
    await ws.send_message(TWILIO_STOP)
    with trio.fail_after(5):
        while client.closed is None:
            await trio.sleep(0.1)
    assert (client.closed.code, client.closed.reason) == (1000, "session ended")
    media = client.of("media")
    assert all(m["streamSid"] == "MZ1" for m in media)
    frames = [ulaw_decode(base64.b64decode(m["media"]["payload"])) for m in media]
    assert {len(f) for f in frames} == {160}  # 20 ms at 8 kHz
    assert np.abs(np.concatenate(frames).astype(np.int32)).max() > 3000  # the agent's voice
    assert answer_media > 0 and client.of("mark") and all(m["mark"]["name"].startswith("t=") for m in client.of("mark"))
    assert server.sessions_started == 1


async def test_twilio_marks_track_playout(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    ws = await open_ws(nursery, listener, "/twilio")
    await ws.send_message(TWILIO_CONNECTED)
    await ws.send_message(twilio_start())
    marks: list[tuple[float, str]] = []

    async def echo_marks() -> None:  # Twilio echoes a mark once the audio before it has played
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                message = json.loads(await ws.get_message())
                if message["event"] == "mark":
                    marks.append((trio.current_time(), message["mark"]["name"]))
                    await ws.send_message(json.dumps({"event": "mark", "streamSid": "MZ1", "mark": message["mark"]}))

    nursery.start_soon(echo_marks)
    await Client(ws).send_audio(speech(1.0, 8000) + silence(3.0, 8000), twilio_media)
    transport = server.transports[0]
    assert isinstance(transport, TwilioTransport) and isinstance(transport, Transport)
    assert marks and transport.played_until == pytest.approx(float(marks[-1][1][2:]))
    # the mark after every 10th frame names the end of that frame on the session clock (this
    # fake Twilio plays everything at once, so the echo comes as the frame is sent)
    assert all(abs(t - float(name[2:])) <= 0.021 for t, name in marks)
    await ws.aclose()


async def close_reason(listener: MemoryListener, path: str, messages: list[str | bytes], headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, str]:
    """Connect, send `messages`, read until the server closes; the close code and reason
    (or the HTTP status and body of a refused handshake)."""
    got: tuple[int, str] | None = None
    try:
        async with trio.open_nursery() as nursery:
            ws = await open_ws(nursery, listener, path, headers)
            for m in messages:
                await ws.send_message(m)
            with trio.fail_after(30):
                while True:
                    await ws.get_message()
    except* trio_websocket.ConnectionClosed as group:
        (exc,) = group.exceptions
        assert isinstance(exc, trio_websocket.ConnectionClosed)
        got = exc.reason.code, exc.reason.reason or ""
    except* trio_websocket.ConnectionRejected as group:
        (exc,) = group.exceptions
        assert isinstance(exc, trio_websocket.ConnectionRejected)
        got = exc.status_code, (exc.body or b"").decode()
    assert got is not None
    return got


BAD_INPUT: list[tuple[str, list[Any], int, str]] = [
    ("/ws", ["{not json"], 1007, "not JSON"),
    ("/ws", [json.dumps([1, 2])], 1007, "a message must be a JSON object"),
    ("/ws", [json.dumps({"type": 5})], 1007, "a JSON object with a string 'type'"),
    ("/ws", [json.dumps({"type": "interrupt"})], 1007, "first message must be a hello"),
    ("/ws", [b"\x00\x00"], 1003, "expected a JSON text message, got binary"),
    ("/ws", [hello(sample_rate=12345)], 1007, "sample_rate must be one of"),
    ("/ws", [hello(), json.dumps({"type": "dance"})], 1007, "unknown message type 'dance'"),
    ("/ws", [hello(), b"\x00\x01\x02"], 1007, "not whole 16-bit samples"),
    ("/ws", [hello(), b"\x00" * 40000], 1007, "longer than 0.5 s"),
    ("/ws", [hello(), b"\x00" * 70000], 1009, ""),
    ("/ws", [hello()] + [b"\x00" * 640] * 300, 1008, "audio arrives faster than real time"),
    ("/ws", [hello(token="forged.token")], 1008, "unauthorized: bad token"),
    ("/ws", [hello(token=mint_token(SECRET, ttl=-5))], 1008, "unauthorized: token expired"),
    ("/ws", [hello(token=mint_token("another-secret"))], 1008, "unauthorized: bad token signature"),
    ("/ws", [hello(token="")], 1008, "unauthorized: a token is required"),
    ("/twilio", [json.dumps({"event": "media", "media": {"payload": ""}})], 1007, "media before start"),
    ("/twilio", [json.dumps({"event": "dance"})], 1007, "unknown event 'dance'"),
    ("/twilio", [TWILIO_CONNECTED, twilio_start(token="nope")], 1008, "unauthorized"),
    ("/twilio", [twilio_start(), json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "%%%"}})], 1007, "not valid base64"),
    ("/twilio", [twilio_start(), json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "A" * 20000}})], 1007, "payload larger than"),
    ("/twilio", [b"\x00\x01"], 1003, "binary"),
]


async def test_bad_input_closes_only_that_connection(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    healthy: list[Client] = []

    async def good() -> None:
        healthy.append(await browser_conversation(listener))

    async with trio.open_nursery() as inner:
        inner.start_soon(good)
        await trio.sleep(0.3)  # the good session is under way
        for path, messages, code, reason in BAD_INPUT:
            got = await close_reason(listener, path, messages)
            assert got[0] == code and reason in got[1], (path, messages[:2], got)
    (client,) = healthy  # the session next door carried on
    assert [m["text"] for m in client.of("transcript")] == ["hello agent"]
    assert client.closed is not None and client.closed.code == 1000
    assert server.active == 0 and server.sessions_started == 8  # the good one and seven that failed after their start
    assert server.refused == {"protocol": 15, "token": 5, "too_big": 1}


async def test_hello_timeout(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery, hello_timeout=3.0)
    t = trio.current_time()
    assert await close_reason(listener, "/ws", []) == (1007, "no hello within 3 s")
    assert trio.current_time() - t == pytest.approx(3.0, abs=1e-6)


async def test_origin_and_capacity(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    good = [(b"Origin", b"https://good.example")]
    server, listener = await start_memory_server(nursery, allowed_origins={"https://good.example"}, max_sessions=1)
    assert await close_reason(listener, "/ws", [hello()], [(b"Origin", b"https://evil.example")]) == (403, "origin not allowed")
    assert await close_reason(listener, "/ws", [hello()]) == (403, "origin not allowed")  # no Origin at all
    ws = await open_ws(nursery, listener, "/ws", good)
    await ws.send_message(hello())
    assert json.loads(await ws.get_message())["type"] == "ready"
    assert await close_reason(listener, "/ws", [hello()], good) == (1013, "server full: too many sessions")
    assert await close_reason(listener, "/twilio", [twilio_start()]) == (1013, "server full: too many sessions")
    await ws.aclose()
    with trio.fail_after(1):
        while server.active:
            await trio.sleep(0.01)
    ws = await open_ws(nursery, listener, "/ws", good)  # room again
    await ws.send_message(hello())
    assert json.loads(await ws.get_message())["type"] == "ready"
    assert server.refused == {"origin": 2, "capacity": 2}
    await ws.aclose()


async def test_dropped_connection_mid_reply(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    stream = await listener.connect()
    ws = await trio_websocket.wrap_client_stream(nursery, stream, "localhost", "/ws")
    await ws.send_message(hello())
    await ws.get_message()
    await Client(ws).send_audio(speech(1.0) + silence(0.8))  # the answer starts at 1.5
    await stream.aclose()  # the network goes away mid-reply: no close handshake
    t = trio.current_time()
    with trio.fail_after(10):
        while server.active:
            await trio.sleep(0.01)
    assert trio.current_time() - t < 0.05  # the session ended at once, not after some timeout
    # and the server still takes new sessions
    assert [m["text"] for m in (await browser_conversation(listener)).of("transcript")] == ["hello agent"]


async def test_shutdown_drains_then_closes(autojump_clock: trio.testing.MockClock) -> None:
    before = len(all_tasks())
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, grace=2.0)
        async with trio.open_nursery() as client_side:
            ws = await open_ws(client_side, listener, "/ws")
            await ws.send_message(hello())
            await ws.get_message()
            t = trio.current_time()
            server.shutdown()
            await trio.sleep(0.1)
            with pytest.raises(trio.BrokenResourceError):
                await listener.connect()  # no longer accepting
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert trio.current_time() - t == pytest.approx(2.0, abs=1e-6)  # the grace period, then closed
            assert closed.value.reason.code == 1001
    assert len(all_tasks()) == before


async def test_shutdown_lets_a_session_finish_within_grace(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery, grace=30.0)
        client_done: list[Client] = []

        async def talk() -> None:
            client_done.append(await browser_conversation(listener))

        nursery.start_soon(talk)
        await trio.sleep(0.5)
        t = trio.current_time()
        server.shutdown()
    (client,) = client_done
    assert [m["text"] for m in client.of("agent_text")] == ["Hi there. How can I help?"]  # it finished its conversation
    assert client.closed is not None and client.closed.code == 1000
    assert trio.current_time() - t < 6  # the server stopped as soon as the session ended


async def test_bunched_frames_keep_their_audio_time(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    """The network delivers frames in bursts of five every 100 ms: the audio stays one continuous
    stream (each frame starts where the one before ended), so the turn ends as if the frames had
    come one by one, shifted only by how late the first burst was (80 ms)."""
    server, listener = await start_memory_server(nursery)
    ws, client = await browser_client(nursery, listener)
    t0 = trio.current_time()
    frames = speech(1.0) + silence(2.0)
    for i in range(0, len(frames), 5):
        await trio.sleep(0.1)
        for frame in frames[i : i + 5]:
            await ws.send_message(frame.to_pcm16())
    (thinking,) = [t for m, t in zip(client.json, client.times) if m.get("state") == "thinking"]
    assert thinking - t0 == pytest.approx(1.0 + 0.08 + 0.5, abs=1e-6)
    assert [m["text"] for m in client.of("transcript")] == ["hello agent"]
    await ws.aclose()


async def test_sessions_spread_over_out_of_phase_clocks(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery, tick_phases=4)
    seen: list[Any] = []
    server.on_session = lambda session: seen.append(session.tick_clock)
    sockets = []
    for _ in range(8):
        ws = await open_ws(nursery, listener, "/ws")
        await ws.send_message(hello())
        await ws.get_message()
        sockets.append(ws)
    assert sorted(clock.phase for clock in seen) == [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    for ws in sockets:
        await ws.aclose()


async def test_twilio_reply_starts_one_tick_after_the_end_of_turn(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    """8 kHz in, resampled up for the VAD and STT; 24 kHz voice resampled down for the line: the
    answer's first loud frame leaves 0.5 s (the end-of-turn delay) + one 20 ms tick after the
    caller stops. (With soxr's streams in both places it was 0.62 s.)"""
    server, listener = await start_memory_server(nursery)
    ws = await open_ws(nursery, listener, "/twilio")
    await ws.send_message(twilio_start())
    loud_at: list[float] = []

    async def read() -> None:
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            while True:
                message = json.loads(await ws.get_message())
                if message["event"] == "media":
                    samples = ulaw_decode(base64.b64decode(message["media"]["payload"]))
                    if np.abs(samples.astype(np.int32)).max() > 3000:
                        loud_at.append(trio.current_time())

    nursery.start_soon(read)
    client = Client(ws)
    await client.send_audio(speech(1.0, 8000), twilio_media)
    end = trio.current_time()
    await client.send_audio(silence(2.0, 8000), twilio_media)
    assert loud_at[0] - end == pytest.approx(0.52, abs=1e-6)
    await ws.aclose()


async def barge_in_heard(listener: MemoryListener, server: Any, path: str, playout_delay: float) -> str:
    """A caller asks for the long answer and barges in 1 s into it, over a line that plays
    audio `playout_delay` after it was sent (echoing marks then). Returns what the chat context
    says the agent said."""
    said: list[str] = []
    server.on_session = lambda session: session.on("metrics_collected", lambda m: said.append(m.agent_text))
    async with trio.open_nursery() as nursery:
        ws = await open_ws(nursery, listener, path)
        rate = 8000 if path == "/twilio" else 16000
        encode = twilio_media if path == "/twilio" else None
        await ws.send_message(twilio_start() if path == "/twilio" else hello())

        async def echo_marks() -> None:
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        continue
                    m = json.loads(message)
                    if m.get("event") == "mark" or m.get("type") == "mark":
                        name = m["mark"]["name"] if path == "/twilio" else m["name"]
                        reply = json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": name}}) if path == "/twilio" else json.dumps({"type": "mark", "name": name})

                        async def later(reply: str = reply) -> None:
                            await trio.sleep(playout_delay)
                            with contextlib.suppress(trio_websocket.ConnectionClosed):
                                await ws.send_message(reply)

                        nursery.start_soon(later)

        nursery.start_soon(echo_marks)
        client = Client(ws)
        await client.send_audio(speech(1.0, rate) + silence(3.0, rate), encode)  # turn 1, short answer
        await client.send_audio(speech(1.0, rate) + silence(1.5, rate), encode)  # the 6 s answer from 5.5 s
        await client.send_audio(speech(1.0, rate) + silence(1.0, rate), encode)  # barge in at 6.5 s
        await ws.aclose()
        nursery.cancel_scope.cancel()
    return said[1]


@pytest.mark.parametrize("path", ["/twilio", "/ws"])
async def test_interrupted_text_is_what_the_listener_heard(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, path: str) -> None:
    """Marks tell how far the listener's playback is behind what was sent: the chat context
    keeps only the words heard, not the ones still buffered in the phone network when the
    barge-in cleared them."""
    server, listener = await start_memory_server(nursery)
    prompt = await barge_in_heard(listener, server, path, playout_delay=0.0)
    delayed = await barge_in_heard(listener, server, path, playout_delay=0.3)
    assert prompt.startswith("word word") and LONG.startswith(delayed)
    # 24 words, 119 characters over 6 s: 0.3 s less heard is about 6 characters less said
    assert 4 <= len(prompt) - len(delayed) <= 8, (prompt, delayed)


async def test_a_failing_agent_factory_closes_that_connection_only(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    from .netkit import factory

    calls = 0

    def flaky() -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the STT service key is missing")
        return factory()

    server, listener = await start_memory_server(nursery)
    server.factory = flaky
    assert await close_reason(listener, "/ws", [hello()]) == (1011, "the agent could not start")
    assert "the STT service key is missing" in caplog.text
    assert [m["text"] for m in (await browser_conversation(listener)).of("transcript")] == ["hello agent"]
    assert server.refused == {"factory": 1} and server.active == 0


class DyingSTT(ScriptedSTT):
    """Hears one turn, then its stream dies (a provider whose connection broke)."""

    async def run(self, audio: Any, events: Any) -> None:
        async with audio, events:
            async for frame in audio:
                if frame.timestamp >= 1.0:
                    raise ProviderError("the STT stream broke", provider="DyingSTT")


async def test_a_provider_failure_ends_that_session_with_1011(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    server.factory = lambda: (Agent(instructions="Test."), CascadingPipeline(stt=DyingSTT([]), llm=ScriptedLLM([]), tts=ToneTTS()))
    async with trio.open_nursery() as client_side:
        ws = await open_ws(client_side, listener, "/ws")
        client = Client(ws)
        await ws.send_message(hello())
        client_side.start_soon(client.read)
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await client.send_audio(silence(2.0))  # the server closes at 1.0 s
    assert client.closed is not None and (client.closed.code, client.closed.reason) == (1011, "the agent failed")
    assert server.refused == {"agent_failed": 1} and server.active == 0


async def test_marks_a_client_never_echoes_do_not_pile_up(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    ws, client = await browser_client(nursery, listener)
    await trio.sleep(0.001)  # (the session starts right after "ready")
    transport = server.transports[0]
    transport.send_silence = True  # (the mixer's idle frames go out too: 50 a second)
    await client.send_audio(silence(30.0))  # 150 marks sent, none echoed
    assert len(client.of("mark")) == 150 and len(transport._marks_pending) == 64
    assert transport.unplayed() == 0.0  # nothing known: audio counts as heard when sent
    await ws.aclose()




async def test_record_dir_records_each_call(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery, tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """`record_dir` (`serve --record-dir`): each call is a stereo WAV there, the caller on the
    left and the agent on the right; a directory that went away is logged and the call goes on."""
    import wave

    server, listener = await start_memory_server(nursery, record_dir=str(tmp_path))
    client = await browser_conversation(listener)
    (path,) = tmp_path.iterdir()
    assert path.name.endswith(f"-{__import__('os').getpid()}-1.wav")
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 24000)
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    loud = np.abs(data.astype(np.int32)) > 3000
    # The caller speaks 0 .. 1.0 s (resampled to 24 kHz); the agent answers from 1.5 s.
    assert loud[: 24000, 0].mean() > 0.5 and not loud[: 24000, 1].any()
    first = int(np.flatnonzero(loud[:, 1])[0])
    assert 1.5 <= first / 24000 < 1.55 and not loud[36000:, 0].any()
    heard = np.concatenate(client.audio)
    assert int(np.count_nonzero(loud[:, 1])) == int(np.count_nonzero(np.abs(heard.astype(np.int32)) > 3000))  # every loud sample sent
    server.record_dir = str(tmp_path / "gone")
    with caplog.at_level("ERROR", logger="trioagent.server"):
        client = await browser_conversation(listener)
    assert [m["text"] for m in client.of("agent_text")] == ["Hi there. How can I help?"]
    assert "cannot record the call" in caplog.text and "goes on unrecorded" in caplog.text
