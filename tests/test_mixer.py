from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
import pytest
import trio

from trioagent import AudioFrame
from trioagent.audio import Mixer
from trioagent.audio.mixer import is_idle

from .helpers import dc, running_mixer, tone

TICK = 0.02


def approx(t: float) -> float:
    """Exact up to float rounding (frame timestamps, played_out_at)."""
    return pytest.approx(t, abs=1e-9)  # type: ignore[no-any-return]


def clock(t: float) -> float:
    """A clock reading after waking on a mixer event: the pump wakes 1 µs after each tick."""
    return pytest.approx(t + 1e-6, abs=1e-9)  # type: ignore[no-any-return]


async def test_tone_timing_and_playout(autojump_clock: trio.testing.MockClock) -> None:
    mixer = Mixer(sample_rate=48000)
    async with running_mixer(mixer) as rec:
        await trio.sleep(0.1)
        src = mixer.add_source(24000, voice=True)
        src.push(tone(0.5, 24000))
        src.end()
        await src.wait_played_out()
        played_at = trio.current_time()
        await trio.sleep(0.1)
    loud = rec.loud_ticks()
    assert loud[0] == approx(0.1)  # the first tick at or after 0.1
    assert loud[-1] == approx(0.58)  # last frame holding the tone covers 0.58..0.60
    assert played_at == clock(0.6) and src.played_out_at == approx(0.6)  # played out when that frame has played
    assert src.played_duration == pytest.approx(0.5, abs=1 / 48000 * 4)


async def test_tone_added_between_ticks_starts_on_next_tick(autojump_clock: trio.testing.MockClock) -> None:
    mixer = Mixer(sample_rate=16000)
    async with running_mixer(mixer) as rec:
        await trio.sleep(0.105)
        src = mixer.add_source(16000)
        src.push(tone(0.2, 16000))
        src.end()
        await src.wait_played_out()
        assert trio.current_time() == clock(0.32)
    assert rec.loud_ticks()[0] == approx(0.12)


async def test_remove_mid_way_gives_silence_after_fade(autojump_clock: trio.testing.MockClock) -> None:
    mixer = Mixer(sample_rate=48000, fade_duration=0.01)
    async with running_mixer(mixer) as rec:
        src = mixer.add_source(48000, voice=True)
        src.push(dc(1.0, 48000, 10000))
        await trio.sleep(0.31)
        mixer.remove_source(src)
        await src.wait_played_out()
        assert trio.current_time() == clock(0.34)
        await trio.sleep(0.1)
    assert src.stopped
    fading = rec.frame_at(0.32).samples
    # The fade: monotonically down to zero over 10 ms (480 samples), then silence.
    assert fading[0] > 9000 and fading[479] == 0 and not fading[480:].any()
    assert np.all(np.diff(fading[:480].astype(np.int32)) <= 0)
    assert all(not rec.frame_at(t).samples.any() for t in (0.34, 0.36, 0.38))
    assert mixer.statistics().active_sources == 0


async def test_fade_in_has_no_click(autojump_clock: trio.testing.MockClock) -> None:
    mixer = Mixer(sample_rate=48000)
    async with running_mixer(mixer) as rec:
        src = mixer.add_source(48000)
        src.push(dc(0.1, 48000, 20000))
        await trio.sleep(0.05)
    first = rec.frame_at(0.0).samples.astype(np.int32)
    assert first[0] < 100 and first[479] == 20000 and np.all(np.diff(first[:480]) >= 0)


def test_two_sources_sum_and_clip() -> None:
    mixer = Mixer(sample_rate=8000)
    a = mixer.add_source(8000)
    b = mixer.add_source(8000)
    a._level = b._level = 1.0  # skip the fade-in to check the plain sum
    a.push(dc(0.02, 8000, 1000))
    b.push(dc(0.02, 8000, 2500))
    assert set(mixer.mix(0.0).samples.tolist()) == {3500}
    c = mixer.add_source(8000)
    d = mixer.add_source(8000)
    c._level = d._level = 1.0
    c.push(dc(0.02, 8000, 30000))
    d.push(dc(0.02, 8000, 30000))
    assert set(mixer.mix(0.02).samples.tolist()) == {32767}  # saturates, no wrap-around
    e = mixer.add_source(8000)
    f = mixer.add_source(8000)
    e._level = f._level = 1.0
    e.push(dc(0.02, 8000, -30000))
    f.push(dc(0.02, 8000, -30000))
    assert set(mixer.mix(0.04).samples.tolist()) == {-32768}


