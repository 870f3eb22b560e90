"""MCP servers as an agent's tools, through the official `mcp` SDK.

How this works: an agent declares its servers (`Agent(mcp_servers=[MCPServerStdio(...),
MCPServerHTTP(...)])`); its `MCPManager` connects them when the agent takes over a session and
disconnects them when it hands over or the session closes. `MCPManager.run` is one task in the
session's nursery; under it each server is one `_Connection` task that enters the SDK's `Client`
(which spawns a stdio server, or opens the HTTP session), lists the tools and then waits, so the
client's own tasks live inside the session too. Cancelling that task is the whole of closing: the
SDK shuts a stdio server down the way the MCP spec says (stdin closed, a grace, SIGTERM to its
process group, then SIGKILL) and reaps it.

Each remote tool becomes an `MCPTool` (a `FunctionTool`) carrying the server's JSON schema. A call
runs `Client.call_tool` in the caller's task, that is inside the reply's cancel scope: a barge-in
cancels the request. Whatever goes wrong in a call (an error result, a timeout, a server that
died) is a tool error the LLM reads; the session goes on. A server that announces
`tools/list_changed` gets its tools listed again.

The `mcp` package is imported only when a server is connected, so declaring servers costs
nothing and the package is an extra (``pip install -e '.[mcp]'``).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import json
import logging
import math
import os
import re
import sys
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from ._compute import outside_world
from .errors import TrioAgentError, sole_error
from .tools import FunctionTool, ToolError, ToolResult, parse_arguments

if TYPE_CHECKING:
    from mcp import Client
    from mcp import types as mcp_types

__all__ = ["MCPManager", "MCPServer", "MCPServerError", "MCPServerHTTP", "MCPServerStdio", "MCPTool", "result_to_tool_result"]

_log = logging.getLogger("trioagent.mcp")

MAX_OUTPUT = 32_000
"""Characters of one tool result the LLM gets; more is cut, with a note saying so."""
_STDERR_LINES = 20
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")  # what OpenAI-style APIs accept in a tool name
_MAX_PAGES = 100


class MCPServerError(TrioAgentError):
    """An MCP server could not be used: it did not start, did not initialise in time, or offers
    a tool whose name another tool of the agent has. `server` names it; `stderr` is the end of
    what a stdio server wrote to its standard error, when there is any."""

    def __init__(self, message: str, *, server: str = "", stderr: str = "") -> None:
        super().__init__(message + (f"\n  its stderr ended with:\n    {stderr.replace(chr(10), chr(10) + '    ')}" if stderr else ""))
        self.server = server
        self.stderr = stderr


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _frozen_mapping(value: Mapping[str, str] | None) -> Mapping[str, str] | None:
    return None if value is None else dict(value)


@attrs.frozen
class MCPServerStdio:
    """An MCP server the agent runs as a subprocess and talks to over its stdin and stdout.

    Args:
        command: the executable (``sys.executable`` for a Python server).
        args: its arguments.
        env: extra environment variables, over a safe default set (PATH, HOME, ...).
        cwd: its working directory.
        name: how messages and logs name it (default: the command line).
        prefix: give its tools the names ``{prefix}_{tool}`` (to avoid clashes).
        required: a server that fails to start fails the session (True), or is skipped with a
            warning (False).
        connect_timeout: seconds to start, initialise and list the tools.
        timeout: seconds one tool call may take before the LLM is told it timed out.
    """

    command: str
    args: Sequence[str] = attrs.field(default=(), converter=_strings)
    env: Mapping[str, str] | None = attrs.field(default=None, converter=_frozen_mapping)
    cwd: str | os.PathLike[str] | None = None
    name: str | None = None
    prefix: str | None = None
    required: bool = True
    connect_timeout: float = 10.0
    timeout: float = 30.0

    @property
    def label(self) -> str:
        """The server's name in messages."""
        if self.name:
            return self.name
        line = " ".join([os.path.basename(self.command), *self.args])
        return line if len(line) <= 80 else line[:77] + "..."


