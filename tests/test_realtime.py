"""`RealTimePipeline` against a scripted Realtime server, in virtual time; every event it sends
checked against the official `openai` SDK's Realtime event models."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import trio
import trio.testing
from pydantic import TypeAdapter

from trioagent import Agent, AgentSession, ChatRole, FunctionCallOutput, ProviderError, RealTimePipeline, function_tool
from trioagent.providers import OpenAIRealtime
from trioagent.testing import MemoryTransport, ToolCall, silence, speech
from trioagent.events import UserTurnEnded

from .kit import about, all_tasks, at
from .realtime_fake import FakeRealtime

openai_realtime = pytest.importorskip("openai.types.realtime")
CLIENT_EVENT: TypeAdapter[Any] = TypeAdapter(openai_realtime.RealtimeClientEvent)


def realtime_session(fake: FakeRealtime, agent: Agent | None = None, **options: Any) -> tuple[AgentSession, MemoryTransport]:
    model = OpenAIRealtime(model="gpt-realtime", base_url="ws://fake/v1", api_key="sk-test", open_stream=fake.open_stream)
    pipeline = RealTimePipeline(model=model)
    transport = MemoryTransport()
    session = AgentSession(agent or Agent(instructions="You are a test."), pipeline, transport=transport, **options)
    return session, transport


def check_client_events(fake: FakeRealtime) -> None:
    for _, event in fake.received:
        if event["type"] != "input_audio_buffer.append":  # (recorded without its audio)
            CLIENT_EVENT.validate_python(event)


async def test_a_spoken_question_gets_the_models_audio(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime(["Hello there friend."], transcripts=["hi"])
    session, transport = realtime_session(fake)
    heard: list[UserTurnEnded] = []
    session.on("user_turn_ended", heard.append)
    tapped: list[float] = []  # (the input tap: every frame the pipeline reads)
    session.on("on_speech_in", lambda d: tapped.append(d["frame"].timestamp))
    before = {id(t) for t in all_tasks()}
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        agent = session.agent  # (the session lets go of it when it closes)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
        assert trio.current_time() == at(3.0)  # the input ended, the answer was out: closed at once
        await trio.testing.wait_all_tasks_blocked()
        left = {id(t) for t in all_tasks()} - before - {id(trio.lowlevel.current_task())}
        assert left == set()  # nothing of the session, its pipeline or its socket runs
    assert fake.path == "/v1/realtime?model=gpt-realtime" and fake.headers["authorization"] == "Bearer sk-test"
    kinds = [e["type"] for _, e in fake.received]
    assert kinds[:2] == ["session.update", "input_audio_buffer.append"]
    assert fake.of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] == {
        "type": "server_vad", "create_response": False, "interrupt_response": False, "silence_duration_ms": 500,
    }  # fmt: skip
    # Speech 0 .. 1.0 s; 500 ms of quiet commits the turn: the server has heard 1.5 s of audio
    # at 1.52 (the 16 -> 24 kHz resampler holds back part of a frame); the response is asked
    # for at once and plays from the next tick.
    assert fake.times("response.create") == [at(1.52)]
    (start, end), = transport.voice_segments()
    assert start == about(1.52) and end == about(2.27)  # three words: 0.75 s
    assert fake.close_code == 1000
    messages = [(m.role, m.content) for m in agent.chat_context.messages]
    assert messages[1:] == [(ChatRole.USER, "hi"), (ChatRole.ASSISTANT, "Hello there friend.")]
    assert [h.text for h in heard] == ["hi"] and heard[0].start == at(0.0)
    assert tapped == pytest.approx([0.02 * i for i in range(150)], abs=1e-9)
    m = session.metrics[0]
    assert m.user_text == "hi"
    assert m.user_speech_end == pytest.approx(1.0, abs=0.02) and m.end_of_turn_at == at(1.52)  # (the fake VAD works in chunks)
    assert m.completion_tokens == 3 and m.prompt_tokens == 10
    check_client_events(fake)


LONG = " ".join(["word"] * 20)  # 5 s of the model's voice


async def test_a_barge_in_cancels_the_response_and_truncates_at_what_was_heard(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime([LONG, "Yes?"], transcripts=["tell me a story", "wait"], paced=True)
    session, transport = realtime_session(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        agent = session.agent  # (the session lets go of it when it closes)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(1.5))  # the story plays from 1.52
            await transport.send_user_audio(speech(0.6))  # 2.5 .. 3.1: the server hears it start
            await transport.send_user_audio(silence(2.0))
    (cancel,) = fake.of("response.cancel")
    assert cancel["response_id"] == "resp_1"
    (truncate,) = fake.of("conversation.item.truncate")
    assert truncate["item_id"] == "resp_1_item" and truncate["content_index"] == 0
    (s1, e1), (s2, _) = transport.voice_segments()
    assert s1 == about(1.52)
    # The caller's speech starts at 2.5; the server has heard it at 2.52 (the resampler holds
    # back part of a frame) and says so: cut then, after exactly 1 s of the story was heard.
    assert fake.times("conversation.item.truncate") == [at(2.52)] and fake.times("response.cancel") == [at(2.52)]
    assert truncate["audio_end_ms"] == 1000
    assert e1 == about(2.53)  # the voice's 10 ms fade
    # The story is in the chat context as far as it was heard, then the new turn's answer.
    assistant = [m for m in agent.chat_context.messages if m.role is ChatRole.ASSISTANT]
    assert assistant[0].interrupted and 0 < len(assistant[0].content.split()) < 20
    assert assistant[1].content == "Yes?"
    check_client_events(fake)


class Weather(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="Weather bot.")

    @function_tool
    async def get_weather(self, city: str) -> dict[str, Any]:
        """Current weather for a city."""
        await trio.sleep(0.5)
        return {"city": city, "sky": "sunny"}


async def test_a_function_call_runs_the_tool_and_its_output_goes_back(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime([ToolCall("get_weather", {"city": "Paris"}, "call_1"), "It is sunny."], transcripts=["weather in paris"])
    session, transport = realtime_session(fake, Weather())
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        agent = session.agent  # (the session lets go of it when it closes)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(3.0))
    tools = fake.of("session.update")[0]["session"]["tools"]
    assert tools == [{"type": "function", "name": "get_weather", "description": "Current weather for a city.", "parameters": Weather().tools[0].parameters}]
    (output,) = fake.of("conversation.item.create")
    assert output["item"] == {"type": "function_call_output", "call_id": "call_1", "output": '{"city": "Paris", "sky": "sunny"}'}
    assert fake.times("response.create") == [at(1.52), at(2.02)]  # again once the tool (0.5 s) answered
    assert transport.voice_segments()[0][0] == about(2.02)
    outputs = [i for i in agent.chat_context.items if isinstance(i, FunctionCallOutput)]
    assert [(o.name, o.call_id) for o in outputs] == [("get_weather", "call_1")]
    assert session.metrics[0].tool_calls == 1
    check_client_events(fake)


async def test_say_asks_for_exactly_that_text(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime(["Welcome to the line."])
    session, _ = realtime_session(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        async with session:
            handle = await session.say("Welcome to the line.")
            await handle
            assert not handle.interrupted
    (create,) = fake.of("response.create")
    assert create["response"]["instructions"].endswith(": Welcome to the line.")
    check_client_events(fake)


@pytest.mark.parametrize(("entry", "message"), [("error", "reported an error: server_error internal: the model is overloaded"), ("drop", "closed the connection")])
async def test_an_error_event_or_a_dropped_socket_ends_the_session(autojump_clock: trio.testing.MockClock, entry: str, message: str) -> None:
    fake = FakeRealtime([entry], transcripts=["hello"])
    session, transport = realtime_session(fake)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        async with session:
            await transport.send_user_audio(speech(1.0))
            transport.send_user_audio_nowait(silence(1.0))
            await session.wait_closed()
    assert isinstance(session.failure, ProviderError) and message in str(session.failure)
    assert session.failure.stage == "llm"


async def test_mcp_tools_are_declared_to_the_model_and_called(autojump_clock: trio.testing.MockClock) -> None:
    import sys

    from trioagent import MCPServerStdio

    pytest.importorskip("mcp_server_time")
    agent = Agent("Time bot.", mcp_servers=[MCPServerStdio(sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"], name="time")])
    fake = FakeRealtime([ToolCall("get_current_time", {"timezone": "Asia/Tokyo"}, "call_t"), "Noted."], transcripts=["time in tokyo"])
    session, transport = realtime_session(fake, agent)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
    declared = [t["name"] for t in fake.of("session.update")[0]["session"]["tools"]]
    assert declared == ["get_current_time", "convert_time"]
    (output,) = fake.of("conversation.item.create")
    assert output["item"]["call_id"] == "call_t" and '"timezone": "Asia/Tokyo"' in output["item"]["output"]
    check_client_events(fake)


# -- trioagent as the Realtime server ---------------------------------------------------------------


async def test_the_realtime_pipeline_talks_to_trioagents_own_realtime_server(autojump_clock: trio.testing.MockClock) -> None:
    """trioagent on both ends: a RealTimePipeline session (the client) speaks to a server whose
    agent runs the cascading pipeline; every server event is checked against the SDK's models."""
    from trioagent.auth import mint_token

    from .netkit import SECRET, start_memory_server

    server_event: TypeAdapter[Any] = TypeAdapter(openai_realtime.RealtimeServerEvent)
    seen: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery)

        async def recording_stream() -> trio.abc.Stream:
            return _Tap(await listener.connect(), seen)

        model = OpenAIRealtime(base_url="http://localhost/v1", api_key=mint_token(SECRET), open_stream=recording_stream)
        transport = MemoryTransport(input_sample_rate=16000, output_sample_rate=24000)
        session = AgentSession(Agent("The client side."), RealTimePipeline(model=model), transport=transport)
        agent = session.agent  # (the session lets go of it when it closes)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(3.0))
        assert server.sessions_started == 1
        nursery.cancel_scope.cancel()
    messages = [(m.role, m.content) for m in agent.chat_context.messages]
    assert messages[1:] == [(ChatRole.USER, "hello agent"), (ChatRole.ASSISTANT, "Hi there. How can I help?")]
    (start, end), = transport.voice_segments()
    assert end - start == pytest.approx(1.5, abs=0.05)  # ToneTTS: six words, 0.25 s each
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "session.created" and "session.updated" in kinds and "response.done" in kinds
    for event in seen:
        server_event.validate_python(event)


