"""Helpers for session tests (on top of the public test kit)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from trioagent import Agent, AgentSession, CascadingPipeline
from trioagent.testing import MemoryTransport, ScriptedLLM, ScriptedSTT, ToneTTS

TICK = 0.02
FADE = 0.01


def at(t: float) -> Any:
    """Exact up to float rounding (and the 1 µs the mixer pump wakes after each tick)."""
    return pytest.approx(t, abs=2e-6)


def about(t: float) -> Any:
    """For times measured on the audio itself (`voice_segments`): a fade-in and a tone starting
    at a zero crossing put the first loud sample up to a millisecond after the true start."""
    return pytest.approx(t, abs=1.5e-3)


def make_session(
    agent: Agent | None = None,
    *,
    transcripts: list[str] | None = None,
    script: list[Any] | None = None,
    ttft: float = 0.0,
    ttfb: float = 0.0,
    transport: MemoryTransport | None = None,
    pipeline_options: dict[str, Any] | None = None,
    **session_options: Any,
) -> tuple[AgentSession, MemoryTransport, ScriptedLLM, ToneTTS]:
    transport = transport or MemoryTransport()
    llm = ScriptedLLM(script or [], ttft=ttft)
    tts = ToneTTS(ttfb=ttfb)
    pipeline = CascadingPipeline(stt=ScriptedSTT(transcripts or []), llm=llm, tts=tts, **(pipeline_options or {}))
    session = AgentSession(agent or Agent(instructions="You are a test."), pipeline, transport=transport, **session_options)
    return session, transport, llm, tts


def all_tasks() -> list[trio.lowlevel.Task]:
    """Every task in the run, from the root down."""
    out: list[trio.lowlevel.Task] = []
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        out.append(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return out


class EventLog:
    """Records session events with their times."""

    def __init__(self, session: AgentSession) -> None:
        self.entries: list[tuple[float, str, Any]] = []
        for name in ("agent_state_changed", "user_state_changed"):
            session.on(name, self._make(name))

    def _make(self, name: str) -> Any:
        def record(payload: Any) -> None:
            self.entries.append((trio.current_time(), name, payload["state"]))

        return record

    def states(self, name: str) -> list[str]:
        return [s for _, n, s in self.entries if n == name]

    def times(self, name: str, state: str) -> list[float]:
        return [t for t, n, s in self.entries if n == name and s == state]
