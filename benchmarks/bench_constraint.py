"""Cost of the tool-call mask on a Qwen-sized vocabulary (151,936 token ids).

    python benchmarks/bench_constraint.py

A byte-level BPE tokenizer with Qwen2's vocabulary size is generated (random merges over the
byte alphabet, Qwen's special tokens), then calls for three tools are generated from random
logits under the constraint; the time to compute each step's allowed-token mask is reported.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant import Range, skill  # noqa: E402
from assistant.skills.constraint import OPEN, ToolCallConstraint  # noqa: E402
from assistant.skills.registry import Registry  # noqa: E402

QWEN_VOCAB = 151_936
QWEN_TEXT_TOKENS = 151_643
FREQUENT = "etaoinshrdlucmfwypvbgkqjxz" + "Ġ" * 8 + "0123456789" + '{}":,._-' + "ĠĊ"


def qwen_sized_tokenizer(seed: int = 0) -> Tokenizer:
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = []
    tokens = list(vocab)
    rng = np.random.default_rng(seed)
    while len(vocab) < QWEN_TEXT_TOKENS:
        prefix = tokens[int(rng.integers(0, len(tokens)))]
        if len(prefix) > 10:
            continue
        token = prefix + FREQUENT[int(rng.integers(0, len(FREQUENT)))]
        if token not in vocab:
            vocab[token] = len(vocab)
            tokens.append(token)
            merges.append((prefix, token[-1]))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tokenizer.add_tokens([AddedToken(t, special=False) for t in ("<tool_call>", "</tool_call>")])
    return tokenizer


@skill
def set_timer(minutes: Annotated[int, Range(1, 720)], label: str = "") -> str:
    """Start a countdown timer."""
    return ""


@skill
def light(room: Literal["kitchen", "living room", "bedroom", "hallway"], on: bool, brightness: int = 100) -> str:
    """Switch a light."""
    return ""


@skill
def add_note(text: str) -> str:
    """Write a note."""
    return ""


def main() -> None:
    start = time.perf_counter()
    tokenizer = qwen_sized_tokenizer()
    built = time.perf_counter() - start
    registry = Registry()
    for func in (set_timer, light, add_note):
        registry.add_function(func, "benchmark")
    eos = tokenizer.token_to_id("<|im_end|>")
    start = time.perf_counter()
    constraint = ToolCallConstraint(tokenizer, QWEN_VOCAB, [eos], registry.tools())
    setup_s = time.perf_counter() - start

    rng = np.random.default_rng(0)
    opening = tokenizer.encode(OPEN, add_special_tokens=False).ids
    times, calls = [], 0
    for _ in range(30):
        constraint.reset()
        generated = list(opening)
        for _ in range(120):
            t0 = time.perf_counter()
            allowed = constraint(generated)
            times.append(time.perf_counter() - t0)
            if allowed is None:  # the call closed
                calls += 1
                break
            logits = rng.standard_normal(QWEN_VOCAB).astype(np.float32)
            logits[~allowed] = -np.inf
            generated.append(int(np.argmax(logits)))
    times.sort()
    print(json.dumps({
        "vocab": QWEN_VOCAB,
        "tokenizer_build_s": round(built, 2),
        "constraint_setup_s": round(setup_s, 3),
        "closed_calls": calls,
        "mask_ms_median": round(statistics.median(times) * 1000, 3),
        "mask_ms_p90": round(times[int(len(times) * 0.9)] * 1000, 3),
        "mask_ms_max": round(times[-1] * 1000, 3),
        "steps": len(times),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