@attrs.frozen
class MCPServerHTTP:
    """An MCP server reached over HTTP: streamable HTTP (the current transport) or, for older
    servers, SSE.

    Args:
        url: its endpoint, e.g. ``http://127.0.0.1:8000/mcp``.
        headers: sent with every request (an ``Authorization`` header, say).
        transport: ``"streamable-http"`` or ``"sse"``.
        name, prefix, required, connect_timeout, timeout: as for `MCPServerStdio`.
    """

    url: str
    headers: Mapping[str, str] = attrs.field(factory=dict, converter=dict)
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    name: str | None = None
    prefix: str | None = None
    required: bool = True
    connect_timeout: float = 10.0
    timeout: float = 30.0

    def __attrs_post_init__(self) -> None:
        if self.transport not in ("streamable-http", "sse"):
            raise ValueError(f"transport must be 'streamable-http' or 'sse', not {self.transport!r}")

    @property
    def label(self) -> str:
        """The server's name in messages (the URL without credentials or query)."""
        return self.name or re.sub(r"//[^/@]*@", "//", self.url.split("?", 1)[0])


MCPServer = MCPServerStdio | MCPServerHTTP


@attrs.define(eq=False)
class MCPTool(FunctionTool):
    """A tool of an MCP server: the LLM sees `name` (prefixed, made safe for LLM APIs), the
    server is called with `remote_name`."""

    remote_name: str = ""
    server: str = ""
    _connection: weakref.ref[_Connection] | None = None
    _validator: Any = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._validator = _validator(self.parameters)  # (once: building one costs about a millisecond)

    def validate(self, arguments: str | dict[str, Any] | None) -> dict[str, Any]:
        """Parse the LLM's arguments and check them against the server's schema.

        Raises:
            ToolError: not a JSON object, or not what the schema allows.
        """
        args = parse_arguments(arguments)
        if not isinstance(args, dict):
            raise ToolError(f"arguments must be a JSON object, got {type(args).__name__}")
        _check_schema(args, self._validator)
        return args

    async def call(self, arguments: str | dict[str, Any] | None) -> ToolResult:
        """Validate the arguments and call the tool on its server, in the current task (a
        checkpoint). Every failure is an error result for the LLM; `trio.Cancelled` propagates."""
        try:
            args = self.validate(arguments)
        except ToolError as exc:
            return ToolResult(f"error: invalid arguments for {self.name}: {exc}", is_error=True)
        connection = self._connection() if self._connection is not None else None
        if connection is None:
            return ToolResult(f"error: the {self.name} tool is not available now", is_error=True)
        return await connection.call(self, args)


