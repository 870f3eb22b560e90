"""The OpenAI Realtime protocol module, without an event loop: every server event the pipeline
reads, malformed messages, and fuzzing (anything is an event or a ProtocolError)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trioagent._proto import openai_realtime as rt
from trioagent.errors import ProtocolError


def test_every_server_event_parses_to_its_value() -> None:
    ev = rt.ServerEvents()
    assert rt.parse_server(rt.encode(ev.speech_started(120, "i1"))) == rt.SpeechStarted(120, "i1")
    assert rt.parse_server(rt.encode(ev.speech_stopped(900, "i1"))) == rt.SpeechStopped(900, "i1")
    assert rt.parse_server(rt.encode(ev.committed("i1"))) == rt.Committed("i1")
    assert rt.parse_server(rt.encode(ev.input_transcript("i1", "hi"))) == rt.InputTranscript("i1", "hi")
    assert rt.parse_server(rt.encode(ev.response_created("r1"))) == rt.ResponseCreated("r1")
    assert rt.parse_server(rt.encode(ev.audio_delta("r1", "i2", b"\x01\x00\x02\x00"))) == rt.AudioDelta("r1", "i2", 0, b"\x01\x00\x02\x00")
    assert rt.parse_server(rt.encode(ev.transcript_delta("r1", "i2", "Hel"))) == rt.TranscriptDelta("r1", "i2", "Hel")
    assert rt.parse_server(rt.encode(ev.function_call_done("r1", "i3", "c1", "f", "{}"))) == rt.FunctionCallDone("r1", "c1", "f", "{}")
    assert rt.parse_server(rt.encode(ev.response_done("r1", "completed", input_tokens=3, output_tokens=4))) == rt.ResponseDone("r1", "completed", 3, 4)
    failed = rt.parse_server(json.dumps({"type": "response.done", "response": {"id": "r2", "status": "failed", "status_details": {"error": {"message": "quota"}}}}))
    assert failed == rt.ResponseDone("r2", "failed", reason="quota")
    error = rt.parse_server(rt.encode(ev.error("invalid_request_error", "response_cancel_not_active", "no")))
    assert isinstance(error, rt.Error) and error.benign
    assert rt.parse_server('{"type": "rate_limits.updated", "rate_limits": []}') == rt.Unknown("rate_limits.updated")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "without a type"),
        ('{"type": 5}', "without a type"),
        ('{"type": "input_audio_buffer.speech_started", "item_id": "i"}', "audio_start_ms is missing"),
        ('{"type": "input_audio_buffer.speech_started", "audio_start_ms": true, "item_id": "i"}', "audio_start_ms is missing or not a int"),
        ('{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "content_index": 0, "delta": "@@@"}', "not base64"),
        ('{"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "content_index": 0, "delta": "AQ=="}', "whole 16-bit"),
        ('{"type": "response.done", "response": {"status": "completed"}}', "response.id is missing"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_malformed_server_messages_are_protocol_errors(message: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        rt.parse_server(message)


def test_client_side_parsing() -> None:
    event = rt.parse_client(rt.encode(rt.audio_append(b"\x00\x01\x00\x02")))
    assert rt.appended_audio(event) == b"\x00\x01\x00\x02"
    with pytest.raises(ProtocolError, match="not whole 16-bit"):
        rt.appended_audio({"type": "input_audio_buffer.append", "audio": "AQ=="})
    with pytest.raises(ProtocolError, match="without a type"):
        rt.parse_client("{}")


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200), st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10), lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["type", "response", "delta", "item_id", "audio_start_ms", "response_id", "content_index", "id", "status", "error"]), c, max_size=5), max_leaves=20).map(json.dumps)))
def test_any_message_is_an_event_or_a_protocol_error(message: str | bytes) -> None:
    for parse in (rt.parse_server, rt.parse_client):
        try:
            parse(message)
        except ProtocolError:
            pass


@given(st.sampled_from(["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                        "conversation.item.input_audio_transcription.completed", "response.created", "response.output_audio.delta",
                        "response.output_audio_transcript.delta", "response.function_call_arguments.done", "response.done", "error"]),
       st.dictionaries(st.sampled_from(["response", "delta", "item_id", "audio_start_ms", "audio_end_ms", "response_id", "content_index",
                                        "transcript", "call_id", "name", "arguments", "error"]),
                       st.none() | st.integers() | st.text(max_size=8) | st.dictionaries(st.sampled_from(["id", "status", "usage"]), st.text(max_size=4) | st.integers(), max_size=3),
                       max_size=8))  # fmt: skip
def test_known_events_with_any_fields_are_events_or_protocol_errors(kind: str, fields: dict[str, object]) -> None:
    try:
        rt.parse_server(json.dumps({"type": kind, **fields}))
    except ProtocolError:
        pass