def test_ducking_level() -> None:
    mixer = Mixer(sample_rate=8000, duck_db=-12.0, fade_duration=0.01)
    bg = mixer.add_source(8000, name="bg")
    bg._level = 1.0
    bg.push(dc(1.0, 8000, 10000))
    assert set(mixer.mix(0.0).samples.tolist()) == {10000}
    voice = mixer.add_source(8000, voice=True)
    voice._level = 1.0
    voice.push(dc(0.5, 8000, 0))  # a silent voice: only the background is heard
    ramp = mixer.mix(0.02).samples
    assert ramp[0] < 10000 and ramp[-1] == round(10000 * 10 ** (-12 / 20))
    assert set(mixer.mix(0.04).samples.tolist()) == {2512}  # -12 dB = x0.2512
    assert mixer._duck_level == mixer.duck_gain  # settled: no ramp is made at the next ticks
    for k in range(3, 30):
        mixer.mix(k * 0.02)  # the voice ends; the duck releases with a ramp
    assert set(mixer.mix(0.6).samples.tolist()) == {10000}


def test_pause_and_resume_keep_the_queue() -> None:
    mixer = Mixer(sample_rate=8000)
    s = mixer.add_source(8000, voice=True)
    s._level = 1.0
    s.push(dc(0.1, 8000, 1000))
    mixer.mix(0.0)
    s.pause()
    mixer.mix(0.02)  # fades out
    assert not mixer.mix(0.04).samples.any()
    queued = s.queued_duration
    assert not mixer.mix(0.06).samples.any() and s.queued_duration == queued
    s.resume()
    assert mixer.mix(0.08).samples[-1] == 1000


def test_looping_source_replays() -> None:
    mixer = Mixer(sample_rate=8000)
    s = mixer.add_source(8000, loop=True)
    s._level = 1.0
    s.push(AudioFrame(np.arange(1, 81, dtype=np.int16), 8000))  # 10 ms
    s.end()
    out = mixer.mix(0.0).samples
    assert out[:80].tolist() == out[80:].tolist() == list(range(1, 81))
    assert not s.played_out


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="5 ms"):
        Mixer(fade_duration=0.001)
    with pytest.raises(ValueError, match="whole number"):
        Mixer(sample_rate=44100, frame_duration=0.0101)
    s = Mixer().add_source(16000)
    with pytest.raises(ValueError, match="16000 Hz"):
        s.push(AudioFrame.silence(0.02, 8000))


async def test_resampled_sources_and_statistics(autojump_clock: trio.testing.MockClock) -> None:
    mixer = Mixer(sample_rate=48000)
    async with running_mixer(mixer) as rec:
        for rate in (16000, 24000, 44100):
            s = mixer.add_source(rate)
            s.push(tone(0.2, rate, 300.0, 0.2))
            s.end()
        await trio.sleep(0.5)
        stats = mixer.statistics()
    assert stats.underruns == 0 and stats.active_sources == 0 and stats.ticks == 25  # ticks 0.00 .. 0.48; the 0.50 tick runs after us
    assert rec.frames[5].samples_per_channel == 960


