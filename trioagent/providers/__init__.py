"""Provider protocols (VAD, STT, turn detection, LLM, TTS) and the providers shipped with trioagent."""

from .base import LLM as LLM
from .base import STT as STT
from .base import TTS as TTS
from .base import VAD as VAD
from .base import LLMChunk as LLMChunk
from .base import TextDelta as TextDelta
from .base import Usage as Usage
from .base import ToolCall as ToolCall
from .base import TranscriptEvent as TranscriptEvent
from .base import TurnDetector as TurnDetector
from .base import VADEvent as VADEvent
from .turn import SilenceTurnDetector as SilenceTurnDetector
from .vad import EnergyVAD as EnergyVAD
from .silero import SileroVAD as SileroVAD
from .openai_realtime import OpenAIRealtime as OpenAIRealtime
from .fallback import FallbackLLM as FallbackLLM
from .fallback import FallbackSTT as FallbackSTT
from .fallback import FallbackTTS as FallbackTTS
from .fallback import ProviderSwitched as ProviderSwitched
from .deepgram import DeepgramSTT as DeepgramSTT
from .openai_audio import OpenAISTT as OpenAISTT
from .openai_audio import OpenAITTS as OpenAITTS
from .ws_tts import CartesiaTTS as CartesiaTTS
from .ws_tts import ElevenLabsTTS as ElevenLabsTTS
from .local_models import PiperTTS as PiperTTS
from .local_models import WhisperSTT as WhisperSTT
