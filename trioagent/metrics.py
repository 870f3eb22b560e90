"""Per-turn latency metrics, on the session clock."""

from __future__ import annotations

import attrs

__all__ = ["TurnMetrics"]


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


@attrs.frozen
class TurnMetrics:
    """What one turn cost, measured on the session clock (seconds).

    Times are absolute session times (None when the turn never got there); the latencies are
    derived from them. `e2e_latency` is measured: from the end of the user's speech to the tick
    at which the first frame of the agent's answer left the mixer.
    """

    turn_id: str
    user_text: str = ""
    agent_text: str = ""
    user_speech_start: float | None = None
    user_speech_end: float | None = None
    stt_final_at: float | None = None
    end_of_turn_at: float | None = None
    llm_started_at: float | None = None
    llm_first_token_at: float | None = None
    llm_ended_at: float | None = None
    """When the last LLM step's stream ended."""
    prompt_tokens: int | None = None
    """Summed over the turn's LLM steps, when the LLM reports usage."""
    completion_tokens: int | None = None
    tts_started_at: float | None = None
    tts_first_byte_at: float | None = None
    tts_audio_seconds: float = 0.0
    """Seconds of audio the TTS made for the turn."""
    first_audio_at: float | None = None
    interrupted: bool = False
    barge_in_at: float | None = None
    """When the user's speech that cut this answer began (the VAD's onset), if the user's speech
    cut it while it was heard."""
    cut_at: float | None = None
    """When this answer's voice was paused or stopped for that speech (its fade-out, 10 ms by
    default, begins at the mixer's next tick)."""
    tool_calls: int = 0
    tool_seconds: float = 0.0
    """Time spent running tools (session clock)."""
    provider_switches: int = 0
    """Times a fallback moved this turn to another provider."""

    @property
    def end_of_utterance_delay(self) -> float | None:
        return _diff(self.end_of_turn_at, self.user_speech_end)

    @property
    def stt_final_latency(self) -> float | None:
        return _diff(self.stt_final_at, self.user_speech_end)

    @property
    def llm_ttft(self) -> float | None:
        return _diff(self.llm_first_token_at, self.llm_started_at)

    @property
    def llm_duration(self) -> float | None:
        """From the first LLM call to the end of the last one (tools included)."""
        return _diff(self.llm_ended_at, self.llm_started_at)

    @property
    def tts_ttfb(self) -> float | None:
        return _diff(self.tts_first_byte_at, self.tts_started_at)

    @property
    def e2e_latency(self) -> float | None:
        return _diff(self.first_audio_at, self.user_speech_end)

    @property
    def barge_in_latency(self) -> float | None:
        """How long the agent spoke over the user who cut it: from the onset of the user's
        speech to the cut (`min_interruption_duration` of it is by design)."""
        return _diff(self.cut_at, self.barge_in_at)

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = attrs.asdict(self)
        for name in ("end_of_utterance_delay", "stt_final_latency", "llm_ttft", "llm_duration", "tts_ttfb", "e2e_latency", "barge_in_latency"):
            d[name] = getattr(self, name)
        return d
