"""Audio frames, G.711 and WAV codecs, streaming resampling, the mixer and audio players."""

from .codec import alaw_decode as alaw_decode
from .codec import alaw_encode as alaw_encode
from .codec import read_wav as read_wav
from .codec import ulaw_decode as ulaw_decode
from .codec import ulaw_encode as ulaw_encode
from .codec import write_wav as write_wav
from .frame import AudioFrame as AudioFrame
from .mixer import Mixer as Mixer
from .mixer import MixerSource as MixerSource
from .mixer import MixerStatistics as MixerStatistics
from .mixer import TickClock as TickClock
from .player import BackgroundAudioHandlerConfig as BackgroundAudioHandlerConfig
from .player import BackgroundAudioPlayer as BackgroundAudioPlayer
from .resample import StreamResampler as StreamResampler
from .resample import resample as resample
