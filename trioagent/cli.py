"""The `trioagent` command line: ``demo``, ``serve``, ``console``, ``token``."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Any

import trio

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trioagent", description="Real-time voice agents on trio.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="a spoken conversation, offline, written to a stereo WAV")
    demo.add_argument("--fast", action="store_true", help="run in virtual time (seconds instead of a minute)")
    demo.add_argument("--out", default="trioagent-demo.wav", help="the conversation: caller left, agent right")
    demo.add_argument("--llm", choices=["rule", "openai"], default="rule", help="the offline RuleLLM, or an OpenAI-compatible server")
    demo.add_argument("--base-url", default=None, help="OpenAI-compatible server (default $OPENAI_BASE_URL)")
    demo.add_argument("--model", default=None, help="model name (default $OPENAI_MODEL)")
    srv = commands.add_parser("serve", help="serve an agent to browsers (/ws, page at /) and Twilio (/twilio)")
    srv.add_argument("factory", help="module:callable returning (agent, pipeline) for each session")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8765)
    srv.add_argument("--secret", default=os.environ.get("TRIOAGENT_SECRET"), help="token secret (default $TRIOAGENT_SECRET)")
    srv.add_argument("--insecure", action="store_true", help="accept sessions without a token (development only)")
    srv.add_argument("--origin", action="append", help="allowed browser Origin (repeat; default any)")
    srv.add_argument("--max-sessions", type=int, default=200)
    srv.add_argument("--grace", type=float, default=10.0, help="seconds running sessions get on SIGTERM")
    con = commands.add_parser("console", help="talk to an agent with this computer's microphone and speakers")
    con.add_argument("factory", help="module:callable returning (agent, pipeline)")
    con.add_argument("--input-device", default=None, help="PortAudio input device (name or index)")
    con.add_argument("--output-device", default=None, help="PortAudio output device (name or index)")
    tok = commands.add_parser("token", help="mint a session token")
    tok.add_argument("--secret", default=os.environ.get("TRIOAGENT_SECRET"), help="token secret (default $TRIOAGENT_SECRET)")
    tok.add_argument("--ttl", type=float, default=3600.0, help="seconds the token is valid")
    tok.add_argument("--subject", default="")
    args = parser.parse_args(argv)

    if args.command == "token":
        from .auth import mint_token

        if not args.secret:
            parser.error("a secret is needed: --secret or $TRIOAGENT_SECRET")
        print(mint_token(args.secret, ttl=args.ttl, subject=args.subject))
        return 0
    if args.command == "console":
        from .errors import TransportError

        try:
            trio.run(_console, args)
        except TransportError as exc:
            print(f"trioagent console: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "serve":
        if not args.secret and not args.insecure:
            parser.error("a secret is needed (--secret or $TRIOAGENT_SECRET), or --insecure for development")
        trio.run(_serve, args)
        return 0

    if args.command == "demo":
        from .demo import run
        from .providers.base import LLM

        llm: LLM | None = None
        if args.llm == "openai":
            from .providers.openai_llm import OpenAILLM

            llm = OpenAILLM(base_url=args.base_url, model=args.model)
        print(f"trioagent demo: {'virtual time' if args.fast else 'real time'}, LLM: {args.llm}")
        turns = run(args.fast, args.out, llm)
        heard = sum(1 for t in turns if t.heard)
        print(f"\n{heard}/{len(turns)} questions answered; conversation written to {args.out} (caller left, agent right)")
        return 0 if heard else 1
    return 2


def load_factory(spec: str) -> Any:
    """``"package.module:callable"`` -> the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"trioagent serve: expected module:callable, got {spec!r}")
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module_name), attr)


async def _serve(args: argparse.Namespace) -> None:
    from .server import Server, serve

    factory = load_factory(args.factory)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(
            lambda task_status: serve(
                factory,
                args.host,
                args.port,
                secret=args.secret,
                allowed_origins=set(args.origin) if args.origin else None,
                max_sessions=args.max_sessions,
                grace=args.grace,
                task_status=task_status,
            )
        )
        print(f"trioagent: serving on http://{args.host}:{server.port}/ (browser page), /ws, /twilio", flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                print(f"trioagent: {signal.Signals(signum).name}: draining for up to {args.grace:.0f} s", flush=True)
                server.shutdown()
                break


def _device(spec: str | None) -> int | str | None:
    return int(spec) if spec is not None and spec.isdigit() else spec


async def _console(args: argparse.Namespace, out: Any = None) -> None:
    """Run one session on the sound card, printing what is said, until Ctrl-C or SIGTERM."""
    import inspect

    from .session import AgentSession
    from .transports.local import LocalAudioTransport

    out = out or sys.stdout
    made = load_factory(args.factory)()
    agent, pipeline = await made if inspect.isawaitable(made) else made
    transport = LocalAudioTransport(input_device=_device(args.input_device), output_device=_device(args.output_device))
    session = AgentSession(agent, pipeline, transport=transport)
    session.on("on_speech_in", lambda d: print(f"you   : {d['text']}", file=out, flush=True))
    session.on("on_speech_out", lambda d: print(f"agent : {d['text']}", file=out, flush=True))
    print("trioagent: listening (Ctrl-C to stop)", file=out, flush=True)
    async with trio.open_nursery() as nursery:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    await session.close()
                    return

        nursery.start_soon(on_signal)
        try:
            await session.run()
        finally:
            await transport.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    sys.exit(main())
