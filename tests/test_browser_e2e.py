"""End to end in a real browser: headless Chromium opens the served page, its fake microphone
plays a spoken question from a WAV file, the offline demo agent (PocketSphinx, RuleLLM, eSpeak NG)
answers, and the page receives the transcript and the agent's audio.

Runs on the real clock (a browser cannot share a MockClock); nothing is timed, every wait is
bounded. Without Chromium the test is skipped, unless TRIOAGENT_REQUIRE_BROWSER is set (CI
sets it, after installing Debian's chromium).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio_websocket

from trioagent import AgentSession
from trioagent.audio import AudioFrame, write_wav
from trioagent.audio.resample import resample
from trioagent.auth import mint_token
from trioagent.demo import DemoAgent, agent_factory
from trioagent.metrics import TurnMetrics
from trioagent.providers.espeak import EspeakTTS
from trioagent.server import Server, serve

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if CHROMIUM is None and not os.environ.get("TRIOAGENT_REQUIRE_BROWSER"):
    pytest.skip("no Chromium here (Debian: apt-get install chromium); CI runs this test", allow_module_level=True)

QUESTION = "What is the time?"  # (a fresh PocketSphinx decoder hears an isolated eSpeak "What time is it?" as "what")


class QuietDemoAgent(DemoAgent):
    async def on_enter(self) -> None:  # no greeting: the question comes at once
        pass


def factory() -> Any:
    _, pipeline = agent_factory()
    return QuietDemoAgent(), pipeline


async def question_wav(path: Path) -> None:
    tts = EspeakTTS(voice="en-us+m3", rate=150)
    frames = [f async for f in tts.synthesize(QUESTION)]
    speech = resample(AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate), 16000).samples
    pad = np.zeros(8000, np.int16)  # 0.5 s before, and silence after for the end of the turn
    write_wav(path, AudioFrame(np.concatenate([pad, speech, np.zeros(16000 * 6, np.int16)]), 16000))


async def http_get(port: int, path: str) -> bytes:
    """A GET to the DevTools HTTP endpoint (HTTP/1.1 with a Content-Length; it keeps the
    connection open, so read exactly the body)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
        while len(body) < length:
            body += await stream.receive_some()
    return body


async def page_state(devtools_port: int) -> dict[str, Any]:
    """`window.trioagent` of the open page, through the Chrome DevTools Protocol."""
    targets = json.loads(await http_get(devtools_port, "/json/list"))
    (page,) = [t for t in targets if t["type"] == "page"]
    async with trio_websocket.open_websocket_url(page["webSocketDebuggerUrl"], max_message_size=1 << 24) as cdp:
        expression = "JSON.stringify(window.trioagent)"
        await cdp.send_message(json.dumps({"id": 1, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": True}}))
        while True:
            reply = json.loads(await cdp.get_message())
            if reply.get("id") == 1:
                return dict(json.loads(reply["result"]["result"]["value"]))


async def test_browser_page_talks_to_the_agent(tmp_path: Path, nursery: trio.Nursery) -> None:
    assert CHROMIUM is not None, "TRIOAGENT_REQUIRE_BROWSER is set but Chromium is not installed"
    wav = tmp_path / "question.wav"
    await question_wav(wav)
    answered = trio.Event()
    turns: list[TurnMetrics] = []

    sessions: list[AgentSession] = []

    def on_session(session: AgentSession) -> None:
        sessions.append(session)

        def on_metrics(m: TurnMetrics) -> None:
            turns.append(m)
            if m.user_text:
                answered.set()

        session.on("metrics_collected", on_metrics)

    server: Server = await nursery.start(functools.partial(serve, factory, "127.0.0.1", 0, secret="e2e", on_session=on_session))
    profile = tmp_path / "profile"
    url = f"http://127.0.0.1:{server.port}/?autostart=1&token={mint_token('e2e')}"
    cmd = [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required",
        "--remote-debugging-port=0", f"--user-data-dir={profile}", url,
    ]
    browser = await trio.lowlevel.open_process(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with trio.fail_after(90):
            await answered.wait()
            while not (profile / "DevToolsActivePort").exists():
                await trio.sleep(0.1)
            devtools_port = int((profile / "DevToolsActivePort").read_text().split()[0])
            while True:  # the page has the transcript, and the answer's audio is arriving
                state = await page_state(devtools_port)
                echoed = bool(sessions) and sessions[0].transport.marks_echoed > 0  # type: ignore[attr-defined]
                if state["transcripts"] and state["agentTexts"] and state["audioBytes"] > 24000 * 2 and echoed:
                    break
                await trio.sleep(0.2)
    finally:
        browser.kill()
        await browser.wait()
    (turn,) = [t for t in turns if t.user_text]
    assert turn.user_text == "what is the time"
    assert turn.agent_text.startswith("It is ")
    assert state["transcripts"] == ["what is the time"]
    assert state["agentTexts"][0].startswith("It is ")
    assert "agent:speaking" in state["states"] and "user:speaking" in state["states"]
    assert state["marks"] > 0  # the page echoed the server's marks as the audio played
    assert state["capture"] == "worklet"
    server.shutdown()
