"""The sans-IO wire formats (`trioagent._proto`): Twilio Media Streams and the browser protocol,
with hypothesis fuzzing: any input either parses or raises ProtocolError, never anything else."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trioagent._proto import browser as bp
from trioagent._proto.twilio import TwilioConnected, TwilioDtmf, TwilioMark, TwilioMedia, TwilioProtocol, TwilioStart, TwilioStop
from trioagent.audio import ulaw_decode, ulaw_encode
from trioagent.auth import TokenError, mint_token, verify_token
from trioagent.errors import ProtocolError

# A real call's messages, as Twilio documents them (field names and nesting kept).
CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": "abc", "caller": "+15550100"},
    },
    "streamSid": "MZ1",
}
MEDIA = {"event": "media", "sequenceNumber": "3", "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "f39/fw=="}, "streamSid": "MZ1"}
MARK = {"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": {"name": "t=1.200"}}
DTMF = {"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5", "dtmf": {"track": "inbound_track", "digit": "1"}}
STOP = {"event": "stop", "sequenceNumber": "6", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}}


def test_a_whole_twilio_stream() -> None:
    proto = TwilioProtocol()
    assert proto.receive(json.dumps(CONNECTED)) == TwilioConnected("Call", "1.0.0")
    assert proto.receive(json.dumps(START)) == TwilioStart("MZ1", "CA1", {"token": "abc", "caller": "+15550100"})
    media = proto.receive(json.dumps(MEDIA))
    assert isinstance(media, TwilioMedia) and media.timestamp_ms == 5
    assert media.samples.tolist() == ulaw_decode(b"\x7f\x7f\x7f\x7f").tolist()
    assert proto.receive(json.dumps(MARK)) == TwilioMark("t=1.200")
    assert proto.receive(json.dumps(DTMF)) == TwilioDtmf("1")
    assert proto.receive(json.dumps(STOP)) == TwilioStop()
    with pytest.raises(ProtocolError, match="after stop"):
        proto.receive(json.dumps(MEDIA))


def test_twilio_messages_out() -> None:
    proto = TwilioProtocol()
    with pytest.raises(ProtocolError, match="no stream yet"):
        proto.clear()
    proto.receive(json.dumps(START))
    samples = (np.sin(np.arange(160) / 5) * 8000).astype(np.int16)
    media = json.loads(proto.media(samples))
    assert media["event"] == "media" and media["streamSid"] == "MZ1"
    assert base64.b64decode(media["media"]["payload"]) == ulaw_encode(samples)
    assert json.loads(proto.mark("t=2.000")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "t=2.000"}}
    assert json.loads(proto.clear()) == {"event": "clear", "streamSid": "MZ1"}


@pytest.mark.parametrize(
    "message, error",
    [
        ("[]", "JSON object"),
        ("nope", "not JSON"),
        (json.dumps({"event": "start"}), "'start' must be a dict"),
        (json.dumps({**START, "start": {**START["start"], "mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000}}}), "unsupported media format"),
        (json.dumps({**START, "start": {**START["start"], "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "fast"}}}), "unsupported media format"),
        (json.dumps({**START, "start": {**START["start"], "customParameters": [1]}}), "'customParameters' must be an object"),
        (json.dumps({"event": "mark", "mark": {}}), "'name' must be a str"),
    ],
)
def test_twilio_bad_messages(message: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        TwilioProtocol().receive(message)


def test_twilio_media_checks() -> None:
    proto = TwilioProtocol(max_payload=160)
    proto.receive(json.dumps(START))
    for payload, error in (("@@@@", "not valid base64"), (base64.b64encode(b"\xff" * 400).decode(), "larger than 160")):
        with pytest.raises(ProtocolError, match=error):
            proto.receive(json.dumps({**MEDIA, "media": {"payload": payload}}))
    for bad in ("soon", -1, 1e300, "12.5", True, "9" * 40):
        with pytest.raises(ProtocolError, match="'timestamp' must be a whole number of milliseconds"):
            proto.receive(json.dumps({**MEDIA, "media": {"payload": "", "timestamp": bad}}))
    assert proto.receive(json.dumps({**MEDIA, "media": {"payload": "", "timestamp": "1234"}})).timestamp_ms == 1234


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
EVENTS = ["connected", "start", "media", "mark", "dtmf", "stop", "clear", "x"]
KEYS = ["event", "start", "media", "mark", "dtmf", "stop", "streamSid", "payload", "mediaFormat", "customParameters",
        "encoding", "sampleRate", "name", "digit", "timestamp", "type", "token", "sample_rate", "output_sample_rate"]


def messages() -> st.SearchStrategy[Any]:
    """Things shaped like protocol messages: known keys and events with arbitrary values, as
    well as arbitrary JSON, arbitrary text and arbitrary bytes."""
    field = st.sampled_from(KEYS)
    shaped = st.recursive(
        st.sampled_from(EVENTS) | json_values,
        lambda children: st.dictionaries(field, children, max_size=5),
        max_leaves=12,
    ).map(json.dumps)
    real = st.sampled_from([CONNECTED, START, MEDIA, MARK, DTMF, STOP]).flatmap(
        lambda m: st.fixed_dictionaries({k: st.just(v) | json_values for k, v in m.items()})
    ).map(json.dumps)
    return shaped | real | json_values.map(json.dumps) | st.text(max_size=60) | st.binary(max_size=60)


@settings(max_examples=400, deadline=None)
@given(st.lists(messages(), max_size=8))
def test_twilio_fuzz(stream: list[Any]) -> None:
    proto = TwilioProtocol()
    for message in stream:
        try:
            event = proto.receive(message)
        except ProtocolError as exc:
            assert str(exc)  # a reason for the close frame
            continue
        if isinstance(event, TwilioMedia):
            assert event.samples.dtype == np.int16 and len(event.samples) <= proto.max_payload


@settings(max_examples=300, deadline=None)
@given(messages())
def test_browser_fuzz(message: Any) -> None:
    for parse in (bp.parse_hello, bp.parse_control):
        try:
            parsed = parse(message)
        except ProtocolError as exc:
            assert str(exc)
            continue
        if isinstance(parsed, bp.Hello):
            assert parsed.sample_rate in bp.RATES and parsed.output_sample_rate in bp.RATES
        else:
            assert parsed.type in ("interrupt", "end", "mark") and isinstance(parsed.name, str)


def test_browser_hello() -> None:
    assert bp.parse_hello('{"type": "hello"}') == bp.Hello(16000, 24000, "")
    assert bp.parse_hello('{"type": "hello", "sample_rate": 48000, "output_sample_rate": 8000, "token": "t"}') == bp.Hello(48000, 8000, "t")
    for bad, error in (('{"type": "hello", "sample_rate": true}', "sample_rate must be one of"), ('{"type": "hello", "token": 5}', "token must be a string")):
        with pytest.raises(ProtocolError, match=error):
            bp.parse_hello(bad)


def test_tokens() -> None:
    now = 1_800_000_000.0
    token = mint_token("s3cret", ttl=60, subject="alice", now=lambda: now)
    assert verify_token(token, "s3cret", now=lambda: now + 59) == {"exp": int(now + 60), "sub": "alice"}
    cases = [
        (token, "other", now, "bad token signature"),
        (token, "s3cret", now + 60, "token expired"),
        ("nodot", "s3cret", now, "malformed token"),
        (token.replace(".", "x.", 1), "s3cret", now, "bad token signature"),
    ]
    for tok, secret, t, error in cases:
        with pytest.raises(TokenError, match=error):
            verify_token(tok, secret, now=lambda t=t: t)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_token_fuzz(text: str) -> None:
    with pytest.raises(TokenError):
        verify_token(text, "s3cret")


def test_close_reasons_fit_a_control_frame() -> None:
    from trioagent.server import _reason

    assert _reason("short") == "short"
    long = _reason("é" * 200)  # two bytes each: the cut must not split one
    assert len(long.encode()) <= 123 and long.endswith("...") and "\ufffd" not in long
