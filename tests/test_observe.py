"""`/healthz`, `/readyz` and `/metrics` (Prometheus text, parsed with prometheus_client's own
parser) on the server's port; the counters move with real calls."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trioagent.auth import mint_token

from .netkit import SECRET, raw_exchange, start_memory_server
from .test_server import browser_conversation

parser = pytest.importorskip("prometheus_client.parser")


def get(path: str, token: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()


def status_and_body(raw: bytes) -> tuple[int, str]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


def samples(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def test_health_readiness_and_metrics_move_with_calls(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    server, listener = await start_memory_server(nursery)
    assert status_and_body(await raw_exchange(listener, get("/healthz"), read_for=1)) == (200, "ok\n")
    assert status_and_body(await raw_exchange(listener, get("/readyz"), read_for=1)) == (200, "ready\n")
    status, body = status_and_body(await raw_exchange(listener, get("/metrics"), read_for=1))
    assert (status, body) == (401, "unauthorized: a token is required\n")
    await browser_conversation(listener)
    await trio.sleep(1.0)  # (the loop-lag task has ticked meanwhile)
    status, body = status_and_body(await raw_exchange(listener, get("/metrics", mint_token(SECRET)), read_for=1))
    assert status == 200
    got = samples(body)
    assert got["trioagent_sessions_started_total"] == 1
    assert got["trioagent_sessions_ended_total{code=1000}"] == 1
    assert got["trioagent_active_sessions"] == 0
    assert got["trioagent_turns_total"] >= 1 and got["trioagent_reply_latency_seconds_count"] >= 1
    assert got["trioagent_event_loop_lag_seconds_count"] >= 40
    assert "trioagent_mixer_underruns_total" in got


async def test_readyz_is_503_at_capacity_and_while_draining(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    from .netkit import browser_client

    server, listener = await start_memory_server(nursery, max_sessions=1)
    _, client = await browser_client(nursery, listener)
    with trio.fail_after(5):
        while server.active < 1:
            await trio.sleep(0.01)
    assert status_and_body(await raw_exchange(listener, get("/readyz"), read_for=1)) == (503, "full\n")
    await client.ws.aclose()
    with trio.fail_after(5):
        while server.active:
            await trio.sleep(0.01)
    probe = await listener.connect()  # (accepted before the drain; its request comes during it)
    await trio.sleep(0.1)
    assert server.ready
    server.shutdown()  # draining (the listener closes: new connections see a closed port)
    await probe.send_all(get("/readyz"))
    raw = b""
    with trio.fail_after(5):
        while chunk := await probe.receive_some(65536):
            raw += chunk
    assert status_and_body(raw) == (503, "draining\n") and not server.ready


async def test_barge_in_latency_in_the_metrics(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    """A caller cuts the agent's long answer: `trioagent_barge_in_seconds` has that one cut,
    0.5 s after the onset of the caller's speech (`min_interruption_duration`), and the
    interrupted turn is counted."""
    import json

    from trioagent.testing import silence, speech

    from .netkit import browser_client

    server, listener = await start_memory_server(nursery)
    ws, client = await browser_client(nursery, listener)
    await client.send_audio(speech(1.0) + silence(3.0))  # "hello agent": a short answer
    await client.send_audio(speech(1.0) + silence(2.5))  # "tell me more": 6 s of answer from 1.5 s after
    await client.send_audio(speech(1.0) + silence(3.0))  # "stop", 1 s into it: cut
    await ws.send_message(json.dumps({"type": "end"}))
    await trio.sleep(1)
    status, body = status_and_body(await raw_exchange(listener, get("/metrics", mint_token(SECRET)), read_for=1))
    got = samples(body)
    assert got["trioagent_barge_in_seconds_count"] == 1 and got["trioagent_barge_in_seconds_sum"] == pytest.approx(0.5)
    assert got["trioagent_turns_interrupted_total"] == 1 and got["trioagent_turns_total"] == 3


WORKER = """
import os, sys
from trioagent.observe import ServerMetrics
m = ServerMetrics(lambda: 1)
n = int(sys.argv[1])
for i in range(n):
    m.started.inc()
    m.reply_latency.observe(0.1 * i)
