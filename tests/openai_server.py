"""A tiny OpenAI-compatible chat-completions server on loopback, for tests. The request's
"model" picks the behaviour: text, tools, error, stall, drop, garbage."""

from __future__ import annotations

import json
from typing import Any

import h11
import numpy as np
import trio


SENT_TRANSCRIPTIONS: list[dict[str, Any]] = []
"""Every transcription the fake answered (validated with the openai SDK's `Transcription`)."""

SENT: list[dict[str, Any]] = []
"""Every JSON chunk any fake server sent (the tests validate them with the openai SDK's model)."""


def sse(obj: Any) -> bytes:
    if not isinstance(obj, str):
        SENT.append(obj)
    return f"data: {json.dumps(obj) if not isinstance(obj, str) else obj}\n\n".encode()


def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1764000000, "model": "fake", "choices": choices, **extra}


def delta(**d: Any) -> dict[str, Any]:
    return chunk([{"index": 0, "delta": d, "finish_reason": None}])


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.stalled = trio.Event()
        self.closed_streams = 0
        self.hung_up = trio.Event()
        self.transcripts: list[str] = []  # what /audio/transcriptions answers, in order ("error": a 503)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        body = b""
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert request is not None
        path = request.target.decode()
        if path.endswith("/audio/speech") or path.endswith("/audio/transcriptions"):
            await self._audio(stream, conn, request, path, body)
            return
        payload = json.loads(body)
        self.requests.append({"path": request.target.decode(), "headers": dict(request.headers), "body": payload})
        mode = payload["model"]
        if mode == "busy-then-text":
            tries = sum(1 for r in self.requests if r["body"]["model"] == mode)
            mode = "busy" if tries == 1 else "error" if tries == 2 else "text"
        if mode == "busy":
            text = b'{"error": {"message": "rate limited"}}'
            head = [("content-length", str(len(text))), ("retry-after", "0")]
            await stream.send_all(conn.send(h11.Response(status_code=429, headers=head)) + conn.send(h11.Data(data=text)) + conn.send(h11.EndOfMessage()))
            return
        if mode in ("html", "json"):
            text = b"<html><body>Sign in</body></html>" if mode == "html" else b'{"choices": [{"message": {"content": "hi"}}]}'
            kind = "text/html" if mode == "html" else "application/json"
            head = [("content-length", str(len(text))), ("content-type", kind)]
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=head)) + conn.send(h11.Data(data=text)) + conn.send(h11.EndOfMessage()))
            return
        if mode == "error":
            text = b'{"error": {"message": "model overloaded"}}'
            await stream.send_all(conn.send(h11.Response(status_code=503, headers=[("content-length", str(len(text)))])))
            await stream.send_all(conn.send(h11.Data(data=text)) + conn.send(h11.EndOfMessage()))
            return
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[("content-type", "text/event-stream"), ("transfer-encoding", "chunked")])))

        async def send(raw: bytes) -> None:
            await stream.send_all(conn.send(h11.Data(data=raw)))

        try:
            if mode == "text":
                for piece in ["Hello", " there.", " How can", " I help?"]:
                    await send(sse(delta(content=piece)))
                if (payload.get("stream_options") or {}).get("include_usage"):
                    usage = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28}
                    await send(sse(chunk([], usage=usage)))
                await send(sse("[DONE]"))
            elif mode == "tools":
                first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
                await send(sse(delta(tool_calls=[first])))
                for piece in ['{"ci', 'ty": "Pa', 'ris"}']:
                    await send(sse(delta(tool_calls=[{"index": 0, "function": {"arguments": piece}}])))
                second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
                # two events in one write, one split across writes: the parser must not care
                blob = sse(delta(tool_calls=[second])) + sse("[DONE]")
                await send(blob[:7])
                await send(blob[7:])
            elif mode == "keepalive":
                while True:  # comments only, until the client hangs up
                    await send(b": keep-alive\n\n")
                    await trio.sleep(0.05)
            elif mode == "stall":
                await send(sse(delta(content="Let me think")))
                self.stalled.set()
                while await stream.receive_some(1024):  # until the client hangs up
                    pass
                return
            elif mode == "drop":
                await send(sse(delta(content="Half a sen")))
                await stream.aclose()
                return
            elif mode == "garbage":
                await send(b"data: {not json\n\n")
            await stream.send_all(conn.send(h11.EndOfMessage()))
        finally:
            self.closed_streams += 1


    async def _audio(self, stream: trio.SocketStream, conn: h11.Connection, request: h11.Request, path: str, body: bytes) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}

        async def answer(status: int, data: bytes, kind: str) -> None:
            head = [("content-length", str(len(data))), ("content-type", kind)]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=head)) + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))

        if path.endswith("/audio/speech"):
            payload = json.loads(body)
            self.requests.append({"path": path, "headers": headers, "body": payload})
            text = payload["input"]
            if text == "unauthorized":
                await answer(401, b'{"error": {"message": "Incorrect API key provided"}}', "application/json")
                return
            if text == "json":
                await answer(200, b'{"error": null}', "application/json")
                return
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=[("content-type", "application/octet-stream"), ("transfer-encoding", "chunked")])))
            samples = len(text.split()) * 6000  # 0.25 s a word at 24 kHz
            pcm = (np.sin(np.arange(samples) * 2 * np.pi * 220 / 24000) * 8000).astype("<i2").tobytes()
            for i in range(0, len(pcm), 1001):  # (odd sizes: frames must be reassembled)
                await stream.send_all(conn.send(h11.Data(data=pcm[i : i + 1001])))
                if text.startswith("stall") and i > 4000:
                    self.stalled.set()
                    while await stream.receive_some(1024):
                        pass
                    self.hung_up.set()  # the client closed its side
                    return
                await trio.sleep(0)
            await stream.send_all(conn.send(h11.EndOfMessage()))
            return
        boundary = headers["content-type"].split("boundary=")[1].encode()
        fields: dict[str, Any] = {}
        for part in body.split(b"--" + boundary)[1:-1]:
            head, _, content = part.strip(b"\r\n").partition(b"\r\n\r\n")
            name = head.split(b'name="')[1].split(b'"')[0].decode()
            fields[name] = content if name == "file" else content.decode()
        self.requests.append({"path": path, "headers": headers, "body": fields})
        if self.transcripts and self.transcripts[0] == "garbage":
            self.transcripts.pop(0)
            await answer(200, b'{"txt": 1}', "application/json")
            return
        if self.transcripts and self.transcripts[0] == "error":
            self.transcripts.pop(0)
            await answer(503, b'{"error": {"message": "overloaded"}}', "application/json")
            return
        text = self.transcripts.pop(0) if self.transcripts else ""
        SENT_TRANSCRIPTIONS.append({"text": text})
        await answer(200, json.dumps({"text": text}).encode(), "application/json")


async def serve(server: FakeOpenAI, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(server.handle, listeners)
