"""`LocalAudioTransport` against a fake `sounddevice` (no sound card in CI), and its errors when
PortAudio is missing; `trioagent console`."""

from __future__ import annotations

import importlib.abc
import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from trioagent import Agent, AgentSession, CascadingPipeline, TransportError
from trioagent.audio import AudioFrame
from trioagent.cli import main
from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS, silence, speech
from trioagent.transports import Transport
from trioagent.transports.local import LocalAudioTransport


class FakeStream:
    def __init__(self, samplerate: int, channels: int, dtype: str, blocksize: int, device: Any, callback: Any) -> None:
        self.samplerate, self.blocksize, self.callback, self.device = samplerate, blocksize, callback, device
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


def fake_sounddevice() -> types.ModuleType:
    module = types.ModuleType("sounddevice")
    module.streams = []  # type: ignore[attr-defined]

    def make(kind: str) -> Any:
        def factory(**kwargs: Any) -> FakeStream:
            stream = FakeStream(**kwargs)
            module.streams.append((kind, stream))  # type: ignore[attr-defined]
            return stream

        return factory

    module.RawInputStream = make("in")  # type: ignore[attr-defined]
    module.RawOutputStream = make("out")  # type: ignore[attr-defined]
    return module


@pytest.fixture
def sd(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = fake_sounddevice()
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    return module


class SoundCard:
    """Plays the card's part on the trio clock: records 20 ms blocks, plays 20 ms blocks."""

    def __init__(self, sd: types.ModuleType) -> None:
        streams = dict(sd.streams)  # type: ignore[attr-defined]
        self.input: FakeStream = streams["in"]
        self.output: FakeStream = streams["out"]
        self.played: list[np.ndarray] = []

    async def speak(self, frames: list[Any]) -> None:
        for frame in frames:
            await trio.sleep(frame.duration)
            self.input.callback(frame.to_pcm16(), len(frame.samples), None, None)

    async def play(self) -> None:
        while True:
            await trio.sleep(0.02)
            buffer = bytearray(self.output.blocksize * 2)
            self.output.callback(memoryview(buffer), self.output.blocksize, None, None)
            self.played.append(np.frombuffer(bytes(buffer), "<i2"))


async def test_a_conversation_on_the_sound_card(autojump_clock: trio.testing.MockClock, sd: types.ModuleType) -> None:
    transport = LocalAudioTransport(input_device=3, output_device="speakers")
    assert isinstance(transport, Transport)
    card = SoundCard(sd)
    assert card.input.started and card.output.started and (card.input.device, card.output.device) == (3, "speakers")
    assert (card.input.blocksize, card.output.blocksize) == (320, 480)
    pipeline = CascadingPipeline(stt=ScriptedSTT(["hello"]), llm=ScriptedLLM(["Hi there, nice to hear you."]), tts=ToneTTS())
    session = AgentSession(Agent(instructions="Test."), pipeline, transport=transport)
    heard: list[tuple[float, str]] = []
    session.on("user_turn_ended", lambda e: heard.append((trio.current_time(), e.text)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        nursery.start_soon(card.play)
        t0 = trio.current_time()
        await card.speak(speech(1.0) + silence(3.0))
        await session.close()
        nursery.cancel_scope.cancel()
    assert [text for _, text in heard] == ["hello"]
    assert heard[0][0] - t0 == pytest.approx(1.5, abs=0.021)  # end of speech + the end-of-turn delay
    loud = [i for i, block in enumerate(card.played) if np.abs(block.astype(np.int32)).max() > 3000]
    assert loud and 1.5 <= loud[0] * 0.02 <= 1.6  # the answer plays from the end of the turn
    assert transport.underruns <= 1 and transport.dropped_output == 0
    assert card.input.closed and card.output.closed


async def test_clear_silences_the_speaker_at_once(sd: types.ModuleType) -> None:
    transport = LocalAudioTransport(output_sample_rate=8000, max_buffered=0.1)
    card = SoundCard(sd)
    tone = (np.ones(160) * 9000).astype(np.int16)
    for _ in range(3):
        await transport.send_audio(AudioFrame(tone, 8000))
    transport.clear()
    buffer = bytearray(160 * 2)
    card.output.callback(memoryview(buffer), 160, None, None)
    assert not any(buffer)  # nothing stale plays after barge-in
    for _ in range(10):  # 200 ms offered, 100 ms kept: the card ran slow, the oldest goes
        await transport.send_audio(AudioFrame(tone, 8000))
    assert transport.dropped_output == pytest.approx(0.1)
    with pytest.raises(ValueError, match="plays 8000 Hz, got 16000 Hz"):
        await transport.send_audio(AudioFrame(np.zeros(320, np.int16), 16000))
    await transport.aclose()


async def test_input_from_portaudio_thread(sd: types.ModuleType) -> None:
    """The input callback runs on PortAudio's thread; frames reach trio in order, stamped as one
    continuous stream."""
    transport = LocalAudioTransport()
    card = SoundCard(sd)
    blocks = [np.full(320, i, np.int16) for i in range(50)]

    def audio_thread() -> None:
        for block in blocks:
            card.input.callback(block.tobytes(), 320, None, None)

    await trio.to_thread.run_sync(audio_thread)
    frames = [await transport.audio_in.receive() for _ in blocks]
    assert [int(f.samples[0]) for f in frames] == list(range(50))
    assert all(b.timestamp - a.timestamp == pytest.approx(0.02) for a, b in zip(frames, frames[1:]))
    await transport.aclose()
    await transport.aclose()  # idempotent


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


async def test_clear_errors_without_sounddevice_or_portaudio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(TransportError, match=r"needs sounddevice: pip install -e '\.\[console\]'"):
        LocalAudioTransport()
    monkeypatch.delitem(sys.modules, "sounddevice")
    monkeypatch.setattr(sys, "meta_path", [_Refuse(), *sys.meta_path])
    with pytest.raises(TransportError, match="needs the PortAudio library .* apt install libportaudio2"):
        LocalAudioTransport()


def test_console_without_portaudio(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    with pytest.raises(SystemExit) as exited:
        main(["console", "tests.netkit:factory"])
    assert exited.value.code == 2
    assert "trioagent console: error: LocalAudioTransport needs sounddevice" in capsys.readouterr().err


def test_import_trioagent_does_not_need_portaudio() -> None:
    code = "import sys, trioagent, trioagent.transports, trioagent.server; assert 'sounddevice' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
