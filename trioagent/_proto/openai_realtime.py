"""The OpenAI Realtime protocol (the GA event names), sans-IO.

Client events are built as plain dicts (`encode` turns one into the text of a WebSocket
message); server events are parsed from a message's text into frozen values (`parse_server`).
Only what a voice agent uses is typed; any other server event parses as `Unknown` (the caller
logs it once). A message that is not a JSON object with a string `type`, or whose fields are
missing, of the wrong kind or not base64, is a `ProtocolError`.

Audio is 16-bit little-endian PCM, mono, 24 kHz, both ways (`RATE`).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs

from ..errors import ProtocolError

__all__ = [
    "RATE",
    "ServerEvents",
    "appended_audio",
    "parse_client",
    "audio_commit",
    "AudioDelta",
    "Committed",
    "Error",
    "FunctionCallDone",
    "InputTranscript",
    "ResponseCreated",
    "ResponseDone",
    "ServerEvent",
    "SpeechStarted",
    "SpeechStopped",
    "TranscriptDelta",
    "Unknown",
    "audio_append",
    "encode",
    "function_call_output",
    "item_truncate",
    "parse_server",
    "response_cancel",
    "response_create",
    "session_update",
]

RATE = 24000
BENIGN_ERRORS = frozenset({"response_cancel_not_active", "input_audio_buffer_commit_empty"})
"""Error codes that only say a cancel or a commit came too late: nothing failed."""


# -- client events --------------------------------------------------------------------------------
def encode(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


def session_update(
    *,
    instructions: str,
    voice: str,
    tools: list[dict[str, Any]],
    turn_detection: dict[str, Any] | None,
    transcription_model: str | None,
) -> dict[str, Any]:
    """Configure the session: PCM at 24 kHz both ways, the voice, the tools (`{"type":
    "function", "name", "description", "parameters"}`), turn detection (None: the client
    commits and asks for responses itself), input transcription (None: none)."""
    audio_input: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": RATE}, "turn_detection": turn_detection}
    if transcription_model is not None:
        audio_input["transcription"] = {"model": transcription_model}
    return {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "instructions": instructions,
            "output_modalities": ["audio"],
            "audio": {"input": audio_input, "output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": voice}},
            "tools": tools,
            "tool_choice": "auto",
        },
    }


def audio_append(pcm: bytes) -> dict[str, Any]:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}


def audio_commit() -> dict[str, Any]:
    return {"type": "input_audio_buffer.commit"}


def response_create(*, instructions: str | None = None, out_of_band: bool = False) -> dict[str, Any]:
    """Ask for a response (with `instructions` for this one only; `out_of_band`: not added to
    the conversation)."""
    response: dict[str, Any] = {}
    if instructions is not None:
        response["instructions"] = instructions
    if out_of_band:
        response["conversation"] = "none"
    return {"type": "response.create", "response": response} if response else {"type": "response.create"}


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    return {"type": "response.cancel", "response_id": response_id} if response_id else {"type": "response.cancel"}


def item_truncate(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    """The assistant's audio item was heard up to `audio_end_ms`: the model forgets the rest."""
    return {"type": "conversation.item.truncate", "item_id": item_id, "content_index": content_index, "audio_end_ms": audio_end_ms}


