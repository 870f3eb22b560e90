"""Serving agents to OpenAI Realtime clients: ``trioagent realtime-server module:factory``.

Every trioagent server speaks the OpenAI Realtime protocol on ``/v1/realtime`` (and
``/realtime``) next to the browser and Twilio endpoints, with the same limits, tokens (a Realtime
client sends its API key as a Bearer token: give it a `trioagent token`) and drain; this module
names that use. A client whose ``base_url`` is ``http://HOST:PORT/v1`` connects as it would to
OpenAI: the official SDK's ``client.realtime.connect(model=...)`` works unchanged. What it hears
is the agent's own pipeline (the offline demo stack, for instance): see `RealtimeTransport`.
"""

from __future__ import annotations

from .server import REALTIME_PATHS, Server, serve
from .transports.websocket import RealtimeTransport

__all__ = ["REALTIME_PATHS", "RealtimeTransport", "Server", "serve"]
