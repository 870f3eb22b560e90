"""`OpenAIRealtime`: which speech-to-speech model `RealTimePipeline` talks to, and how to reach it.

The connection is a WebSocket (trio-websocket) to ``{base_url}/realtime?model=...`` with the API
key as a Bearer token: OpenAI's Realtime API, or any server that speaks its protocol (such as
``trioagent realtime-server``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import attrs
import trio
import trio_websocket

__all__ = ["OpenAIRealtime"]

TurnDetection = Literal["server_vad", "semantic_vad"]


def _ws_root(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


@attrs.frozen
class OpenAIRealtime:
    """A Realtime model and where it is served.

    Args:
        model: the model (default ``$OPENAI_REALTIME_MODEL``, else ``gpt-realtime``).
        voice: the model's voice.
        base_url: the API root, ``wss://`` or ``https://`` (default ``$OPENAI_BASE_URL``, else
            OpenAI's); the client connects to ``{base_url}/realtime?model={model}``.
        api_key: sent as ``Authorization: Bearer`` (default ``$OPENAI_API_KEY``).
        turn_detection: the server decides when the user's turn ends (``"server_vad"``,
            ``"semantic_vad"``), or None: the session's own VAD does, and the pipeline commits.
        silence_ms: with ``server_vad``, the silence that ends a turn.
        transcription_model: transcribe the user's speech with this model (None: no transcripts).
        connect_timeout: seconds to open the WebSocket.
        open_stream: tests: a function returning a connected byte stream to use instead of TCP.
    """

    model: str = attrs.field(factory=lambda: os.environ.get("OPENAI_REALTIME_MODEL") or "gpt-realtime")
    voice: str = "marin"
    base_url: str = attrs.field(factory=lambda: os.environ.get("OPENAI_BASE_URL") or "wss://api.openai.com/v1", converter=_ws_root)
    api_key: str = attrs.field(factory=lambda: os.environ.get("OPENAI_API_KEY", ""), repr=False)
    turn_detection: TurnDetection | None = "server_vad"
    silence_ms: int = 500
    transcription_model: str | None = "gpt-4o-mini-transcribe"
    connect_timeout: float = 10.0
    open_stream: Callable[[], Awaitable[trio.abc.Stream]] | None = attrs.field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"{self.base_url}/realtime?model={quote(self.model)}"

    def turn_detection_config(self) -> dict[str, Any] | None:
        """The session's `turn_detection`: the server detects turns but leaves responses (and
        interrupting them) to the session, whose speech queue decides."""
        if self.turn_detection is None:
            return None
        config: dict[str, Any] = {"type": self.turn_detection, "create_response": False, "interrupt_response": False}
        if self.turn_detection == "server_vad":
            config["silence_duration_ms"] = self.silence_ms
        return config

    async def connect(self, nursery: trio.Nursery) -> trio_websocket.WebSocketConnection:
        """Open the WebSocket (its reader task goes in `nursery`).

        Raises:
            trio.TooSlowError: not open within `connect_timeout`.
            trio_websocket.HandshakeError, OSError: refused.
        """
        headers = [(b"Authorization", f"Bearer {self.api_key}".encode())] if self.api_key else []
        with trio.fail_after(self.connect_timeout):
            if self.open_stream is not None:
                parts = urlsplit(self.url)
                stream = await self.open_stream()
                resource = parts.path + (f"?{parts.query}" if parts.query else "")
                return await trio_websocket.wrap_client_stream(
                    nursery, stream, parts.hostname or "localhost", resource, extra_headers=headers, max_message_size=1 << 24  # type: ignore[arg-type]
                )
            return await trio_websocket.connect_websocket_url(nursery, self.url, extra_headers=headers, max_message_size=1 << 24)
