"""The agent's and the user's conversational states (string values as in the seed API)."""

from __future__ import annotations

import enum

__all__ = ["AgentState", "UserState"]


class AgentState(str, enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    CLOSING = "closing"


class UserState(str, enum.Enum):
    IDLE = "idle"
    SPEAKING = "speaking"
    LISTENING = "listening"
