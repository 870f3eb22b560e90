"""What an MCP tool call adds, in real time: the same `echo` tool called as a local
`FunctionTool`, and as an MCP tool over stdio and over streamable HTTP on loopback (the test
server, tests/mcp_test_server.py, built with the SDK's own `MCPServer`; and the reference
`mcp-server-time` over stdio). Also the start-up: connecting, initialising and listing the tools.

Each tool is called N times one after another (after 5 warm-up calls) through `tool.call()`,
exactly as the pipeline calls it; the SDK's own `Client.call_tool` is timed too, to show what
trioagent's wrapper (argument check, result conversion) adds on top.

Run: python bench/mcp_tools.py [N]  (not mcp.py: that name would hide the mcp package)   (default 100)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from _common import machine, percentile
from trioagent import FunctionTool
from trioagent.mcp import MCPManager, MCPServer, MCPServerHTTP, MCPServerStdio

ROOT = Path(__file__).resolve().parents[1]
SERVER = str(ROOT / "tests" / "mcp_test_server.py")


def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


async def timed(n: int, call: Any) -> list[float]:
    for _ in range(5):
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


def row(label: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{label:<44} median {statistics.median(ms):7.3f} ms   p99 {percentile(ms, 99):7.3f} ms")


async def bench_server(label: str, server: MCPServer, tool: str, args: dict[str, Any], n: int) -> None:
    manager = MCPManager([server])
    async with trio.open_nursery() as nursery:
        t = time.perf_counter()
        await nursery.start(manager.run)
        start = time.perf_counter() - t
        mcp_tool = next(x for x in manager.tools if x.name == tool)
        row(f"{label}: tool.call()", await timed(n, lambda: mcp_tool.call(args)))
        client = manager._connections[0].client
        assert client is not None
        row(f"{label}: SDK Client.call_tool()", await timed(n, lambda: client.call_tool(tool, args)))
        print(f"{label}: start-up (spawn/connect, initialise, list tools): {start * 1000:.0f} ms")
        t = time.perf_counter()
        await manager.aclose()
        print(f"{label}: close: {(time.perf_counter() - t) * 1000:.0f} ms")


async def main(n: int) -> None:
    print(machine())
    print(f"{n} calls each, one after another\n")
    local = FunctionTool.from_function(echo)
    row("local FunctionTool: tool.call()", await timed(n, lambda: local.call({"text": "hi"})))
    await bench_server("stdio (SDK MCPServer)", MCPServerStdio(sys.executable, [SERVER, "stdio"]), "echo", {"text": "hi"}, n)
    proc = subprocess.Popen([sys.executable, SERVER, "http"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        await bench_server("streamable HTTP (SDK MCPServer)", MCPServerHTTP(f"http://127.0.0.1:{port}/mcp"), "echo", {"text": "hi"}, n)
    finally:
        proc.kill()
        proc.wait()
    time_server = MCPServerStdio(sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"])
    await bench_server("stdio (mcp-server-time)", time_server, "get_current_time", {"timezone": "Asia/Tokyo"}, n)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 100)
