"""A tiny OpenAI-compatible chat-completions server on loopback, for tests. The request's
"model" picks the behaviour: text, tools, error, stall, drop, garbage."""

from __future__ import annotations

import json
from typing import Any

import h11
import trio


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


async def serve(server: FakeOpenAI, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(server.handle, listeners)
