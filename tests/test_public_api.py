from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trioagent
import trioagent.testing

ROOT = Path(__file__).resolve().parents[1]


def test_public_names() -> None:
    assert sorted(trioagent.__all__) == sorted(
        [
            "Agent", "AgentSession", "AgentState", "AudioFormatError", "AudioFrame", "BackgroundAudioHandlerConfig",
            "CascadingPipeline", "ChatContext", "ChatMessage", "ChatRole", "ConversationFlow", "EnergyVAD",
            "FunctionCall", "FunctionCallOutput", "FunctionTool", "MCPServerError", "MCPServerHTTP", "MCPServerStdio", "Pipeline", "ProtocolError", "ProviderError",
            "ProviderTimeout", "RealTimePipeline", "SessionClosed", "SilenceTurnDetector", "ToolError", "TransportClosed", "TransportError",
            "TrioAgentError", "TurnMetrics", "UserState", "UtteranceHandle", "function_tool", "serve",
        ]
    )
    for name in trioagent.__all__:
        assert getattr(trioagent, name) is not None
    assert {"MemoryTransport", "ScriptedSTT", "ScriptedLLM", "ToneTTS", "ToolCall", "speech", "silence"} <= set(dir(trioagent.testing))


def test_library_never_reads_the_wall_clock_or_uses_asyncio() -> None:
    bad = ("import asyncio", "from asyncio", "time.time(", "time.monotonic(", "time.perf_counter(", "time.sleep(")
    offenders = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in (ROOT / "trioagent").rglob("*.py")
        for needle in bad
        if needle in path.read_text()
    ]
    assert offenders == []


def test_example_runs() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "scripted_conversation.py")], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "heard: \"what's the weather in paris\"" in out
    assert "interrupted True" in out and "agent -> closing" in out


def test_mcp_example_runs() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "mcp_time.py")], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "tools: ['get_current_time', 'convert_time']" in out
    assert " 1.50 s  agent says: In Tokyo it is " in out


def test_readme_quick_start_runs() -> None:
    import re

    import trio.testing

    code = re.search(r"## Quick start\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert code is not None
    source = code.group(1).replace("trio.run(main)", "trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))")
    exec(compile(source, "README.md", "exec"), {"__name__": "readme"})
