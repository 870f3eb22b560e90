"""`trioagent serve --workers 2` as a real process tree on loopback: calls are answered by the
workers; a killed worker is restarted; SIGHUP replaces the workers without refusing a
connection; SIGTERM drains and exits 0."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import trio

from .test_haproxy import call, free_port, wait_port
from .test_observe import get, samples, status_and_body

ROOT = Path(__file__).resolve().parents[1]
TRIOAGENT = str(Path(sys.executable).with_name("trioagent"))


def workers_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return sorted(out)


def start_workers(*options: str, **popen: Any) -> tuple[int, subprocess.Popen[str]]:
    """`trioagent serve tests.netkit:factory --workers 2` with `options`, on a free port: the
    port and the supervisor's process (its output piped, unless `popen` says otherwise)."""
    port = free_port()
    command = [TRIOAGENT, "serve", "tests.netkit:factory", "--insecure", "--port", str(port), "--workers", "2", *options]
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return port, subprocess.Popen(command, cwd=ROOT, text=True, **popen)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """GET `path` on the supervisor's port (whichever worker answers): status and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(get(path))
        raw = b""
        while chunk := await stream.receive_some(65536):
            raw += chunk
    return status_and_body(raw)


async def metrics(port: int) -> dict[str, float]:
    """GET /metrics: every worker's sum."""
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return samples(body)


async def short_call(port: int, results: list[str]) -> None:
    await call(port, results, speaking=0.4, quiet=0.8)


async def calls(port: int, n: int) -> list[str]:
    results: list[str] = []
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(short_call, port, results)
    return results


async def sessions_start(port: int, n: int) -> list[str]:
    """`n` browser-protocol sessions at once, each to its `ready` (a worker took it), then hung
    up: where a whole call is not the point, a fraction of a second instead of one."""
    import json

    import trio_websocket

    from .netkit import hello

    got: list[str] = []

    async def one() -> None:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message(hello(token=""))
            with trio.fail_after(10):
                got.append(json.loads(await ws.get_message())["type"])

    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return got


