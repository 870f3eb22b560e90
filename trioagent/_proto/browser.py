"""The browser protocol (docs/protocol.md), sans-IO.

Binary messages carry PCM16 little-endian mono audio at the rates agreed in the hello. Text
messages are JSON objects with a ``type``. Client -> server: ``hello`` (first), ``interrupt``,
``end``, ``mark`` (echo). Server -> client: ``ready``, ``transcript``, ``agent_state``,
``user_state``, ``agent_text``, ``metrics``, ``clear``, ``mark``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ..errors import ProtocolError
from ._json import json_object

__all__ = ["Hello", "Control", "parse_hello", "parse_control", "message", "RATES"]

RATES = (8000, 16000, 22050, 24000, 44100, 48000)


@attrs.frozen
class Hello:
    sample_rate: int
    output_sample_rate: int
    token: str


@attrs.frozen
class Control:
    type: str  # "interrupt", "end", "mark", "dtmf" or "text"
    name: str = ""  # a mark's name, a dtmf digit, or the typed text


def _object(text: str | bytes) -> dict[str, Any]:
    obj = json_object(text, "expected a JSON text message, got binary")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError("a message must be a JSON object with a string 'type'")
    return obj


def parse_hello(text: str | bytes) -> Hello:
    """The first message. Raises ProtocolError if it is not a valid hello."""
    obj = _object(text)
    if obj["type"] != "hello":
        raise ProtocolError(f"the first message must be a hello, got {obj['type']!r}")
    rate = obj.get("sample_rate", 16000)
    out = obj.get("output_sample_rate", 24000)
    for name, value in (("sample_rate", rate), ("output_sample_rate", out)):
        if not isinstance(value, int) or isinstance(value, bool) or value not in RATES:
            raise ProtocolError(f"hello: {name} must be one of {RATES}, got {value!r}")
    token = obj.get("token", "")
    if not isinstance(token, str):
        raise ProtocolError("hello: token must be a string")
    return Hello(rate, out, token)


MAX_TEXT = 2000
"""The longest typed message (characters) a client may send."""


def parse_control(text: str | bytes) -> Control:
    obj = _object(text)
    if obj["type"] == "mark":
        name = obj.get("name")
        if not isinstance(name, str):
            raise ProtocolError("mark: 'name' must be a string")
        return Control("mark", name)
    if obj["type"] == "text":
        typed = obj.get("text")
        if not isinstance(typed, str) or not typed.strip() or len(typed) > MAX_TEXT:
            raise ProtocolError(f"text: 'text' must be a non-empty string of at most {MAX_TEXT} characters")
        return Control("text", typed)
    if obj["type"] == "dtmf":
        digit = obj.get("digit")
        if not isinstance(digit, str) or len(digit) != 1 or digit not in "0123456789*#ABCD":
            raise ProtocolError("dtmf: 'digit' must be one of 0-9, *, #, A-D")
        return Control("dtmf", digit)
    if obj["type"] not in ("interrupt", "end"):
        raise ProtocolError(f"unknown message type {obj['type']!r}")
    return Control(obj["type"])


def message(type: str, **fields: Any) -> str:
    """A server -> client JSON message."""
    return json.dumps({"type": type, **fields}, default=str)
