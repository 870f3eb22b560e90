"""The public test kit: fakes and helpers to test agents in virtual time.

Use with pytest-trio's ``autojump_clock`` fixture (or ``trio.run(..., clock=MockClock(autojump_threshold=0))``):
every fake here sleeps only on the trio clock, so a whole conversation runs in milliseconds and
its timeline can be asserted exactly.
"""

from ..providers.base import ToolCall as ToolCall
from ..transports.memory import MemoryTransport as MemoryTransport
from .audio import silence as silence
from .audio import speech as speech
from .fakes import ScriptedLLM as ScriptedLLM
from .fakes import ScriptedSTT as ScriptedSTT
from .fakes import ToneTTS as ToneTTS