async def test_workers_restart_roll_and_drain(tmp_path: Path) -> None:
    port, supervisor = start_workers("--grace", "10", "--record-dir", str(tmp_path))
    try:
        wait_port(port)
        assert await calls(port, 6) == ["answered"] * 6
        first = workers_of(supervisor.pid)
        assert len(first) == 2
        # The metrics are every worker's (three calls went to each, by least sessions).
        deadline = time.monotonic() + 10  # (a call is over for the client a moment before its server side ends)
        while (await metrics(port)).get("trioagent_sessions_ended_total{code=1000}") != 6:
            assert time.monotonic() < deadline
            await trio.sleep(0.05)
        for _ in range(2):  # (asked twice: whichever worker answers, the sum is the same)
            counted = await metrics(port)
            assert counted["trioagent_sessions_started_total"] == 6
            assert counted["trioagent_sessions_ended_total{code=1000}"] == 6
            assert counted["trioagent_active_sessions"] == 0

        os.kill(first[0], signal.SIGKILL)  # a worker dies: another takes its place
        deadline = time.monotonic() + 15
        while len(workers_of(supervisor.pid)) < 2 or first[0] in workers_of(supervisor.pid):
            assert time.monotonic() < deadline
            await trio.sleep(0.1)
        assert await calls(port, 4) == ["answered"] * 4
        assert (await metrics(port))["trioagent_sessions_started_total"] == 10  # (a dead worker's counts stay)

        # A rolling restart while clients keep connecting: none is refused.
        before = set(workers_of(supervisor.pid))
        results: list[str] = []
        rolled = trio.Event()
        async with trio.open_nursery() as nursery:

            async def keep_calling() -> None:
                while not rolled.is_set():  # (then the calls under way finish)
                    nursery.start_soon(short_call, port, results)
                    await trio.sleep(0.2)

            nursery.start_soon(keep_calling)
            await trio.sleep(0.5)
            supervisor.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while set(workers_of(supervisor.pid)) & before:
                assert time.monotonic() < deadline
                await trio.sleep(0.2)
            rolled.set()
        assert results and all(r == "answered" for r in results), results
        assert len(workers_of(supervisor.pid)) == 2
        # Three workers are gone (one killed, two rolled): their counts stay, folded into the
        # archive files; the metrics directory holds those and the live workers' files only.

        async def ended() -> float | None:
            return (await metrics(port)).get("trioagent_sessions_ended_total{code=1000}")

        await wait_for_async(ended, 10 + len(results))  # (all ended by their callers: 1000, drained or not)
        assert (await metrics(port))["trioagent_sessions_started_total"] == 10 + len(results)
        live = workers_of(supervisor.pid)
        environ = Path(f"/proc/{live[0]}/environ").read_bytes().split(b"\0")
        (metrics_dir,) = [v.split(b"=", 1)[1].decode() for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")]

        def owners() -> set[str]:
            return {p.stem.rsplit("_", 1)[1] for p in Path(metrics_dir).glob("*.db")}

        await wait_for(lambda: owners() == {"archive", *map(str, live)}, f"only the archive and the live workers' files: {owners()}", timeout=5)  # (folded just after each exit)

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        out = supervisor.stdout.read() if supervisor.stdout else ""
        assert "with 2 worker processes" in out and "SIGHUP" in out and "SIGTERM" in out
        errors = supervisor.stderr.read() if supervisor.stderr else ""
        assert "died with status -9" in errors and "Traceback" not in errors
        # --record-dir reached the workers: each call is a whole stereo WAV, by both workers.
        wavs = sorted(tmp_path.glob("*.wav"))
        assert len(wavs) == 10 + len(results) and len({w.name.split("-")[1] for w in wavs}) >= 3  # (first, replaced, rolled)
        for path in wavs:
            with wave.open(str(path), "rb") as w:
                assert w.getnchannels() == 2 and w.getnframes() > 0
    finally:
        supervisor.kill()
        supervisor.communicate()  # (reaps it and closes its pipes)


async def test_a_flood_of_silent_connections_at_a_low_file_limit() -> None:
    """2,500 connections that send nothing, against `--workers 2` under a 1,024-file limit it
    cannot raise: `--max-pending` is fitted to the limit (with a warning), each worker drops its
    oldest silent connections, and a caller and a health check in the middle of the flood are
    served (before, every connection over the limit was dropped by the kernel, callers too)."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000:
        import pytest

        pytest.skip(f"this test needs 3,000 open files (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 3000) if hard == resource.RLIM_INFINITY else max(soft, min(hard, 4096)), hard))
    port, supervisor = start_workers(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
    silent: list[socket.socket] = []
    try:
        wait_port(port)
        for _ in range(2500):
            silent.append(socket.create_connection(("127.0.0.1", port)))
        results: list[str] = []
        await short_call(port, results)
        assert results == ["answered"]
        assert (await http_get(port, "/healthz"))[0] == 200
        for s in silent:
            s.close()  # (else the drain waits for them, as for any connection accepted before it)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        errors = supervisor.stderr.read() if supervisor.stderr else ""
        assert "1024 open files at most (ulimit -n): --max-pending lowered from 1000 to 760" in errors
        assert "dropped the oldest" in errors and "at its open-file limit" not in errors and "Traceback" not in errors
    finally:
        for s in silent:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        supervisor.kill()
        supervisor.communicate()


async def test_a_stuck_worker_is_killed_and_replaced() -> None:
    """A worker whose event loop stops (here: SIGSTOP, as a blocking call in an agent would do)
    misses its reports: new calls go to the other worker at once, and after `--worker-timeout`
    the stuck one is killed and replaced."""
    port, supervisor = start_workers("--worker-timeout", "3")
    try:
        wait_port(port)
        assert await calls(port, 2) == ["answered"] * 2  # (both workers up by its end: a call takes 2 s, a start 1)
        stuck, other = workers_of(supervisor.pid)
        os.kill(stuck, signal.SIGSTOP)
        await trio.sleep(2.5)  # (over two missed reports: the supervisor passes it over)
        assert await sessions_start(port, 4) == ["ready"] * 4
        deadline = time.monotonic() + 10
        while stuck in workers_of(supervisor.pid) or len(workers_of(supervisor.pid)) < 2:
            assert time.monotonic() < deadline
            await trio.sleep(0.1)
        assert other in workers_of(supervisor.pid)
        assert await sessions_start(port, 2) == ["ready"] * 2
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        errors = supervisor.stderr.read() if supervisor.stderr else ""
        assert f"(pid {stuck}) has not reported for 3 s: its event loop is stuck; killing it" in errors
        assert "Traceback" not in errors
    finally:
        supervisor.kill()
        supervisor.communicate()


async def test_a_stuck_worker_does_not_stop_the_hand_over() -> None:
    """A burst of connections in the two seconds before a stuck worker is passed over fills its
    socket (a few hundred descriptors): the supervisor passes the rest to the other worker
    instead of waiting on the stuck one (before: its accept loop waited, so every caller and
    health check waited in the backlog for `--worker-timeout`, 30 s)."""
    import resource
    import socket

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1500:
        if hard != resource.RLIM_INFINITY and hard < 1500:
            import pytest

            pytest.skip(f"this test needs 1,500 open files (hard limit {hard})")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1500, hard))
    port, supervisor = start_workers()
    burst: list[socket.socket] = []
    try:
        wait_port(port)
        assert await calls(port, 2) == ["answered"] * 2  # (both workers up by its end: a call takes 2 s, a start 1)
        stuck, other = workers_of(supervisor.pid)
        os.kill(stuck, signal.SIGSTOP)
        for _ in range(1200):
            burst.append(socket.create_connection(("127.0.0.1", port)))
        with trio.fail_after(5):
            assert (await http_get(port, "/healthz"))[0] == 200
        assert await sessions_start(port, 2) == ["ready"] * 2
        for s in burst:
            s.close()
        os.kill(stuck, signal.SIGCONT)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
        assert "Traceback" not in (supervisor.stderr.read() if supervisor.stderr else "")
    finally:
        for s in burst:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with contextlib.suppress(ProcessLookupError):
            for pid in workers_of(supervisor.pid):
                os.kill(pid, signal.SIGCONT)
        supervisor.kill()
        supervisor.communicate()


DEPLOY = '''
import os, time
here = os.path.dirname(__file__)
mode = open(os.path.join(here, "mode")).read().strip()
if mode == "gate":  # a model that loads for as long as the test says
    while not os.path.exists(os.path.join(here, "gate-open")):
        time.sleep(0.02)
elif mode == "broken":
    raise RuntimeError("a bad deploy")
from tests.netkit import factory
open(os.path.join(here, f"imported-{os.getpid()}"), "w").close()
'''


async def wait_for(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await trio.sleep(0.05)


async def test_a_roll_waits_for_each_new_worker_and_stops_at_a_bad_deploy(tmp_path: Path) -> None:
    """SIGHUP with new code: an old worker drains only once its replacement is ready (calls
    meanwhile go to the old workers, not to the one still loading); a replacement that cannot
    start stops the roll and the old workers go on; a worker that keeps failing to start is
    retried after a pause, not in a loop."""
    (tmp_path / "deployed.py").write_text(DEPLOY)
    mode = tmp_path / "mode"
    mode.write_text("ok")
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    port = free_port()
    with out.open("w") as out_file, err.open("w") as err_file:
        supervisor = subprocess.Popen(
            [TRIOAGENT, "serve", "deployed:factory", "--insecure", "--port", str(port), "--workers", "2"],
            cwd=ROOT, stdout=out_file, stderr=err_file, text=True, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        )  # fmt: skip
    try:
        wait_port(port)
        assert await calls(port, 2) == ["answered"] * 2  # (both workers up by its end: a call takes 2 s, a start 1)
        first = set(workers_of(supervisor.pid))

        # A slow start: the new worker waits at the gate; calls go to the old ones, both still up.
        mode.write_text("gate")
        supervisor.send_signal(signal.SIGHUP)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 3, "the first new worker starts")
        assert await sessions_start(port, 4) == ["ready"] * 4  # (before: handed to the waiting worker, never ready)
        assert first <= set(workers_of(supervisor.pid))
        (tmp_path / "gate-open").touch()
        await wait_for(lambda: "the rolling restart is done" in out.read_text(), "the roll ends")
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2, "the old workers exit (no calls)")
        second = set(workers_of(supervisor.pid))
        assert len(second) == 2 and not second & first

        # An old worker that dies during a roll is restarted and replaced: one drains after.
        (tmp_path / "gate-open").unlink()
        supervisor.send_signal(signal.SIGHUP)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 3, "the first new worker starts")
        os.kill(max(second - {min(second)}), signal.SIGKILL)  # (whichever old one is not replaced first)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 3 and not second <= set(workers_of(supervisor.pid)), "restarted")
        (tmp_path / "gate-open").touch()
        await wait_for(lambda: out.read_text().count("the rolling restart is done") == 2, "the roll ends")
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2, "back to two workers")
        second = set(workers_of(supervisor.pid))
        assert await sessions_start(port, 2) == ["ready"] * 2

        # A bad deploy: the roll stops at the first replacement; the old workers go on.
        mode.write_text("broken")
        supervisor.send_signal(signal.SIGHUP)
        await wait_for(lambda: "rolling restart stopped" in err.read_text(), "the roll stops")
        assert set(workers_of(supervisor.pid)) == second
        assert await sessions_start(port, 2) == ["ready"] * 2
        assert "exited with status 2 before it was ready; the old workers go on serving" in err.read_text()

        # A worker dies and its replacement cannot start: retried after a pause, until it can.
        os.kill(min(second), signal.SIGKILL)
        await wait_for(lambda: "before it was ready (1 in a row); starting another in 1 s" in err.read_text(), "the pause")
        mode.write_text("ok")
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2 and min(second) not in workers_of(supervisor.pid), "replaced")
        (replacement,) = set(workers_of(supervisor.pid)) - second
        await wait_for(lambda: (tmp_path / f"imported-{replacement}").exists(), "the replacement imports the mended module")
        assert await sessions_start(port, 2) == ["ready"] * 2

        # SIGTERM while a replacement is still loading: it drains as soon as it has started.
        (tmp_path / "gate-open").unlink()
        mode.write_text("gate")
        supervisor.send_signal(signal.SIGHUP)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 3, "a new worker starts")
        supervisor.send_signal(signal.SIGTERM)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 1, "the old workers drain")
        (tmp_path / "gate-open").touch()
        assert supervisor.wait(timeout=15) == 0  # (not --grace + 10 s, then killed)
        errors = err.read_text()
        assert errors.count("before it was ready") <= 3 and "Traceback" not in errors  # (before: restarted in a loop)
        assert "usage:" not in errors  # (a worker's failure is one line)
        assert out.read_text().count("the rolling restart is done") == 2  # (not the stopped ones)
    finally:
        supervisor.kill()
        supervisor.wait()


async def test_a_roll_does_not_wait_for_the_old_workers_calls(tmp_path: Path) -> None:
    """Each old worker drains once its replacement is ready, and the next replacement starts
    then: a call that lasts (up to --grace) on the first old worker neither holds the roll nor
    leaves the second old worker taking new calls meanwhile. (Before: 2 x --grace.)"""
    import json

    import trio_websocket

    from .netkit import hello

    out = tmp_path / "out.txt"
    with out.open("w") as out_file:
        port, supervisor = start_workers("--grace", "60", stdout=out_file)
    try:
        wait_port(port)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2, "two workers")
        old = set(workers_of(supervisor.pid))
        hang_up = trio.Event()

        async def hold() -> None:
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send_message(hello(token=""))
                assert json.loads(await ws.get_message())["type"] == "ready"
                held.append(ws)
                await hang_up.wait()

        held: list[object] = []
        async with trio.open_nursery() as nursery:
            for _ in range(2):  # (one on each worker: the fewest sessions)
                nursery.start_soon(hold)
            await wait_for(lambda: len(held) == 2, "two calls held")
            supervisor.send_signal(signal.SIGHUP)
            await wait_for(lambda: "the rolling restart is done" in out.read_text(), "the roll ends", timeout=15)
            now = set(workers_of(supervisor.pid))
            assert now & old == old and len(now - old) == 2  # (the old ones still finish their calls)
            assert await sessions_start(port, 2) == ["ready"] * 2  # (taken by the new workers)
            hang_up.set()
        await wait_for(lambda: not set(workers_of(supervisor.pid)) & old, "the old workers exit once their calls end")
        assert len(workers_of(supervisor.pid)) == 2
    finally:
        supervisor.kill()
        supervisor.communicate()


async def test_sighups_in_a_row_make_two_rolls_not_three(tmp_path: Path) -> None:
    """A deploy tool that reloads three times in a row: the first roll runs, the second waits
    for it (it will start the code installed by then), the third joins the second."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as out_file, err.open("w") as err_file:
        port, supervisor = start_workers("--grace", "5", stdout=out_file, stderr=err_file)
    try:
        wait_port(port)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2, "two workers")
        for _ in range(3):
            supervisor.send_signal(signal.SIGHUP)
            await trio.sleep(0.02)  # (a worker takes far longer to start)
        await wait_for(lambda: out.read_text().count("the rolling restart is done") == 2, "two rolls")
        assert err.read_text().count("this one joins it") == 1
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2, "the old workers exit")
        await trio.sleep(1.0)  # (a third roll would have started a worker by now)
        assert out.read_text().count("the rolling restart is done") == 2 and len(workers_of(supervisor.pid)) == 2
        assert await sessions_start(port, 2) == ["ready"] * 2
    finally:
        supervisor.kill()
        supervisor.communicate()


