"""`trioagent token` and `trioagent serve` as a user runs them: a real process, SIGTERM drains."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import trio
import trio_websocket

from trioagent.auth import verify_token
from trioagent.cli import main


def test_token_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--secret", "s3cret", "--ttl", "60", "--subject", "bob"]) == 0
    assert verify_token(capsys.readouterr().out.strip(), "s3cret")["sub"] == "bob"


def test_serve_needs_a_secret(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIOAGENT_SECRET", raising=False)
    with pytest.raises(SystemExit):
        main(["serve", "tests.netkit:factory"])
    assert "a secret is needed" in capsys.readouterr().err


def test_serve_raises_the_open_file_limit_and_fits_max_pending(capsys: pytest.CaptureFixture[str]) -> None:
    """The soft open-file limit (often 1,024, for select(), which trio does not use) is raised
    to the hard one; `--max-pending` is lowered only when sessions and pending connections
    cannot fit even then (the lower hard limit is in test_workers, in a process of its own)."""
    import resource

    from trioagent.cli import _fit_descriptors

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 2048:
        pytest.skip(f"needs a finite hard open-file limit of 2,048 or more (it is {hard})")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        assert _fit_descriptors(200, 1000) == 1000
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert capsys.readouterr().err == ""
        assert _fit_descriptors(hard - 100, 1000) == 36  # (room for 36 beside the sessions and the spares)
        assert f"{hard} open files at most (ulimit -n): --max-pending lowered from 1000 to 36" in capsys.readouterr().err
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
async def test_serve_process_drains_on_sigterm(signum: signal.Signals) -> None:
    """Runs on the real clock: a separate process cannot share a MockClock. Nothing is timed.
    SIGHUP drains one process too (its default action would cut every call at once)."""
    cmd = [sys.executable, "-m", "trioagent", "serve", "tests.netkit:factory", "--port", "0", "--insecure", "--grace", "0.5"]
    process = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(30):
            while b"serving on" not in output:
                output += await process.stdout.receive_some()
        port = int(output.split(b"http://127.0.0.1:")[1].split(b"/")[0])
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream, trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, "127.0.0.1", "/ws")
            await ws.send_message(json.dumps({"type": "hello"}))
            assert json.loads(await ws.get_message())["type"] == "ready"
            process.send_signal(signum)
            with trio.fail_after(30), pytest.raises(trio_websocket.ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert (closed.value.reason.code, closed.value.reason.reason) == (1001, "server shutting down")
        with trio.fail_after(30):
            assert await process.wait() == 0
            while chunk := await process.stdout.receive_some():
                output += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
    assert f"{signum.name}: draining".encode() in output
