"""HAProxy (Debian's) in front of two `trioagent serve` processes, with deploy/haproxy.cfg's
settings, on loopback: 40 browser-protocol calls spread over both backends; one backend is
sent SIGTERM: its calls finish (or get 1001) and new calls all go to the other."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parents[1]
TRIOAGENT = str(Path(sys.executable).with_name("trioagent"))

if shutil.which("haproxy") is None:
    if os.environ.get("TRIOAGENT_REQUIRE_HAPROXY"):
        raise RuntimeError("HAProxy is required here (apt install haproxy)")
    pytest.skip("HAProxy is not installed (apt install haproxy)", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]], list[int]]]:
    ports = [free_port(), free_port()]
    front = free_port()
    backends = [
        subprocess.Popen([TRIOAGENT, "serve", "tests.netkit:factory", "--insecure", "--port", str(p), "--grace", "3"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for p in ports
    ]
    config = (ROOT / "deploy" / "haproxy.cfg").read_text()
    config = config.replace("bind :8080", f"bind 127.0.0.1:{front}").replace("127.0.0.1:8765", f"127.0.0.1:{ports[0]}").replace("127.0.0.1:8766", f"127.0.0.1:{ports[1]}")
    config = config.replace("log stdout format raw local0 warning\n", "")
    (tmp_path / "haproxy.cfg").write_text(config)
    proxy = subprocess.Popen(["haproxy", "-f", str(tmp_path / "haproxy.cfg"), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for p in [*ports, front]:
            wait_port(p)
        yield front, backends, ports
    finally:
        for process in [proxy, *backends]:
            process.kill()
            process.wait()


def tone(seconds: float, loud: bool) -> list[bytes]:
    n = 320
    out = []
    for i in range(round(seconds / 0.02)):
        t = (np.arange(n) + i * n) / 16000
        samples = (np.sin(2 * np.pi * 220 * t) * (8000 if loud else 0)).astype("<i2")
        out.append(samples.tobytes())
    return out


async def call(front: int, results: list[str], speaking: float = 1.0, quiet: float = 1.5) -> None:
    """One call: hello, `speaking` seconds of speech and `quiet` of quiet (in real time), until
    the agent's audio."""
    try:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{front}/ws") as ws:
            await ws.send_message(json.dumps({"type": "hello", "sample_rate": 16000, "output_sample_rate": 24000}))
            heard = trio.Event()

            async def listen() -> None:
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes) and np.abs(np.frombuffer(message, "<i2")).max(initial=0) > 300:
                        heard.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                for frame in tone(speaking, True) + tone(quiet, False):
                    await ws.send_message(frame)
                    await trio.sleep(0.02)
                with trio.fail_after(10):
                    await heard.wait()
                nursery.cancel_scope.cancel()
            results.append("answered")
    except* trio_websocket.ConnectionClosed as group:
        exc = group.exceptions[0]
        assert isinstance(exc, trio_websocket.ConnectionClosed)
        results.append(f"closed {exc.reason.code if exc.reason else None}")


def started(port: int) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    match = re.search(r"^trioagent_sessions_started_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_haproxy_spreads_calls_by_least_connections_and_drains_a_backend(cluster: tuple[int, list[subprocess.Popen[bytes]], list[int]]) -> None:
    pytest.importorskip("prometheus_client")
    front, backends, ports = cluster
    await trio.sleep(1.5)  # (both backends pass their health checks)
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(call, front, results)
    assert results == ["answered"] * 40
    counts = [started(p) for p in ports]
    assert sum(counts) == 40 and all(14 <= c <= 26 for c in counts), counts  # each 35%-65%

    # SIGTERM to one backend while calls run: they finish (or get 1001); new calls go to the other.
    during: list[str] = []
    after: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(call, front, during)
        await trio.sleep(0.5)
        backends[0].send_signal(signal.SIGTERM)
        await trio.sleep(1.5)  # (HAProxy sees it gone: its port is closed)
        before = started(ports[1])
        for _ in range(10):
            nursery.start_soon(call, front, after)
    assert all(r in ("answered", "closed 1001") for r in during), during
    assert after == ["answered"] * 10
    assert started(ports[1]) - before == 10
    assert backends[0].wait(timeout=10) == 0