async def test_the_secret_reaches_the_workers_but_not_their_command_lines() -> None:
    """Workers check tokens with the supervisor's secret, which they get in their environment:
    a command line is any local user's to read (`ps`), and the operator who kept the secret
    out of the supervisor's by `$TRIOAGENT_SECRET` must not find it in the workers'."""
    import json

    import websockets.sync.client

    from .netkit import SECRET, hello

    port = free_port()
    supervisor = subprocess.Popen(
        [TRIOAGENT, "serve", "tests.netkit:factory", "--port", str(port), "--workers", "2"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "TRIOAGENT_SECRET": SECRET},
    )  # fmt: skip
    try:
        wait_port(port)
        await wait_for(lambda: len(workers_of(supervisor.pid)) == 2, "two workers")
        for pid in workers_of(supervisor.pid):
            assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()

        def hello_answer(token: str | None) -> object:  # (the `websockets` library's client)
            with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
                ws.send(hello(token=token))
                try:
                    return json.loads(ws.recv(timeout=10))["type"]
                except websockets.exceptions.ConnectionClosed as closed:
                    return closed.rcvd.code if closed.rcvd else None

        for token, answer in ((None, "ready"), (None, "ready"), ("", 1008)):  # (a token made with the secret; none: refused)
            assert await trio.to_thread.run_sync(hello_answer, token) == answer
    finally:
        supervisor.kill()
        supervisor.communicate()


