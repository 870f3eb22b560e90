"""An agent with the reference MCP time server's tools, in a scripted conversation in virtual
time: the caller asks the time in Tokyo, the LLM (scripted) calls the server's
`get_current_time`, and the answer is spoken with what the server returned. Needs the MCP extra
and the server: ``pip install -e '.[mcp]' mcp-server-time``.

Run: python examples/mcp_time.py
"""

from __future__ import annotations

import json
import sys

import trio
import trio.testing

from trioagent import Agent, AgentSession, CascadingPipeline, ChatContext, FunctionCallOutput, MCPServerStdio
from trioagent.testing import MemoryTransport, ScriptedLLM, ScriptedSTT, ToneTTS, ToolCall, silence, speech


def answer(context: ChatContext) -> str:
    """The LLM's second step: read the tool's output."""
    output = [i for i in context.items if isinstance(i, FunctionCallOutput)][-1]
    clock = json.loads(output.output)["datetime"]
    return f"In Tokyo it is {clock[11:16]}."


async def main() -> None:
    agent = Agent("You tell the time anywhere.", mcp_servers=[MCPServerStdio(sys.executable, ["-m", "mcp_server_time"], name="time")])
    llm = ScriptedLLM([ToolCall("get_current_time", {"timezone": "Asia/Tokyo"}), answer])
    transport = MemoryTransport()
    pipeline = CascadingPipeline(stt=ScriptedSTT(["what time is it in tokyo"]), llm=llm, tts=ToneTTS())
    session = AgentSession(agent, pipeline, transport=transport)
    session.on("function_tools_executed", lambda e: print(f"{trio.current_time():5.2f} s  tool {e.calls[0].name} -> {e.outputs[0].output!r}"))
    session.on("agent_speech_started", lambda e: print(f"{trio.current_time():5.2f} s  agent says: {e.text}"))
    async with session:
        print(f"{trio.current_time():5.2f} s  tools: {[t.name for t in agent.tools]}")
        await transport.send_user_audio(speech(1.0))
        await transport.send_user_audio(silence(3.0))
    print(f"{trio.current_time():5.2f} s  closed; the server process has exited")


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
