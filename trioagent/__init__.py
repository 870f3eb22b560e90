"""trioagent: real-time voice AI agents on trio's structured concurrency."""

from .audio import AudioFrame as AudioFrame
from .audio import BackgroundAudioHandlerConfig as BackgroundAudioHandlerConfig
from .errors import AudioFormatError as AudioFormatError
from .errors import ProtocolError as ProtocolError
from .errors import ProviderError as ProviderError
from .errors import ProviderTimeout as ProviderTimeout
from .errors import SessionClosed as SessionClosed
from .errors import TransportClosed as TransportClosed
from .errors import TrioAgentError as TrioAgentError

__version__ = "0.1.0"
