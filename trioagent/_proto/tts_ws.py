"""The streaming TTS WebSocket protocols of ElevenLabs (``stream-input``) and Cartesia
(``/tts/websocket``), sans-IO: client messages as JSON text, server messages parsed into
`Audio`, `Done` or `Failed` (anything else: None). Malformed messages are `ProtocolError`s."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs

from ..errors import ProtocolError

__all__ = ["Audio", "Done", "Failed", "cartesia_cancel", "cartesia_request", "elevenlabs_close", "elevenlabs_init", "elevenlabs_text", "parse_cartesia", "parse_elevenlabs"]


@attrs.frozen
class Audio:
    pcm: bytes


@attrs.frozen
class Done:
    pass


@attrs.frozen
class Failed:
    message: str
    status: int | None = None


def _load(text: str | bytes, vendor: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(f"a {vendor} message that is not JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a {vendor} message that is not an object")
    return message


def _pcm(data: Any, vendor: str) -> bytes:
    if not isinstance(data, str):
        raise ProtocolError(f"{vendor} audio that is not a base64 string")
    try:
        pcm = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{vendor} audio that is not base64") from None
    if len(pcm) % 2:
        raise ProtocolError(f"{vendor} audio that is not whole 16-bit samples")
    return pcm


# -- ElevenLabs ---------------------------------------------------------------------------------
def elevenlabs_init(voice_settings: dict[str, Any] | None = None) -> str:
    """The first message (a single space opens the stream)."""
    message: dict[str, Any] = {"text": " "}
    if voice_settings:
        message["voice_settings"] = voice_settings
    return json.dumps(message)


def elevenlabs_text(text: str, *, flush: bool) -> str:
    """Text to speak (it must end with a space); `flush` makes the server speak it now."""
    return json.dumps({"text": text.rstrip() + " ", "flush": flush} if flush else {"text": text.rstrip() + " "})


def elevenlabs_close() -> str:
    """No more text: the server sends what is left, ``isFinal``, and closes."""
    return json.dumps({"text": ""})


def parse_elevenlabs(text: str | bytes) -> Audio | Done | Failed | None:
    message = _load(text, "ElevenLabs")
    if message.get("audio"):
        return Audio(_pcm(message["audio"], "ElevenLabs"))
    if message.get("isFinal") is True:
        return Done()
    if "error" in message or "message" in message:
        return Failed(str(message.get("message") or message.get("error")))
    return None


# -- Cartesia -------------------------------------------------------------------------------------
def cartesia_request(*, context_id: str, transcript: str, model_id: str, voice_id: str, sample_rate: int, language: str | None = None) -> str:
    message: dict[str, Any] = {
        "context_id": context_id,
        "model_id": model_id,
        "transcript": transcript,
        "voice": {"mode": "id", "id": voice_id},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": sample_rate},
        "continue": False,
    }
    if language:
        message["language"] = language
    return json.dumps(message)


def cartesia_cancel(context_id: str) -> str:
    return json.dumps({"context_id": context_id, "cancel": True})


def parse_cartesia(text: str | bytes) -> Audio | Done | Failed | None:
    message = _load(text, "Cartesia")
    kind = message.get("type")
    if kind == "chunk":
        return Audio(_pcm(message.get("data"), "Cartesia"))
    if kind == "done":
        return Done()
    if kind == "error":
        status = message.get("status_code")
        return Failed(str(message.get("message") or message.get("error") or message.get("title") or "error"), status if isinstance(status, int) else None)
    if not isinstance(kind, str):
        raise ProtocolError("a Cartesia message without a type")
    return None
