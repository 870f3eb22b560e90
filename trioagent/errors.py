"""The exceptions trioagent raises: a small tree under `TrioAgentError`."""

from __future__ import annotations

__all__ = [
    "TrioAgentError",
    "AudioFormatError",
    "ProviderError",
    "ProviderTimeout",
    "TransportClosed",
    "TransportError",
    "ProtocolError",
    "SessionClosed",
]


class TrioAgentError(Exception):
    """Base class of every error trioagent raises on purpose."""


class AudioFormatError(TrioAgentError, ValueError):
    """Audio in a format trioagent cannot use (bad WAV, wrong sample width, wrong rate)."""


class ProviderError(TrioAgentError):
    """A provider (STT, LLM, TTS, VAD) failed.

    Attributes:
        provider: the provider's name, e.g. ``"ScriptedLLM"``.
        retryable: whether the same call may succeed if tried again.
    """

    def __init__(self, message: str, *, provider: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    """A provider did not answer in time."""


class TransportClosed(TrioAgentError):
    """The transport (socket, call, file) is gone."""


class TransportError(TrioAgentError):
    """A transport cannot be opened or used (a missing audio library or device)."""


class ProtocolError(TrioAgentError):
    """A peer sent something the wire protocol does not allow.

    Args:
        close_code: the WebSocket close code for it: 1007 (invalid data, the default) or 1003
            (a kind of message the endpoint does not take: binary where text is expected).
    """

    def __init__(self, message: str, close_code: int = 1007) -> None:
        super().__init__(message)
        self.close_code = close_code


class SessionClosed(TrioAgentError):
    """The session was closed; the call cannot proceed."""
