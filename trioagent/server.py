"""`serve()`: many sessions behind one WebSocket port, for browsers and Twilio.

How this works: one listener; each connection's HTTP request head is read with h11. ``GET /``
serves the web page; ``/ws`` (browser protocol) and ``/twilio`` (Media Streams) are handed to
a `ServerWebSocket` (wsproto over the stream, driven by the session's own tasks). Origin, token and
capacity are checked before any session starts. Every connection runs in its own task, and
everything that goes wrong in it (bad input, a provider failing) ends that connection only, with
a close code and a reason. Sessions share `tick_phases` `TickClock`s, evenly out of phase (the
mixing work of many sessions spread over the frame period). On shutdown the server stops
accepting, lets running sessions finish for `grace` seconds, then closes them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import errno
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio

from ._proto import browser as bp
from .agent import Agent
from .audio.mixer import TickClock
from .auth import TokenError, verify_token
from .errors import CloseCode, ProtocolError
from .mcp import MCPServerError
from .observe import ServerMetrics, metrics_available
from .pipeline.base import Pipeline
from .recording import record
from .session import AgentSession
from .transports._wire import ConnectionClosed, HandshakeFailed, ReadPoller, ServerWebSocket
from .transports.websocket import BrowserTransport, RealtimeTransport, TwilioTransport, _WebSocketTransport

__all__ = ["serve", "Server", "AgentFactory"]

_log = logging.getLogger("trioagent.server")
REALTIME_PATHS = ("/v1/realtime", "/realtime")
"""Where OpenAI Realtime clients connect (an SDK given base_url http://host:port/v1 asks for /v1/realtime)."""

# The peer went away (reset, closed, broken pipe): ends that connection, is not an error.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed, h11.ProtocolError)

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


async def accept_patiently(listener: trio.abc.Listener[Any]) -> Any:
    """The next connection. Out of descriptors or memory (trio's listeners raise EMFILE,
    ENFILE, ENOMEM, ENOBUFS), pause 100 ms, logged, and try again instead of ending the
    accept loop and everything it serves; any other error is raised."""
    while True:
        try:
            return await listener.accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            _log.error("accept: %s; pausing 100 ms", exc)
            await trio.sleep(0.1)

AgentFactory = Callable[[], "tuple[Agent, Pipeline] | Awaitable[tuple[Agent, Pipeline]]"]
"""Makes the agent and pipeline of one new session (sync or async)."""

class _CloseWith(Exception):
    """End this connection with a close code and reason (not an error of the server's)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@attrs.define(eq=False)
class _Connection:
    """One accepted WebSocket connection, from its handshake to its close."""

    ws: ServerWebSocket
    session: AgentSession | None = None
    # The wait before a session runs (hello or start, the agent factory): a drain cancels it.
    starting: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    drained: bool = False
    counted: bool = False  # holds a session slot (from its hello on)


@attrs.define(eq=False)
class Server:
    """A running `serve()`: its address, its counters, and `shutdown()`.

    Every wait on a peer is bounded: the request head and the WebSocket handshake and the hello
    (`hello_timeout`), the agent factory (`factory_timeout`), each close handshake
    (`close_timeout`, after which the TCP connection is dropped). A session's slot is free as
    soon as the session ends, whatever the peer does with the close frame; a slot is taken only
    by a hello (or Twilio's start) with its token. Bounded too is the number of connections not
    yet sessions (request head, handshake, hello under way: `max_pending`): beyond it, each new
    connection drops the one that has waited longest, so a flood of connections that send
    nothing, or stop after the handshake, costs each a file descriptor for a moment, not the
    server its callers (a caller's hello comes in milliseconds; the flood's are the oldest).
    """

    factory: AgentFactory
    secret: str | None = None
    allowed_origins: frozenset[str] | None = None
    max_sessions: int = 200
    max_message_size: int = 64 * 1024
    hello_timeout: float = 10.0
    factory_timeout: float = 10.0
    grace: float = 10.0
    close_timeout: float = 2.0
    max_pending: int = 1000
    on_session: Callable[[AgentSession], None] | None = None
    on_load_change: Callable[[], None] | None = None
    """Called (not a checkpoint) whenever `active` or `pending` changes: a ``serve --workers``
    worker reports its load to the supervisor then."""
    record_dir: str | None = None
    port: int = 0
    active: int = 0
    sessions_started: int = 0
    refused: dict[str, int] = attrs.field(factory=dict)
    tick_phases: int = 4
    _clocks: dict[TickClock, int] = attrs.field(init=False, factory=dict)  # clock -> sessions on it
    _poller: ReadPoller | None = attrs.field(init=False, default=None)  # reads the WebSocket connections (Linux)
    _live: list[_Connection] = attrs.field(factory=list)
    _open: int = attrs.field(init=False, default=0)  # connections with a session or still closing
    # Accepted, not yet sessions (request head, handshake, hello), oldest first: each one's
    # scope, cancelled to drop it.
    _pending: dict[trio.CancelScope, None] = attrs.field(init=False, factory=dict)
    _dropped_at: float = attrs.field(init=False, default=-float("inf"))  # the last log of a drop
    _shutdown: trio.Event = attrs.field(factory=trio.Event)
    _idle: trio.Event = attrs.field(factory=trio.Event)
    metrics: ServerMetrics | None = attrs.field(init=False, default=None)
    """The Prometheus metrics (`GET /metrics`), when prometheus-client is installed."""

    @property
    def ready(self) -> bool:
        """Takes new sessions (`GET /readyz`): not draining and below `max_sessions`."""
        return not self._shutdown.is_set() and self.active < self.max_sessions

    @property
    def pending(self) -> int:
        """Connections not yet sessions: request head, handshake or hello under way."""
        return len(self._pending)

    @property
    def transports(self) -> list[_WebSocketTransport]:
        """The transports of the sessions running now, oldest first."""
        return [c.session.transport for c in self._live if c.session is not None and isinstance(c.session.transport, _WebSocketTransport)]

    def shutdown(self) -> None:
        """Stop accepting; running sessions get `grace` seconds to finish. Not a checkpoint."""
        self._shutdown.set()

    def _refuse(self, why: str) -> None:
        self.refused[why] = self.refused.get(why, 0) + 1

    # -- serving -------------------------------------------------------------------------------
    async def run(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        listeners: Sequence[trio.abc.Listener[Any]] | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until `shutdown()` (then drain) or until cancelled.

        Args:
            listeners: serve these instead of opening TCP listeners on host and port (any trio
                `Listener` of byte streams, e.g. an in-memory one in tests).
        """
        if listeners is None:
            tcp = await trio.open_tcp_listeners(port, host=host)
            self.port = tcp[0].socket.getsockname()[1]
            listeners = list(tcp)
        if metrics_available():
            self.metrics = ServerMetrics(lambda: self.active)
        async with trio.open_nursery() as sessions:
            if self.metrics is not None:
                await sessions.start(self.metrics.measure_loop_lag)
            # A few shared clocks, evenly out of phase: each session joins the least used, so the
            # mixing work of many sessions is spread over the 20 ms instead of landing at once.
            for j in range(max(1, self.tick_phases)):
                clock = TickClock(phase=j / max(1, self.tick_phases))
                self._clocks[clock] = 0
                await sessions.start(clock.run)
            if ReadPoller.available():
                self._poller = ReadPoller()
                await sessions.start(self._poller.run)
            async with trio.open_nursery() as accepting:
                for listener in listeners:
                    accepting.start_soon(self._accept, listener, sessions)
                task_status.started(self.port)
                await self._shutdown.wait()
                accepting.cancel_scope.cancel()  # stop accepting: close the listeners
            _log.info("draining %d session(s) for up to %.1f s", self.active, self.grace)
            with trio.move_on_after(self.grace):
                await self._wait_idle()
            if self.active:
                _log.info("grace period over: closing %d session(s)", self.active)
                async with trio.open_nursery() as closing:
                    for conn in self._live:
                        conn.drained = True
                        conn.starting.cancel()
                        if conn.session is not None:
                            closing.start_soon(conn.session.close)
            with trio.move_on_after(self.close_timeout + 1.0):
                await self._wait_idle(closing=True)  # each sends its close frame (1001), bounded
            sessions.cancel_scope.cancel()

    async def _wait_idle(self, closing: bool = False) -> None:
        """Until no session runs (with `closing`: until no connection is still closing either)."""
        while self.active or self._pending or (closing and self._open):
            self._idle = trio.Event()
            await self._idle.wait()

    async def _accept(self, listener: trio.abc.Listener[Any], sessions: trio.Nursery) -> None:
        # Our own accept loop, not trio.serve_listeners: that closes each stream when its
        # handler returns, and connections must live in the sessions nursery so that
        # draining can outlive the listeners.
        async with listener:
            while True:
                stream = await accept_patiently(listener)
                # Pending from the moment it is accepted, not from when its task first runs: a
                # worker's report (sessions + pending, connections taken) is then never between.
                waiting = trio.CancelScope()  # cancelled to drop it while pending (until its hello)
                self._pending[waiting] = None
                if len(self._pending) > self.max_pending:
                    self._drop_oldest()
                self._load_changed()
                sessions.start_soon(self._handle, stream, waiting)

    async def _handle(self, stream: trio.abc.Stream, waiting: trio.CancelScope) -> None:
        # A connection accepted before a drain began is served (a worker's supervisor handed it
        # over: refusing it would refuse a call during a rolling restart); the drain waits for
        # it as for a session.

        def arrived() -> None:
            if waiting in self._pending:  # (not dropped meanwhile)
                del self._pending[waiting]
                self._idle.set()
                self._load_changed()

        try:
            with waiting:  # (a drop: the connection closes)
                async with stream:  # whatever happens, the TCP connection is closed at the end
                    routed = None  # (no complete request head in time: just close)
                    with trio.move_on_after(self.hello_timeout):
                        routed = await self._route(stream)
                    if routed is None:
                        return
                    path, query, head = routed
                    ws = None
                    with trio.move_on_after(self.hello_timeout):
                        try:
                            ws = await ServerWebSocket.accept(stream, head, max_message_size=self.max_message_size)
                        except HandshakeFailed as exc:
                            self._refuse("handshake")
                            await self._plain(stream, 400, str(exc).encode())
                    if ws is not None:
                        if self._poller is not None:
                            ws.read_with(self._poller)
                        try:
                            await self._websocket(ws, path, query, arrived)
                        finally:
                            ws.stop_polling()  # (before the stream closes)
        except BaseException as exc:  # noqa: BLE001 - sorted below; nothing escapes to other sessions
            if not isinstance(exc, Exception):
                raise  # cancellation, KeyboardInterrupt
            gone, failed = exc.split(_PEER_GONE) if isinstance(exc, ExceptionGroup) else ((exc, None) if isinstance(exc, _PEER_GONE) else (None, exc))
            if failed is not None:
                _log.error("connection failed", exc_info=failed)
            elif gone is not None:
                _log.debug("peer went away: %r", gone)
        finally:
            arrived()

    def _load_changed(self) -> None:
        if self.on_load_change is not None:
            self.on_load_change()

    def _drop_oldest(self) -> None:
        """Drop the connection that has waited longest for its request, handshake or hello (counted
        in `refused` as "pending"; logged at most once a second, a flood is not a log flood)."""
        oldest = next(iter(self._pending))
        del self._pending[oldest]
        oldest.cancel()
        self._refuse("pending")
        self._idle.set()
        now = trio.current_time()
        if now - self._dropped_at >= 1.0:
            self._dropped_at = now
            _log.warning(
                "over %d connections without a request, handshake or hello: dropped the oldest (%d so far)", self.max_pending, self.refused["pending"]
            )

    async def _route(self, stream: trio.abc.Stream) -> tuple[str, dict[str, str], bytes] | None:
        """Read the request head and answer every plain-HTTP case here (the page, errors).
        Returns the WebSocket path, query and the bytes read, when it is a valid upgrade."""
        try:
            request, head = await self._read_request(stream)
        except h11.RemoteProtocolError:
            await self._plain(stream, 400, b"bad request")
            return None
        if request is None:
            return None
        path = urlsplit(request.target.decode("latin-1"))
        query = {k: v[0] for k, v in parse_qs(path.query).items()}
        headers = {k.lower(): v for k, v in request.headers}  # (h11 gives lower-case names)
        upgrade = b"websocket" in _tokens(headers.get(b"upgrade", b""))
        if path.path == "/" and not upgrade:
            if request.method in (b"GET", b"HEAD"):
                await self._send_page(stream, head_only=request.method == b"HEAD")
            else:
                await self._plain(stream, 405, b"method not allowed", extra=[("allow", "GET, HEAD")])
            return None
        if path.path in ("/healthz", "/readyz", "/metrics") and not upgrade:
            await self._probe(stream, request, path.path, query, headers)
            return None
        if path.path not in ("/ws", "/twilio", *REALTIME_PATHS):
            await self._plain(stream, 404, b"not found")
            return None
        problem = _handshake_problem(request.method, headers, upgrade)
        if problem is not None:
            status, reason = problem
            self._refuse("handshake")
            extra = [("sec-websocket-version", "13"), ("upgrade", "websocket")] if status == 426 else []
            await self._plain(stream, status, reason.encode(), extra=extra)
            return None
        if path.path == "/ws" and self.allowed_origins is not None and _origin(headers) not in self.allowed_origins:
            self._refuse("origin")
            await self._plain(stream, 403, b"origin not allowed")
            return None
        bearer = headers.get(b"authorization", b"")
        if path.path in REALTIME_PATHS and bearer[:7].lower() == b"bearer ":
            query["token"] = bearer[7:].decode("latin-1").strip()  # (Realtime clients send the key so)
        return path.path, query, head

    async def _probe(self, stream: trio.abc.Stream, request: h11.Request, path: str, query: dict[str, str], headers: dict[bytes, bytes]) -> None:
        """``/healthz`` (alive), ``/readyz`` (503 while draining or full), ``/metrics``
        (Prometheus text; with a secret, a token as a Bearer header or ``?token=``)."""
        head_only = request.method == b"HEAD"
        if request.method not in (b"GET", b"HEAD"):
            await self._plain(stream, 405, b"method not allowed", extra=[("allow", "GET, HEAD")])
        elif path == "/healthz":
            await self._plain(stream, 200, b"ok\n", head_only=head_only)
        elif path == "/readyz":
            if self.ready:
                await self._plain(stream, 200, b"ready\n", head_only=head_only)
            else:
                await self._plain(stream, 503, b"draining\n" if self._shutdown.is_set() else b"full\n", head_only=head_only)
        elif self.metrics is None:
            await self._plain(stream, 501, b"metrics need prometheus-client: pip install -e '.[metrics]'\n")
        else:
            bearer = headers.get(b"authorization", b"")
            token = bearer[7:].decode("latin-1").strip() if bearer[:7].lower() == b"bearer " else query.get("token")
            try:
                self._check_token(token)
            except TokenError as exc:
                await self._plain(stream, 401, f"unauthorized: {exc}\n".encode())
                return
            body, kind = self.metrics.render()
            await self._plain(stream, 200, body, kind, head_only=head_only)

    async def _read_request(self, stream: trio.abc.Stream) -> tuple[h11.Request | None, bytes]:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        head = b""
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return event, head
            if event is h11.NEED_DATA:
                data = bytes(await stream.receive_some(4096))
                if not data:
                    return None, head
                head += data
                conn.receive_data(data)
            else:
                return None, head

    async def _plain(
        self, stream: trio.abc.Stream, status: int, body: bytes, content_type: str = "text/plain", *, head_only: bool = False, extra: list[tuple[str, str]] | None = None
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" if head_only else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
        headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close"), *(extra or [])]
        out = conn.send(h11.Response(status_code=status, headers=headers))
        if not head_only:
            out += conn.send(h11.Data(data=body))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)

    async def _send_page(self, stream: trio.abc.Stream, *, head_only: bool = False) -> None:
        page = resources.files("trioagent.web").joinpath("index.html").read_bytes()
        await self._plain(stream, 200, page, "text/html; charset=utf-8", head_only=head_only)

    async def _websocket(self, ws: ServerWebSocket, path: str, query: dict[str, str], arrived: Callable[[], None]) -> None:
        if self.active >= self.max_sessions:
            arrived()
            self._refuse("capacity")
            await self._close(ws, CloseCode.TRY_AGAIN_LATER, "server full: too many sessions")
            return
        conn = _Connection(ws)
        self._live.append(conn)
        self._open += 1
        try:
            try:
                code, reason = await self._run_session(conn, path, query, arrived)
            except ProtocolError as exc:
                self._refuse("protocol")
                code, reason = exc.close_code, _reason(exc)
            except TokenError as exc:
                self._refuse("token")
                code, reason = CloseCode.POLICY_VIOLATION, _reason(f"unauthorized: {exc}")
            except _CloseWith as exc:
                code, reason = exc.code, exc.reason
            except ConnectionClosed as exc:  # (before the session: the peer closed, or sent too much)
                code, reason = exc.reason.code, exc.reason.reason
                if code == CloseCode.MESSAGE_TOO_BIG:
                    self._refuse("too_big")
            finally:
                # The session is over: its slot is free now, whatever the peer does with our close.
                self._live.remove(conn)
                if conn.counted:
                    self.active -= 1
                    self._load_changed()
                self._idle.set()
            if conn.drained and code == CloseCode.NORMAL:
                code, reason = CloseCode.GOING_AWAY, "server shutting down"
            if self.metrics is not None and conn.session is not None:
                self.metrics.session_ended(conn.session, code)
            await self._close(ws, code, reason)
        finally:
            self._open -= 1
            self._idle.set()

    async def _close(self, ws: ServerWebSocket, code: int, reason: str) -> None:
        """Close with `code`, waiting at most `close_timeout` for the peer's answer (a peer that
        never answers is dropped when the connection's handler returns)."""
        with trio.move_on_after(self.close_timeout):
            await ws.aclose(code, reason)

    def _check_token(self, token: str | None) -> None:
        if self.secret is None:
            return
        if not token:
            raise TokenError("a token is required")
        verify_token(token, self.secret)

    async def _browser_hello(self, conn: _Connection, query: dict[str, str]) -> tuple[_WebSocketTransport, str | None]:
        with trio.move_on_after(self.hello_timeout) as waited:
            first = await conn.ws.get_message()
        if waited.cancelled_caught:
            raise ProtocolError(f"no hello within {self.hello_timeout:.0f} s")
        hello = bp.parse_hello(first)
        self._check_token(hello.token or query.get("token"))
        ready = bp.message("ready", sample_rate=hello.sample_rate, output_sample_rate=hello.output_sample_rate)
        return BrowserTransport(conn.ws, hello), ready

    def _realtime_start(self, conn: _Connection, query: dict[str, str]) -> tuple[_WebSocketTransport, str | None]:
        """An OpenAI Realtime client: the token came as its Bearer key; `session.created` is the
        ready message."""
        self._check_token(query.get("token"))
        transport = RealtimeTransport(conn.ws)
        return transport, transport.session_created()

    async def _twilio_start(self, conn: _Connection, query: dict[str, str]) -> tuple[_WebSocketTransport, str | None]:
        transport = TwilioTransport(conn.ws)
        # Read up to `start` here, so the token is checked before any session exists.
        with trio.move_on_after(self.hello_timeout) as waited:
            while transport.start is None:
                await transport.receive(await conn.ws.get_message())
        if waited.cancelled_caught or transport.start is None:
            raise ProtocolError(f"no start within {self.hello_timeout:.0f} s")
        self._check_token(transport.start.custom_parameters.get("token") or query.get("token"))
        return transport, None

    async def _make_agent(self) -> tuple[Agent, Pipeline]:
        """The factory's agent and pipeline.

        Raises:
            _CloseWith: it failed or did not return within `factory_timeout`.
        """
        with trio.move_on_after(self.factory_timeout):
            try:
                made = self.factory()
                return await made if inspect.isawaitable(made) else made
            except Exception:
                _log.exception("the agent factory failed")
                self._refuse("factory")
                raise _CloseWith(CloseCode.INTERNAL_ERROR, "the agent could not start") from None
        _log.error("the agent factory did not return within %.1f s", self.factory_timeout)
        self._refuse("factory")
        raise _CloseWith(CloseCode.INTERNAL_ERROR, f"the agent did not start within {self.factory_timeout:g} s")

    async def _record(self, stack: contextlib.AsyncExitStack, session: AgentSession) -> None:
        """With `record_dir`: record the call there (stereo WAV, `trioagent.recording`); a file
        that cannot be opened is logged and the call goes on unrecorded."""
        if self.record_dir is None:
            return
        # (wall time: the name is for people to find the call by)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(self.record_dir, f"{stamp}-{os.getpid()}-{self.sessions_started}.wav")
        try:
            await stack.enter_async_context(record(session, path))
        except OSError as exc:
            _log.error("cannot record the call to %s (%s); it goes on unrecorded", path, exc.strerror or exc)

    async def _run_session(self, conn: _Connection, path: str, query: dict[str, str], arrived: Callable[[], None]) -> tuple[int, str]:
        # Before the session: the hello (or Twilio's start) and the factory. A drain cancels it.
        with conn.starting:
            if path == "/ws":
                transport, ready = await self._browser_hello(conn, query)
            elif path == "/twilio":
                transport, ready = await self._twilio_start(conn, query)
            else:
                transport, ready = self._realtime_start(conn, query)
            # The hello is in and its token good: a session now, with a slot. Until here the
            # connection was pending: it held no slot (connections that never say hello cannot
            # fill the server) and a flood drops it first.
            arrived()
            if self.active >= self.max_sessions:
                self._refuse("capacity")
                return CloseCode.TRY_AGAIN_LATER, "server full: too many sessions"
            self.active += 1
            self._load_changed()
            conn.counted = True
            agent, pipeline = await self._make_agent()
        if conn.starting.cancelled_caught:
            return CloseCode.GOING_AWAY, "server shutting down"
        clock = min(self._clocks, key=self._clocks.__getitem__)
        session = AgentSession(agent, pipeline, transport=transport, tick_clock=clock)
        transport.attach(session)
        if self.metrics is not None:
            self.metrics.watch(session)
        if self.on_session is not None:
            self.on_session(session)  # e.g. to subscribe to its events, before it starts
        self.sessions_started += 1
        if ready is not None:
            await conn.ws.send_message(ready)
        failure: ProtocolError | None = None
        start_error: Exception | None = None
        conn.session = session
        self._clocks[clock] += 1
        try:
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    # The peer hung up, went away or sent something bad: nobody is left to
                    # hear the rest of a reply, so the session closes now.
                    nonlocal failure
                    try:
                        await transport.run()
                    except ProtocolError as exc:
                        failure = exc
                    await session.close()

                nursery.start_soon(reader)
                try:
                    async with contextlib.AsyncExitStack() as stack:
                        await self._record(stack, session)
                        await session.run()
                except Exception as exc:  # (run() raises only what stopped the session starting)
                    start_error = exc
                nursery.cancel_scope.cancel()
        finally:
            self._clocks[clock] -= 1
        if start_error is not None:
            # An MCP server that did not start says what and why in one line; anything else
            # is a bug in the agent, with its traceback.
            self._refuse("agent_failed")
            _log.error("the agent could not start: %s", start_error, exc_info=None if isinstance(start_error, MCPServerError) else start_error)
            return CloseCode.INTERNAL_ERROR, "the agent could not start"
        closed = conn.ws.closed
        if closed is not None and closed.code == CloseCode.MESSAGE_TOO_BIG:
            self._refuse("too_big")
        if failure is not None:
            raise failure
        if session.failure is not None:  # logged with its traceback by the session
            self._refuse("agent_failed")
            return CloseCode.INTERNAL_ERROR, "the agent failed"
        if self._shutdown.is_set() and not transport.hung_up and closed is None:  # (not the caller's end)
            return CloseCode.GOING_AWAY, "server shutting down"
        return CloseCode.NORMAL, "session ended"


def _tokens(value: bytes) -> list[bytes]:
    """The comma-separated tokens of a header value, lower-case."""
    return [t.strip().lower() for t in value.split(b",")]


def _handshake_problem(method: bytes, headers: dict[bytes, bytes], upgrade: bool) -> tuple[int, str] | None:
    """What is wrong with a WebSocket opening handshake (RFC 6455 4.2.1), if anything: checked
    here so that every bad one gets its HTTP answer and ends (the WebSocket layer would answer
    400 and then wait for a request that never comes)."""
    if not upgrade:
        return 426, "this endpoint speaks WebSocket (Upgrade: websocket)"
    if method != b"GET":
        return 405, "a WebSocket handshake is a GET"
    if b"upgrade" not in _tokens(headers.get(b"connection", b"")):
        return 400, "Connection: Upgrade is missing"
    try:
        key = base64.b64decode(headers.get(b"sec-websocket-key", b""), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        return 400, "Sec-WebSocket-Key is missing or not 16 bytes of base64"
    if headers.get(b"sec-websocket-version", b"").strip() != b"13":
        return 426, "only WebSocket version 13 is spoken here"
    return None


def _origin(headers: dict[bytes, bytes]) -> str | None:
    """The Origin header, if it is there and is ASCII (anything else matches no allowed origin)."""
    value = headers.get(b"origin")
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


def _reason(exc: object) -> str:
    """A close reason fits in 123 bytes of UTF-8 (RFC 6455 5.5: control frames carry at most
    125 bytes, two of them the code)."""
    data = str(exc).encode()
    return data.decode() if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


async def serve(
    factory: AgentFactory,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    secret: str | None = None,
    allowed_origins: set[str] | None = None,
    max_sessions: int = 200,
    max_message_size: int = 64 * 1024,
    grace: float = 10.0,
    factory_timeout: float = 10.0,
    max_pending: int = 1000,
    on_session: Callable[[AgentSession], None] | None = None,
    listeners: Sequence[trio.abc.Listener[Any]] | None = None,
    record_dir: str | None = None,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve agents over WebSocket until cancelled or until `Server.shutdown()`.

    Args:
        factory: makes ``(agent, pipeline)`` for each new session (sync or async).
        host, port: where to listen (port 0: any free port; see `Server.port`).
        secret: HMAC secret for session tokens (see `trioagent.auth.mint_token`); None: no
            token needed (development only).
        allowed_origins: browser Origins allowed on ``/ws`` (None: any).
        max_sessions: connections beyond this are closed with 1013 "server full".
        max_message_size: larger WebSocket messages close the connection with 1009.
        grace: on shutdown, how long running sessions may go on before they are closed.
        factory_timeout: a factory that has not returned by then closes that connection
            with 1011.
        max_pending: connections not yet sessions (request head, handshake, hello under way)
            at most; beyond it each new one drops the one that has waited longest.
        on_session: called with each new `AgentSession` before it starts (to subscribe to
            its events, count, log).
        listeners: serve these (already bound) instead of listening on host and port.
        record_dir: record every call there as a stereo WAV (`trioagent.recording.record`),
            named by its UTC start, process and number.
    """
    server = Server(
        factory,
        secret=secret,
        allowed_origins=frozenset(allowed_origins) if allowed_origins is not None else None,
        max_sessions=max_sessions,
        max_message_size=max_message_size,
        grace=grace,
        factory_timeout=factory_timeout,
        max_pending=max_pending,
        on_session=on_session,
        record_dir=record_dir,
    )
    if listeners is not None:
        server.port = port
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: server.run(host, port, listeners=listeners, task_status=task_status))
        task_status.started(server)
