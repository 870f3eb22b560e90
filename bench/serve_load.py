"""How many real-time sessions one `trioagent serve` process holds, and its CPU per session.

The server runs in its own process (one trio thread, so one core at most) with the full
`CascadingPipeline` per session and zero-cost providers (scripted STT and LLM, tone TTS), so
what is measured is the framework: WebSocket framing, JSON, input re-framing, VAD and
endpointing, the mixer and resampling (16 kHz in, 24 kHz out), the shared `TickClock`.

The load generator (this process) opens N browser-protocol connections on loopback. Each client
streams real-time 16 kHz PCM16 (1 s of speech, then 3 s of silence, repeated) on an absolute
schedule, spread over the 20 ms frame period, and reads the agent's 24 kHz audio. A level
passes when, over all clients:
  - the output arrived in real time: >= 99% of the expected 20 ms frames, and the 99th
    percentile gap between frames under 60 ms;
  - the server's mixers underran on < 1% of their ticks;
  - the server answered in time: e2e latency (the session's own metric: first answer frame at
    the mixer minus the end of the user's speech) under 0.5 s + 100 ms for 99% of turns (0.5 s
    is the end-of-turn delay).
"reply" is the same as the client saw it (first loud frame received): it adds the network, the
WebSocket framing on both sides and the load generator's own event-loop delay.

By default every caller's turns are in step (all stop speaking within the same 20 ms, so every
session answers at once: the worst case); SERVE_LOAD_TURNS=spread spreads the callers' turns
evenly over the 4 s cycle, as independent callers would be.

Run: python bench/serve_load.py [N ...]   (default: 25 50 100 150 200)
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import trio
import trio_websocket

from _common import machine, percentile

DURATION = 16.0
SPEECH, SILENCE = 1.0, 3.0
PERIOD = 0.02
SPREAD = os.environ.get("SERVE_LOAD_TURNS") == "spread"
STAGES = ("end of turn", "to LLM", "LLM first token", "to TTS", "TTS first audio", "to the mixer")


def factory() -> Any:
    from trioagent import Agent, CascadingPipeline
    from trioagent.testing import ScriptedLLM, ScriptedSTT, ToneTTS

    stt = ScriptedSTT(["hello there"] * 1000)
    llm = ScriptedLLM(["Sure, here you are."] * 1000)  # 4 words: 1 s of voice
    return Agent(instructions="Bench."), CascadingPipeline(stt=stt, llm=llm, tts=ToneTTS())


async def run_server() -> None:
    from trioagent.server import Server, serve

    if os.environ.get("SERVE_LOAD_CPUS"):  # "server/client" CPU numbers, e.g. "0/1"
        os.sched_setaffinity(0, {int(os.environ["SERVE_LOAD_CPUS"].split("/")[0])})

    sessions: list[Any] = []
    if os.environ.get("SERVE_LOAD_GC") != "default":
        import gc  # as `trioagent serve` does (NOTES.md, "GC pauses")

        gc.collect()
        gc.freeze()
        gc.set_threshold(10_000, 50, 100)
    lags: list[tuple[float, float]] = []

    async def watch_lag() -> None:  # (SERVE_LOAD_LAGS=1: when the loop woke 15 ms late or more)
        t0 = trio.current_time()
        while True:
            due = trio.current_time() + 0.005
            await trio.sleep_until(due)
            if trio.current_time() - due > 0.015:
                lags.append((round(due - t0, 3), round(trio.current_time() - due, 3)))

    async with trio.open_nursery() as nursery:
        if os.environ.get("SERVE_LOAD_LAGS"):
            nursery.start_soon(watch_lag)
        e2e: list[float] = []
        stages: list[list[float]] = []  # where e2e goes, per turn (STAGES)

        def on_session(session: Any) -> None:
            sessions.append(session)
            session.on("metrics_collected", on_metrics)

        def on_metrics(m: Any) -> None:
            if m.e2e_latency is None:
                return
            e2e.append(m.e2e_latency)
            marks = [m.user_speech_end, m.end_of_turn_at, m.llm_started_at, m.llm_first_token_at, m.tts_started_at, m.tts_first_byte_at, m.first_audio_at]
            if None not in marks:
                stages.append([b - a for a, b in zip(marks, marks[1:])])

        server: Server = await nursery.start(lambda task_status: serve(factory, "127.0.0.1", 0, max_sessions=10000, grace=0, on_session=on_session, task_status=task_status))
        usage = resource.getrusage(resource.RUSAGE_SELF)  # (the imports and start-up are not the load's)
        print(json.dumps({"port": server.port, "cpu0": usage.ru_utime + usage.ru_stime}), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ticks = sum(s.mixer.statistics().ticks for s in sessions)
        underruns = sum(s.mixer.statistics().underruns for s in sessions)
        print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "ticks": ticks, "underruns": underruns, "sessions": len(sessions), "e2e": e2e, "stages": stages, "lags": lags}), flush=True)
        server.shutdown()
        nursery.cancel_scope.cancel()


class ClientStats:
    def __init__(self) -> None:
        self.frames = 0
        self.gaps: list[float] = []
        self.replies: list[float] = []
        self.ready_at: float | None = None
        self.dropped = False


async def client(port: int, offset: float, t0: float, stats: ClientStats, speech_pcm: list[bytes], silence_pcm: bytes, phase: int = 0) -> None:
    try:
        await _client(port, offset, t0, stats, speech_pcm, silence_pcm, phase)
    except* (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
        stats.dropped = True


async def _client(port: int, offset: float, t0: float, stats: ClientStats, speech_pcm: list[bytes], silence_pcm: bytes, phase: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/ws", message_queue_size=64)
        await ws.send_message(json.dumps({"type": "hello", "sample_rate": 16000, "output_sample_rate": 24000}))
        assert json.loads(await ws.get_message())["type"] == "ready"
        speech_ends: list[float] = []

        async def reader() -> None:
            last = None
            waiting = False
            while True:
                message = await ws.get_message()
                if not isinstance(message, bytes):
                    continue
                now = trio.current_time()
                if stats.ready_at is None:
                    stats.ready_at = now
                stats.frames += 1
                if last is not None:
                    stats.gaps.append(now - last)
                last = now
                loud = np.abs(np.frombuffer(message, "<i2")).max(initial=0) > 3000
                if speech_ends and len(stats.replies) < len(speech_ends) and loud and now > speech_ends[-1]:
                    stats.replies.append(now - speech_ends[-1])

        nursery.start_soon(reader)
        turn = round((SPEECH + SILENCE) / PERIOD)
        start = t0 + offset
        k = 0
        while start + (k + 1) * PERIOD < t0 + DURATION:
            await trio.sleep_until(start + (k + 1) * PERIOD)  # frame k has been "captured"
            i = (k + phase) % turn
            await ws.send_message(speech_pcm[i % len(speech_pcm)] if i < len(speech_pcm) else silence_pcm)
            if i == len(speech_pcm) - 1:
                speech_ends.append(start + (k + 1) * PERIOD)
            k += 1
        await ws.send_message(json.dumps({"type": "end"}))
        nursery.cancel_scope.cancel()


async def level(n: int) -> dict[str, Any]:
    from trioagent.testing import silence, speech

    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = await trio.lowlevel.open_process([sys.executable, os.environ.get("SERVE_LOAD_SERVER", __file__), "--serve"], stdout=subprocess.PIPE, env=env)
    assert server.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        line += await server.stdout.receive_some(1)
    started = json.loads(line)
    port = started["port"]
    speech_pcm = [f.to_pcm16() for f in speech(SPEECH)]
    silence_pcm = silence(PERIOD)[0].to_pcm16()
    stats = [ClientStats() for _ in range(n)]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    t0 = trio.current_time() + 0.5
    turn = round((SPEECH + SILENCE) / PERIOD)
    async with trio.open_nursery() as nursery:
        for i, s in enumerate(stats):
            phase = (i * turn) // n if SPREAD else 0  # (spread: the callers' turns evenly over the 4 s cycle)
            nursery.start_soon(client, port, (i % 20) * PERIOD / 20 + (i // 20) * 0.0001, t0, s, speech_pcm, silence_pcm, phase)
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    server.send_signal(signal.SIGTERM)
    out = b""
    while chunk := await server.stdout.receive_some():
        out += chunk
    await server.wait()
    result = json.loads(out.strip().splitlines()[-1])
    result["cpu"] -= started["cpu0"]
    expected = sum((t0 + DURATION - s.ready_at) / PERIOD for s in stats if s.ready_at is not None)
    got = sum(s.frames for s in stats)
    gaps = [g for s in stats for g in s.gaps]
    replies = [r for s in stats for r in s.replies]
    return {
        "n": n,
        "dropped": sum(s.dropped for s in stats),
        "frames": got / expected if expected else 0.0,
        "gap_p99": percentile(gaps, 0.99) if gaps else float("inf"),
        "underruns": result["underruns"] / max(1, result["ticks"]),
        "e2e_p50": percentile(result["e2e"], 0.5) if result["e2e"] else float("inf"),
        "e2e_p99": percentile(result["e2e"], 0.99) if result["e2e"] else float("inf"),
        "reply_p50": percentile(replies, 0.5) if replies else float("inf"),
        "reply_p99": percentile(replies, 0.99) if replies else float("inf"),
        "turns": len(replies),
        "server_cpu": result["cpu"] / wall,
        "cpu_per_session_ms": 1000 * result["cpu"] / wall / n,
        "client_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall,
        "lags": result["lags"],
        "stages": [percentile([t[i] for t in result["stages"]], 0.5) for i in range(len(STAGES))] if result["stages"] else [],
    }


async def main(levels: list[int]) -> None:
    if os.environ.get("SERVE_LOAD_CPUS"):
        os.sched_setaffinity(0, {int(os.environ["SERVE_LOAD_CPUS"].split("/")[1])})
    print(f"machine: {machine()}")
    print(f"{DURATION:.0f} s per level; each session: 16 kHz in, 24 kHz out, 1 s speech + 3 s silence turns, "
          + ("spread over the cycle (SERVE_LOAD_TURNS=spread)" if SPREAD else "all callers in step (the worst case)"))
    print(f"{'sessions':>8} {'e2e p50':>8} {'e2e p99':>8} {'frames':>7} {'gap p99':>8} {'underrun':>9} {'reply p50':>10} {'reply p99':>10} {'server CPU':>11} {'CPU/session':>12} {'client CPU':>11} {'dropped':>8}  verdict")
    for n in levels:
        r = await level(n)
        ok = r["dropped"] == 0 and r["frames"] >= 0.99 and r["gap_p99"] < 0.06 and r["underruns"] < 0.01 and r["e2e_p99"] < 0.6
        print(
            f"{r['n']:>8} {r['e2e_p50'] * 1000:>6.0f}ms {r['e2e_p99'] * 1000:>6.0f}ms {r['frames']:>7.1%} {r['gap_p99'] * 1000:>6.1f}ms {r['underruns']:>9.2%} {r['reply_p50'] * 1000:>8.0f}ms "
            f"{r['reply_p99'] * 1000:>8.0f}ms {r['server_cpu']:>11.0%} {r['cpu_per_session_ms']:>9.2f} ms/s {r['client_cpu']:>11.0%} {r['dropped']:>8}  "
            f"{'real time' if ok else 'NOT real time'}",
            flush=True,
        )
        if r["lags"]:
            print(f"         event-loop stalls over 15 ms (at s, ms): {[(at, round(ms * 1000)) for at, ms in r['lags']]}")
        if r["stages"]:
            print("         e2e medians by stage: " + ", ".join(f"{name} {t * 1000:.1f} ms" for name, t in zip(STAGES, r["stages"])), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        if os.environ.get("SERVE_LOAD_STEPS"):  # task steps by task, to that file
            import collections

            class Steps(trio.abc.Instrument):
                def __init__(self) -> None:
                    self.counts: collections.Counter[str] = collections.Counter()

                def before_task_step(self, task: trio.lowlevel.Task) -> None:
                    self.counts[task.name] += 1

            steps = Steps()
            try:
                trio.run(run_server, instruments=[steps])
            finally:
                with open(os.environ["SERVE_LOAD_STEPS"], "w") as f:
                    json.dump(steps.counts.most_common(), f)
        elif os.environ.get("SERVE_LOAD_PROFILE"):  # the server under cProfile, its stats to that file
            import cProfile

            cProfile.run("trio.run(run_server)", os.environ["SERVE_LOAD_PROFILE"])
        else:
            trio.run(run_server)
    else:
        trio.run(main, [int(a) for a in sys.argv[1:]] or [25, 50, 100, 150, 200])
