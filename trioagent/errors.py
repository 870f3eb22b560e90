"""The exceptions trioagent raises: a small tree under `TrioAgentError`."""

from __future__ import annotations

import enum

__all__ = [
    "CloseCode",
    "sole_error",
    "TrioAgentError",
    "AudioFormatError",
    "ProviderError",
    "ProviderTimeout",
    "TransportClosed",
    "TransportError",
    "ProtocolError",
    "SessionClosed",
]


class CloseCode(enum.IntEnum):
    """The WebSocket close codes trioagent sends (RFC 6455 7.4.1; 1013 from IANA's registry),
    and 1006, never sent: how a connection that dropped without a close frame is recorded."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    PROTOCOL_ERROR = 1002  # frames that break RFC 6455
    UNSUPPORTED_DATA = 1003  # a kind of message the endpoint does not take
    INVALID_DATA = 1007  # a message that is not what the protocol allows
    POLICY_VIOLATION = 1008  # unauthorised, or too much audio too fast
    ABNORMAL_CLOSURE = 1006  # (never sent) the connection dropped
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # the agent could not start, or failed
    TRY_AGAIN_LATER = 1013  # the server is full


class TrioAgentError(Exception):
    """Base class of every error trioagent raises on purpose."""


class AudioFormatError(TrioAgentError, ValueError):
    """Audio in a format trioagent cannot use (bad WAV, wrong sample width, wrong rate)."""


class ProviderError(TrioAgentError):
    """A provider (STT, LLM, TTS, VAD) failed.

    Attributes:
        provider: the provider's name, e.g. ``"ScriptedLLM"``.
        retryable: whether the same call may succeed if tried again.
        stage: which part of the pipeline it was (``"stt"``, ``"llm"``, ``"tts"``), when known.
    """

    def __init__(self, message: str, *, provider: str = "", retryable: bool = False, stage: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable
        self.stage = stage


class ProviderTimeout(ProviderError):
    """A provider did not answer in time."""


class TransportClosed(TrioAgentError):
    """The transport (socket, call, file) is gone."""


class TransportError(TrioAgentError):
    """A transport cannot be opened or used (a missing audio library or device)."""


class ProtocolError(TrioAgentError):
    """A peer sent something the wire protocol does not allow.

    Args:
        close_code: the WebSocket close code for it: `CloseCode.INVALID_DATA` (the default),
            `UNSUPPORTED_DATA` (binary where text is expected) or `POLICY_VIOLATION`.
    """

    def __init__(self, message: str, close_code: CloseCode = CloseCode.INVALID_DATA) -> None:
        super().__init__(message)
        self.close_code = close_code


class SessionClosed(TrioAgentError):
    """The session was closed; the call cannot proceed."""


def sole_error(exc: BaseException) -> BaseException:
    """The one error inside exception groups of one (what nurseries wrap a task's error in), or
    `exc` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