async def test_slow_consumer_counts_underruns(autojump_clock: trio.testing.MockClock) -> None:
    mixer = Mixer(sample_rate=8000)
    send, receive = trio.open_memory_channel[AudioFrame](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(mixer.run, send)
        async with receive:
            for _ in range(3):
                await receive.receive()
                await trio.sleep(0.1)  # a consumer five times slower than real time
        nursery.cancel_scope.cancel()
    stats = mixer.statistics()
    # Frame 1 waits until the consumer is back at 0.1; by then the slots of ticks 2..4 are
    # over (3 underruns) and the pump makes tick 5; it waits until 0.2, missing ticks 6..9 (4).
    assert stats.underruns == 7 and stats.ticks == 4


async def test_shared_tick_clock(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.audio import TickClock

    clock = TickClock()
    a, b = Mixer(sample_rate=8000), Mixer(sample_rate=16000)
    got: dict[str, list[float]] = {"a": [], "b": []}

    async def collect(name: str, receive: trio.MemoryReceiveChannel[AudioFrame]) -> None:
        async for frame in receive:
            got[name].append(frame.timestamp)

    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        await trio.sleep(0.05)  # mixers joining later follow the clock's grid
        for name, mixer in (("a", a), ("b", b)):
            send, receive = trio.open_memory_channel[AudioFrame](100)
            nursery.start_soon(collect, name, receive)
            await nursery.start(lambda send=send, mixer=mixer, **kw: mixer.run(send, clock=clock, **kw))
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert got["a"] == got["b"] == [approx(t) for t in (0.06, 0.08, 0.10, 0.12, 0.14)]
    with pytest.raises(ValueError, match="ticks every"):
        await Mixer(frame_duration=0.01).run(trio.open_memory_channel[AudioFrame](1)[0], clock=clock)


async def test_pump_behind_a_shared_clock_skips_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    from trioagent.audio import TickClock

    clock = TickClock()
    mixer = Mixer(sample_rate=8000)
    send, receive = trio.open_memory_channel[AudioFrame](0)
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        await nursery.start(lambda **kw: mixer.run(send, clock=clock, **kw))
        async with receive:
            stamps = [(await receive.receive()).timestamp]
            await trio.sleep(0.1)  # the consumer stalls for five ticks
            stamps.append((await receive.receive()).timestamp)
            stamps.append((await receive.receive()).timestamp)
        nursery.cancel_scope.cancel()
    # The frame for 0.02 waited until 0.1; then the pump jumped to the newest tick (0.10),
    # skipping the ticks 0.04 .. 0.08: three underruns.
    assert stamps == [approx(0.0), approx(0.02), approx(0.1)]
    assert mixer.statistics().underruns == 3


class NowaitRecorder:
    """A sink that takes frames without waiting (`NowaitSink`), full after `room` frames until
    `wait_ready` is let go, or failing on a given frame."""

    def __init__(self, room: int = 1000, fail_at: int | None = None) -> None:
        self.stamps: list[float] = []
        self.idle: list[bool] = []
        self.room = room
        self.fail_at = fail_at
        self.tasks: list[str] = []
        self.ready = trio.Event()

    def send_nowait(self, frame: AudioFrame) -> bool:
        self.tasks.append(trio.lowlevel.current_task().name)
        if self.fail_at is not None and len(self.stamps) == self.fail_at:
            raise RuntimeError("the sink broke")
        self.stamps.append(frame.timestamp)
        self.idle.append(is_idle(frame))
        return len(self.stamps) < self.room

    async def wait_ready(self) -> None:
        await self.ready.wait()
        self.room = 1000


async def test_mixing_on_the_clock_runs_in_the_clocks_task(autojump_clock: trio.testing.MockClock) -> None:
    """With a sink that takes frames without waiting, the frames are mixed in the clock's task
    at each tick; a full sink makes ticks underruns until it is ready; a failing one fails its
    own mixer's task, not the clock or the other mixers on it."""
    from trioagent.audio import TickClock

    clock = TickClock()
    full, broken, steady = NowaitRecorder(room=2), NowaitRecorder(fail_at=3), NowaitRecorder()
    mixers = {name: Mixer(sample_rate=8000) for name in ("full", "broken", "steady")}
    unused = trio.open_memory_channel[AudioFrame](0)[0]
    failure: list[BaseException] = []

    async def run_broken(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await mixers["broken"].run(unused, clock=clock, sink=broken, task_status=task_status)
        except RuntimeError as exc:
            failure.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        await nursery.start(lambda **kw: mixers["full"].run(unused, clock=clock, sink=full, **kw))
        await nursery.start(run_broken)
        await nursery.start(lambda **kw: mixers["steady"].run(unused, clock=clock, sink=steady, **kw))
        await trio.sleep(0.15)
        full.ready.set()  # room again at 0.15: the next tick (0.16) is mixed
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert steady.stamps == [approx(0.02 * k) for k in range(13)]  # every tick, 0.00 .. 0.24
    assert set(steady.tasks) == {"trioagent.audio.mixer.TickClock.run"}  # mixed in the clock's own task
    assert full.stamps == [approx(t) for t in (0.0, 0.02, 0.16, 0.18, 0.20, 0.22, 0.24)]
    assert mixers["full"].statistics().underruns == 6  # the ticks 0.04 .. 0.14 had no room
    assert broken.stamps == [approx(t) for t in (0.0, 0.02, 0.04)] and [str(e) for e in failure] == ["the sink broke"]


async def test_a_sink_that_leaves_idle_frames_unsent_gets_frames_only_while_something_plays(autojump_clock: trio.testing.MockClock) -> None:
    """A sink whose `sends_idle` is False gets no frame at a tick with nothing to play (not
    made at all); every tick is still counted, and what plays is as it would be (its fade-out
    to the end, silence a source played)."""
    from trioagent.audio import TickClock

    clock = TickClock()
    quiet, every = NowaitRecorder(), NowaitRecorder()
    quiet.sends_idle = False  # type: ignore[attr-defined]
    mixers = {"quiet": Mixer(sample_rate=8000), "every": Mixer(sample_rate=8000)}
    unused = trio.open_memory_channel[AudioFrame](0)[0]
    async with trio.open_nursery() as nursery:
        await nursery.start(clock.run)
        await nursery.start(lambda **kw: mixers["quiet"].run(unused, clock=clock, sink=quiet, **kw))
        await nursery.start(lambda **kw: mixers["every"].run(unused, clock=clock, sink=every, **kw))
        await trio.sleep(0.05)  # ticks 0.00 .. 0.04: idle
        for mixer in mixers.values():
            source = mixer.add_source(8000, voice=True, name="voice")
            source.push(AudioFrame(np.full(320, 3000, np.int16), 8000))  # 40 ms of tone
            source.push(AudioFrame(np.zeros(160, np.int16), 8000))  # and 20 ms of silence it played
            source.end()
        await trio.sleep(0.15)
        nursery.cancel_scope.cancel()
    assert every.stamps == [approx(0.02 * k) for k in range(10)]
    assert every.idle == [True] * 3 + [False] * 4 + [True] * 3  # (0.12: the source ends, its frame made)
    assert quiet.stamps == every.stamps[3:7] and not any(quiet.idle)
    assert mixers["quiet"].statistics() == mixers["every"].statistics()  # (ticks 10, no underrun)
    assert mixers["quiet"].statistics().ticks == 10


async def test_tick_clock_phase(autojump_clock: trio.testing.MockClock) -> None:
    """A clock with phase 0.25 ticks 5 ms into each 20 ms period: a server spreads its sessions
    over a few such clocks."""
    from trioagent.audio import TickClock

    clock = TickClock(phase=0.25)
    mixer = Mixer(sample_rate=8000)
    times: list[float] = []
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await nursery.start(clock.run)
        send, receive = trio.open_memory_channel[AudioFrame](100)
        await nursery.start(lambda **kw: mixer.run(send, clock=clock, **kw))
        for _ in range(3):
            times.append((await receive.receive()).timestamp - t0)
        nursery.cancel_scope.cancel()
    assert times == [approx(t) for t in (0.005, 0.025, 0.045)]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 400), st.just(-1)), min_size=1, max_size=40), st.booleans())