class _Tap(trio.abc.Stream):
    """A client stream that also decodes the server's WebSocket text frames (unmasked,
    unfragmented, as trioagent's server sends them) into `seen`."""

    def __init__(self, inner: trio.abc.Stream, seen: list[dict[str, Any]]) -> None:
        import wsproto.frame_protocol as fp

        self.inner = inner
        self.seen = seen
        self._proto = fp.FrameProtocol(client=True, extensions=[])
        self._handshake = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        chunk = bytes(data)
        if b"\r\n\r\n" not in self._handshake:
            self._handshake += chunk
            if b"\r\n\r\n" not in self._handshake:
                return data
            chunk = self._handshake.split(b"\r\n\r\n", 1)[1]
        self._proto.receive_bytes(chunk)
        for frame in self._proto.received_frames():
            if frame.opcode.name == "TEXT":
                self.seen.append(json.loads(frame.payload))
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_sessions_own_vad_can_decide_the_turns(autojump_clock: trio.testing.MockClock) -> None:
    fake = FakeRealtime(["Hello there friend."], transcripts=["hi"])
    model = OpenAIRealtime(base_url="ws://fake/v1", turn_detection=None, open_stream=fake.open_stream)
    transport = MemoryTransport()
    session = AgentSession(Agent("Test."), RealTimePipeline(model=model), transport=transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.serve)
        agent = session.agent  # (the session lets go of it when it closes)
        async with session:
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
    assert fake.of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] is None
    # The EnergyVAD ends the speech at 1.0; 0.5 s later the pipeline commits, and asks for the answer.
    assert fake.times("input_audio_buffer.commit") == [pytest.approx(1.5, abs=0.021)]
    assert fake.times("response.create") == fake.times("input_audio_buffer.commit")
    assert [m.content for m in agent.chat_context.messages][1:] == ["hi", "Hello there friend."]
    check_client_events(fake)


