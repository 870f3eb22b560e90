"""OpenAILLM against a loopback server, and the sans-IO stream parsers."""

from __future__ import annotations

import json

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from trioagent import ChatContext, ChatRole, FunctionTool, ProviderError, ProviderTimeout
from trioagent._proto.openai_chat import ChatStreamDecoder, StreamDone, StreamProtocolError, StreamText, StreamToolCall, StreamUsage
from trioagent._proto.sse import SSEEvent, SSEParser
from trioagent.providers import TextDelta, ToolCall, Usage
from trioagent.providers.openai_llm import OpenAILLM

from .openai_server import SENT, FakeOpenAI, serve


def context() -> ChatContext:
    ctx = ChatContext()
    ctx.add_message(role=ChatRole.SYSTEM, content="Be brief.")
    ctx.add_message(role=ChatRole.USER, content="Weather in Paris?")
    return ctx


async def collect(llm: OpenAILLM, tools: list[FunctionTool] | None = None) -> list[object]:
    return [chunk async for chunk in llm.chat(context(), tools or [])]


def weather(city: str) -> str:
    """Weather for a city."""
    return city


async def test_streamed_text_and_request(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    llm = OpenAILLM(model="text", base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test")
    chunks = await collect(llm, [FunctionTool.from_function(weather)])
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Hello there. How can I help?"
    assert chunks[-1] == Usage(prompt_tokens=21, completion_tokens=7)  # asked for with stream_options
    sent = server.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["headers"][b"authorization"] == b"Bearer sk-test"
    assert sent["body"]["stream"] is True and sent["body"]["messages"][1] == {"role": "user", "content": "Weather in Paris?"}
    assert sent["body"]["tools"][0]["function"]["name"] == "weather"


async def test_the_fake_server_speaks_the_format_of_the_openai_sdk(nursery: trio.Nursery) -> None:
    """What the fake sends is what the official SDK's own model accepts (so the decoder is
    tested on the vendor's format, not on ours)."""
    from openai.types.chat import ChatCompletionChunk

    port = await nursery.start(serve, FakeOpenAI())
    SENT.clear()
    for model in ("text", "tools"):
        await collect(OpenAILLM(model=model, base_url=f"http://127.0.0.1:{port}/v1"))
    assert len(SENT) >= 8
    parsed = [ChatCompletionChunk.model_validate(c) for c in SENT]
    assert parsed[4].usage is not None and parsed[4].usage.prompt_tokens == 21


async def test_streamed_tool_calls(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve, FakeOpenAI())
    chunks = await collect(OpenAILLM(model="tools", base_url=f"http://127.0.0.1:{port}/v1"))
    assert chunks == [ToolCall("get_weather", '{"city": "Paris"}', "call_1"), ToolCall("get_time", "{}", "call_2")]


async def test_server_error_is_a_provider_error(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve, FakeOpenAI())
    with pytest.raises(ProviderError, match="HTTP 503: .*model overloaded") as info:
        await collect(OpenAILLM(model="error", base_url=f"http://127.0.0.1:{port}/v1"))
    assert info.value.retryable and info.value.provider == "OpenAILLM"


async def test_dropped_connection_and_garbage(nursery: trio.Nursery) -> None:
    port = await nursery.start(serve, FakeOpenAI())
    with pytest.raises(ProviderError, match="OpenAILLM|RemoteProtocolError|ended before"):
        await collect(OpenAILLM(model="drop", base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(ProviderError, match="not JSON"):
        await collect(OpenAILLM(model="garbage", base_url=f"http://127.0.0.1:{port}/v1"))


async def test_nothing_listening_is_a_provider_error() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(ProviderError, match="cannot connect"):
        await collect(OpenAILLM(model="text", base_url=f"http://127.0.0.1:{port}/v1", retry_backoff=0.01))


async def test_stalled_server_is_cancelled_cleanly_by_interrupt(nursery: trio.Nursery) -> None:
    from trioagent import Agent, AgentSession, CascadingPipeline
    from trioagent.testing import MemoryTransport, ScriptedSTT, ToneTTS

    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    llm = OpenAILLM(model="stall", base_url=f"http://127.0.0.1:{port}/v1")
    pipeline = CascadingPipeline(stt=ScriptedSTT([]), llm=llm, tts=ToneTTS())
    async with AgentSession(Agent(), pipeline, transport=MemoryTransport()) as session:
        handle = await session.reply("say something", wait_for_playback=False)
        await server.stalled.wait()
        session.interrupt()
        await handle
        assert handle.interrupted
        with trio.fail_after(5):  # real time: the server sees its stream closed
            while server.closed_streams == 0:
                await trio.sleep(0.01)


# -- the sans-IO parsers --------------------------------------------------------------------


def test_sse_whole_and_byte_by_byte() -> None:
    raw = b": comment\r\nevent: note\r\ndata: a\r\ndata: b\r\nid: 7\r\n\r\ndata: second\n\ndata:third\r\r"
    expected = [SSEEvent("a\nb", "note", "7"), SSEEvent("second", "message", "7"), SSEEvent("third", "message", "7")]
    assert SSEParser().feed(raw) == expected
    parser = SSEParser()
    assert [e for i in range(len(raw)) for e in parser.feed(raw[i : i + 1])] == expected


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20), min_size=1, max_size=5), st.data())
def test_sse_any_split(payloads: list[str], data: st.DataObject) -> None:
    raw = b"".join(f"data: {p}\r\n\r\n".encode() for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    parser = SSEParser()
    events = []
    last = 0
    for cut in [*cuts, len(raw)]:
        events += parser.feed(raw[last:cut])
        last = cut
    assert [e.data for e in events] == [p for p in payloads if True]


@given(st.binary(max_size=300))
def test_sse_never_crashes_on_junk(junk: bytes) -> None:
    SSEParser().feed(junk)


def test_sse_refuses_endless_lines() -> None:
    with pytest.raises(ValueError, match="longer than"):
        SSEParser(max_line=100).feed(b"data: " + b"x" * 200)


def test_chat_stream_decoder() -> None:
    d = ChatStreamDecoder()
    assert d.feed(json.dumps({"choices": [{"index": 0, "delta": {"content": "Hi"}}]})) == [StreamText("Hi")]
    d.feed(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a"'}}]}}]}))
    d.feed(json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "finish_reason": "tool_calls"}]}))
    assert d.feed("[DONE]") == [StreamToolCall("c", "f", '{"a": 1}'), StreamDone("tool_calls")]
    with pytest.raises(StreamProtocolError, match="after the end"):
        d.feed("{}")
    usage = ChatStreamDecoder().feed(json.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    assert usage == [StreamUsage(3, 2)]
    with pytest.raises(StreamProtocolError, match="usage"):
        ChatStreamDecoder().feed(json.dumps({"choices": [], "usage": {"prompt_tokens": "3", "completion_tokens": 2}}))
    for bad, message in [("[1]", "not a JSON object"), ('{"error": {"message": "quota"}}', "quota"), ('{"choices": [{"delta": 5}]}', "delta")]:
        with pytest.raises(StreamProtocolError, match=message):
            ChatStreamDecoder().feed(bad)


@given(st.text(max_size=200))
def test_chat_stream_decoder_fuzz(payload: str) -> None:
    try:
        ChatStreamDecoder().feed(payload)
    except StreamProtocolError:
        pass


# -- never hangs: timeouts, retries, answers that are not a stream --------------------------------


async def test_keep_alive_comments_are_no_progress(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    llm = OpenAILLM(model="keepalive", base_url=f"http://127.0.0.1:{port}/v1", first_token_timeout=0.3)
    t = trio.current_time()
    with pytest.raises(ProviderTimeout, match="sent nothing for 0.3 s"):
        await collect(llm)
    assert trio.current_time() - t < 2  # (bounded: the comments kept coming all along)


async def test_a_stream_that_stalls_midway_times_out(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    llm = OpenAILLM(model="stall", base_url=f"http://127.0.0.1:{port}/v1", chunk_timeout=0.3)
    got: list[object] = []
    with pytest.raises(ProviderTimeout, match="stalled for 0.3 s"):
        async for c in llm.chat(context(), []):
            got.append(c)
    assert got == [TextDelta("Let me think")]


async def test_429_and_5xx_are_retried_before_the_first_token_honouring_retry_after(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    llm = OpenAILLM(model="busy-then-text", base_url=f"http://127.0.0.1:{port}/v1", retry_backoff=0.01)
    chunks = await collect(llm)
    assert "".join(c.text for c in chunks if isinstance(c, TextDelta)) == "Hello there. How can I help?"
    assert len(server.requests) == 3  # 429 (Retry-After: 0), 503, then the answer
    with pytest.raises(ProviderError, match="answered HTTP 503"):
        await collect(OpenAILLM(model="error", base_url=f"http://127.0.0.1:{port}/v1", retry_backoff=0.01, max_retries=1))
    assert len(server.requests) == 5  # tried twice


@pytest.mark.parametrize(("mode", "what"), [("html", "text/html"), ("json", "application/json")])
async def test_a_200_that_is_not_an_event_stream_says_what_came(nursery: trio.Nursery, mode: str, what: str) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    with pytest.raises(ProviderError, match=f"answered 200 with {what}, not an event stream"):
        await collect(OpenAILLM(model=mode, base_url=f"http://127.0.0.1:{port}/v1"))


async def test_max_tokens_temperature_and_extra_body_are_sent(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    await collect(OpenAILLM(model="text", base_url=f"http://127.0.0.1:{port}/v1", temperature=0.2, extra_body={"top_k": 5}))
    body = server.requests[0]["body"]
    assert (body["max_tokens"], body["temperature"], body["top_k"]) == (300, 0.2, 5)


async def test_with_equal_timeouts_a_stall_midway_is_still_called_a_stall(nursery: trio.Nursery) -> None:
    server = FakeOpenAI()
    port = await nursery.start(serve, server)
    llm = OpenAILLM(model="stall", base_url=f"http://127.0.0.1:{port}/v1", first_token_timeout=0.3, chunk_timeout=0.3)
    with pytest.raises(ProviderTimeout, match="stalled for 0.3 s"):
        await collect(llm)
