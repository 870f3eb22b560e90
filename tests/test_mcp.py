"""MCP servers as an agent's tools, against servers no one here wrote: the reference
`mcp-server-time` over stdio, and a server built with the SDK's own `MCPServer`
(tests/mcp_test_server.py) over stdio, streamable HTTP and SSE on loopback.

Conversations run in virtual time. An MCP request holds virtual time still while it is on the
wire (`_compute.outside_world`), so a call takes no virtual time and the times stay exact. The
tests of what happens *during* a slow call (a barge-in, a timeout, a server killed) let virtual
time run on instead (`racing`), as it would on the real clock while a slow server thinks.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import trioagent.mcp
from trioagent import Agent, ChatContext, FunctionCallOutput, MCPServerError, MCPServerHTTP, MCPServerStdio, function_tool
from trioagent._compute import outside_world
from trioagent.events import ErrorEvent, FunctionToolsExecuted
from trioagent.mcp import MCPManager, result_to_tool_result
from trioagent.testing import ToolCall, silence, speech

from .kit import about, all_tasks, make_session

pytest.importorskip("mcp")
from mcp import types  # noqa: E402

SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
TIME_SERVER = MCPServerStdio(sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"], name="time")


def children() -> set[int]:
    """The live child processes of this process (from /proc)."""
    me = os.getpid()
    out = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me and fields[0] != "Z":
            out.add(int(entry))
    return out


def sdk_server(*args: str, **options: Any) -> MCPServerStdio:
    return MCPServerStdio(sys.executable, [SERVER, "stdio", *args], **options)


@contextlib.contextmanager
def http_server(mode: str = "http", *args: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The test server over HTTP in its own process; yields its URL and the process."""
    proc = subprocess.Popen([sys.executable, SERVER, mode, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/{'mcp' if mode == 'http' else 'sse'}", proc
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(params=["stdio", "http"])
def kind(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Make a server of the SDK's: over stdio, or over streamable HTTP (one process for the
    test, started here). Yields a function of the server options, with `.pid()` for the
    server's process id (the stdio one: once the session has started it)."""
    if request.param == "stdio":
        before = children()

        def make(**options: Any) -> MCPServerStdio:
            return sdk_server(**options)

        make.pid = lambda: next(iter(children() - before))  # type: ignore[attr-defined]
        yield make
        return
    with http_server() as (url, proc):

        def make_http(**options: Any) -> MCPServerHTTP:
            return MCPServerHTTP(url, **options)

        make_http.pid = lambda: proc.pid  # type: ignore[attr-defined]
        yield make_http


@pytest.fixture
def racing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let virtual time run on while an MCP request is on the wire."""
    monkeypatch.setattr(trioagent.mcp, "_while_calling", contextlib.nullcontext)


def last_output(context: ChatContext) -> FunctionCallOutput:
    return [i for i in context.items if isinstance(i, FunctionCallOutput)][-1]


# -- the reference server ----------------------------------------------------------------------


async def test_the_reference_time_server_answers_a_question_through_a_conversation(autojump_clock: trio.testing.MockClock) -> None:
    agent = Agent("You tell the time.", mcp_servers=[TIME_SERVER])

    def answer(context: ChatContext) -> str:
        data = json.loads(last_output(context).output)
        return f"In Tokyo it is {data['datetime'][11:16]}."

    script: list[Any] = [ToolCall("get_current_time", {"timezone": "Asia/Tokyo"}), answer]
    session, transport, llm, tts = make_session(agent, transcripts=["what time is it in tokyo"], script=script)
    executed: list[FunctionToolsExecuted] = []
    session.on("function_tools_executed", executed.append)
    before = children()
    async with session:
        assert len(children() - before) == 1  # the server runs while the session does
        assert [t.name for t in agent.tools] == ["get_current_time", "convert_time"]
        assert agent.mcp_manager is not None and agent.mcp_manager.connected == ["time"]
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    data = json.loads(executed[0].outputs[0].output)
    assert data["timezone"] == "Asia/Tokyo" and data["datetime"].endswith("+09:00")
    assert tts.texts == [f"In Tokyo it is {data['datetime'][11:16]}."]
    assert llm.tools_seen[0] == ["get_current_time", "convert_time"]
    schema = agent.mcp_manager.servers[0]
    assert schema.label == "time"
    # The call took no virtual time: the answer starts as the turn ends (1.0 + 0.5 endpointing).
    assert transport.voice_segments()[0][0] == about(1.5)
    assert children() == before  # stopped and reaped
    assert agent.tools == []


async def test_a_time_server_error_result_is_what_the_llm_reads(autojump_clock: trio.testing.MockClock) -> None:
    agent = Agent("You tell the time.", mcp_servers=[TIME_SERVER])
    script: list[Any] = [ToolCall("get_current_time", {"timezone": "Mars/Olympus"}), "I do not know that place."]
    session, transport, llm, tts = make_session(agent, transcripts=["time on mars"], script=script)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    output = last_output(agent.chat_context)
    assert output.is_error and "Invalid timezone" in output.output and output.output.startswith("error: ")
    assert tts.texts == ["I do not know that place."]


# -- the SDK's own server: streamable HTTP, SSE, stdio ---------------------------------------------


async def test_http_tools_are_listed_with_their_schemas_and_called(autojump_clock: trio.testing.MockClock) -> None:
    with http_server() as (url, _):
        agent = Agent("Test.", mcp_servers=[MCPServerHTTP(url, headers={"X-Test": "1"}, prefix="t")])
        script: list[Any] = [
            [ToolCall("t_add", {"a": 2, "b": 3}), ToolCall("t_echo", {"text": "hi"}), ToolCall("t_picture", {})],
            "Five.",
        ]
        session, transport, llm, _ = make_session(agent, transcripts=["add two and three"], script=script)
        async with session:
            add = agent.tool("t_add")
            assert add is not None and add.parameters["required"] == ["a", "b"]
            assert add.parameters["properties"]["a"]["type"] == "integer"
            assert add.description == "Add two whole numbers."
            assert add.schema()["function"]["name"] == "t_add"
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(3.0))
        outputs = [i for i in agent.chat_context.items if isinstance(i, FunctionCallOutput)]
        assert [(o.name, o.output, o.is_error) for o in outputs] == [
            ("t_add", "5", False),
            ("t_echo", "echo: hi", False),
            ("t_picture", "[image: image/png, 32 bytes]", False),
        ]
        assert "t_whoami" in llm.tools_seen[0]


async def test_a_stdio_server_gets_its_environment_and_directory(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    manager = MCPManager([sdk_server(env={"TRIOAGENT_TEST": "yes"}, cwd=tmp_path)])
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        where = next(t for t in manager.tools if t.name == "where")
        with outside_world():
            assert (await where.call({})).value == {"cwd": str(tmp_path), "env": "yes"}
        await manager.aclose()


async def test_sse_servers_work_too(autojump_clock: trio.testing.MockClock) -> None:
    with http_server("sse") as (url, _):
        manager = MCPManager([MCPServerHTTP(url, transport="sse")])
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            tool = next(t for t in manager.tools if t.name == "add")
            assert (await tool.call('{"a": 40, "b": 2}')).output == "42"
            await manager.aclose()
        assert manager.tools == []


async def test_errors_of_every_kind_reach_the_llm_as_tool_errors_and_the_session_goes_on(autojump_clock: trio.testing.MockClock, kind: Any) -> None:
    agent = Agent("Test.", mcp_servers=[kind()])
    script: list[Any] = [
        [ToolCall("refuse", {"account": "42"}), ToolCall("boom", {}), ToolCall("add", {"a": "two"}), ToolCall("echo", "not json")],
        "Sorry.",
        "Hello again.",
    ]
    session, transport, _, tts = make_session(agent, transcripts=["one", "two"], script=script)
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    outputs = [(o.name, o.output) for o in agent.chat_context.items if isinstance(o, FunctionCallOutput)]
    assert outputs == [
        ("refuse", "error: Error executing tool refuse: no account 42"),  # the server's words for the model
        ("boom", "error: Error executing tool boom"),  # the server keeps the exception to itself
        ("add", "error: invalid arguments for add: arguments: 'b' is a required property; a: 'two' is not of type 'integer'"),
        ("echo", "error: invalid arguments for echo: arguments are not valid JSON: Expecting value at position 0"),
    ]
    assert tts.texts == ["Sorry.", "Hello again."]


async def test_list_changed_refreshes_the_agents_tools(autojump_clock: trio.testing.MockClock) -> None:
    with http_server() as (url, _):
        agent = Agent("Test.", mcp_servers=[MCPServerHTTP(url)])
        session, transport, llm, _ = make_session(agent, transcripts=["grow", "use it"], script=[ToolCall("grow", {}), "Grown.", ToolCall("extra", {"x": 41}), "42."])
        async with session:
            assert "extra" not in [t.name for t in agent.tools]
            assert agent.mcp_manager is not None
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
            with outside_world():  # (the announcement comes in real time)
                with trio.fail_after(10):
                    while "extra" not in [t.name for t in agent.tools]:
                        await agent.mcp_manager.tools_changed()
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(2.0))
        assert "extra" not in llm.tools_seen[0] and "extra" in llm.tools_seen[2]
        assert last_output(agent.chat_context).output == "42"


# -- during a call: barge-in, timeout, a server killed ---------------------------------------------


async def test_a_barge_in_cancels_a_slow_tool_call_on_the_server(autojump_clock: trio.testing.MockClock, racing: None, kind: Any) -> None:
    agent = Agent("Test.", mcp_servers=[kind(timeout=1000)])
    script: list[Any] = [ToolCall("slow", {"seconds": 60}), "Merged answer."]
    session, transport, llm, tts = make_session(agent, transcripts=["wait a minute", "never mind"], script=script)
    async with session:
        await transport.send_user_audio(speech(1.0))  # turn ends at 1.5; the call starts
        await transport.send_user_audio(silence(1.0))
        await transport.send_user_audio(speech(1.0))  # 2.0 .. 3.0: holds, then replaces the reply
        await transport.send_user_audio(silence(3.0))
        events = agent.tool("events")
        assert events is not None
        with outside_world():
            recorded = (await events.call({})).value
    assert recorded == {"result": ["slow started 60.0", "slow cancelled"]}
    assert tts.texts == ["Merged answer."]
    assert len(llm.calls) == 2 and not any(isinstance(i, FunctionCallOutput) and i.name == "slow" and not i.is_error for i in agent.chat_context.items)


async def test_a_call_that_takes_too_long_is_a_timeout_for_the_llm(autojump_clock: trio.testing.MockClock, racing: None) -> None:
    agent = Agent("Test.", mcp_servers=[sdk_server(timeout=2.0)])
    session, transport, _, tts = make_session(agent, transcripts=["wait"], script=[ToolCall("slow", {"seconds": 60}), "It timed out."])
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(5.0))
    assert last_output(agent.chat_context).output == "error: the slow tool did not answer within 2 s"
    assert tts.texts == ["It timed out."]
    assert transport.voice_segments()[0][0] == about(3.5)  # 1.5 + the 2 s timeout


async def test_a_server_killed_mid_call_is_a_tool_error_and_the_session_goes_on(
    autojump_clock: trio.testing.MockClock, racing: None, caplog: pytest.LogCaptureFixture, kind: Any
) -> None:
    agent = Agent("Test.", mcp_servers=[kind(timeout=1000)])
    script: list[Any] = [ToolCall("slow", {"seconds": 60}), "It broke.", ToolCall("echo", {"text": "x"}), "Still broken."]
    session, transport, _, tts = make_session(agent, transcripts=["wait", "again"], script=script)
    before = children()
    async with session:
        pid = kind.pid()

        async def kill_at_two() -> None:
            await trio.sleep_until(2.0)  # (the call started at 1.5)
            os.kill(pid, signal.SIGKILL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_at_two)
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(4.0))
            await transport.send_user_audio(speech(1.0))
            await transport.send_user_audio(silence(4.0))
    outputs = [(o.name, o.output) for o in agent.chat_context.items if isinstance(o, FunctionCallOutput)]
    assert outputs == [
        ("slow", "error: the slow tool is not available: its server has stopped"),
        ("echo", "error: the echo tool is not available: its server is not running"),
    ]
    assert tts.texts == ["It broke.", "Still broken."]
    assert "went away" in caplog.text
    assert children() <= before


# -- starting: failures, timeouts, optional servers, names ------------------------------------------


async def test_a_server_that_cannot_start_is_an_error_naming_it_with_its_stderr() -> None:
    crash = MCPServerStdio(sys.executable, ["-c", "import sys; print('no licence key found', file=sys.stderr); sys.exit(3)"], name="crashy")
    session, *_ = make_session(Agent("Test.", mcp_servers=[crash]))
    with pytest.raises(MCPServerError) as info:
        async with session:
            pass
    assert info.value.server == "crashy"
    message = str(info.value)
    assert message.startswith("MCP server 'crashy' did not start: ")
    assert "no licence key found" in message and info.value.stderr == "no licence key found"
    assert session.closed

    missing = MCPServerStdio("/nonexistent/mcp-server")
    with pytest.raises(MCPServerError, match=r"MCP server 'mcp-server' did not start: FileNotFoundError"):
        async with make_session(Agent("Test.", mcp_servers=[missing]))[0]:
            pass


async def test_a_server_that_never_answers_fails_after_connect_timeout(autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trioagent.mcp, "outside_world", contextlib.nullcontext)  # virtual time runs on meanwhile
    mute = MCPServerStdio(sys.executable, ["-c", "import time; time.sleep(60)"], name="mute", connect_timeout=3)
    before = children()
    session, *_ = make_session(Agent("Test.", mcp_servers=[mute]))
    with pytest.raises(MCPServerError, match="MCP server 'mute' did not start within 3 s"):
        async with session:
            pass
    assert trio.current_time() >= 3
    assert children() == before


async def test_an_optional_server_that_fails_is_skipped_with_a_warning(autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    broken = MCPServerHTTP("http://127.0.0.1:9/mcp", name="nobody", required=False)
    agent = Agent("Test.", mcp_servers=[broken, TIME_SERVER])
    session, *_ = make_session(agent)
    with caplog.at_level(logging.WARNING, logger="trioagent.mcp"):
        async with session:
            assert agent.mcp_manager is not None and agent.mcp_manager.connected == ["time"]
            assert [t.name for t in agent.tools] == ["get_current_time", "convert_time"]
    assert "MCP server 'nobody' did not start" in caplog.text and "optional" in caplog.text


class EchoAgent(Agent):
    @function_tool
    async def echo(self, text: str) -> str:
        """A local echo."""
        return f"local: {text}"


async def test_a_name_clash_is_an_error_and_a_prefix_avoids_it(autojump_clock: trio.testing.MockClock) -> None:
    with pytest.raises(MCPServerError, match=r"offers a tool named 'echo', which the agent already has; give the server a prefix"):
        async with make_session(EchoAgent("Test.", mcp_servers=[sdk_server(name="remote")]))[0]:
            pass
    agent = EchoAgent("Test.", mcp_servers=[sdk_server(prefix="remote")])
    session, transport, _, _ = make_session(agent, transcripts=["echo"], script=[[ToolCall("echo", {"text": "a"}), ToolCall("remote_echo", {"text": "b"})], "Done."])
    async with session:
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
    outputs = [o.output for o in agent.chat_context.items if isinstance(o, FunctionCallOutput)]
    assert outputs == ["local: a", "echo: b"]  # remote_echo is the server's `echo`

    with pytest.raises(MCPServerError, match=r"MCP servers 'a' and 'b' both offer a tool named 'echo'"):
        async with make_session(Agent("Test.", mcp_servers=[sdk_server(name="a"), sdk_server(name="b")]))[0]:
            pass


# -- hand-over and close ----------------------------------------------------------------------------


class Desk(Agent):
    def __init__(self) -> None:
        super().__init__("Front desk.", mcp_servers=[sdk_server(name="desk", prefix="desk")])

    @function_tool
    async def transfer(self) -> Agent:
        """Transfer to the clock agent."""
        return Agent("Clock.", mcp_servers=[TIME_SERVER])


async def test_hand_over_closes_the_old_agents_servers_and_connects_the_new_ones(autojump_clock: trio.testing.MockClock) -> None:
    desk = Desk()
    script: list[Any] = [ToolCall("transfer", {}), ToolCall("get_current_time", {"timezone": "UTC"}), "Noted."]
    session, transport, llm, _ = make_session(desk, transcripts=["transfer me", "what time is it"], script=script)
    before = children()
    async with session:
        (desk_pid,) = children() - before
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
        clock = session.agent
        assert clock is not desk and [t.name for t in clock.tools] == ["get_current_time", "convert_time"]
        (clock_pid,) = children() - before
        assert clock_pid != desk_pid and desk.tools == [desk.own_tools[0]]
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(2.0))
    assert "desk_echo" in llm.tools_seen[0] and "get_current_time" in llm.tools_seen[1]
    assert '"timezone": "UTC"' in last_output(clock.chat_context).output
    assert children() == before


async def test_a_hand_over_to_an_agent_whose_server_fails_ends_the_session_saying_why(autojump_clock: trio.testing.MockClock) -> None:
    class Door(Agent):
        @function_tool
        async def transfer(self) -> Agent:
            """Transfer."""
            return Agent("Broken.", mcp_servers=[MCPServerStdio("/nonexistent/server", name="broken")])

    session, transport, _, _ = make_session(Door("Door."), transcripts=["go"], script=[ToolCall("transfer", {})])
    errors: list[ErrorEvent] = []
    session.on("error", errors.append)
    async with session:
        await transport.send_user_audio(speech(1.0))
        transport.send_user_audio_nowait(silence(1.0))
        await session.wait_closed()
    assert isinstance(session.failure, MCPServerError) and session.failure.server == "broken"
    assert [(e.stage, e.fatal, e.reason) for e in errors] == [("mcp", True, "an MCP server failed")]


async def test_close_leaves_no_task_and_no_process(autojump_clock: trio.testing.MockClock) -> None:
    with http_server() as (url, _):
        agent = Agent("Test.", mcp_servers=[TIME_SERVER, sdk_server(prefix="s"), MCPServerHTTP(url, prefix="h")])
        before_tasks = {id(t) for t in all_tasks()}
        before = children()
        session, *_ = make_session(agent)
        async with session:
            assert len(children() - before) == 2
            assert agent.mcp_manager is not None and len(agent.mcp_manager.connected) == 3
        assert {id(t) for t in all_tasks()} <= before_tasks
        assert children() == before
        # The manager can run again, with fresh connections (an agent handed back to).
        session2, *_ = make_session(agent)
        async with session2:
            assert len(agent.mcp_manager.connected) == 3
        assert children() == before


# -- results as the LLM reads them (no event loop) ----------------------------------------------------


def test_results_of_every_content_type_become_text() -> None:
    png = base64.b64encode(b"x" * 100).decode()
    result = types.CallToolResult(
        content=[
            types.TextContent(type="text", text="first"),
            types.ImageContent(type="image", data=png, mime_type="image/png"),
            types.AudioContent(type="audio", data=png, mime_type="audio/wav"),
            types.EmbeddedResource(type="resource", resource=types.TextResourceContents(uri="file:///a.txt", text="inside")),
            types.EmbeddedResource(type="resource", resource=types.BlobResourceContents(uri="file:///b.bin", blob=png)),
            types.ResourceLink(type="resource_link", name="report", uri="file:///r.pdf"),
        ]
    )
    assert result_to_tool_result(result).output.splitlines() == [
        "first",
        "[image: image/png, 100 bytes]",
        "[audio: audio/wav, 100 bytes]",
        "inside",
        "[resource file:///b.bin: binary, 100 bytes]",
        "[resource link: report file:///r.pdf]",
    ]
    structured = result_to_tool_result(types.CallToolResult(content=[], structured_content={"temp": 21}))
    assert (structured.output, structured.value, structured.is_error) == ('{"temp": 21}', {"temp": 21}, False)
    error = result_to_tool_result(types.CallToolResult(content=[types.TextContent(type="text", text="no such city")], is_error=True))
    assert (error.output, error.is_error) == ("error: no such city", True)
    huge = result_to_tool_result(types.CallToolResult(content=[types.TextContent(type="text", text="y" * 100_000)]))
    assert len(huge.output) < 33_000 and huge.output.endswith("[... cut: the result had 100000 characters]")


def test_server_declarations() -> None:
    assert MCPServerStdio("/usr/bin/python3", ["-m", "mcp_server_time"]).label == "python3 -m mcp_server_time"
    assert MCPServerHTTP("https://user:secret@example.com/mcp?key=1").label == "https://example.com/mcp"
    with pytest.raises(ValueError, match="transport must be"):
        MCPServerHTTP("http://x", transport="websocket")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mcp_servers takes"):
        Agent(mcp_servers=["python -m server"])  # type: ignore[list-item]
