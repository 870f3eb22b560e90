"""A Realtime client no one here wrote: the official `openai` SDK's own (asyncio, `websockets`)
holds a spoken conversation with `trioagent realtime-server` running the offline demo agent
(PocketSphinx hears, RuleLLM answers, eSpeak NG speaks), over loopback."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from trioagent.audio import AudioFrame
from trioagent.audio.resample import resample
from trioagent.auth import mint_token

pytest.importorskip("openai")
pytest.importorskip("websockets")
pytest.importorskip("pocketsphinx")

TRIOAGENT = str(Path(sys.executable).with_name("trioagent"))
SECRET = "e2e-secret"


def question_audio(text: str) -> bytes:
    """`text` spoken by eSpeak NG as 24 kHz PCM16, with a second of silence after it."""
    from trioagent.demo import CALLER_VOICE
    from trioagent.providers.espeak import EspeakTTS

    async def synth() -> AudioFrame:
        tts = EspeakTTS(**CALLER_VOICE)  # type: ignore[arg-type]
        frames = [f async for f in tts.synthesize(text)]
        return AudioFrame(np.concatenate([f.samples for f in frames]), tts.sample_rate)

    speech = resample(trio.run(synth), 24000).samples
    return np.concatenate([np.zeros(4800, np.int16), speech, np.zeros(36000, np.int16)]).astype("<i2").tobytes()


async def converse(port: int, audio: bytes) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key=mint_token(SECRET), base_url=f"http://127.0.0.1:{port}/v1")
    got: dict[str, Any] = {"types": [], "responses": []}
    async with client.realtime.connect(model="gpt-realtime") as connection:
        await connection.session.update(session={"type": "realtime", "instructions": "Be brief."})

        greeted = asyncio.Event()

        async def send() -> None:
            await greeted.wait()  # (speaking over the greeting would be a barge-in)
            chunk = 960  # 20 ms
            for i in range(0, len(audio), chunk):
                await connection.input_audio_buffer.append(audio=base64.b64encode(audio[i : i + chunk]).decode())
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send())
        transcript, pcm = "", 0
        deadline = time.monotonic() + 60
        async for event in connection:
            got["types"].append(event.type)
            if event.type == "response.output_audio_transcript.delta":
                transcript += event.delta
            elif event.type == "response.output_audio.delta":
                pcm += len(base64.b64decode(event.delta))
            elif event.type == "conversation.item.input_audio_transcription.completed":
                got["heard"] = event.transcript
            elif event.type == "response.done":
                got["responses"].append((transcript, pcm / 48000, event.response.status))
                transcript, pcm = "", 0
                greeted.set()
                if len(got["responses"]) == 2:  # the greeting, then the answer
                    break
            if time.monotonic() > deadline:
                break
        sender.cancel()
    return got


def test_the_openai_sdks_realtime_client_talks_to_trioagent_realtime_server() -> None:
    server = subprocess.Popen(
        [TRIOAGENT, "realtime-server", "trioagent.demo:agent_factory", "--port", "0", "--secret", SECRET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "/v1/realtime" in line, line + (server.stderr.read() if server.stderr else "")
        port = int(line.split("ws://127.0.0.1:")[1].split("/")[0])
        got = asyncio.run(converse(port, question_audio("What is the weather in Paris?")))
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert got["types"][0] == "session.created" and "session.updated" in got["types"]
    assert got.get("heard", "").startswith("what is the weather in paris")
    (greeting, greeting_s, _), (answer, answer_s, status) = got["responses"]
    assert greeting.startswith("Hi! I am the trio agent demo") and greeting_s > 1.0
    assert answer.startswith("In Paris it is") and answer_s > 1.0 and status == "completed"
