"""Deepgram's live transcription protocol (``/v1/listen`` over WebSocket), sans-IO.

The client sends raw audio as binary messages (linear16 at the rate named in the URL) and JSON
control messages (`KEEP_ALIVE`, `FINALIZE`, `CLOSE_STREAM`); the server sends JSON: ``Results``
(interim, ``is_final``, ``speech_final``), ``UtteranceEnd``, ``SpeechStarted``, ``Metadata``.
`parse` turns one server message into a value; anything else is `Unknown`; a message that is
not a JSON object with a string ``type``, or a ``Results`` without its transcript, is a
`ProtocolError`.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import attrs

from ..errors import ProtocolError

__all__ = ["CLOSE_STREAM", "FINALIZE", "KEEP_ALIVE", "Metadata", "Results", "SpeechStarted", "Unknown", "UtteranceEnd", "listen_url", "parse"]

KEEP_ALIVE = json.dumps({"type": "KeepAlive"})
FINALIZE = json.dumps({"type": "Finalize"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})


def listen_url(base_url: str, **options: Any) -> str:
    """``{base_url}/v1/listen?...`` with the options (booleans as ``true``/``false``; None left out)."""
    query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items() if v is not None}
    return f"{base_url.rstrip('/')}/v1/listen?{urlencode(query)}"


@attrs.frozen
class Results:
    transcript: str
    is_final: bool
    speech_final: bool
    start: float
    duration: float


@attrs.frozen
class UtteranceEnd:
    last_word_end: float


@attrs.frozen
class SpeechStarted:
    timestamp: float


@attrs.frozen
class Metadata:
    request_id: str


@attrs.frozen
class Unknown:
    type: str


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def parse(text: str | bytes) -> Results | UtteranceEnd | SpeechStarted | Metadata | Unknown:
    """One server message.

    Raises:
        ProtocolError: not a JSON object with a string `type`, or Results without a transcript.
    """
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("a Deepgram message that is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a Deepgram message without a type")
    kind = message["type"]
    if kind == "Results":
        channel = message.get("channel")
        alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
        first = alternatives[0] if isinstance(alternatives, list) and alternatives else None
        transcript = first.get("transcript") if isinstance(first, dict) else None
        if not isinstance(transcript, str):
            raise ProtocolError("Deepgram Results without channel.alternatives[0].transcript")
        return Results(
            transcript,
            message.get("is_final") is True,
            message.get("speech_final") is True,
            _number(message.get("start")),
            _number(message.get("duration")),
        )
    if kind == "UtteranceEnd":
        return UtteranceEnd(_number(message.get("last_word_end")))
    if kind == "SpeechStarted":
        return SpeechStarted(_number(message.get("timestamp")))
    if kind == "Metadata":
        return Metadata(str(message.get("request_id") or ""))
    return Unknown(kind)
