"""Twilio Media Streams, sans-IO: JSON text messages in, events out; events in, JSON out.

From Twilio: ``connected``, ``start`` (stream and call ids, media format), ``media`` (base64
8 kHz G.711 mu-law), ``mark`` (a mark we sent has been played), ``dtmf``, ``stop``. To Twilio:
``media``, ``mark``, ``clear`` (drop audio queued on Twilio's side). Nothing here imports trio.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import attrs

from ..audio.codec import ulaw_decode, ulaw_encode
from ..audio.frame import Int16Array
from ..errors import ProtocolError
from ._json import json_object

__all__ = ["TwilioConnected", "TwilioStart", "TwilioMedia", "TwilioMark", "TwilioDtmf", "TwilioStop", "TwilioProtocol"]

SAMPLE_RATE = 8000


@attrs.frozen
class TwilioConnected:
    protocol: str
    version: str


@attrs.frozen
class TwilioStart:
    stream_sid: str
    call_sid: str
    custom_parameters: dict[str, str]


@attrs.frozen
class TwilioMedia:
    samples: Int16Array = attrs.field(eq=False)
    timestamp_ms: int | None


@attrs.frozen
class TwilioMark:
    name: str


@attrs.frozen
class TwilioDtmf:
    digit: str


@attrs.frozen
class TwilioStop:
    pass


TwilioEvent = TwilioConnected | TwilioStart | TwilioMedia | TwilioMark | TwilioDtmf | TwilioStop


_MAX_MS = 2**53  # a JSON number a peer may send as a count of milliseconds


def _milliseconds(value: Any) -> int | None:
    """Twilio's ``timestamp``: a whole, non-negative number of milliseconds, as a number or a
    string of digits (Twilio sends a string). Anything else (1e999, -1, "12.5", true) is refused.

    Raises:
        ProtocolError: not such a number.
    """
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        value = int(value)
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _MAX_MS:
        return value
    raise ProtocolError("media: 'timestamp' must be a whole number of milliseconds")


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(f"{where}: {key!r} must be a {kind.__name__}")
    return value


@attrs.define
class TwilioProtocol:
    """One Media Stream's state: `receive()` each text message; build replies with `media()`,
    `mark()`, `clear()`.

    Args:
        max_payload: largest media payload accepted, in decoded bytes (8000 = 1 s).
    """

    max_payload: int = 8000
    stream_sid: str | None = None
    stopped: bool = False

    def receive(self, text: str | bytes) -> TwilioEvent:
        """Parse one message from Twilio.

        Raises:
            ProtocolError: not JSON, not an object, an unknown event, a field missing or of the
                wrong type, media before ``start`` or after ``stop``, a bad or oversized payload.
        """
        msg = json_object(text, "Twilio sends text messages; got a binary one")
        event = msg.get("event")
        if self.stopped:
            raise ProtocolError(f"{event!r} after stop")
        if event == "connected":
            return TwilioConnected(str(msg.get("protocol", "")), str(msg.get("version", "")))
        if event == "start":
            start = _field(msg, "start", dict, "start")
            sid = _field(start, "streamSid", str, "start") if "streamSid" in start else _field(msg, "streamSid", str, "start")
            fmt = start.get("mediaFormat") or {}
            if not isinstance(fmt, dict):
                raise ProtocolError("start: 'mediaFormat' must be an object")
            if fmt and (fmt.get("encoding") != "audio/x-mulaw" or fmt.get("sampleRate") not in (SAMPLE_RATE, str(SAMPLE_RATE))):
                raise ProtocolError(f"start: unsupported media format {fmt!r} (need audio/x-mulaw at 8000 Hz)")
            params = start.get("customParameters") or {}
            if not isinstance(params, dict):
                raise ProtocolError("start: 'customParameters' must be an object")
            self.stream_sid = sid
            return TwilioStart(sid, str(start.get("callSid", "")), {str(k): str(v) for k, v in params.items()})
        if event == "media":
            if self.stream_sid is None:
                raise ProtocolError("media before start")
            media = _field(msg, "media", dict, "media")
            payload = _field(media, "payload", str, "media")
            if len(payload) > (self.max_payload * 4) // 3 + 4:
                raise ProtocolError(f"media: payload larger than {self.max_payload} bytes")
            try:
                raw = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ProtocolError("media: payload is not valid base64") from None
            return TwilioMedia(ulaw_decode(raw), _milliseconds(media.get("timestamp")))
        if event == "mark":
            mark = _field(msg, "mark", dict, "mark")
            return TwilioMark(_field(mark, "name", str, "mark"))
        if event == "dtmf":
            dtmf = _field(msg, "dtmf", dict, "dtmf")
            return TwilioDtmf(_field(dtmf, "digit", str, "dtmf"))
        if event == "stop":
            self.stopped = True
            return TwilioStop()
        raise ProtocolError(f"unknown event {event!r}")

    def _sid(self) -> str:
        if self.stream_sid is None:
            raise ProtocolError("no stream yet: Twilio has not sent start")
        return self.stream_sid

    def media(self, samples: Int16Array) -> str:
        """A ``media`` message carrying 8 kHz int16 samples as base64 mu-law."""
        payload = base64.b64encode(ulaw_encode(samples)).decode()
        return json.dumps({"event": "media", "streamSid": self._sid(), "media": {"payload": payload}})

    def mark(self, name: str) -> str:
        return json.dumps({"event": "mark", "streamSid": self._sid(), "mark": {"name": name}})

    def clear(self) -> str:
        return json.dumps({"event": "clear", "streamSid": self._sid()})
