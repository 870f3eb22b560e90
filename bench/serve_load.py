"""How many real-time sessions one `trioagent serve` process holds, and its CPU per session.

The server runs in its own process (one trio thread, so one core at most) with the full
`CascadingPipeline` per session and zero-cost providers (scripted STT and LLM, tone TTS), so
what is measured is the framework: WebSocket framing, JSON, input re-framing, VAD and
endpointing, the mixer and resampling (16 kHz in, 24 kHz out), the shared `TickClock`.

The load generator (this process) opens N browser-protocol connections on loopback. Each client
streams real-time 16 kHz PCM16 (1 s of speech, then 3 s of silence, repeated) on an absolute
schedule, spread over the 20 ms frame period, and reads the agent's 24 kHz audio. A level
passes when, over all clients:
  - the output arrived in real time: every audio message the server wrote was received (the
    "frames" column: received / written; each caller reads until its session's close), and the
    99th percentile gap between consecutive frames of a reply under 60 ms (the server sends no
    silence by default: a gap over 1 s is the quiet between two replies, not counted);
  - the server's mixers underran on < 1% of their ticks;
  - the server answered in time: e2e latency (the session's own metric: first answer frame at
    the mixer minus the end of the user's speech) under 0.5 s + 100 ms for 99% of turns (0.5 s
    is the end-of-turn delay).
"reply" is the same as the client saw it (first loud frame received): it adds the network, the
WebSocket framing on both sides and the load generator's own event-loop delay.

SERVE_LOAD_PROCESSES=2 runs two server processes and gives them the callers in turn, as
`trioagent serve --workers 2` does by least sessions (the supervisor only hands over each
connection's socket: it costs nothing per frame).

By default every caller's turns are in step (all stop speaking within the same 20 ms, so every
session answers at once: the worst case); SERVE_LOAD_TURNS=spread spreads the callers' turns
evenly over the 4 s cycle, as independent callers would be.

Run: python bench/serve_load.py [N ...]   (default: 25 50 100 150 200)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import numpy as np
import trio

from _common import machine, percentile

DURATION = 16.0
SPEECH, SILENCE = 1.0, 3.0
PERIOD = 0.02
SPREAD = os.environ.get("SERVE_LOAD_TURNS") == "spread"
PROCESSES = int(os.environ.get("SERVE_LOAD_PROCESSES", "1"))  # servers, each its own process (as `--workers N`)
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
        print(json.dumps({"port": server.port, "cpu0": usage.ru_utime + usage.ru_stime, "sys0": usage.ru_stime}), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                break
        usage = resource.getrusage(resource.RUSAGE_SELF)
        ticks = sum(s.mixer.statistics().ticks for s in sessions)
        underruns = sum(s.mixer.statistics().underruns for s in sessions)
        sent = sum(s.transport._frames_out for s in sessions)  # audio messages written to the callers
        print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "sys": usage.ru_stime, "ticks": ticks, "underruns": underruns, "sent": sent, "sessions": len(sessions), "e2e": e2e, "stages": stages, "lags": lags}), flush=True)
        server.shutdown()
        nursery.cancel_scope.cancel()


class ClientStats:
    def __init__(self) -> None:
        self.frames = 0
        self.gaps: list[float] = []
        self.replies: list[float] = []
        self.ready_at: float | None = None
        self.dropped = False


# -- the load generator: lean, so that one core drives as many callers as a worker can hold ------
# (trio-websocket costs the generator about as much per caller as the server spends: it ran out
# of its core near 60 callers.) One task sends every caller's frame on its 20 ms schedule, one
# task polls every socket every 5 ms and parses what came; the WebSocket framing is by hand
# (client frames masked with a fixed key, as RFC 6455 allows any key; the server unmasks).

MASK = b"\x37\xfa\x21\x3d"
POLL = 0.005
REPLY_GAP = 1.0  # a longer gap between audio messages is the silence between two replies, not a gap in one


def ws_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big")
    data = np.frombuffer(payload + b"\0" * (-n % 4), np.uint32) ^ np.frombuffer(MASK, np.uint32)[0]
    return head + MASK + data.tobytes()[:n]


class Caller:
    """One caller's socket, its schedule and what it received."""

    def __init__(self, sock: socket.socket, start: float, phase: int, stats: ClientStats) -> None:
        self.sock, self.start, self.phase, self.stats = sock, start, phase, stats
        self.buffer = bytearray()
        self.last: float | None = None
        self.speech_ends: list[float] = []
        self.closed = False

    def parse(self, now: float) -> None:
        buf, stats = self.buffer, self.stats
        i = 0
        while len(buf) - i >= 2:
            opcode, n = buf[i] & 0x0F, buf[i + 1] & 0x7F
            h = 2
            if n == 126:
                if len(buf) - i < 4:
                    break
                n, h = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif n == 127:
                if len(buf) - i < 10:
                    break
                n, h = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if len(buf) - i < h + n:
                break
            if opcode == 2:
                if stats.ready_at is None:
                    stats.ready_at = now
                stats.frames += 1
                if self.last is not None and now - self.last < REPLY_GAP:
                    stats.gaps.append(now - self.last)
                self.last = now
                ends = self.speech_ends
                if ends and len(stats.replies) < len(ends) and now > ends[-1]:
                    pcm = np.frombuffer(bytes(buf[i + h : i + h + n]), "<i2")
                    if pcm.size and int(np.abs(pcm).max()) > 3000:
                        stats.replies.append(now - ends[-1])
            elif opcode == 8:
                self.closed = True
            i += h + n
        del buf[:i]


