"""`serve()`: many sessions behind one WebSocket port, for browsers and Twilio.

How this works: one listener; each connection's HTTP request head is read with h11. ``GET /``
serves the web page; ``/ws`` (browser protocol) and ``/twilio`` (Media Streams) are handed to
trio-websocket (with the bytes already read replayed in front of the stream). Origin, token and
capacity are checked before any session starts. Every connection runs in its own task, and
everything that goes wrong in it (bad input, a provider failing) ends that connection only, with
a close code and a reason. Sessions share `tick_phases` `TickClock`s, evenly out of phase (the
mixing work of many sessions spread over the frame period). On shutdown the server stops
accepting, lets running sessions finish for `grace` seconds, then closes them.
"""

from __future__ import annotations

import errno
import inspect
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import trio
import trio_websocket

from ._proto import browser as bp
from .agent import Agent
from .audio.mixer import TickClock
from .auth import TokenError, verify_token
from .errors import CloseCode, ProtocolError
from .pipeline.base import Pipeline
from .session import AgentSession
from .transports.websocket import BrowserTransport, TwilioTransport, _WebSocketTransport

__all__ = ["serve", "Server", "AgentFactory"]

_log = logging.getLogger("trioagent.server")

# The peer went away (reset, closed, broken pipe): ends that connection, is not an error.
_PEER_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, trio_websocket.ConnectionClosed, h11.ProtocolError)

_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

AgentFactory = Callable[[], "tuple[Agent, Pipeline] | Awaitable[tuple[Agent, Pipeline]]"]
"""Makes the agent and pipeline of one new session (sync or async)."""

# Close codes (RFC 6455 section 7.4.1).


