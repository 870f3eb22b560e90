"""`trioagent demo`: a real spoken conversation with no network and no model download.

A caller's questions are synthesised with eSpeak NG into a WAV file, which plays into a full
`AgentSession` over a `WavFileTransport`: PocketSphinx hears it, `RuleLLM` (or any
OpenAI-compatible server) answers, eSpeak NG speaks. Each turn is printed with what the caller
said, what the STT heard, what the agent answered, and the measured latencies.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zlib
from collections.abc import Sequence
from typing import Any, TextIO

import attrs
import numpy as np
import trio
import trio.testing

from .agent import Agent
from .audio.codec import write_wav
from .audio.frame import AudioFrame
from .audio.resample import resample
from .events import ErrorEvent
from .mcp import MCPServer
from .metrics import TurnMetrics
from .pipeline.base import Pipeline
from .pipeline.cascading import CascadingPipeline
from .providers.base import LLM
from .providers.espeak import EspeakTTS
from .providers.pocketsphinx import DEMO_GRAMMAR, PocketsphinxSTT
from .providers.rule_llm import RuleLLM
from .session import AgentSession
from .tools import function_tool
from .transports.wavfile import WavFileTransport

__all__ = ["QUESTIONS", "MCP_QUESTIONS", "DemoAgent", "DemoTurn", "run_demo", "make_caller_audio", "agent_factory"]

QUESTIONS = [
    "Hello there.",
    "What time is it?",
    "What is the weather in Paris?",
    "What is the date today?",
    "Thank you, goodbye.",
]
MCP_QUESTIONS = [q if q != "What time is it?" else "Tell me the time in Tokyo." for q in QUESTIONS]
"""The questions when the agent has MCP servers: the time is asked for a city, for the server."""
GREETING = "Hi! I am the trio agent demo. Ask me the time, the date, or the weather."
CALLER_VOICE = {"voice": "en-us+m3", "rate": 150}
LEAD = 5.5  # seconds before the first question (the agent greets first)
GAP = 4.5  # seconds after each question, for the answer


class DemoAgent(Agent):
    """The demo's agent: greets, and has a (pretend) weather tool, and the tools of any MCP
    servers it is given (e.g. the reference time server's `get_current_time`)."""

    def __init__(self, mcp_servers: Sequence[MCPServer] = ()) -> None:
        super().__init__(instructions="You are a friendly voice assistant. Answer in one short sentence.", mcp_servers=mcp_servers)

    async def on_enter(self) -> None:
        await self.session.say(GREETING)

    @function_tool
    async def get_weather(self, city: str) -> dict[str, Any]:
        """Look up the current weather for a city.

        Args:
            city: the city name.
        """
        h = zlib.crc32(city.lower().encode())
        return {"city": city, "sky": ["sunny", "cloudy", "rainy", "windy"][h % 4], "celsius": 8 + h % 18}


@attrs.define
class DemoTurn:
    said: str
    said_at: tuple[float, float]
    heard: str = ""
    answered: str = ""
    """What the agent said in answer (as heard: cut short if interrupted)."""
    failed: str = ""
    """Why answering failed (an LLM or TTS error), if it did."""
    metrics: TurnMetrics | None = None


async def make_caller_audio(path: str, questions: list[str] = QUESTIONS) -> list[DemoTurn]:
    """Synthesise the caller's side (16 kHz WAV at `path`); return the turns with their times."""
    tts = EspeakTTS(**CALLER_VOICE)  # type: ignore[arg-type]
    rate = 16000
    parts = [np.zeros(round(LEAD * rate), np.int16)]
    turns: list[DemoTurn] = []
    t = LEAD
    for question in questions:
        frames = [f async for f in tts.synthesize(question)]
        speech = resample(AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate), rate).samples
        turns.append(DemoTurn(question, (t, t + len(speech) / rate)))
        parts += [speech, np.zeros(round(GAP * rate), np.int16)]
        t += len(speech) / rate + GAP
    write_wav(path, AudioFrame(np.concatenate(parts), rate))
    return turns


def agent_factory() -> tuple[Agent, CascadingPipeline]:
    """The demo agent with the offline providers, one per session: for
    ``trioagent serve trioagent.demo:agent_factory``."""
    pipeline = CascadingPipeline(stt=PocketsphinxSTT(grammar=DEMO_GRAMMAR), llm=RuleLLM(), tts=EspeakTTS())
    return DemoAgent(), pipeline


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{x * 1000:4.0f}ms"


