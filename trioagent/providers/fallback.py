"""Fallbacks: `FallbackLLM`, `FallbackTTS`, `FallbackSTT` — several providers, one role.

How this works. The providers are tried in the order given. An LLM or TTS call goes to the first
provider that is not resting; if it fails (an error, or nothing within `first_timeout`) before
its first chunk, the next one takes the same call, and the failed one rests for `cooldown`
seconds (doubled each time it fails again, up to `max_cooldown`). Once it has rested, the next
call tries it first again, with the others still behind it: a provider comes back by answering
a real call. (A background probe would need a task with no owner, or a call of its own that
costs a request: here the "probe" is the next turn, and a failed probe costs at most
`first_timeout` before the fallback answers.) After the first chunk an error is the turn's: a
half-spoken answer is not restarted on another provider.

An STT is a stream for the whole session: when the current one fails, the next one takes the
stream from there (the last `replay` seconds of audio are sent to it again, so the words being
spoken are not lost); a rested provider takes the stream back at the next pause in the audio
the STT is given... which only the VAD knows, so `FallbackSTT` stays on the provider that works.

Every switch calls `on_switch` with a `ProviderSwitched` (the pipelines set it to the session's
``provider_switched`` event; the turn's metrics count them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import attrs
import trio

from ..audio.frame import AudioFrame
from ..audio.resample import StreamResampler
from ..chat import ChatContext
from ..errors import ProviderError, ProviderTimeout
from ..tools import FunctionTool
from .base import LLM, STT, TTS, LLMChunk, TranscriptEvent
from .vad import PreRoll

__all__ = ["FallbackLLM", "FallbackSTT", "FallbackTTS", "ProviderSwitched", "Switching"]

_log = logging.getLogger("trioagent.providers.fallback")

P = TypeVar("P")
T = TypeVar("T")


@attrs.frozen
class ProviderSwitched:
    """`provider_switched`: `stage` ("stt", "llm", "tts") moved from one provider to another."""

    stage: str
    from_provider: str
    to_provider: str
    reason: str


@runtime_checkable
class Switching(Protocol):
    """A provider that reports its switches (the fallbacks): a pipeline sets `on_switch`."""

    on_switch: Callable[[ProviderSwitched], None] | None


def _name(provider: object) -> str:
    return type(provider).__name__


@attrs.define(eq=False)
class _Health:
    """When a provider may be tried again, and how long it rests after its next failure."""

    cooldown: float
    max_cooldown: float
    resting_until: float = -math.inf
    next_rest: float = 0.0

    def available(self, now: float) -> bool:
        return now >= self.resting_until

    def failed(self, now: float) -> None:
        self.next_rest = min(self.max_cooldown, self.next_rest * 2 if self.next_rest else self.cooldown)
        self.resting_until = now + self.next_rest

    def succeeded(self) -> None:
        self.next_rest = 0.0
        self.resting_until = -math.inf


@attrs.define(eq=False)
class _Chain(Generic[P]):
    """The providers of one role and their health (the logic shared by every fallback)."""

    stage: str
    providers: Sequence[P]
    cooldown: float
    max_cooldown: float
    on_switch: Callable[[ProviderSwitched], None] | None = None
    health: list[_Health] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        if not self.providers:
            raise ValueError("a fallback needs at least one provider")
        self.health = [_Health(self.cooldown, self.max_cooldown) for _ in self.providers]

    def order(self) -> list[int]:
        """The providers to try for a call: those not resting, in order; when all rest, all."""
        now = trio.current_time()
        ready = [i for i, h in enumerate(self.health) if h.available(now)]
        return ready or list(range(len(self.providers)))

    def switched(self, failed: int, to: int, reason: str) -> None:
        self.health[failed].failed(trio.current_time())
        event = ProviderSwitched(self.stage, _name(self.providers[failed]), _name(self.providers[to]), reason)
        _log.warning("%s: %s failed (%s); %s takes over", self.stage, event.from_provider, reason, event.to_provider)
        if self.on_switch is not None:
            self.on_switch(event)


async def _first_then_rest(
    chain: _Chain[P], start: Callable[[P], AsyncIterator[T]], first_timeout: float
) -> AsyncIterator[T]:
    """Stream from the first provider that yields its first item within `first_timeout`."""
    order = chain.order()
    last: ProviderError | None = None
    for position, index in enumerate(order):
        provider = chain.providers[index]
        async with aclosing(start(provider)) as stream:  # type: ignore[type-var]
            first = None
            failure: str | None = None
            with trio.move_on_after(first_timeout) as waited:
                try:
                    first = await stream.__anext__()
                except StopAsyncIteration:
                    chain.health[index].succeeded()
                    return  # (an empty answer is an answer)
                except ProviderError as exc:
                    last, failure = exc, f"{type(exc).__name__}: {exc}"
            if waited.cancelled_caught:
                last = ProviderTimeout(f"{_name(provider)} gave nothing within {first_timeout:g} s", provider=_name(provider), stage=chain.stage)
                failure = f"nothing within {first_timeout:g} s"
            if failure is None:
                chain.health[index].succeeded()
                yield first  # type: ignore[misc]
                async for item in stream:
                    yield item
                return
            if position + 1 < len(order):
                chain.switched(index, order[position + 1], failure)
            else:
                chain.health[index].failed(trio.current_time())
    assert last is not None
    raise last


class _Reports:
    """`on_switch`, kept by the fallback's chain (`Switching`)."""

    _chain: _Chain[Any]

    @property
    def on_switch(self) -> Callable[[ProviderSwitched], None] | None:
        return self._chain.on_switch

    @on_switch.setter
    def on_switch(self, callback: Callable[[ProviderSwitched], None] | None) -> None:
        self._chain.on_switch = callback


