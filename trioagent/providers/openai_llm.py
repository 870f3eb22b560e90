"""`OpenAILLM`: any OpenAI-compatible chat-completions server (OpenAI, llama.cpp, Ollama, vLLM).

Streams over httpx (which runs under trio through anyio). The event stream and the chunk format
are parsed by sans-IO code in `trioagent._proto`. Cancelling the reply (a barge-in,
`interrupt()`) closes the async generator, which closes the HTTP response and its connection.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from .._proto.openai_chat import ChatStreamDecoder, StreamProtocolError, StreamText, StreamToolCall, StreamUsage
from .._proto.sse import SSEParser
from ..chat import ChatContext
from ..errors import ProviderError
from ..tools import FunctionTool
from .base import LLMChunk, TextDelta, ToolCall, Usage

__all__ = ["OpenAILLM"]


class OpenAILLM:
    """A streaming chat model behind an OpenAI-compatible HTTP API.

    Args:
        model: model name (default ``$OPENAI_MODEL``, else ``gpt-4o-mini``).
        base_url: API root, e.g. ``http://localhost:8080/v1`` for llama.cpp (default
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``).
        api_key: bearer token (default ``$OPENAI_API_KEY``; local servers need none).
        temperature: sampling temperature (server default when None).
        connect_timeout: seconds to connect; the caller's cancel scopes bound the rest.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.model = model or os.environ.get("OPENAI_MODEL") or "gpt-4o-mini"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.temperature = temperature
        self.connect_timeout = connect_timeout

    def _request(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": chat_context.to_openai(),
            "stream": True,
            "stream_options": {"include_usage": True},  # token counts for the turn's metrics
        }
        if tools:
            body["tools"] = [t.schema() for t in tools]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        try:
            import httpx
        except ImportError:
            raise ProviderError("OpenAILLM needs httpx: pip install -e '.[openai]' (from a clone of trioagent)", provider="OpenAILLM") from None
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        timeout = httpx.Timeout(None, connect=self.connect_timeout)
        url = f"{self.base_url}/chat/completions"
        try:
            async with httpx.AsyncClient(timeout=timeout) as client:
                async with client.stream("POST", url, json=self._request(chat_context, tools), headers=headers) as response:
                    if response.status_code != 200:
                        detail = (await response.aread()).decode("utf-8", errors="replace")[:300]
                        raise ProviderError(
                            f"{url} answered HTTP {response.status_code}: {detail}",
                            provider="OpenAILLM",
                            retryable=response.status_code == 429 or response.status_code >= 500,
                        )
                    sse = SSEParser()
                    decoder = ChatStreamDecoder()
                    async with aclosing(response.aiter_bytes()) as stream:  # type: ignore[type-var]
                        async for data in stream:
                            if decoder.done:
                                continue  # read to the end, so the connection is left clean
                            for event in sse.feed(data):
                                if decoder.done:
                                    break
                                for item in decoder.feed(event.data):
                                    if isinstance(item, StreamText):
                                        yield TextDelta(item.text)
                                    elif isinstance(item, StreamToolCall):
                                        yield ToolCall(item.name, item.arguments, item.call_id)
                                    elif isinstance(item, StreamUsage):
                                        yield Usage(item.prompt_tokens, item.completion_tokens)
                    if not decoder.done:
                        raise ProviderError(f"{url}: the stream ended before [DONE]", provider="OpenAILLM", retryable=True)
        except httpx.HTTPError as exc:
            raise ProviderError(f"{url}: {type(exc).__name__}: {exc}", provider="OpenAILLM", retryable=True) from None
        except (StreamProtocolError, ValueError) as exc:
            raise ProviderError(f"{url}: bad stream: {exc}", provider="OpenAILLM") from None
