"""An MCP server for the tests, built with the SDK's own `MCPServer` (FastMCP): run as
``python tests/mcp_test_server.py stdio|http|sse [--log FILE]``. Over HTTP it binds a free
loopback port and prints it (one line) before serving.

Tools: `echo`, `add`, `slow` (sleeps; records its start and whether it was cancelled), `boom`
(raises an unexpected error), `refuse` (a ToolError: an error result), `picture` (image content),
`whoami` (its pid), `where` (its cwd and $TRIOAGENT_TEST), `grow` (adds a tool `extra` and announces the changed list), `events` (what
`slow` recorded). With ``--log FILE``, each event is also appended to FILE (the test reads it
after the server has been killed).
"""

from __future__ import annotations

import os
import socket
import sys

import anyio
from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("trioagent-test", version="1.0")
EVENTS: list[str] = []
LOG = sys.argv[sys.argv.index("--log") + 1] if "--log" in sys.argv else None


def record(event: str) -> None:
    EVENTS.append(event)
    if LOG:
        with open(LOG, "a") as f:
            f.write(event + "\n")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
async def slow(seconds: float) -> str:
    """Wait, then answer."""
    record(f"slow started {seconds}")
    try:
        await anyio.sleep(seconds)
    except BaseException:
        record("slow cancelled")
        raise
    record("slow finished")
    return f"waited {seconds} s"


@server.tool()
def boom() -> str:
    """Fail unexpectedly."""
    raise RuntimeError("database password is hunter2")


@server.tool()
def refuse(account: str) -> str:
    """Refuse, with a reason for the model."""
    raise ToolError(f"no account {account}")


@server.tool()
def picture() -> Image:
    """A tiny PNG."""
    return Image(data=b"\x89PNG\r\n\x1a\n" + bytes(24), format="png")


@server.tool()
def whoami() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def where() -> dict[str, str]:
    """The server's working directory and its TRIOAGENT_TEST variable."""
    return {"cwd": os.getcwd(), "env": os.environ.get("TRIOAGENT_TEST", "")}


@server.tool()
async def grow(ctx: Context) -> str:
    """Add the tool `extra`."""

    def extra(x: int) -> int:
        """One more than x."""
        return x + 1

    server.add_tool(extra)
    await ctx.notify_tools_changed()
    return "grown"


@server.tool()
def events() -> list[str]:
    """What `slow` recorded."""
    return EVENTS


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run()
        return
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # (asyncio sets TCP_NODELAY only then)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    app = server.streamable_http_app(json_response="--json" in sys.argv) if mode == "http" else server.sse_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(sock.getsockname()[1], flush=True)
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