def function_call_output(call_id: str, output: str) -> dict[str, Any]:
    return {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": call_id, "output": output}}


# -- server events --------------------------------------------------------------------------------
@attrs.frozen
class SpeechStarted:
    """The server's VAD heard speech start, `audio_start_ms` into the input audio."""

    audio_start_ms: int
    item_id: str


@attrs.frozen
class SpeechStopped:
    audio_end_ms: int
    item_id: str


@attrs.frozen
class Committed:
    """The input audio up to now is a user message `item_id`."""

    item_id: str


@attrs.frozen
class InputTranscript:
    """The transcript of user message `item_id` (it may come after the answer has begun)."""

    item_id: str
    transcript: str


@attrs.frozen
class ResponseCreated:
    response_id: str


@attrs.frozen
class AudioDelta:
    response_id: str
    item_id: str
    content_index: int
    audio: bytes


@attrs.frozen
class TranscriptDelta:
    response_id: str
    item_id: str
    delta: str


@attrs.frozen
class FunctionCallDone:
    response_id: str
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class ResponseDone:
    response_id: str
    status: str
    """``completed``, ``cancelled``, ``failed`` or ``incomplete``."""
    input_tokens: int | None = None
    output_tokens: int | None = None
    reason: str = ""
    """Why it did not complete, when the server says."""


@attrs.frozen
class Error:
    type: str
    code: str
    message: str

    @property
    def benign(self) -> bool:
        return self.code in BENIGN_ERRORS


@attrs.frozen
class Unknown:
    type: str


ServerEvent = (
    SpeechStarted | SpeechStopped | Committed | InputTranscript | ResponseCreated | AudioDelta | TranscriptDelta
    | FunctionCallDone | ResponseDone | Error | Unknown
)  # fmt: skip


def _field(event: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    value = event.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ProtocolError(f"{event.get('type')}: {where}{name} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _response_done(event: dict[str, Any]) -> ResponseDone:
    response = _field(event, "response", dict)
    usage = _dict(response.get("usage"))
    details = _dict(response.get("status_details"))
    reason = str(_dict(details.get("error")).get("message") or details.get("reason") or "")
    return ResponseDone(
        _field(response, "id", str, "response."),
        _field(response, "status", str, "response."),
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        reason=reason,
    )


def parse_server(text: str | bytes) -> ServerEvent:
    """One server message as an event.

    Raises:
        ProtocolError: not a JSON object with a string `type`, or a known event with bad fields.
    """
    event = _typed(text, "server")
    kind = event["type"]
    if kind == "input_audio_buffer.speech_started":
        return SpeechStarted(_field(event, "audio_start_ms", int), _field(event, "item_id", str))
    if kind == "input_audio_buffer.speech_stopped":
        return SpeechStopped(_field(event, "audio_end_ms", int), _field(event, "item_id", str))
    if kind == "input_audio_buffer.committed":
        return Committed(_field(event, "item_id", str))
    if kind == "conversation.item.input_audio_transcription.completed":
        return InputTranscript(_field(event, "item_id", str), _field(event, "transcript", str))
    if kind == "response.created":
        return ResponseCreated(_field(_field(event, "response", dict), "id", str, "response."))
    if kind == "response.output_audio.delta":
        try:
            audio = base64.b64decode(_field(event, "delta", str), validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("response.output_audio.delta: delta is not base64") from None
        if len(audio) % 2:
            raise ProtocolError("response.output_audio.delta: not whole 16-bit samples")
        return AudioDelta(_field(event, "response_id", str), _field(event, "item_id", str), _field(event, "content_index", int), audio)
    if kind == "response.output_audio_transcript.delta":
        return TranscriptDelta(_field(event, "response_id", str), _field(event, "item_id", str), _field(event, "delta", str))
    if kind == "response.function_call_arguments.done":
        return FunctionCallDone(
            _field(event, "response_id", str), _field(event, "call_id", str), _field(event, "name", str), _field(event, "arguments", str)
        )
    if kind == "response.done":
        return _response_done(event)
    if kind == "error":
        error = _field(event, "error", dict)
        return Error(str(error.get("type") or ""), str(error.get("code") or ""), str(error.get("message") or ""))
    return Unknown(kind)


# -- the server's side (for a server speaking the protocol, and for tests) -------------------------
def parse_client(text: str | bytes) -> dict[str, Any]:
    """One client message as a dict with a string `type` (checked no further).

    Raises:
        ProtocolError: not a JSON object with a string `type`.
    """
    return _typed(text, "client")


def _typed(text: str | bytes, side: str) -> dict[str, Any]:
    try:
        event = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(f"a Realtime {side} message that is not JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProtocolError(f"a Realtime {side} message without a type")
    return event


def appended_audio(event: dict[str, Any]) -> bytes:
    """The PCM of an `input_audio_buffer.append`.

    Raises:
        ProtocolError: no base64 `audio`, or not whole 16-bit samples.
    """
    try:
        audio = base64.b64decode(_field(event, "audio", str), validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("input_audio_buffer.append: audio is not base64") from None
    if len(audio) % 2:
        raise ProtocolError("input_audio_buffer.append: not whole 16-bit samples")
    return audio


class ServerEvents:
    """Builds server events, each with a fresh `event_id`."""

    def __init__(self) -> None:
        self._n = 0

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self._n += 1
        return {"type": kind, "event_id": f"event_{self._n}", **fields}

    def speech_started(self, audio_start_ms: int, item_id: str) -> dict[str, Any]:
        return self._event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)

    def speech_stopped(self, audio_end_ms: int, item_id: str) -> dict[str, Any]:
        return self._event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)

    def committed(self, item_id: str, previous_item_id: str | None = None) -> dict[str, Any]:
        return self._event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)

    def input_transcript(self, item_id: str, transcript: str) -> dict[str, Any]:
        return self._event(
            "conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0, transcript=transcript,
            usage={"type": "duration", "seconds": 0},
        )  # fmt: skip

    def response_created(self, response_id: str) -> dict[str, Any]:
        return self._event("response.created", response={"id": response_id, "object": "realtime.response", "status": "in_progress", "output": []})

    def audio_delta(self, response_id: str, item_id: str, pcm: bytes) -> dict[str, Any]:
        return self._event(
            "response.output_audio.delta", response_id=response_id, item_id=item_id, output_index=0, content_index=0,
            delta=base64.b64encode(pcm).decode("ascii"),
        )  # fmt: skip

    def audio_done(self, response_id: str, item_id: str) -> dict[str, Any]:
        return self._event("response.output_audio.done", response_id=response_id, item_id=item_id, output_index=0, content_index=0)

    def transcript_delta(self, response_id: str, item_id: str, delta: str) -> dict[str, Any]:
        return self._event(
            "response.output_audio_transcript.delta", response_id=response_id, item_id=item_id, output_index=0, content_index=0, delta=delta
        )

    def function_call_done(self, response_id: str, item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
        return self._event(
            "response.function_call_arguments.done", response_id=response_id, item_id=item_id, output_index=0, call_id=call_id,
            name=name, arguments=arguments,
        )  # fmt: skip

    def response_done(self, response_id: str, status: str, *, input_tokens: int = 0, output_tokens: int = 0, reason: str | None = None) -> dict[str, Any]:
        response: dict[str, Any] = {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "output": [],
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, "total_tokens": input_tokens + output_tokens},
        }
        if reason is not None:
            response["status_details"] = {"type": status, "reason": reason}
        return self._event("response.done", response=response)

    def error(self, type: str, code: str, message: str) -> dict[str, Any]:
        return self._event("error", error={"type": type, "code": code, "message": message})

    def session(self, kind: str, session: dict[str, Any]) -> dict[str, Any]:
        """`session.created` or `session.updated`."""
        return self._event(kind, session=session)
