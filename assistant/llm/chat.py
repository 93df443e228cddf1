"""`assistant chat --model DIR`: a text REPL over the engine."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.manifest import ModelError
from assistant.llm.sampling import Sampler

HELP = "Type a message; /reset starts a new conversation, /quit (or Ctrl-D) leaves, Ctrl-C stops a reply."


def read_lines(prompt: str = "> ") -> Iterator[str]:
    """Lines typed at the prompt, until Ctrl-D or Ctrl-C; empty lines, and lines not in UTF-8 (said), are skipped."""
    if sys.stdin is None:  # started with stdin closed: no lines, as at the end of input
        return
    sys.stdin.reconfigure(errors="surrogateescape")  # a line not in UTF-8 is refused alone, not a traceback
    while True:
        try:
            line = input(prompt).strip()
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            print("error: the line is not valid UTF-8 (is the terminal set to UTF-8?); skipped", file=sys.stderr)
            continue
        if line:
            yield line


def chat_repl(args: argparse.Namespace) -> int:
    engine = Engine(args.model, backend=args.backend, threads=args.threads)
    conversation = Conversation(engine, args.system, max_new_tokens=args.max_new_tokens)
    sampler = Sampler(temperature=args.temperature, top_k=40, top_p=0.9, seed=args.seed)
    print(f"{engine.manifest.name} on {engine.sessions.backend}. {HELP}", file=sys.stderr)
    for line in read_lines():
        if line in ("/quit", "/exit"):
            return 0
        if line == "/reset":
            conversation.reset()
            continue
        previous = engine.stats  # replaced once this reply's prompt is read
        try:
            for piece in conversation.reply(line, sampler):
                print(piece, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        except ModelError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        if (s := engine.stats) is previous:  # stopped while the prompt was read: no figures of its own
            print(flush=True)
            continue
        print(
            f"\n[first token {s.prefill_seconds * 1000:.0f} ms ({s.prefilled_tokens} of {s.prompt_tokens} prompt "
            f"tokens prefilled), {s.generated_tokens} tokens at {s.decode_tokens_per_second:.1f} tok/s]",
            file=sys.stderr,
        )
    return 0