def test_any_pushes_play_every_sample_once_in_order(steps: list[int], loop: bool) -> None:
    """A source's queue, for frames of any length (a TTS's, a resampler's leftovers, exactly
    one tick, none) pushed between ticks (-1): each tick takes the next samples, every sample
    once and in order, a short tick padded with zeros; a looping source replays the same; the
    queued length stays exact."""
    mixer = Mixer(sample_rate=8000)  # a tick is 160 samples
    s = mixer.add_source(8000, loop=loop)
    pushed: list[int] = []
    played: list[int] = []

    def tick() -> None:
        before = s._queued if not s._ended else 160 * bool(pushed)  # (an ended loop replays)
        chunk, got = s._take(160)
        assert len(chunk) == 160 and got == min(before, 160) and not chunk[got:].any()
        played.extend(np.rint(chunk[:got] * 32768.0).astype(int).tolist())
        assert s._queued == sum(len(c) for c in s._chunks) - s._offset  # (kept as it goes, not summed)

    for step in steps:
        if step < 0:
            tick()
        else:
            samples = [(len(pushed) + i) % 30000 + 1 for i in range(step)]
            pushed.extend(samples)
            s.push(AudioFrame(np.array(samples, np.int16), 8000))
    while s._queued:
        tick()
    assert played == pushed
    if loop:
        s.end()
        for _ in range(3):
            tick()
        cycles = pushed * (2 + 480 // max(1, len(pushed)))
        assert played[len(pushed) :] == cycles[: len(played) - len(pushed)]


def test_silence_is_one_shared_read_only_frame_and_sources_still_mix() -> None:
    mixer = Mixer(sample_rate=16000)
    heard: list[AudioFrame] = []
    mixer.tap = heard.append
    a, b = mixer.mix(0.0), mixer.mix(0.02)
    assert a.samples is b.samples and not a.samples.flags.writeable and not a.samples.any()
    assert (a.timestamp, b.timestamp, len(a)) == (0.0, 0.02, 320) and heard == [a, b]
    with pytest.raises(ValueError):
        a.samples[0] = 1  # (nobody can change what every silent tick shares)
    voice = mixer.add_source(16000, voice=True)
    voice.push(AudioFrame(np.full(320, 1000, np.int16), 16000))
    voice.end()
    c = mixer.mix(0.04)
    assert c.samples is not a.samples and c.samples.any() and c.samples.flags.writeable
    ticks = 3
    while mixer.sources:
        assert mixer.mix(0.02 * ticks).samples is not a.samples
        ticks += 1
    assert mixer.mix(0.02 * ticks).samples is a.samples  # the source played out: shared silence again
    assert mixer.statistics().ticks == ticks + 1 and len(heard) == ticks + 1  # (every tick counted and tapped)



@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 3), min_size=1, max_size=12),  # frames pushed before each tick (in ticks' worth)
    st.sampled_from([None, "pause", "stop", "background", "gain"]),
    st.integers(0, 20),  # the tick at which that happens
    st.sampled_from([480, 240, 700]),  # samples a pushed frame holds (a tick is 480)
)
def test_a_voice_alone_plays_its_frames_as_pushed_exactly_as_the_float_path(pushes: list[int], event: str | None, at: int, size: int) -> None:
    """One voice at the mixer's rate, steady, alone: its frames are played as pushed (no float
    round trip). The same audio pushed as float takes the general path: every output frame,
    played position, mark and duck level is the same, through fades, a pause, a stop, a
    background that comes in, a gain, frames that do not line up with the ticks."""
    rng = np.random.default_rng(len(pushes) * 100 + at)
    mixers = [Mixer(sample_rate=24000, fade_duration=0.01), Mixer(sample_rate=24000, fade_duration=0.01)]
    voices = [m.add_source(24000, voice=True) for m in mixers]
    marks: list[list[int]] = [[], []]
    for i, voice in enumerate(voices):
        for k in range(1, 8):
            voice.call_when_played(k * 0.015, lambda i=i, k=k: marks[i].append(k))  # type: ignore[misc]
    pcm = rng.integers(-32768, 32768, size=sum(pushes) * size, dtype=np.int16)
    pcm[:4] = (-32768, 32767, -32768, 32767)  # (the ends of the range)
    out: list[list[np.ndarray]] = [[], []]
    pos = 0
    for tick in range(len(pushes) + 40):
        if tick < len(pushes) and not (event == "stop" and tick > at):
            chunk = pcm[pos : pos + pushes[tick] * size]
            pos += len(chunk)
            for j in range(0, len(chunk), size):
                frame = AudioFrame(chunk[j : j + size].copy(), 24000)
                voices[0].push(frame)  # as pushed: int16 kept
                voices[1].push_float(frame.to_float())  # float: the general path
        elif tick == len(pushes) and not (event == "stop" and tick > at):
            for voice in voices:
                voice.end()
        if tick == at:
            for m, voice in zip(mixers, voices):
                if event == "pause":
                    voice.pause()
                elif event == "stop":
                    voice.stop()
                elif event == "background":
                    bg = m.add_source(24000, name="bg", loop=True)
                    bg.push(AudioFrame(np.full(480, 1000, np.int16), 24000))
                    bg.end()
                elif event == "gain":
                    voice.gain = 0.5
        if tick == at + 5 and event == "pause":
            for voice in voices:
                voice.resume()
        for i, m in enumerate(mixers):
            out[i].append(m.mix(tick * TICK).samples.copy())
    for a, b in zip(*out):
        assert np.array_equal(a, b)
    assert [v.played_samples for v in voices] == [voices[1].played_samples] * 2
    assert [v.played_out_at for v in voices] == [voices[1].played_out_at] * 2
    assert marks[0] == marks[1]
    assert mixers[0]._duck_level == mixers[1]._duck_level
    assert mixers[0].statistics() == mixers[1].statistics()


def test_a_voice_alone_at_the_mixers_rate_is_played_as_pushed() -> None:
    """(The shortcut above is taken: the frame mixed is the array pushed.)"""
    mixer = Mixer(sample_rate=24000)
    voice = mixer.add_source(24000, voice=True)
    frames = [AudioFrame(np.full(480, 1000 * k, np.int16), 24000) for k in range(1, 4)]
    for frame in frames:
        voice.push(frame)
    first = mixer.mix(0.0)  # (a fade-in: the general path)
    assert not np.shares_memory(first.samples, frames[0].samples)
    assert mixer.mix(0.02).samples is frames[1].samples and mixer.mix(0.04).samples is frames[2].samples