m.ended.labels(code="1000").inc(n)
m.provider_errors.labels(provider="stt-" + sys.argv[1], stage="stt").inc()
m.active.set(1)
print(os.getpid())
"""


def test_a_dead_workers_counts_join_the_archive(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three worker processes write their metrics and exit (and thirty more are copies of the
    first); folding all of them at once into the archive keeps every counter and histogram
    sample of the exposition, drops their live gauges, and leaves two files
    (`counter_archive.db`, `histogram_archive.db`) where there were 66: a scrape's cost no
    longer grows with every restart."""
    import os
    import shutil
    import subprocess
    import sys
    import threading
    from pathlib import Path

    from trioagent.observe import MULTIPROC_DIR, ServerMetrics, retire_worker

    path = str(tmp_path)
    env = {**os.environ, MULTIPROC_DIR: path}
    pids = [int(subprocess.run([sys.executable, "-c", WORKER, str(n)], env=env, check=True, capture_output=True, text=True).stdout) for n in (2, 3, 5)]
    monkeypatch.setenv(MULTIPROC_DIR, path)
    scraper = ServerMetrics(lambda: 0)  # (reads the files; writes none: prometheus-client chose at its import)

    def counts() -> dict[str, float]:
        return {k: v for k, v in samples(scraper.render()[0].decode()).items() if "active" not in k}

    # Thirty more dead workers (copies of the first's files), to fold all at once.
    for k in range(30):
        for kind in ("counter", "histogram"):
            shutil.copy(f"{path}/{kind}_{pids[0]}.db", f"{path}/{kind}_{90_000_000 + k}.db")
    before = counts()
    assert before["trioagent_sessions_started_total"] == 10 + 30 * 2 and before["trioagent_reply_latency_seconds_count"] == 70
    assert scraper.render()[0].decode().count("trioagent_active_sessions 3.0") == 1
    folds = [threading.Thread(target=retire_worker, args=(path, pid)) for pid in [*pids, *range(90_000_000, 90_000_030)]]
    for fold in folds:  # (in threads, as the supervisor does; several workers may die at once)
        fold.start()
    for fold in folds:
        fold.join()
    assert counts() == pytest.approx(before)  # (sums of floats, added in another order)
    assert "trioagent_active_sessions" not in scraper.render()[0].decode()  # (no live worker)
    left = sorted(p.name for p in Path(path).glob("*.db"))
    assert left == ["counter_archive.db", "histogram_archive.db"]
    retire_worker(path, pids[0])  # (twice, or a pid with no files: nothing changes)
    assert counts() == pytest.approx(before)  # (sums of floats, added in another order)


async def test_a_call_its_caller_ends_during_a_drain_ends_normally(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    """While the server drains (SIGTERM, or an old worker in a rolling restart) its calls go on;
    one whose caller closes the WebSocket ended normally (1000), as outside a drain: 1001 is
    for the calls the drain itself closes, at the end of the grace period. (Before, every call
    that ended during a drain counted as 1001, as if the deploy had cut it.)"""
    from trioagent.testing import silence, speech

    from .netkit import browser_client

    server, listener = await start_memory_server(nursery, grace=60)
    ws, client = await browser_client(nursery, listener)
    await client.send_audio(speech(1.0) + silence(3.0))
    server.shutdown()
    await trio.sleep(1)
    assert server.active == 1  # (the drain lets it go on)
    await ws.aclose()  # the caller hangs up: a close frame, 1000, without the protocol's "end"
    await trio.sleep(1)
    assert server.active == 0 and server.metrics is not None
    got = samples(server.metrics.render()[0].decode())
    assert got["trioagent_sessions_ended_total{code=1000}"] == 1 and "trioagent_sessions_ended_total{code=1001}" not in got
