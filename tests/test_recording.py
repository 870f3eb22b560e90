"""The audio taps (``on_speech_in`` / ``on_speech_out``, as in the seed) and
`trioagent.recording.record`, in virtual time: the taps carry exactly the frames heard and the
frames sent, are off while nobody listens, and a recording puts both on one timeline."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from trioagent import Agent, AudioFrame
from trioagent.events import AgentSpeechStarted, UserTurnEnded
from trioagent.recording import record
from trioagent.testing import MemoryTransport, silence, speech

from .kit import at, make_session


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    """Read by libsndfile (soundfile), not by the `wave` module that wrote it."""
    import soundfile

    info = soundfile.info(str(path))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 2)
    data, rate = soundfile.read(str(path), dtype="int16", always_2d=True)
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == len(data)  # (the header's size was written at the end)
    return int(rate), data


class Listening(Agent):
    """An agent that overrides both taps (as an avatar or an analytics agent would)."""

    def __init__(self) -> None:
        super().__init__(instructions="x")
        self.heard: list[AudioFrame] = []
        self.played = 0

    def on_speech_in(self, data: dict[str, Any]) -> None:
        self.heard.append(data["frame"])

    def on_speech_out(self, data: dict[str, Any]) -> None:
        self.played += 1


async def test_the_taps_are_off_while_nobody_listens(autojump_clock: trio.testing.MockClock) -> None:
    session, _, _, _ = make_session()
    host = session._host
    assert session.mixer.tap is None and host.speech_in is None
    frames: list[Any] = []
    session.on("on_speech_in", frames.append)
    assert host.speech_in is not None and session.mixer.tap is None
    session.on("on_speech_out", frames.append)
    assert session.mixer.tap is not None
    session.off("on_speech_in", frames.append)
    session.off("on_speech_out", frames.append)
    assert session.mixer.tap is None and host.speech_in is None
    async with session:  # an agent that does not override the taps does not turn them on
        assert session.mixer.tap is None and host.speech_in is None
    listening = Listening()
    session, _, _, _ = make_session(listening)
    async with session:
        assert session.mixer.tap is not None and session._host.speech_in is not None
    assert session.mixer.tap is None and session._host.speech_in is None  # released at close


async def test_the_taps_carry_the_frames_heard_and_sent(autojump_clock: trio.testing.MockClock) -> None:
    agent = Listening()
    session, transport, _, tts = make_session(agent, transcripts=["hello"], script=["Hi there."], ttfb=0.1)
    sent: list[AudioFrame] = []
    turns: list[tuple[float, UserTurnEnded]] = []
    starts: list[tuple[float, AgentSpeechStarted]] = []
    session.on("on_speech_out", lambda d: sent.append(d["frame"]))
    session.on("user_turn_ended", lambda e: turns.append((trio.current_time(), e)))
    session.on("agent_speech_started", lambda e: starts.append((trio.current_time(), e)))
    user = speech(1.0) + silence(1.5)
    async with session:
        await transport.send_user_audio(user)
        transport.end_user_audio()
        await session.wait_closed()  # (closes once the input is over and the answer heard)
    # Every input frame, as delivered (same samples, same stamps), in order.
    assert [f.timestamp for f in agent.heard] == pytest.approx([0.02 * i for i in range(len(user))], abs=1e-9)
    assert all(np.array_equal(h.samples, u.samples) for h, u in zip(agent.heard, user, strict=True))
    # Every output frame the transport got, the same objects, and the agent's tap saw as many.
    assert len(sent) == len(transport.output) == agent.played and all(a is b for a, b in zip(sent, transport.output, strict=True))
    # The transcript events keep their own names.
    (t_turn, turn), = turns
    assert turn.text == "hello" and turn.start == at(0.0) and turn.end == at(1.0)
    (t_start, start), = starts
    assert t_turn == at(1.5)  # (the end of speech, then 500 ms of quiet)
    assert start.text == "Hi there." and t_start == at(1.6)  # (the TTS's first byte after 100 ms)


async def test_a_recording_puts_both_sides_on_one_timeline(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    transport = MemoryTransport(input_sample_rate=16000, output_sample_rate=16000)
    session, _, _, _ = make_session(transcripts=["hello"], script=["Hi there."], transport=transport)
    user = speech(1.0) + silence(1.5)
    path = tmp_path / "call.wav"
    t0 = trio.current_time()
    async with record(session, path) as rec:
        async with session:
            await transport.send_user_audio(user)
            transport.end_user_audio()
            await session.wait_closed()
        assert rec.duration > 0  # (a part is written while the call goes on)
    rate, data = read_wav(path)
    assert rate == 16000
    # Left: the user, sample for sample where it was heard.
    mic = np.concatenate([f.samples for f in user])
    assert np.array_equal(data[: len(mic), 0], mic)
    assert not data[len(mic) :, 0].any()
    # Right: the agent, each sent frame at its tick.
    assert transport.output
    for frame in transport.output:
        i = round((frame.timestamp - t0) * rate)
        assert np.array_equal(data[i : i + len(frame.samples), 1], frame.samples)
    last = transport.output[-1]
    assert len(data) == round((last.end_time - t0) * rate)
    # The answer is on the right only, after the turn.
    loud = np.flatnonzero(np.abs(data[:, 1]) > 300)
    assert loud[0] / rate > 1.0 and rec.duration == len(data) / rate


async def test_a_recording_resamples_the_input_and_keeps_its_pauses(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    transport = MemoryTransport(input_sample_rate=8000, output_sample_rate=24000)
    session, _, _, _ = make_session(transport=transport, close_on_input_end=False)
    path = tmp_path / "call.wav"
    async with session:
        async with trio.open_nursery() as nursery:
            await nursery.start(record(session, path).run)  # (run in a nursery: cancelled = finished)
            await transport.send_user_audio(speech(0.5, sample_rate=8000))
            await trio.sleep(2.0)  # the caller's line sends nothing for 2 s (a real pause)
            transport.send_user_audio_nowait(speech(0.5, sample_rate=8000))  # a burst: laid back to back
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
    rate, data = read_wav(path)
    assert rate == 24000 and len(data) == pytest.approx(3.5 * rate, abs=rate * 0.04)
    loud = np.abs(data[:, 0].astype(np.int32)) > 1000

    def span(a: float, b: float) -> np.ndarray:
        return loud[round(a * rate) : round(b * rate)]

    assert span(0.01, 0.49).mean() > 0.5 and not span(0.52, 2.47).any()
    # The burst came at 2.5 s: its first frame ends then, the rest follow it.
    assert span(2.49, 2.97).mean() > 0.5 and not span(3.0, 3.5).any()


async def test_a_recording_that_cannot_open_its_file_says_so(autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    session, _, _, _ = make_session()
    with pytest.raises(OSError):
        async with record(session, tmp_path / "no such dir" / "call.wav"):
            pass  # pragma: no cover
    assert session.mixer.tap is None  # nothing left listening
    rec = record(session, tmp_path / "once.wav")
    async with rec:
        pass
    with pytest.raises(RuntimeError, match="runs once"):
        async with rec:
            pass  # pragma: no cover
    async with trio.open_nursery() as nursery:
        with pytest.raises(OSError):
            await nursery.start(record(session, tmp_path / "no such dir" / "call.wav").run)
    # An error in the recorded block comes out as itself, and the file is still whole.
    with pytest.raises(KeyError):
        async with record(session, tmp_path / "failed.wav"):
            async with session:
                await trio.sleep(1.0)
                raise KeyError("a bug in the caller")
    rate, data = read_wav(tmp_path / "failed.wav")
    assert len(data) == rate * 1.0 and session.mixer.tap is None
