"""The server against arbitrary bytes (hypothesis): request heads, and WebSocket text and binary
messages whose payload is anything at all (invalid UTF-8 in a text frame included). Whatever
comes: no traceback in the log, an HTTP answer or a close code from the documented set, and the
server still serves a healthy caller afterwards."""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .netkit import hello, raw_exchange, start_memory_server, twilio_start, upgrade_request
from .test_server import browser_conversation

# docs/protocol.md, "Safety and close codes" (1002: the WebSocket layer's own, for broken frames)
CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013}
HTTP_STATUSES = {b"400", b"403", b"404", b"405", b"426"}
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame carrying any payload (a text frame need not be UTF-8 here)."""
    mask = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([0x80 | n]) if n < 126 else b"\xfe" + struct.pack("!H", n) if n < 65536 else b"\xff" + struct.pack("!Q", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(data: bytes) -> int | None:
    """The code of the first close frame in what the server sent after its handshake answer."""
    head_end = data.find(b"\r\n\r\n")
    body = data[head_end + 4 :]
    i = 0
    while i + 2 <= len(body):
        opcode, n = body[i] & 0x0F, body[i + 1] & 0x7F
        i += 2
        if n == 126:
            n, i = struct.unpack("!H", body[i : i + 2])[0], i + 2
        elif n == 127:
            n, i = struct.unpack("!Q", body[i : i + 8])[0], i + 8
        payload = body[i : i + n]
        i += n
        if opcode == 0x8:
            return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
    return None


def run_server_case(case: Any) -> None:
    """Run `case(listener, server)` against a fresh in-memory server in virtual time, then check
    a healthy caller is still served and nothing was logged as an error."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("trioagent").addHandler(handler)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server, listener = await start_memory_server(nursery, hello_timeout=2.0)
            await case(listener)
            client = await browser_conversation(listener)
            assert [m["text"] for m in client.of("transcript")] == ["hello agent"]
            server.shutdown()

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        logging.getLogger("trioagent").removeHandler(handler)
    assert [r.getMessage() for r in records] == []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_any_request_head(head: bytes) -> None:
    async def case(listener: Any) -> None:
        for data in (head, head + b"\r\n\r\n", b"GET /ws HTTP/1.1\r\n" + head + b"\r\n\r\n"):
            answer = await raw_exchange(listener, data, read_for=5.0)
            assert answer == b"" or answer[9:12] in HTTP_STATUSES | {b"200"}, answer[:60]

    run_server_case(case)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["/ws", "/twilio"]), st.booleans(), st.lists(st.tuples(st.sampled_from([0x1, 0x2]), st.binary(max_size=200)), min_size=1, max_size=4))
def test_any_websocket_message(path: str, after_hello: bool, messages: list[tuple[int, bytes]]) -> None:
    async def case(listener: Any) -> None:
        data = upgrade_request(path)
        if after_hello:
            first = hello() if path == "/ws" else twilio_start()
            data += frame(0x1, first.encode())
        data += b"".join(frame(op, payload) for op, payload in messages)
        answer = await raw_exchange(listener, data, read_for=30.0)
        assert answer.startswith(b"HTTP/1.1 101"), answer[:60]
        code = close_code(answer)
        assert code in CLOSE_CODES, (code, answer[-80:])

    run_server_case(case)


@pytest.mark.parametrize("payload", [b"\xff\xfe\xfd", b'{"type": "hello"\xc3\x28}', "ok".encode() + b"\xed\xa0\x80"])
def test_text_frames_that_are_not_utf8_get_1007(payload: bytes) -> None:
    async def case(listener: Any) -> None:
        answer = await raw_exchange(listener, upgrade_request("/ws") + frame(0x1, payload), read_for=30.0)
        assert close_code(answer) == 1007

    run_server_case(case)
