"""The `trioagent` command line: ``trioagent demo``."""

from __future__ import annotations

import argparse
import sys

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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