async def test_the_demo_runs_through_trioagents_realtime_server(autojump_clock: trio.testing.MockClock, tmp_path: Any) -> None:
    """`trioagent demo --pipeline realtime`, in virtual time: the demo's caller and agent on a
    RealTimePipeline, the offline demo agent behind a trioagent Realtime server."""
    pytest.importorskip("pocketsphinx")
    from trioagent.auth import mint_token
    from trioagent.demo import agent_factory, run_demo

    from .netkit import SECRET, start_memory_server

    async with trio.open_nursery() as nursery:
        server, listener = await start_memory_server(nursery)
        server.factory = agent_factory
        model = OpenAIRealtime(base_url="http://localhost/v1", api_key=mint_token(SECRET), open_stream=listener.connect)
        out = io.StringIO()
        turns = await run_demo(str(tmp_path / "demo.wav"), out=out, virtual=True, pipeline=RealTimePipeline(model=model))
        nursery.cancel_scope.cancel()
    # (eSpeak's audio depends on what it said before in this process: a word can be missed)
    assert turns[0].heard == "hello there" and all(t.heard for t in turns), out.getvalue()
    assert all(t.answered and not t.failed for t in turns), out.getvalue()
    assert out.getvalue().count("agent said  : ") == 5


@pytest.mark.parametrize(
    ("headers", "messages", "expected"),
    [
        ([], [], (1008, "unauthorized: a token is required")),
        ([(b"authorization", b"Bearer forged.token")], [], None),
        (None, ["not json"], (1007, "a Realtime client message that is not JSON")),
        (None, ['{"type": "input_audio_buffer.append", "audio": "AQ=="}'], (1007, "input_audio_buffer.append: not whole 16-bit samples")),
    ],
)
async def test_the_realtime_endpoint_refuses_bad_peers_with_a_close_code(
    autojump_clock: trio.testing.MockClock, headers: list[tuple[bytes, bytes]] | None, messages: list[str], expected: tuple[int, str] | None
) -> None:
    from trioagent.auth import mint_token

    from .netkit import SECRET, start_memory_server
    from .test_server import close_reason

    async with trio.open_nursery() as nursery:
        _, listener = await start_memory_server(nursery)
        if headers is None:
            headers = [(b"authorization", f"Bearer {mint_token(SECRET)}".encode())]
        code, reason = await close_reason(listener, "/v1/realtime", messages, headers)
        nursery.cancel_scope.cancel()
    if expected is None:
        assert code == 1008 and reason.startswith("unauthorized")
    else:
        assert (code, reason) == expected


async def test_an_unknown_client_event_gets_an_error_event_and_the_call_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.auth import mint_token

    from .netkit import SECRET, open_ws, start_memory_server

    async with trio.open_nursery() as nursery:
        _, listener = await start_memory_server(nursery)
        ws = await open_ws(nursery, listener, "/realtime", [(b"authorization", f"Bearer {mint_token(SECRET)}".encode())])
        assert json.loads(await ws.get_message())["type"] == "session.created"
        await ws.send_message('{"type": "conversation.item.retrieve", "item_id": "x"}')
        got = json.loads(await ws.get_message())
        assert got["type"] == "error" and got["error"]["code"] == "unknown_event"
        TypeAdapter(openai_realtime.RealtimeServerEvent).validate_python(got)
        assert ws.closed is None
        nursery.cancel_scope.cancel()
