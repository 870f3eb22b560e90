"""Assembling OpenAI chat-completions stream chunks into text deltas and tool calls, sans-IO.

Each SSE `data:` payload is one JSON chunk; ``[DONE]`` ends the stream. Text arrives in
``choices[0].delta.content``; tool calls arrive in fragments in ``choices[0].delta.tool_calls``,
keyed by ``index``: the first fragment of a call carries its ``id`` and ``function.name``, the
following ones carry pieces of ``function.arguments``. Asked with ``stream_options:
{"include_usage": true}``, the last chunk before ``[DONE]`` has empty ``choices`` and a ``usage``
object with the token counts.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

__all__ = ["ChatStreamDecoder", "StreamText", "StreamToolCall", "StreamUsage", "StreamDone", "StreamProtocolError"]


class StreamProtocolError(ValueError):
    """A chunk that is not what the chat-completions stream format allows."""


@attrs.frozen
class StreamText:
    text: str


@attrs.frozen
class StreamToolCall:
    call_id: str
    name: str
    arguments: str


@attrs.frozen
class StreamUsage:
    """Token counts, in the chunk with no choices that ends a stream asked for them
    (``stream_options: {"include_usage": true}``)."""

    prompt_tokens: int
    completion_tokens: int


@attrs.frozen
class StreamDone:
    finish_reason: str | None


@attrs.define
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = attrs.field(factory=list)


class ChatStreamDecoder:
    """Feed each SSE data payload; get text as it comes and tool calls once complete."""

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._finish: str | None = None
        self.done = False

    def feed(self, payload: str) -> list[StreamText | StreamToolCall | StreamUsage | StreamDone]:
        if self.done:
            raise StreamProtocolError("data after the end of the stream")
        if payload.strip() == "[DONE]":
            self.done = True
            return [*self._flush_calls(), StreamDone(self._finish)]
        try:
            chunk: Any = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise StreamProtocolError(f"a stream chunk is not JSON: {exc.msg}") from None
        if not isinstance(chunk, dict):
            raise StreamProtocolError("a stream chunk is not a JSON object")
        if "error" in chunk:
            err = chunk["error"]
            message = err.get("message", err) if isinstance(err, dict) else err
            raise StreamProtocolError(f"the server reported an error: {message}")
        out: list[StreamText | StreamToolCall | StreamUsage | StreamDone] = []
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
            if prompt is None or completion is None:
                raise StreamProtocolError("usage without whole, non-negative prompt_tokens and completion_tokens")
            out.append(StreamUsage(prompt, completion))
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise StreamProtocolError("choices[0].delta is not an object")
            content = delta.get("content")
            if isinstance(content, str) and content:
                out.append(StreamText(content))
            for fragment in delta.get("tool_calls") or []:
                if not isinstance(fragment, dict):
                    raise StreamProtocolError("a tool_calls entry is not an object")
                index = fragment.get("index", 0)
                if not isinstance(index, int):
                    raise StreamProtocolError("a tool call index is not an integer")
                call = self._calls.setdefault(index, _PartialCall())
                if fragment.get("id"):
                    call.call_id = str(fragment["id"])
                function = fragment.get("function") or {}
                if function.get("name"):
                    call.name += str(function["name"])
                if function.get("arguments"):
                    call.arguments.append(str(function["arguments"]))
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        return out

    def _flush_calls(self) -> list[StreamToolCall]:
        calls = []
        for index in sorted(self._calls):
            call = self._calls[index]
            if not call.name:
                raise StreamProtocolError(f"tool call {index} never got a name")
            calls.append(StreamToolCall(call.call_id or f"call_{index}", call.name, "".join(call.arguments)))
        self._calls.clear()
        return calls


def _count(value: Any) -> int | None:
    """`value` if it is a token count (a whole, non-negative JSON number), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53 else None
