"""Does memory come back when calls end? A server's resident memory after many sessions have come
and gone, and after many bad handshakes.

A server process (`python bench/rss.py --serve`: `trioagent.serve` with the full CascadingPipeline
and zero-cost providers, as `bench/serve_load.py` has, keeping no session itself) runs on loopback. First one call warms it up, then the start RSS is read; then
`--sessions` (200) calls come and go, 20 at a time, each a short conversation (a turn, an answer,
`end`); then `--bad` (2000) WebSocket handshakes the server must refuse. RSS is read from
/proc after each phase (and after a second to settle).

Run: python bench/rss.py [--sessions N] [--bad N]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import trio
import trio_websocket

from _common import machine

SESSIONS = int(sys.argv[sys.argv.index("--sessions") + 1]) if "--sessions" in sys.argv else 200
BAD = int(sys.argv[sys.argv.index("--bad") + 1]) if "--bad" in sys.argv else 2000


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


async def one_call(port: int, speech_pcm: list[bytes], silence_pcm: bytes) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
        await ws.send_message(json.dumps({"type": "hello"}))
        await ws.get_message()

        async def drain() -> None:
            try:
                while True:
                    await ws.get_message()
            except trio_websocket.ConnectionClosed:
                pass

        nursery.start_soon(drain)
        for pcm in speech_pcm + [silence_pcm] * 75:  # 1 s of speech, 1.5 s for the answer
            await ws.send_message(pcm)
            await trio.sleep(0.02)
        await ws.send_message(json.dumps({"type": "end"}))
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()


async def bad_handshake(port: int) -> None:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
        while await stream.receive_some(4096):
            pass


async def main() -> None:
    print(f"machine: {machine()}")
    here = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server = await trio.lowlevel.open_process([sys.executable, os.path.abspath(__file__), "--serve"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert server.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        line += await server.stdout.receive_some(1)
    try:
        await measure(server, json.loads(line)["port"])
    finally:
        server.terminate()
        await server.wait()


async def measure(server: trio.Process, port: int) -> None:
    from trioagent.testing import silence, speech

    speech_pcm = [f.to_pcm16() for f in speech(1.0)]
    silence_pcm = silence(0.02)[0].to_pcm16()
    await one_call(port, speech_pcm, silence_pcm)
    await trio.sleep(1.0)
    start = rss_mib(server.pid)
    for _ in range(SESSIONS // 20):
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(one_call, port, speech_pcm, silence_pcm)
    await trio.sleep(1.0)
    after_sessions = rss_mib(server.pid)
    for _ in range(BAD // 50):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(bad_handshake, port)
    await trio.sleep(1.0)
    after_bad = rss_mib(server.pid)
    print(f"server RSS: {start:.1f} MiB after one call; {after_sessions:.1f} MiB ({after_sessions - start:+.1f}) after {SESSIONS} more came and went; "
          f"{after_bad:.1f} MiB ({after_bad - after_sessions:+.1f}, {1024 * (after_bad - after_sessions) / max(1, BAD):+.2f} KiB each) after {BAD} refused handshakes")


async def run_server() -> None:
    from serve_load import factory

    from trioagent.server import Server, serve

    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(lambda task_status: serve(factory, "127.0.0.1", 0, max_sessions=10000, task_status=task_status))
        print(json.dumps({"port": server.port}), flush=True)


if __name__ == "__main__":
    trio.run(run_server if "--serve" in sys.argv else main)