def _validator(schema: dict[str, Any]) -> Any:
    """A JSON-schema validator for `schema`, or None (no jsonschema, or a schema it rejects:
    then the server judges the arguments alone)."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:  # (a dependency of mcp)
        return None
    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        return cls(schema)
    except jsonschema.exceptions.SchemaError:
        return None


def _check_schema(args: dict[str, Any], validator: Any) -> None:
    if validator is None:
        return
    errors = sorted(validator.iter_errors(args), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ToolError("; ".join(f"{'/'.join(str(p) for p in e.absolute_path) or 'arguments'}: {e.message}" for e in errors[:3]))


def result_to_tool_result(result: mcp_types.CallToolResult) -> ToolResult:
    """An MCP tool result as the LLM reads it: text as it is, resources' text, a line naming an
    image, audio or binary resource (chat models take no binary in a tool result), structured
    content as JSON when there is nothing else; an error result is an error."""
    from mcp import types

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.ImageContent | types.AudioContent):
            kind = "image" if isinstance(block, types.ImageContent) else "audio"
            parts.append(f"[{kind}: {block.mime_type}, {_decoded_size(block.data)} bytes]")
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri}: {resource.mime_type or 'binary'}, {_decoded_size(resource.blob)} bytes]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource link: {block.name} {block.uri}]")
        else:
            parts.append(f"[{getattr(block, 'type', type(block).__name__)} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, default=str))
    output = "\n".join(parts) or ("failed" if result.is_error else "ok")
    if len(output) > MAX_OUTPUT:
        output = output[:MAX_OUTPUT] + f"\n[... cut: the result had {len(output)} characters]"
    if result.is_error:
        return ToolResult(f"error: {output}", is_error=True)
    value = result.structured_content if result.structured_content is not None else output
    return ToolResult(output, value=value)


def _decoded_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except ValueError:
        return len(data)


@attrs.define(eq=False)
class _StderrTail:
    """The last lines a stdio server wrote to stderr (each also logged at DEBUG), through a pipe
    of our own: the SDK passes the write end to the child."""

    label: str
    lines: collections.deque[str] = attrs.field(factory=lambda: collections.deque(maxlen=_STDERR_LINES))
    _read_fd: int = -1
    writer: Any = None  # the write end, as the text file the SDK wants
    _done: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self._read_fd, write_fd = os.pipe()
        self.writer = os.fdopen(write_fd, "w")

    def close_writer(self) -> None:
        """Our copy of the write end: closed once the child has its own, so EOF means it exited."""
        if not self.writer.closed:
            self.writer.close()

    async def pump(self) -> None:
        stream = trio.lowlevel.FdStream(self._read_fd)
        partial = b""
        try:
            async with stream:
                while chunk := await stream.receive_some(4096):
                    *complete, partial = (partial + chunk).split(b"\n")
                    for raw in complete:
                        self._line(raw)
                    if len(partial) > 4096:
                        self._line(partial)
                        partial = b""
        finally:
            if partial:
                self._line(partial)
            self.close_writer()
            self._done.set()

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip()
        if line:
            self.lines.append(line[:500])
            _log.debug("%s: %s", self.label, line)

    async def tail(self) -> str:
        """What the server wrote last (waits briefly for it to finish writing)."""
        self.close_writer()
        with trio.move_on_after(1.0):
            await self._done.wait()
        return "\n".join(self.lines)


@attrs.define(eq=False)
class _Connection:
    """One server's connection: a task that owns the SDK client (see the module docstring)."""

    server: MCPServer
    _manager: weakref.ref[MCPManager] | None = None
    tools: list[MCPTool] = attrs.field(factory=list)
    down: str | None = None
    """Why the server cannot be used any more (it went away), or None."""
    client: Client | None = None
    _stderr: _StderrTail | None = None
    _refresh: trio.Event = attrs.field(factory=trio.Event)
    _reserved: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return self.server.label

    async def run(self, reserved: Collection[str], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and list the tools within `connect_timeout`, report started, then serve
        until cancelled (closing the client on the way out). A server that goes away later
        only marks its tools unavailable.

        Raises:
            MCPServerError: the server did not start or initialise, or a tool name clashes.
        """
        self._reserved = frozenset(reserved)
        async with trio.open_nursery() as nursery:
            if isinstance(self.server, MCPServerStdio) and sys.platform != "win32":
                self._stderr = _StderrTail(self.label)
                nursery.start_soon(self._stderr.pump)
            try:
                error = await self._connect_and_serve(task_status)
            finally:
                self.client = None
                self.down = self.down or "it was disconnected"
                nursery.cancel_scope.cancel(reason="MCP connection closed")
        if error is not None:
            raise error  # (out here: a nursery would wrap it in an exception group)

    async def _connect_and_serve(self, task_status: trio.TaskStatus[None]) -> MCPServerError | None:
        started = False
        try:
            # One scope for the client's whole life (its tasks nest in it): its deadline is the
            # connect timeout until the tools are listed, then none.
            with trio.CancelScope(deadline=trio.current_time() + self.server.connect_timeout) as life:
                async with contextlib.AsyncExitStack() as stack:
                    with outside_world():
                        try:
                            self.client = await stack.enter_async_context(_ExitInRealTime(self._client()))
                        finally:
                            if self._stderr is not None:
                                self._stderr.close_writer()
                        self.tools = self._wrap(await self._list_tools())
                    life.deadline = math.inf
                    started = True
                    task_status.started()
                    await self._serve()
        except Exception as exc:
            inner = sole_error(exc)
            if isinstance(inner, MCPServerError):
                return inner
            if started:
                self._went_away(_describe(exc))
                return None
            return MCPServerError(
                f"MCP server {self.label!r} did not start: {_describe(exc)}",
                server=self.label,
                stderr=await self._stderr.tail() if self._stderr else "",
            )
        if not started:
            return MCPServerError(
                f"MCP server {self.label!r} did not start within {self.server.connect_timeout:g} s",
                server=self.label,
                stderr=await self._stderr.tail() if self._stderr else "",
            )
        return None

    def _client(self) -> Client:
        from mcp import Client, StdioServerParameters

        server = self.server
        handler = self._on_message
        if isinstance(server, MCPServerStdio):
            cwd = os.fspath(server.cwd) if server.cwd is not None else None
            params = StdioServerParameters(command=server.command, args=list(server.args), env=dict(server.env) if server.env else None, cwd=cwd)
            if self._stderr is None:
                return Client(params, cache=None, message_handler=handler)
            from mcp.client.stdio import stdio_client

            return Client(stdio_client(params, errlog=self._stderr.writer), cache=None, message_handler=handler)
        if server.transport == "sse":
            from mcp.client.sse import sse_client

            return Client(sse_client(server.url, headers=dict(server.headers)), cache=None, message_handler=handler)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers=dict(server.headers), timeout=httpx2.Timeout(30.0, read=300.0))
        return Client(_Owning(streamable_http_client(server.url, http_client=http), http), cache=None, message_handler=handler)

    async def _list_tools(self) -> list[mcp_types.Tool]:
        assert self.client is not None
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await self.client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    def _wrap(self, remote: list[mcp_types.Tool], *, strict: bool = True) -> list[MCPTool]:
        """The server's tools as `MCPTool`s. A name the agent has already is an error at start
        (`strict`); on a later refresh that tool is left out, with an error in the log."""
        out: list[MCPTool] = []
        seen: set[str] = set()
        for tool in remote:
            name = _TOOL_NAME.sub("_", f"{self.server.prefix}_{tool.name}" if self.server.prefix else tool.name)[:64]
            if name in self._reserved or name in seen:
                message = (
                    f"MCP server {self.label!r} offers a tool named {name!r}, which the agent already has; "
                    f"give the server a prefix (e.g. prefix={_suggest_prefix(self.label)!r})"
                )
                if strict:
                    raise MCPServerError(message, server=self.label)
                _log.error("%s; the new tool is left out", message)
                continue
            seen.add(name)
            parameters = dict(tool.input_schema) if tool.input_schema else {}
            parameters.setdefault("type", "object")
            parameters.setdefault("properties", {})
            out.append(
                MCPTool(
                    fn=_remote_only,
                    name=name,
                    description=tool.description or tool.title or "",
                    parameters=parameters,
                    remote_name=tool.name,
                    server=self.label,
                    connection=weakref.ref(self),
                )
            )
        return out

    async def _serve(self) -> None:
        """While connected: list the tools again when the server says they changed."""
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        assert self.client is not None
        capabilities = self.client.server_capabilities.tools
        if capabilities is None or not capabilities.list_changed:
            await trio.sleep_forever()
        async with trio.open_nursery() as nursery:
            if self.client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                nursery.start_soon(self._listen)  # (2026-07-28 servers announce only to listeners)
            while True:
                await self._refresh.wait()
                self._refresh = trio.Event()
                try:
                    with outside_world():
                        remote = await self._list_tools()
                except Exception as exc:
                    _log.warning("MCP server %r: listing its changed tools failed: %s", self.label, _describe(exc))
                    continue
                self.tools = self._wrap(remote, strict=False)
                _log.info("MCP server %r: tools now %s", self.label, [t.name for t in self.tools])
                manager = self._manager() if self._manager is not None else None
                if manager is not None:
                    manager._announce_change()

    async def _listen(self) -> None:
        from mcp.client.subscriptions import SubscriptionLost

        assert self.client is not None
        try:
            async with self.client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._refresh.set()
        except SubscriptionLost:
            self._went_away("its event stream broke off")
        except Exception as exc:
            _log.warning("MCP server %r: cannot listen for tool changes: %s", self.label, _describe(exc))

    async def _on_message(self, message: Any) -> None:
        from mcp import types

        if isinstance(message, types.ToolListChangedNotification):
            self._refresh.set()
        elif isinstance(message, Exception):
            _log.warning("MCP server %r: %s", self.label, _describe(message))
        await trio.lowlevel.checkpoint()

    def _went_away(self, why: str) -> None:
        if self.down is None:
            self.down = why
            _log.warning("MCP server %r went away (%s); its tools now answer with an error", self.label, why)

    async def call(self, tool: MCPTool, arguments: dict[str, Any]) -> ToolResult:
        """Call `tool` with checked `arguments`; see `MCPTool.call`."""
        from mcp import MCPError
        from mcp_types import CONNECTION_CLOSED

        client = self.client
        if client is None or self.down is not None:
            return ToolResult(f"error: the {tool.name} tool is not available: its server is not running", is_error=True)
        with trio.move_on_after(self.server.timeout) as bound, _while_calling():
            try:
                result = await client.call_tool(tool.remote_name, arguments)
            except MCPError as exc:
                if exc.code == CONNECTION_CLOSED:
                    self._went_away("the connection closed")
                    return ToolResult(f"error: the {tool.name} tool is not available: its server has stopped", is_error=True)
                return ToolResult(f"error: {exc.message}", is_error=True)
            except Exception as exc:
                _log.warning("MCP tool %s on %r failed: %s", tool.remote_name, self.label, _describe(exc), exc_info=True)
                return ToolResult(f"error: the {tool.name} tool failed; it may work if tried again later", is_error=True)
        if bound.cancelled_caught:
            return ToolResult(f"error: the {tool.name} tool did not answer within {self.server.timeout:g} s", is_error=True)
        from mcp import types

        if not isinstance(result, types.CallToolResult):  # (an extension's result type)
            return ToolResult(f"error: the {tool.name} tool answered with something other than a tool result", is_error=True)
        return result_to_tool_result(result)


_while_calling = outside_world
"""What holds virtual time during a call (tests replace it to let virtual time run on, as the
real clock would while a slow server thinks)."""


def _remote_only(**_: Any) -> None:
    raise ToolError("an MCP tool runs on its server")  # (MCPTool.call never calls fn)


def _suggest_prefix(label: str) -> str:
    word = re.sub(r"[^a-z0-9]+", "_", label.lower().rsplit("/", 1)[-1].split()[-1]).strip("_")
    return word[:20] or "server"


def _describe(exc: BaseException) -> str:
    """One line for an exception from the SDK (the one error under its task groups)."""
    exc = sole_error(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if type(exc).__name__ == "MCPError" and getattr(exc, "code", None) == -32000:
        text = "the connection closed (the server exited?)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@attrs.define(eq=False)
class _ExitInRealTime:
    """Closes the client with virtual time running at the real rate: the SDK's shutdown of a
    stdio server polls for its exit and has grace periods, which should mean real seconds (so a
    server that exits when its stdin closes is not killed for being slow in virtual time)."""

    client: Client

    async def __aenter__(self) -> Client:
        return await self.client.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        with outside_world(real_time=True):
            await self.client.__aexit__(*exc)


@attrs.define(eq=False)
class _Owning:
    """A transport that also closes the HTTP client it was given (the SDK leaves a client it did
    not create open)."""

    transport: contextlib.AbstractAsyncContextManager[Any]
    http: Any

    async def __aenter__(self) -> Any:
        await self.http.__aenter__()
        try:
            return await self.transport.__aenter__()
        except BaseException:
            await self.http.aclose()
            raise

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.transport.__aexit__(*exc)
        finally:
            with trio.CancelScope(shield=True):
                await self.http.aclose()


class MCPManager:
    """An agent's MCP servers, connected while the agent runs in a session (`Agent.mcp_manager`).

    `tools` is every connected server's tools, in the order the servers were given. The session
    runs `run` in its nursery when the agent takes over and `aclose` when it hands over or the
    session closes; a manager can be run again after that (fresh connections).
    """

    def __init__(self, servers: Sequence[MCPServer]) -> None:
        for server in servers:
            if not isinstance(server, MCPServerStdio | MCPServerHTTP):
                raise TypeError(f"mcp_servers takes MCPServerStdio and MCPServerHTTP, not {type(server).__name__}")
        self.servers: tuple[MCPServer, ...] = tuple(servers)
        self._connections: list[_Connection] = []
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()
        self._done.set()
        self._changed = trio.Event()

    @property
    def tools(self) -> list[FunctionTool]:
        """The tools of the connected servers (empty when not running)."""
        return [tool for connection in self._connections for tool in connection.tools]

    @property
    def connected(self) -> list[str]:
        """The names of the servers connected now."""
        return [c.label for c in self._connections if c.client is not None and c.down is None]

    async def tools_changed(self) -> None:
        """Wait until a server's tools change (it announced it and they were listed again)."""
        await self._changed.wait()

    def _announce_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def run(self, reserved: Collection[str] = (), *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect every server at once, report started when all are connected (or skipped),
        then keep them until cancelled or `aclose()`.

        Args:
            reserved: tool names the agent has already (its own tools).

        Raises:
            MCPServerError: a required server failed to start, or two tools share a name.
            RuntimeError: the manager is running already.
        """
        if not self._done.is_set():
            raise RuntimeError("this MCPManager is running already")
        self._done = trio.Event()
        error: MCPServerError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                error = await self._connect_all(nursery, reserved)
                if error is None:
                    task_status.started()
                    await trio.sleep_forever()
                nursery.cancel_scope.cancel(reason="an MCP server failed to start")
        finally:
            self._connections = []
            self._scope = None
            self._done.set()
        if error is not None:
            raise error  # (out here: a nursery would wrap it in an exception group)

    async def _connect_all(self, nursery: trio.Nursery, reserved: Collection[str]) -> MCPServerError | None:
        connections = [_Connection(server, weakref.ref(self)) for server in self.servers]
        failures: dict[int, MCPServerError] = {}

        async def start(i: int, connection: _Connection) -> None:
            try:
                await nursery.start(connection.run, reserved)
            except MCPServerError as exc:
                failures[i] = exc

        async with trio.open_nursery() as starting:
            for i, connection in enumerate(connections):
                starting.start_soon(start, i, connection)
        required = [failures[i] for i in sorted(failures) if connections[i].server.required]
        if len(required) == 1:
            return required[0]
        if required:
            return MCPServerError("; ".join(str(e) for e in required), server=", ".join(e.server for e in required))
        for i in sorted(failures):
            _log.warning("%s; it is optional (required=False), so the agent goes on without it", failures[i])
        self._connections = [c for i, c in enumerate(connections) if i not in failures]
        return _clash(self._connections)

    async def aclose(self) -> None:
        """Disconnect every server (stdio servers are stopped and reaped) and wait until done.
        Idempotent. A checkpoint."""
        self.close_nowait()
        await self._done.wait()

    def close_nowait(self) -> None:
        """Start disconnecting every server; the tools go at once, the shutdown (up to a few
        seconds for a stdio server that does not exit when asked) goes on in the background."""
        if self._scope is not None:
            self._scope.cancel(reason="MCP servers closing")
        self._connections = []


def _clash(connections: list[_Connection]) -> MCPServerError | None:
    """An error if two servers offer tools of the same name."""
    owner: dict[str, str] = {}
    for connection in connections:
        for tool in connection.tools:
            if tool.name in owner:
                return MCPServerError(
                    f"MCP servers {owner[tool.name]!r} and {connection.label!r} both offer a tool named {tool.name!r}; "
                    f"give one of them a prefix (e.g. prefix={_suggest_prefix(connection.label)!r})",
                    server=connection.label,
                )
            owner[tool.name] = connection.label
    return None