async def test_max_sessions_is_the_servers_not_each_workers() -> None:
    """`--max-sessions 4 --workers 2`: four calls at once are served, the fifth is refused with
    1013 and `/readyz` says full (before: each worker took four, eight in all)."""
    import json

    import trio_websocket
    import websockets.exceptions
    import websockets.sync.client

    from .netkit import hello
    from .test_server_loopback import until_closed

    port, supervisor = start_workers("--max-sessions", "4")
    try:
        wait_port(port)
        assert await sessions_start(port, 2) == ["ready"] * 2  # (the port's probe gone meanwhile)
        deadline = time.monotonic() + 10
        while (await metrics(port))["trioagent_active_sessions"] != 0:  # (the calls' server ends)
            assert time.monotonic() < deadline
            await trio.sleep(0.05)
        async with trio.open_nursery() as nursery:
            # A burst faster than the workers report: counted as handed until each worker says it
            # has taken them, so the two get two each and all four are served.
            burst = [await trio_websocket.connect_websocket_url(nursery, f"ws://127.0.0.1:{port}/ws") for _ in range(4)]
            for ws in burst:
                await ws.send_message(hello(token=""))
            assert [json.loads(await ws.get_message())["type"] for ws in burst] == ["ready"] * 4
            for ws in burst:
                await ws.aclose()
        deadline = time.monotonic() + 10
        while (await metrics(port))["trioagent_active_sessions"] != 0:
            assert time.monotonic() < deadline
            await trio.sleep(0.05)
        await trio.sleep(0.2)  # (and their connections' ends reported)
        async with trio.open_nursery() as nursery:
            held = []
            for _ in range(4):
                ws = await trio_websocket.connect_websocket_url(nursery, f"ws://127.0.0.1:{port}/ws")
                await ws.send_message(hello(token=""))
                assert json.loads(await ws.get_message())["type"] == "ready"
                held.append(ws)
                await trio.sleep(0.2)  # (a worker reports its load within 50 ms of a change)
            await wait_for_async(lambda: http_get(port, "/readyz"), (503, "full\n"))

            def fifth() -> tuple[int, str]:  # (the `websockets` library's client)
                with websockets.sync.client.connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5) as ws:
                    with contextlib.suppress(websockets.exceptions.ConnectionClosed):  # (refused before its hello, or after)
                        ws.send(hello(token=""))
                    return until_closed(ws)

            assert (await trio.to_thread.run_sync(fifth))[0] == 1013
            for ws in held:
                await ws.aclose()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=20) == 0
    finally:
        supervisor.kill()
        supervisor.communicate()


