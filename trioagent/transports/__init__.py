"""Transports: where a session's audio comes from and goes to."""

from .base import NullTransport as NullTransport
from .base import Transport as Transport
from .memory import MemoryTransport as MemoryTransport
from .wavfile import WavFileTransport as WavFileTransport
from .local import LocalAudioTransport as LocalAudioTransport