class _Console:
    """Lines on `out`, and (on a terminal) a progress line on stderr that each line clears first."""

    def __init__(self, out: TextIO, progress: bool) -> None:
        self.out = out
        self.progress_shown = progress

    def line(self, text: str) -> None:
        if self.progress_shown:
            print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)
        print(text, file=self.out, flush=True)

    def progress(self, t: float, total: float) -> None:
        if self.progress_shown:
            print(f"\r  {t:5.1f} s / {total:.1f} s", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.progress_shown:
            print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)


async def run_demo(
    output_path: str,
    *,
    llm: LLM | None = None,
    out: TextIO = sys.stdout,
    progress: bool = False,
    virtual: bool = False,
    mcp_servers: Sequence[MCPServer] = (),
    pipeline: Pipeline | None = None,
) -> list[DemoTurn]:
    """Run the whole demo conversation; returns the turns (also printed to `out`).

    Args:
        mcp_servers: give the agent these MCP servers (and ask the time in Tokyo).
        pipeline: run the agent on this pipeline (a `RealTimePipeline`, say) instead of the
            offline cascading one.
        progress: show a progress line on stderr (a terminal), cleared before each printed line.
        virtual: say that the latencies printed are virtual (the run is under a MockClock).
    """
    console = _Console(out, progress)
    with tempfile.TemporaryDirectory() as tmp:
        caller_path = os.path.join(tmp, "caller.wav")
        turns = await make_caller_audio(caller_path, MCP_QUESTIONS if mcp_servers else QUESTIONS)
        transport = WavFileTransport(caller_path, output_path, output_sample_rate=EspeakTTS.sample_rate, tail=1.0)
        if pipeline is None:
            pipeline = CascadingPipeline(stt=PocketsphinxSTT(grammar=DEMO_GRAMMAR), llm=llm or RuleLLM(), tts=EspeakTTS())
        session = AgentSession(DemoAgent(mcp_servers), pipeline, transport=transport)
        t0 = trio.current_time()
        clock = " (virtual time)" if virtual else ""

        def turn_for(start: float | None) -> DemoTurn | None:
            if start is None:
                return None
            rel = start - t0
            return min(turns, key=lambda turn: abs(turn.said_at[0] - rel))

        def on_error(event: ErrorEvent) -> None:
            # The turn being answered is the latest one the caller has finished saying.
            now = trio.current_time() - t0
            said = [t for t in turns if t.said_at[1] <= now]
            if said:
                said[-1].failed = event.reason
            console.line(f"error       : {event.reason}")

        def on_metrics(m: TurnMetrics) -> None:
            turn = turn_for(m.user_speech_start)
            if turn is None or m.user_speech_start is None:
                console.line(f"agent : {m.agent_text}")
                return
            turn.heard, turn.answered, turn.metrics = m.user_text, m.agent_text, m
            console.line(f"\ncaller said : {turn.said}")
            console.line(f"STT heard   : {m.user_text}")
            console.line(f"agent said  : {m.agent_text}{'  [interrupted]' if m.interrupted else ''}{'  [nothing: ' + turn.failed + ']' if turn.failed and not m.agent_text else ''}")
            console.line(
                f"latency{clock}: end-of-turn {_fmt(m.end_of_utterance_delay)}, STT final {_fmt(m.stt_final_latency)}, "
                f"LLM first token {_fmt(m.llm_ttft)}, TTS first audio {_fmt(m.tts_ttfb)}, "
                f"end-to-end {_fmt(m.e2e_latency)}, tools {m.tool_calls}"
            )

        session.on("metrics_collected", on_metrics)
        session.on("error", on_error)
        session.on("agent_speech_started", lambda e: console.line(f"agent : {e.text}") if e.text == GREETING else None)
        async with trio.open_nursery() as nursery:

            async def report() -> None:
                while True:
                    console.progress(trio.current_time() - t0, transport.duration)
                    await trio.sleep(0.5)

            nursery.start_soon(report)
            await session.run()
            nursery.cancel_scope.cancel()
        console.done()
        return turns


def run(
    fast: bool, output_path: str, llm: LLM | None, out: TextIO = sys.stdout, mcp_servers: Sequence[MCPServer] = (), pipeline: Pipeline | None = None
) -> list[DemoTurn]:
    """Run the demo in real time, or in virtual time with `fast`."""
    clock = trio.testing.MockClock(autojump_threshold=0) if fast else None
    return trio.run(
        lambda: run_demo(output_path, llm=llm, out=out, progress=sys.stderr.isatty(), virtual=fast, mcp_servers=mcp_servers, pipeline=pipeline),
        clock=clock,
    )
