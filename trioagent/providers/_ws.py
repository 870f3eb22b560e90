"""Opening a provider's WebSocket: bounded, with refusals as `ProviderError`s (shared by the
WebSocket providers)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import trio
import trio_websocket

from ..errors import ProviderError, sole_error

__all__ = ["InlineWebSocket", "WebSocketClosed", "open_websocket", "refused", "unreachable"]


def refused(exc: BaseException, provider: str, stage: str) -> ProviderError:
    """A refused handshake as the error a user reads (401/403: the key)."""
    status = getattr(exc, "status_code", None)
    hint = " (check the API key)" if status in (401, 403) else ""
    return ProviderError(f"{provider}: the server refused the connection{hint}: {status or exc}", provider=provider, stage=stage, retryable=status == 429 or (status or 0) >= 500)


def unreachable(exc: BaseException, provider: str, stage: str) -> ProviderError:
    """A connection that could not be made (or not in time), as the error a user reads."""
    return ProviderError(f"{provider}: cannot connect: {type(exc).__name__} {exc}".strip(), provider=provider, stage=stage, retryable=True)


async def open_websocket(
    nursery: trio.Nursery,
    url: str,
    headers: Sequence[tuple[str, str]],
    *,
    provider: str,
    stage: str,
    timeout: float,
    open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
) -> trio_websocket.WebSocketConnection:
    """The connection (its reader task in `nursery`); `open_stream` replaces TCP in tests.

    Raises:
        ProviderError: refused, unreachable, or not open within `timeout`.
    """
    raw = [(k.encode(), v.encode()) for k, v in headers]
    try:
        with trio.fail_after(timeout):
            if open_stream is not None:
                parts = urlsplit(url)
                stream = await open_stream()
                resource = parts.path + (f"?{parts.query}" if parts.query else "")
                return await trio_websocket.wrap_client_stream(nursery, stream, parts.hostname or "localhost", resource, extra_headers=raw)  # type: ignore[arg-type]
            return await trio_websocket.connect_websocket_url(nursery, url, extra_headers=raw)
    except trio_websocket.HandshakeError as exc:
        raise refused(exc, provider, stage) from None
    except BaseExceptionGroup as group:
        rejected, _ = group.split(trio_websocket.HandshakeError)
        if rejected is None:
            raise
        raise refused(sole_error(rejected), provider, stage) from None
    except (OSError, trio.TooSlowError) as exc:
        raise unreachable(exc, provider, stage) from None


class WebSocketClosed(Exception):
    """The peer closed (`code`, `reason`), or the connection dropped (code None)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"{code} {reason}".strip() if code is not None else "the connection dropped")
        self.code = code
        self.reason = reason


class InlineWebSocket:
    """A client WebSocket driven in the caller's own task (wsproto over one stream): no
    background task and no nursery, so an async generator may hold one across its `yield`s
    (a nursery must never be open across a yield). Pings are answered while receiving."""

    def __init__(self, stream: trio.abc.Stream, connection: Any) -> None:
        self._stream = stream
        self._ws = connection
        self._parts: list[str | bytes] = []
        self.closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        headers: Sequence[tuple[str, str]],
        *,
        provider: str,
        stage: str,
        timeout: float,
        open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = None,
    ) -> InlineWebSocket:
        """Open and handshake within `timeout`.

        Raises:
            ProviderError: refused (the status; 401/403: the key), unreachable, or too slow.
        """
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request

        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        secure = parts.scheme in ("wss", "https")
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(timeout):
                if open_stream is not None:
                    stream = await open_stream()
                elif secure:
                    stream = await trio.open_ssl_over_tcp_stream(host, parts.port or 443)
                else:
                    stream = await trio.open_tcp_stream(host, parts.port or 80)
                connection = WSConnection(ConnectionType.CLIENT)
                await stream.send_all(connection.send(Request(host=host, target=resource, extra_headers=[(k.encode(), v.encode()) for k, v in headers])))
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise ProviderError(f"{provider}: the server closed the connection during the handshake", provider=provider, stage=stage, retryable=True)
                    connection.receive_data(bytes(data))
                    for event in connection.events():
                        if isinstance(event, AcceptConnection):
                            return cls(stream, connection)
                        if isinstance(event, RejectConnection | RejectData):
                            raise refused(_Status(getattr(event, "status_code", None)), provider, stage)
        except BaseException as exc:
            if stream is not None:  # (not handed to anyone: ours to close, whatever went wrong)
                with trio.move_on_after(1.0, shield=True):
                    await stream.aclose()
            if isinstance(exc, OSError | trio.TooSlowError | trio.BrokenResourceError):
                raise unreachable(exc, provider, stage) from None
            raise

    async def send(self, message: str | bytes) -> None:
        from wsproto.events import BytesMessage, TextMessage

        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        try:
            await self._stream.send_all(self._ws.send(event))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WebSocketClosed(None) from exc

    async def receive(self) -> str | bytes:
        """The next whole message (a checkpoint).

        Raises:
            WebSocketClosed: the peer closed or the connection dropped.
        """
        from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

        while True:
            for event in self._ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    self._parts.append(bytes(event.data) if isinstance(event.data, bytearray) else event.data)
                    if event.message_finished:
                        parts, self._parts = self._parts, []
                        return "".join(p for p in parts if isinstance(p, str)) if isinstance(event, TextMessage) else b"".join(p for p in parts if isinstance(p, bytes))
                elif isinstance(event, Ping):
                    await self._stream.send_all(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.closed = True
                    try:
                        await self._stream.send_all(self._ws.send(event.response()))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass  # (it is going anyway)
                    raise WebSocketClosed(event.code, event.reason or "")
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise WebSocketClosed(None) from exc
            if not data:
                raise WebSocketClosed(None)
            self._ws.receive_data(bytes(data))

    async def aclose(self, code: int = 1000) -> None:
        """Send a close frame (if still open) and close the stream. Bounded by the caller."""
        from wsproto.connection import ConnectionState
        from wsproto.events import CloseConnection

        if not self.closed and self._ws.state is ConnectionState.OPEN:
            self.closed = True
            try:
                await self._stream.send_all(self._ws.send(CloseConnection(code=code)))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # (gone)
        await self._stream.aclose()


class _Status(Exception):
    def __init__(self, status_code: int | None) -> None:
        super().__init__(str(status_code))
        self.status_code = status_code
