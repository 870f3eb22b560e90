"""The `trioagent` command as a user runs it: the installed entry point in a subprocess. Every
mistake is one line and exit status 2, found before anything starts; Ctrl-C is one line and 130."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trioagent

TRIOAGENT = str(Path(sys.executable).with_name("trioagent"))
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRIOAGENT, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line (after the subcommand's usage); checks there is no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "nosuch:f", "--insecure"], "no module named 'nosuch'"),
        (["serve", "trioagent.demo:nosuch", "--insecure"], "module 'trioagent.demo' has no 'nosuch'"),
        (["serve", "trioagent.demo:QUESTIONS", "--insecure"], "trioagent.demo:QUESTIONS is not callable"),
        (["serve", "trioagent.demo:make_caller_audio", "--insecure"], "trioagent.demo:make_caller_audio raised TypeError"),
        (["serve", "tests.cli_factories:wrong_shape", "--insecure"], "must return (agent, pipeline), got str"),
        (["serve", "tests.cli_factories:broken", "--insecure"], "tests.cli_factories:broken raised RuntimeError: no API key in the environment"),
        (["serve", "no-colon", "--insecure"], "expected module:callable"),
        (["serve", "tests.netkit:factory", "--insecure", "--port", "99999"], "99999 is not a port number (0 to 65535"),
        (["serve", "tests.netkit:factory", "--insecure", "--port", "http"], "'http' is not a port number"),
        (["serve", "tests.netkit:factory", "--insecure", "--host", "no-such-host.invalid"], "cannot resolve host 'no-such-host.invalid'"),
        (["serve", "tests.netkit:factory"], "a secret is needed"),
        (["serve", "tests.netkit:factory", "--insecure", "--record-dir", "/nonexistent"], "--record-dir /nonexistent: not a directory this process can write to"),
        (["serve", "tests.netkit:factory", "--insecure", "--grace", "-1"], "-1 must be more than 0"),
        (["serve", "tests.netkit:factory", "--insecure", "--max-sessions", "0"], "argument --max-sessions: 0 must be at least 1"),
        (["serve", "tests.netkit:factory", "--insecure", "--max-pending", "0"], "argument --max-pending: 0 must be at least 1"),
        (["serve", "tests.netkit:factory", "--insecure", "--workers", "-1"], "argument --workers: -1 must be at least 0"),
        (["serve", "tests.netkit:factory", "--insecure", "--workers", "two"], "argument --workers: 'two' is not a whole number"),
        (["demo", "--out", "/nonexistent/dir/x.wav"], "cannot write /nonexistent/dir/x.wav: /nonexistent/dir is not a directory"),
        (["demo", "--mcp-stdio", "no-such-mcp-server --stdio"], "--mcp-stdio: no program 'no-such-mcp-server' (not on PATH)"),
        (["demo", "--mcp-stdio", "python -m 'unclosed"], "--mcp-stdio \"python -m 'unclosed\": No closing quotation"),
        (["demo", "--pipeline", "realtime", "--fast"], "--fast runs in virtual time, which cannot wait on a real network"),
        (["demo", "--llm", "openai", "--fast"], "--fast runs in virtual time, which cannot wait on a real network"),
        (["realtime-server", "nosuch:f", "--insecure"], "no module named 'nosuch'"),
        (["token"], "a secret is needed"),
        (["console"], "LocalAudioTransport needs"),  # no sounddevice or PortAudio in CI: said first
    ],
)
def test_mistakes_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result
    line = error_line(result)
    assert line.startswith(f"trioagent {args[0]}: error: ") and message in line, line
    assert f"usage: trioagent {args[0]}" in result.stderr  # the subcommand's own usage
    assert "serving on" not in result.stdout  # nothing started


def test_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "tests.netkit:factory", "--insecure", "--port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use; pick another with --port" in error_line(result)


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == f"trioagent {trioagent.__version__}"
    for command, expected in [("demo", "(default: rule)"), ("serve", "(default: 8765)"), ("console", "--list-devices"), ("token", "(default: 3600.0)")]:
        result = run(command, "--help")
        assert result.returncode == 0 and expected in " ".join(result.stdout.split()), result.stdout
        assert "(default: None)" not in result.stdout
        assert result.stdout.split("\n\n")[1].strip()  # a description


def test_unknown_option_prints_the_subcommand_usage() -> None:
    result = run("serve", "tests.netkit:factory", "--nope")
    assert result.returncode == 2 and "usage: trioagent serve" in result.stderr and "unrecognized arguments: --nope" in result.stderr


@pytest.mark.parametrize("args", [["serve", "tests.netkit:factory", "--insecure", "--port", "0"], ["demo", "--out", "/tmp/trioagent-ctrl-c.wav"]])
def test_ctrl_c_is_one_line_and_exit_130(args: list[str]) -> None:
    # As at a terminal: a runner started in the background (`cmd &` without job control) hands
    # its children SIGINT ignored, and Python then leaves it ignored (the demo would run on).
    process = subprocess.Popen(
        [TRIOAGENT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # it has started ("serving on ..." / "trioagent demo: ...")
        assert first.startswith("trioagent")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == f"trioagent {args[0]}: interrupted", err


def test_demo_counts_only_answers_spoken(tmp_path: Path) -> None:
    """With the LLM down, no question is answered: the summary says so, and the status fails."""
    import io

    from trioagent.cli import summary
    from trioagent.demo import run
    from trioagent.errors import ProviderError

    class DownLLM:
        async def chat(self, chat_context: object, tools: object) -> Any:
            raise ProviderError("connection refused", provider="DownLLM", stage="llm")
            yield  # (an async generator)

    out = io.StringIO()
    turns = run(True, str(tmp_path / "x.wav"), DownLLM(), out=out)  # type: ignore[arg-type]
    line, status = summary(turns, str(tmp_path / "x.wav"))
    assert status == 1 and "0/5 questions answered, 5 failed" in line
    assert "error       : the language model (DownLLM) failed" in out.getvalue()
    assert "latency (virtual time):" in out.getvalue()


def test_the_demo_asks_the_reference_mcp_time_server(tmp_path: Path) -> None:
    result = run("demo", "--fast", "--mcp-stdio", "python -m mcp_server_time", "--out", str(tmp_path / "x.wav"), timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MCP server: python -m mcp_server_time" in result.stdout
    assert "caller said : Tell me the time in Tokyo." in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.startswith("agent said  : In Tokyo it is "))
    assert line.endswith((" AM.", " PM.")), line
    assert "5/5 questions answered" in result.stdout


def test_the_progress_line_is_cleared_before_each_printed_line(capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from trioagent.demo import _Console

    out = io.StringIO()
    console = _Console(out, progress=True)
    console.progress(35.1, 60.0)
    console.line("agent : Hi!")
    err = capsys.readouterr().err
    assert err == "\r   35.1 s / 60.0 s" + "\r" + " " * 30 + "\r"  # cleared before the line went out
    assert out.getvalue() == "agent : Hi!\n"
    quiet = _Console(io.StringIO(), progress=False)  # not a terminal: no progress, nothing to clear
    quiet.progress(1.0, 2.0)
    quiet.line("x")
    assert capsys.readouterr().err == ""
