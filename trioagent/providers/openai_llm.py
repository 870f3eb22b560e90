"""`OpenAILLM`: any OpenAI-compatible chat-completions server (OpenAI, llama.cpp, Ollama, vLLM).

Streams over httpx (which runs under trio through anyio). The event stream and the chunk format
are parsed by sans-IO code in `trioagent._proto`. Cancelling the reply (a barge-in,
`interrupt()`) closes the async generator, which closes the HTTP response and its connection.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import trio

from .._proto.openai_chat import ChatStreamDecoder, StreamProtocolError, StreamText, StreamToolCall, StreamUsage
from .._proto.sse import SSEParser
from ..chat import ChatContext
from ..errors import ProviderError, ProviderTimeout
from ..tools import FunctionTool
from .base import LLMChunk, TextDelta, ToolCall, Usage

__all__ = ["OpenAILLM"]


class OpenAILLM:
    """A streaming chat model behind an OpenAI-compatible HTTP API. It never hangs a turn: every
    wait has a bound, and each ends in a `ProviderError` (a `ProviderTimeout` for the timeouts)
    that ends the turn and leaves the session going.

    Args:
        model: model name (default ``$OPENAI_MODEL``, else ``gpt-4o-mini``).
        base_url: API root, e.g. ``http://localhost:8080/v1`` for llama.cpp (default
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``).
        api_key: bearer token (default ``$OPENAI_API_KEY``; local servers need none).
        temperature: sampling temperature (server default when None).
        max_tokens: a bound on each answer (spoken answers are short); None: the server's.
        extra_body: more fields for the request body (a server's own options).
        connect_timeout: seconds to connect.
        first_token_timeout: seconds from the request to the first event of the stream.
        chunk_timeout: seconds between events after that (keep-alive comments are no progress).
        max_retries: a 429, a 5xx or a failed connection is tried again this many times, with
            backoff (honouring ``Retry-After``), but only before anything was streamed.
        retry_backoff: the first backoff, doubled each retry.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        *,
        max_tokens: int | None = 300,
        extra_body: dict[str, Any] | None = None,
        connect_timeout: float = 5.0,
        first_token_timeout: float = 10.0,
        chunk_timeout: float = 10.0,
        max_retries: int = 2,
        retry_backoff: float = 0.5,
    ) -> None:
        self.model = model or os.environ.get("OPENAI_MODEL") or "gpt-4o-mini"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.connect_timeout = connect_timeout
        self.first_token_timeout = first_token_timeout
        self.chunk_timeout = chunk_timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

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
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        body.update(self.extra_body)
        return body

    async def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        try:
            import httpx
        except ImportError:
            raise ProviderError("OpenAILLM needs httpx: pip install -e '.[openai]' (from a clone of trioagent)", provider="OpenAILLM") from None
        body = self._request(chat_context, tools)
        for attempt in range(self.max_retries + 1):
            started = False
            try:
                async with aclosing(self._attempt(httpx, body)) as stream:
                    async for item in stream:
                        started = True
                        yield item
                return
            except _Retryable as retry:
                if started or attempt == self.max_retries:
                    raise retry.error from None
                await trio.sleep(retry.delay if retry.delay is not None else self.retry_backoff * 2**attempt)

    async def _attempt(self, httpx: Any, body: dict[str, Any]) -> AsyncGenerator[LLMChunk, None]:
        """One request. Raises `_Retryable` (carrying the error) for what may be tried again."""
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.url
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=self.connect_timeout)) as client:
                deadline = trio.current_time() + self.first_token_timeout
                with trio.move_on_at(deadline) as waited:
                    response_cm = client.stream("POST", url, json=body, headers=headers)
                    response = await response_cm.__aenter__()
                if waited.cancelled_caught:
                    raise ProviderTimeout(f"{url} did not answer within {self.first_token_timeout:g} s", provider="OpenAILLM", stage="llm")
                try:
                    async for item in self._stream(response, url, deadline):
                        yield item
                finally:
                    with trio.CancelScope(shield=True):
                        await response_cm.__aexit__(None, None, None)
        except httpx.ConnectError as exc:
            raise _Retryable(ProviderError(f"{url}: cannot connect: {exc}", provider="OpenAILLM", retryable=True)) from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"{url}: {type(exc).__name__}: {exc}", provider="OpenAILLM", retryable=True) from None

    async def _stream(self, response: Any, url: str, deadline: float) -> AsyncGenerator[LLMChunk, None]:
        if response.status_code != 200:
            detail = (await response.aread()).decode("utf-8", errors="replace")[:300]
            error = ProviderError(
                f"{url} answered HTTP {response.status_code}: {detail}",
                provider="OpenAILLM",
                retryable=response.status_code == 429 or response.status_code >= 500,
            )
            if error.retryable:
                raise _Retryable(error, _retry_after(response.headers.get("retry-after")))
            raise error
        kind = response.headers.get("content-type", "")
        if not kind.startswith("text/event-stream"):
            head = (await response.aread())[:200].decode("utf-8", errors="replace")
            raise ProviderError(f"{url} answered 200 with {kind or 'no content type'}, not an event stream: {head!r}", provider="OpenAILLM")
        sse = SSEParser()
        decoder = ChatStreamDecoder()
        chunks = response.aiter_bytes()
        timeout, progressed = self.first_token_timeout, False
        try:
            while not decoder.done:
                with trio.move_on_at(deadline) as waited:
                    try:
                        data = await chunks.__anext__()
                    except StopAsyncIteration:
                        break
                if waited.cancelled_caught:
                    what = "stalled" if progressed else "sent nothing"
                    raise ProviderTimeout(f"{url} {what} for {timeout:g} s", provider="OpenAILLM", stage="llm")
                for event in sse.feed(data):  # (comments make no event: keep-alives are no progress)
                    timeout, progressed = self.chunk_timeout, True
                    deadline = trio.current_time() + timeout
                    if decoder.done:
                        break
                    for item in decoder.feed(event.data):
                        if isinstance(item, StreamText):
                            yield TextDelta(item.text)
                        elif isinstance(item, StreamToolCall):
                            yield ToolCall(item.name, item.arguments, item.call_id)
                        elif isinstance(item, StreamUsage):
                            yield Usage(item.prompt_tokens, item.completion_tokens)
        except (StreamProtocolError, ValueError) as exc:
            raise ProviderError(f"{url}: bad stream: {exc}", provider="OpenAILLM") from None
        finally:
            await chunks.aclose()
        if not decoder.done:
            raise ProviderError(f"{url}: the stream ended before [DONE]", provider="OpenAILLM", retryable=True)


class _Retryable(Exception):
    def __init__(self, error: ProviderError, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number; a date is not worth a clock read), at
    most 10."""
    try:
        return min(10.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None