@attrs.define(eq=False)
class FallbackLLM(_Reports):
    """LLMs tried in order (see the module docstring).

    Args:
        llms: the providers, preferred first.
        first_timeout: seconds a provider may take to its first chunk before the next one is
            asked.
        cooldown: seconds a failed provider rests before it is tried first again (doubled at
            each new failure, up to `max_cooldown`).
    """

    llms: Sequence[LLM]
    first_timeout: float = 10.0
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    _chain: _Chain[LLM] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._chain = _Chain("llm", list(self.llms), self.cooldown, self.max_cooldown)

    def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        return _first_then_rest(self._chain, lambda llm: llm.chat(chat_context, tools), self.first_timeout)


@attrs.define(eq=False)
class FallbackTTS(_Reports):
    """TTSs tried in order (see the module docstring). Audio of a provider with another rate is
    resampled to the first one's (`sample_rate`)."""

    ttss: Sequence[TTS]
    first_timeout: float = 5.0
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    _chain: _Chain[TTS] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._chain = _Chain("tts", list(self.ttss), self.cooldown, self.max_cooldown)

    @property
    def sample_rate(self) -> int:
        return self.ttss[0].sample_rate

    def synthesize(self, text: str) -> AsyncIterator[AudioFrame]:
        return _first_then_rest(self._chain, lambda tts: self._at_rate(tts, text), self.first_timeout)

    async def _at_rate(self, tts: TTS, text: str) -> AsyncIterator[AudioFrame]:
        resampler = StreamResampler(tts.sample_rate, self.sample_rate) if tts.sample_rate != self.sample_rate else None
        async with aclosing(tts.synthesize(text)) as frames:  # type: ignore[type-var]
            async for frame in frames:
                yield resampler.process(frame) if resampler is not None else frame


@attrs.define(eq=False)
class FallbackSTT(_Reports):
    """STTs in order (see the module docstring): when the current one fails, the next takes the
    stream, with the last `replay` seconds of audio sent to it again. All must take audio at
    the first one's `sample_rate` (the others get it resampled)."""

    stts: Sequence[STT]
    replay: float = 2.0
    cooldown: float = 30.0
    max_cooldown: float = 300.0
    _chain: _Chain[STT] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._chain = _Chain("stt", list(self.stts), self.cooldown, self.max_cooldown)

    @property
    def sample_rate(self) -> int:
        return self.stts[0].sample_rate

    async def run(self, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent]) -> None:
        recent = PreRoll(seconds=self.replay)
        async with audio, events:
            for index, stt in enumerate(self.stts):
                try:
                    ended = await self._run_one(stt, audio, events, recent)
                except ProviderError as exc:
                    if index + 1 == len(self.stts):
                        raise
                    self._chain.switched(index, index + 1, f"{type(exc).__name__}: {exc}")
                    continue
                if ended:
                    return

    async def _run_one(
        self, stt: STT, audio: trio.abc.ReceiveChannel[AudioFrame], events: trio.abc.SendChannel[TranscriptEvent], recent: PreRoll
    ) -> bool:
        """Feed `stt` (first what `recent` holds) until the input ends (True) or it fails."""
        resampler = StreamResampler(self.sample_rate, stt.sample_rate) if stt.sample_rate != self.sample_rate else None
        to_stt, from_us = trio.open_memory_channel[AudioFrame](250)
        to_us, from_stt = trio.open_memory_channel[TranscriptEvent](100)
        failure: BaseException | None = None

        async def run_stt() -> None:
            nonlocal failure
            try:
                await stt.run(from_us, to_us)
            except ProviderError as exc:
                failure = exc
                nursery.cancel_scope.cancel()

        async def forward() -> None:
            async with from_stt:
                async for event in from_stt:
                    await events.send(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_stt)
            nursery.start_soon(forward)
            async with to_stt:
                for frame in recent.since(-math.inf):
                    await to_stt.send(resampler.process(frame) if resampler is not None else frame)
                async for frame in audio:
                    recent.push(frame)
                    await to_stt.send(resampler.process(frame) if resampler is not None else frame)
        if failure is not None:
            raise failure
        return True