async def wait_for_async(get: Any, expected: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await get()) != expected:
        assert time.monotonic() < deadline, got
        await trio.sleep(0.05)


def test_a_report_the_supervisor_cannot_read_is_skipped(caplog: Any) -> None:
    """The supervisor outlives its workers' code (SIGHUP starts workers of a newer version under
    it): a report with more fields is read for those it knows, and one it cannot read is logged
    and skipped, not the end of the supervisor and every call with it."""
    from trioagent.workers import Supervisor, _Worker

    worker = _Worker(1, None, None, None)  # type: ignore[arg-type]
    for line, expected in [(b"3 7", (3, 7)), (b"4 8 9", (4, 8)), (b"5", (5, 8)), (b"x y", (5, 8)), (b"", (5, 8))]:
        Supervisor._read_report(worker, line)
        assert (worker.reported_load, worker.taken) == expected
    assert sum("cannot read" in r.message for r in caplog.records) == 2


def test_workers_0_counts_the_cores_the_cgroup_allows(tmp_path: Path) -> None:
    """`--workers 0` is one worker per usable core: the CPU quota of the process's cgroup (or
    of a parent) caps the machine's count, rounded up; v2, v1 and a hybrid mount are read."""
    from trioagent.workers import _cpu_quota, usable_cores

    def tree(files: dict[str, str], cgroup: str) -> tuple[str, str]:
        for name, text in files.items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(text)
        (tmp_path / "self-cgroup").write_text(cgroup)
        return str(tmp_path / "self-cgroup"), str(tmp_path / "fs")

    # cgroup v2: the tighter of the process's cgroup (no limit) and its parent (1.5 CPUs).
    v2 = tree({"fs/cgroup.controllers": "cpu", "fs/pod/cpu.max": "150000 100000\n", "fs/pod/app/cpu.max": "max 100000\n"}, "0::/pod/app\n")
    assert _cpu_quota(*v2) == 1.5
    assert usable_cores(*v2) == min(2, len(os.sched_getaffinity(0)))
    for name in ("fs/cgroup.controllers", "fs/pod/cpu.max", "fs/pod/app/cpu.max"):
        (tmp_path / name).unlink()
    # cgroup v1 (cpu,cpuacct), 3 CPUs; a hybrid system's v2 part without a limit beside it.
    v1 = tree(
        {"fs/cpu,cpuacct/docker/c1/cpu.cfs_quota_us": "300000\n", "fs/cpu,cpuacct/docker/c1/cpu.cfs_period_us": "100000\n", "fs/unified/docker/c1/cpu.max": "max 100000\n"},
        "12:memory:/docker/c1\n4:cpu,cpuacct:/docker/c1\n0::/docker/c1\n",
    )  # fmt: skip
    assert _cpu_quota(*v1) == 3.0
    (tmp_path / "fs/cpu,cpuacct/docker/c1/cpu.cfs_quota_us").write_text("-1\n")  # (v1's "no limit")
    assert _cpu_quota(*v1) is None and usable_cores(*v1) == len(os.sched_getaffinity(0))
    assert _cpu_quota(str(tmp_path / "missing"), str(tmp_path / "fs")) is None  # (not Linux, say)
    (tmp_path / "fs/unified/docker/c1/cpu.max").write_text("50000 100000\n")  # half a CPU: one worker
    assert usable_cores(*v1) == 1