async def connect(port: int) -> socket.socket:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise OSError("closed during the handshake")
        head += chunk
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    if not head.startswith(b"HTTP/1.1 101") or accept not in head:
        raise OSError(f"handshake refused: {head[:40]!r}")
    rest = head.split(b"\r\n\r\n", 1)[1]
    await stream.send_all(ws_frame(1, json.dumps({"type": "hello", "sample_rate": 16000, "output_sample_rate": 24000}).encode()))
    while b"ready" not in rest:  # (the first message: {"type": "ready", ...})
        chunk = await stream.receive_some(4096)
        if not chunk:
            raise OSError("closed before ready")
        rest += chunk
    trio_sock = stream.socket
    sock = socket.fromfd(trio_sock.fileno(), trio_sock.family, trio_sock.type)  # (a plain socket of its own)
    await stream.aclose()
    sock.setblocking(False)
    return sock


async def drive(ports: list[int], n: int, stats: list[ClientStats], speech_frames: list[bytes], silence_frame: bytes, duration: float) -> float:
    """Connect `n` callers (in turn to each server: as `--workers` spreads them by least
    sessions), run them for `duration` from the returned start time."""
    turn = round((SPEECH + SILENCE) / PERIOD)
    socks: list[socket.socket | None] = []
    for i in range(n):
        try:
            socks.append(await connect(ports[i % len(ports)]))
        except OSError as exc:
            print(f"caller {i} could not connect: {exc}", file=sys.stderr)
            stats[i].dropped = True
            socks.append(None)
    t0 = trio.current_time() + 0.2
    callers = [
        Caller(sock, t0 + (i % 20) * PERIOD / 20, (i * turn) // n if SPREAD else 0, stats[i])
        for i, sock in enumerate(socks) if sock is not None
    ]
    by_fd = {c.sock.fileno(): c for c in callers}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    end = t0 + duration

    slots: dict[float, list[Caller]] = {}
    for c in callers:
        slots.setdefault(c.start, []).append(c)
    starts = sorted(slots)

    async def send_loop() -> None:
        # Caller frame k goes when it has been "captured": at start + (k + 1) * PERIOD; the
        # callers are in 20 groups spread over the 20 ms period.
        k = 0
        while starts:
            for start in starts:
                due = start + (k + 1) * PERIOD
                if due >= end:
                    return
                await trio.sleep_until(due)
                for c in slots[start]:
                    if c.closed:
                        continue
                    i = (k + c.phase) % turn
                    try:
                        c.sock.send(speech_frames[i] if i < len(speech_frames) else silence_frame)
                    except OSError:  # (BlockingIOError: the server stopped reading, 64 KB backed up)
                        c.stats.dropped = True
                        c.closed = True
                        continue
                    if i == len(speech_frames) - 1:
                        c.speech_ends.append(due)
            k += 1

    async def read_loop() -> None:
        while True:
            await trio.sleep(POLL)
            now = trio.current_time()
            for fd, _ in poller.poll(0):
                c = by_fd[fd]
                try:
                    data = c.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    c.closed = True
                    continue
                c.buffer += data
                c.parse(now)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_loop)
        await send_loop()
        for c in callers:
            with contextlib.suppress(OSError):
                c.sock.send(ws_frame(1, b'{"type": "end"}'))
        with trio.move_on_after(5.0):  # (what is on its way is counted: until each server's close)
            while not all(c.closed for c in callers):
                await trio.sleep(POLL)
        nursery.cancel_scope.cancel()
    for c in callers:
        c.sock.close()
    poller.close()
    return t0