class _Replay(trio.abc.Stream):
    """A stream with some already-read bytes put back in front."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:n], self._prefix[n:]
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self._stream.receive_some(max_bytes))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self._stream, trio.abc.HalfCloseableStream):
            await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


@attrs.define(eq=False)
class Server:
    """A running `serve()`: its address, its counters, and `shutdown()`."""

    factory: AgentFactory
    secret: str | None = None
    allowed_origins: frozenset[str] | None = None
    max_sessions: int = 200
    max_message_size: int = 64 * 1024
    hello_timeout: float = 10.0
    grace: float = 10.0
    close_timeout: float = 5.0
    on_session: Callable[[AgentSession], None] | None = None
    port: int = 0
    active: int = 0
    sessions_started: int = 0
    refused: dict[str, int] = attrs.field(factory=dict)
    tick_phases: int = 4
    _clocks: dict[TickClock, int] = attrs.field(init=False, factory=dict)  # clock -> sessions on it
    _live: list[tuple[AgentSession, _WebSocketTransport]] = attrs.field(factory=list)
    _shutdown: trio.Event = attrs.field(factory=trio.Event)
    _idle: trio.Event = attrs.field(factory=trio.Event)

    @property
    def transports(self) -> list[_WebSocketTransport]:
        """The transports of the sessions running now, oldest first."""
        return [transport for _, transport in self._live]

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
        listeners: list[trio.abc.Listener[Any]] | None = None,
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
        async with trio.open_nursery() as sessions:
            # A few shared clocks, evenly out of phase: each session joins the least used, so the
            # mixing work of many sessions is spread over the 20 ms instead of landing at once.
            for j in range(max(1, self.tick_phases)):
                clock = TickClock(phase=j / max(1, self.tick_phases))
                self._clocks[clock] = 0
                await sessions.start(clock.run)
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
                    for session, _ in self._live:
                        closing.start_soon(session.close)
                with trio.move_on_after(self.close_timeout):
                    await self._wait_idle()  # each sends its close frame (1001)
            sessions.cancel_scope.cancel()

    async def _wait_idle(self) -> None:
        while self.active:
            self._idle = trio.Event()
            await self._idle.wait()

    async def _accept(self, listener: trio.abc.Listener[Any], sessions: trio.Nursery) -> None:
        # Our own accept loop, not trio.serve_listeners: that closes each stream when its
        # handler returns, and connections must live in the sessions nursery so that
        # draining can outlive the listeners.
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _OUT_OF_RESOURCES:
                        raise
                    _log.error("accept: %s; pausing 100 ms", exc)
                    await trio.sleep(0.1)
                    continue
                sessions.start_soon(self._handle, stream)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        try:
            async with stream:
                with trio.move_on_after(self.hello_timeout) as waited:
                    request, head = await self._read_request(stream)
                    if request is None:
                        return
                    path = urlsplit(request.target.decode("latin-1"))
                    query = {k: v[0] for k, v in parse_qs(path.query).items()}
                    upgrade = any(k.lower() == b"upgrade" and v.lower() == b"websocket" for k, v in request.headers)
                    if path.path == "/" and not upgrade:
                        await self._send_page(stream)
                        return
                    if path.path not in ("/ws", "/twilio") or not upgrade:
                        await self._plain(stream, 404, b"not found")
                        return
                if waited.cancelled_caught:
                    return  # no request head in time
                async with trio.open_nursery() as nursery:
                    ws_request = await trio_websocket.wrap_server_stream(
                        nursery, _Replay(stream, head), max_message_size=self.max_message_size
                    )
                    await self._websocket(ws_request, path.path, query)
                    nursery.cancel_scope.cancel()
        except BaseException as exc:  # noqa: BLE001 - sorted below; nothing escapes to other sessions
            if not isinstance(exc, Exception):
                raise  # cancellation, KeyboardInterrupt
            gone, failed = exc.split(_PEER_GONE) if isinstance(exc, ExceptionGroup) else ((exc, None) if isinstance(exc, _PEER_GONE) else (None, exc))
            if failed is not None:
                _log.error("connection failed", exc_info=failed)
            elif gone is not None:
                _log.debug("peer went away: %r", gone)

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

    async def _plain(self, stream: trio.abc.Stream, status: int, body: bytes, content_type: str = "text/plain") -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
        headers = [("content-type", content_type), ("content-length", str(len(body))), ("connection", "close")]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))

    async def _send_page(self, stream: trio.abc.Stream) -> None:
        page = resources.files("trioagent.web").joinpath("index.html").read_bytes()
        await self._plain(stream, 200, page, "text/html; charset=utf-8")

    async def _websocket(self, request: trio_websocket.WebSocketRequest, path: str, query: dict[str, str]) -> None:
        origin = next((v.decode() for k, v in request.headers if k.lower() == b"origin"), None)
        if path == "/ws" and self.allowed_origins is not None and origin not in self.allowed_origins:
            self._refuse("origin")
            await request.reject(403, body=b"origin not allowed")
            return
        ws = await request.accept()
        if self.active >= self.max_sessions or self._shutdown.is_set():
            self._refuse("capacity")
            await ws.aclose(CloseCode.TRY_AGAIN_LATER, "server full: too many sessions" if not self._shutdown.is_set() else "server shutting down")
            return
        self.active += 1
        try:
            if path == "/ws":
                await self._browser(ws, query)
            else:
                await self._twilio(ws, query)
        except ProtocolError as exc:
            self._refuse("protocol")
            await ws.aclose(exc.close_code, _reason(exc))
        except TokenError as exc:
            self._refuse("token")
            await ws.aclose(CloseCode.POLICY_VIOLATION, _reason(f"unauthorized: {exc}"))
        finally:
            self.active -= 1
            self._idle.set()

    def _check_token(self, token: str | None) -> None:
        if self.secret is None:
            return
        if not token:
            raise TokenError("a token is required")
        verify_token(token, self.secret)

    async def _browser(self, ws: trio_websocket.WebSocketConnection, query: dict[str, str]) -> None:
        with trio.move_on_after(self.hello_timeout) as waited:
            first = await ws.get_message()
        if waited.cancelled_caught:
            raise ProtocolError(f"no hello within {self.hello_timeout:.0f} s")
        hello = bp.parse_hello(first)
        self._check_token(hello.token or query.get("token"))
        transport = BrowserTransport(ws, hello)
        await self._run_session(transport, ready=bp.message("ready", sample_rate=hello.sample_rate, output_sample_rate=hello.output_sample_rate))

    async def _twilio(self, ws: trio_websocket.WebSocketConnection, query: dict[str, str]) -> None:
        transport = TwilioTransport(ws)
        # Read up to `start` here, so the token is checked before any session exists.
        with trio.move_on_after(self.hello_timeout) as waited:
            while transport.start is None:
                await transport._on_message(await ws.get_message())
        if waited.cancelled_caught:
            raise ProtocolError(f"no start within {self.hello_timeout:.0f} s")
        assert transport.start is not None
        self._check_token(transport.start.custom_parameters.get("token") or query.get("token"))
        await self._run_session(transport)

    async def _run_session(self, transport: _WebSocketTransport, ready: str | None = None) -> None:
        try:
            made = self.factory()
            agent, pipeline = await made if inspect.isawaitable(made) else made
        except Exception:
            _log.exception("the agent factory failed")
            self._refuse("factory")
            await transport.ws.aclose(CloseCode.INTERNAL_ERROR, "the agent could not start")
            return
        clock = min(self._clocks, key=self._clocks.__getitem__)
        session = AgentSession(agent, pipeline, transport=transport, tick_clock=clock)
        if isinstance(transport, BrowserTransport):
            transport.attach(session)
        if self.on_session is not None:
            self.on_session(session)  # e.g. to subscribe to its events, before it starts
        self.sessions_started += 1
        if ready is not None:
            await transport.ws.send_message(ready)
        failure: ProtocolError | None = None
        live = (session, transport)
        self._live.append(live)
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
                await session.run()
                nursery.cancel_scope.cancel()
        finally:
            self._live.remove(live)
            self._clocks[clock] -= 1
        closed = transport.ws.closed
        if closed is not None and closed.code == CloseCode.MESSAGE_TOO_BIG:
            self._refuse("too_big")
        if failure is not None:
            raise failure
        if session.failure is not None:  # logged with its traceback by the session
            self._refuse("agent_failed")
            await transport.ws.aclose(CloseCode.INTERNAL_ERROR, "the agent failed")
        elif self._shutdown.is_set() and not transport.hung_up:
            await transport.ws.aclose(CloseCode.GOING_AWAY, "server shutting down")
        else:
            await transport.ws.aclose(CloseCode.NORMAL, "session ended")


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
    on_session: Callable[[AgentSession], None] | None = None,
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
        on_session: called with each new `AgentSession` before it starts (to subscribe to
            its events, count, log).
    """
    server = Server(
        factory,
        secret=secret,
        allowed_origins=frozenset(allowed_origins) if allowed_origins is not None else None,
        max_sessions=max_sessions,
        max_message_size=max_message_size,
        grace=grace,
        on_session=on_session,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run, host, port)
        task_status.started(server)
