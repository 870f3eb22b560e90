"""VideoSDK's `examples/cascade_basic.py` (videosdk-live/agents, v1.0.24), translated to trioagent
line by line; docs/migrating.md says what changed and why.

The agent, its tools and its hooks are the same code. What differs: trio instead of asyncio
(httpx, which runs on trio, instead of aiohttp), `CascadingPipeline` (the seed's name), and a
`factory` that `trioagent serve` calls for each call instead of VideoSDK's rooms and
`WorkerJob`. Google's Gemini is reached through its OpenAI-compatible endpoint.

Run:  trioagent serve examples.from_videosdk:factory     (needs DEEPGRAM_API_KEY,
      CARTESIA_API_KEY and CARTESIA_VOICE_ID, GEMINI_API_KEY; SileroVAD's extra)
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx

from trioagent import Agent, CascadingPipeline, function_tool
from trioagent.providers import CartesiaTTS, DeepgramSTT, SileroVAD, SilenceTurnDetector
from trioagent.providers.openai_llm import OpenAILLM

logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s", handlers=[logging.StreamHandler()])
# (VideoSDK pre-downloads its turn-detector model here; trioagent downloads nothing at run time.)


async def fetch_json(url: str) -> dict[str, Any]:
    """GET `url` as JSON (the one place this example touches the network)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(url)
    if response.status_code != 200:
        raise Exception(f"Failed to get weather data, status code: {response.status_code}")
    data: dict[str, Any] = response.json()
    return data


@function_tool
async def get_weather(latitude: str, longitude: str) -> dict[str, Any]:
    """Called when the user asks about the weather. This function will return the weather for
    the given location. When given a location, please estimate the latitude and longitude of the
    location and do not ask the user for them.

    Args:
        latitude: The latitude of the location
        longitude: The longitude of the location
    """
    url = f"https://api.open-meteo.com/v1/forecast?latitude={latitude}&longitude={longitude}&current=temperature_2m"
    data = await fetch_json(url)
    return {"temperature": data["current"]["temperature_2m"], "temperature_unit": "Celsius"}


class MyVoiceAgent(Agent):
    def __init__(self) -> None:
        super().__init__(
            instructions="You are VideoSDK's Voice Agent. You are a helpful voice assistant that can answer questions about weather, horoscopes and help with other tasks.",
            tools=[get_weather],
        )

    async def on_enter(self) -> None:
        await self.session.say("Hello, how can I help you today?")

    async def on_exit(self) -> None:
        # (VideoSDK says "Goodbye!" here. In trioagent on_exit runs while the session closes,
        # when nothing more is played: say goodbye before leave() or hangup() instead.)
        pass

    @function_tool
    async def get_horoscope(self, sign: str) -> dict[str, Any]:
        """Get today's horoscope for a given zodiac sign.

        Args:
            sign: The zodiac sign (e.g., Aries, Taurus, Gemini, etc.)
        """
        horoscopes = {
            "Aries": "Today is your lucky day!",
            "Taurus": "Focus on your goals today.",
            "Gemini": "Communication will be important today.",
        }
        return {"sign": sign, "horoscope": horoscopes.get(sign, "The stars are aligned for you today!")}


def factory() -> tuple[Agent, CascadingPipeline]:
    """One call's agent and pipeline (VideoSDK's `start_session` body; `trioagent serve` runs
    the session: `AgentSession(agent, pipeline)` and `session.start()` happen there)."""
    pipeline = CascadingPipeline(
        stt=DeepgramSTT(),  # ($DEEPGRAM_API_KEY)
        llm=OpenAILLM(model="gemini-2.0-flash", base_url="https://generativelanguage.googleapis.com/v1beta/openai/", api_key=os.environ.get("GEMINI_API_KEY", "")),
        tts=CartesiaTTS(os.environ.get("CARTESIA_VOICE_ID", "")),  # ($CARTESIA_API_KEY; a voice of your account)
        vad=SileroVAD(),
        turn_detector=SilenceTurnDetector(),
    )
    return MyVoiceAgent(), pipeline