async def level(n: int, duration: float = DURATION) -> dict[str, Any]:
    from trioagent.testing import silence, speech

    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    servers, starts = [], []
    for _ in range(PROCESSES):
        server = await trio.lowlevel.open_process([sys.executable, os.environ.get("SERVE_LOAD_SERVER", __file__), "--serve"], stdout=subprocess.PIPE, env=env)
        assert server.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await server.stdout.receive_some(1)
        servers.append(server)
        starts.append(json.loads(line))
    ports = [started["port"] for started in starts]
    speech_frames = [ws_frame(2, f.to_pcm16()) for f in speech(SPEECH)]
    silence_frame = ws_frame(2, silence(PERIOD)[0].to_pcm16())
    stats = [ClientStats() for _ in range(n)]
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    t0 = await drive(ports, n, stats, speech_frames, silence_frame, duration)
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, Any] = {"cpu": 0.0, "sys": 0.0, "ticks": 0, "underruns": 0, "sent": 0, "e2e": [], "stages": [], "lags": []}
    for server, started in zip(servers, starts):
        server.send_signal(signal.SIGTERM)
        out = b""
        assert server.stdout is not None
        while chunk := await server.stdout.receive_some():
            out += chunk
        await server.wait()
        one = json.loads(out.strip().splitlines()[-1])
        result["cpu"] += one["cpu"] - started["cpu0"]
        result["sys"] += one["sys"] - started["sys0"]
        for key in ("ticks", "underruns", "sent", "e2e", "stages", "lags"):
            result[key] += one[key]
    got = sum(s.frames for s in stats)
    gaps = [g for s in stats for g in s.gaps]
    replies = [r for s in stats for r in s.replies]
    return {
        "n": n,
        "dropped": sum(s.dropped for s in stats),
        "frames": got / result["sent"] if result["sent"] else 0.0,
        "gap_p99": percentile(gaps, 0.99) if gaps else float("inf"),
        "underruns": result["underruns"] / max(1, result["ticks"]),
        "e2e_p50": percentile(result["e2e"], 0.5) if result["e2e"] else float("inf"),
        "e2e_p99": percentile(result["e2e"], 0.99) if result["e2e"] else float("inf"),
        "reply_p50": percentile(replies, 0.5) if replies else float("inf"),
        "reply_p99": percentile(replies, 0.99) if replies else float("inf"),
        "turns": len(replies),
        "server_cpu": result["cpu"] / wall,
        "server_sys": result["sys"] / max(result["cpu"], 1e-9),  # the kernel's share of it
        "cpu_per_session_ms": 1000 * result["cpu"] / wall / n,
        "client_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall,
        "lags": result["lags"],
        "stages": [percentile([t[i] for t in result["stages"]], 0.5) for i in range(len(STAGES))] if result["stages"] else [],
    }


async def main(levels: list[int]) -> None:
    if os.environ.get("SERVE_LOAD_CPUS"):
        os.sched_setaffinity(0, {int(os.environ["SERVE_LOAD_CPUS"].split("/")[1])})
    print(f"machine: {machine()}")
    print(f"{DURATION:.0f} s per level, {PROCESSES} server process(es); each session: 16 kHz in, 24 kHz out, 1 s speech + 3 s silence turns, "
          + ("spread over the cycle (SERVE_LOAD_TURNS=spread)" if SPREAD else "all callers in step (the worst case)"))
    print(f"{'sessions':>8} {'e2e p50':>8} {'e2e p99':>8} {'frames':>7} {'gap p99':>8} {'underrun':>9} {'reply p50':>10} {'reply p99':>10} {'server CPU':>11} {'CPU/session':>12} {'client CPU':>11} {'dropped':>8}  verdict")
    # A short run first, not reported: the first level measured after start-up came out worse
    # than the same level again (1-7% underruns against 0-0.7% at 60-65 callers, 3 runs).
    await level(10, 4.0)
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
        print(f"         server CPU in the kernel: {r['server_sys']:.0%}")
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
