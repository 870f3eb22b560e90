"""`RuleLLM`: the offline stand-in for an LLM that the demo uses. Not a language model.

It recognises a handful of intents by keywords (tolerant of typical speech-recognition slips
such as "whether" for "weather"): greetings, how-are-you, the time (in a city, through a
`get_current_time` tool such as the reference MCP time server's, when the agent has one), the date,
the weather (through a `get_weather` tool when the agent has one), thanks and goodbye. It streams its answer word by
word and makes real tool calls, so it exercises the same pipeline paths as a real model.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import re
from collections.abc import AsyncIterator, Callable, Sequence

import trio

from ..chat import ChatContext, ChatMessage, ChatRole, FunctionCallOutput
from ..tools import FunctionTool
from .base import LLMChunk, TextDelta, ToolCall

__all__ = ["RuleLLM", "CITIES", "TIMEZONES"]

CITIES = ["paris", "london", "tokyo", "berlin", "rome", "madrid", "sydney", "boston", "chicago", "seattle", "new york"]
TIMEZONES = {
    "paris": "Europe/Paris", "london": "Europe/London", "tokyo": "Asia/Tokyo", "berlin": "Europe/Berlin",
    "rome": "Europe/Rome", "madrid": "Europe/Madrid", "sydney": "Australia/Sydney", "boston": "America/New_York",
    "chicago": "America/Chicago", "seattle": "America/Los_Angeles", "new york": "America/New_York",
}  # fmt: skip

_INTENTS: list[tuple[str, set[str]]] = [
    ("weather", {"weather", "whether", "rain", "raining", "sunny", "temperature", "forecast", "hot", "cold"}),
    ("time", {"time", "clock", "hour", "o'clock"}),
    ("date", {"date", "day", "today", "month"}),
    ("how_are_you", {"how're", "doing"}),
    ("thanks", {"thanks", "thank", "thank-you"}),
    ("bye", {"bye", "goodbye", "good-bye"}),
    ("hello", {"hello", "hi", "hey", "morning", "afternoon", "evening"}),
]


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def _city(text: str) -> str | None:
    lowered = text.lower()
    for city in CITIES:
        if city in lowered:
            return city
    for word in _words(text):
        match = difflib.get_close_matches(word, [c for c in CITIES if " " not in c], n=1, cutoff=0.75)
        if match:
            return match[0]
    return None


class RuleLLM:
    """A keyword-intent responder with the `LLM` interface (see the module docstring).

    Args:
        now: the wall clock it reads for time and date questions (injectable for tests).
        word_delay: seconds between streamed words.
    """

    def __init__(self, now: Callable[[], _dt.datetime] = _dt.datetime.now, word_delay: float = 0.0) -> None:
        self.now = now
        self.word_delay = word_delay

    def intent(self, text: str) -> str:
        words = set(_words(text))
        if "how" in words and ("you" in words or "doing" in words):
            return "how_are_you"
        if words & {"thanks", "thank"} and words & {"bye", "goodbye"}:
            return "thanks_bye"
        for name, keys in _INTENTS:
            if words & keys:
                return name
        return "unknown"

    def answer(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> str | ToolCall:
        last = chat_context.items[-1] if chat_context.items else None
        users = [m for m in chat_context.items if isinstance(m, ChatMessage) and m.role is ChatRole.USER]
        text = users[-1].content if users else ""
        if isinstance(last, FunctionCallOutput) and last.name == "get_current_time":
            place = (_city(text) or "there").title()
            if last.is_error:
                return f"Sorry, I could not get the time in {place} just now."
            try:
                clock = _dt.datetime.fromisoformat(json.loads(last.output)["datetime"])
            except (ValueError, KeyError, TypeError):
                return f"The time service says: {last.output}"
            return f"In {place} it is {clock.strftime('%I:%M %p').lstrip('0')}."
        if isinstance(last, FunctionCallOutput) and last.name == "get_weather":
            if last.is_error:
                return "Sorry, I could not get the weather just now."
            try:
                data = json.loads(last.output)
                return f"In {data['city'].title()} it is {data['sky']} and {data['celsius']} degrees."
            except (ValueError, KeyError, TypeError, AttributeError):
                return f"The weather service says: {last.output}"
        intent = self.intent(text)
        now = self.now()
        if intent == "weather":
            city = _city(text)
            if city is None:
                return "Which city would you like the weather for?"
            if any(t.name == "get_weather" for t in tools):
                return ToolCall("get_weather", {"city": city})
            return f"I cannot look up the weather for {city.title()} right now."
        if intent == "time":
            city = _city(text)
            if city is not None and any(t.name == "get_current_time" for t in tools):
                return ToolCall("get_current_time", {"timezone": TIMEZONES[city]})
            if city is not None:
                return f"I cannot tell the time in {city.title()}; here it is {now.strftime('%I:%M %p').lstrip('0')}."
            return f"It is {now.strftime('%I:%M %p').lstrip('0')}."
        if intent == "date":
            return f"Today is {now.strftime('%A, %B')} {now.day}."
        replies = {
            "how_are_you": "I am doing well, thank you for asking.",
            "thanks": "You are welcome!",
            "thanks_bye": "You are welcome. Goodbye, have a nice day!",
            "bye": "Goodbye, have a nice day!",
            "hello": "Hello! You can ask me the time, the date, or the weather.",
        }
        if intent in replies:
            return replies[intent]
        if not text:
            return "Hello! You can ask me the time, the date, or the weather."
        return "Sorry, I can only tell the time, the date, or the weather."

    async def chat(self, chat_context: ChatContext, tools: Sequence[FunctionTool]) -> AsyncIterator[LLMChunk]:
        answer = self.answer(chat_context, tools)
        await trio.lowlevel.checkpoint()
        if isinstance(answer, ToolCall):
            yield answer
            return
        for i, word in enumerate(answer.split(" ")):
            if i and self.word_delay:
                await trio.sleep(self.word_delay)
            yield TextDelta(word if i == 0 else " " + word)
