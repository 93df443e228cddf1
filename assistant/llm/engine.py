"""The Qwen2 decode loop over per-layer sessions.

One token step: look the token up in the bf16 embedding table, run it through every layer
session with that layer's KV cache, write the new K/V rows into the cache, and map the last
hidden state to logits with the post session. Prefill is the same step with T tokens at once.

The cache holds the K/V rows of `self.tokens`, in order. A new prompt reuses the rows of its
longest common prefix with those tokens, so a multi-turn conversation prefills only what is new;
the system prompt's rows are also kept aside (the prompt cache) and copied back whenever a prompt
starts with it, so a new or trimmed conversation never prefills the system prompt again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from assistant.llm.backends import open_sessions
from assistant.llm.embeddings import EmbeddingTable
from assistant.llm.manifest import ModelError, load_manifest
from assistant.llm.sampling import Sampler

log = logging.getLogger(__name__)

MASKED = -65536.0  # the AXERA mask value: 0 attends, -65536 is masked
DEFAULT_PREFILL_CHUNK = 128

# Given the tokens generated so far, a boolean mask of the tokens allowed next (None: all).
AllowedTokens = Callable[[list[int]], "np.ndarray | None"]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0  # the part of the prompt that was not already cached
    prefill_seconds: float = 0.0  # prompt in → first logits (time to first token, but for sampling)
    generated_tokens: int = 0
    decode_seconds: float = 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.generated_tokens / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class PromptCache:
    tokens: list[int]
    keys: np.ndarray  # [layers, rows, kv_dim]
    values: np.ndarray


class Engine:
    def __init__(
        self,
        model_dir: Path,
        *,
        backend: str = "auto",
        threads: int = 2,
        kv_cache_len: int | None = None,
        prefill_chunk: int | None = None,
        provider: str = "AxEngineExecutionProvider",
    ):
        self.model_dir = model_dir = Path(model_dir)
        self.manifest = m = load_manifest(model_dir)
        self.sessions = open_sessions(model_dir, m, backend, threads, provider)
        self.kv_len = kv_cache_len or m.kv_cache_len
        if self.sessions.fixed_kv_len and self.kv_len != m.kv_cache_len:
            raise ModelError(
                f"{model_dir}: the {self.sessions.backend} graphs are built for kv_cache_len "
                f"{m.kv_cache_len}, not {self.kv_len}"
            )
        # Board graphs take exactly prefill_len tokens (or one, without a prefill graph); ONNX takes any.
        fixed_chunk = self.sessions.prefill_len or (1 if self.sessions.fixed_kv_len else 0)
        self.prefill_chunk = fixed_chunk or prefill_chunk or DEFAULT_PREFILL_CHUNK
        self.pad_prefill = fixed_chunk > 1

        self.tokenizer = Tokenizer.from_file(str(model_dir / m.tokenizer))
        self.embed = EmbeddingTable(model_dir / m.embeddings, m.vocab_size, m.hidden_size)
        self.eos_ids = set(m.eos_token_ids)
        self.dtype = self.sessions.dtype
        self.k_cache = np.zeros((m.num_layers, 1, self.kv_len, m.kv_dim), self.dtype)
        self.v_cache = np.zeros_like(self.k_cache)
        self.mask_row = np.full(self.kv_len, MASKED, self.dtype)  # 0 for cache rows that hold a token
        self.tokens: list[int] = []
        self.prompt_cache: PromptCache | None = None
        self.stats = GenerationStats()

    @property
    def pos(self) -> int:
        return len(self.tokens)

    # -- the step -------------------------------------------------------------------------------

    def _run(self, ids: list[int]) -> np.ndarray:
        """Run `ids` at positions pos.. through every layer; return their final hidden states."""
        n = len(ids)
        t = self.prefill_chunk if self.pad_prefill and n > 1 else n
        ids = ids + [ids[-1]] * (t - n)  # padding rows come after the real ones, so never affect them
        pos = self.pos
        # ONNX graphs attend over the valid rows only; board graphs always take all L rows.
        ctx = self.kv_len if self.sessions.fixed_kv_len else pos
        mask = np.empty((1, t, ctx + t), self.dtype)
        mask[0, :, :ctx] = self.mask_row[:ctx]
        mask[0, :, ctx:] = np.triu(np.full((t, t), MASKED, self.dtype), 1)
        indices = np.arange(pos, pos + t, dtype=np.uint32)[None]
        hidden = self.embed(ids).astype(self.dtype, copy=False)
        for layer, session in enumerate(self.sessions.layers):
            k_new, v_new, hidden = session.run(
                {
                    "K_cache": self.k_cache[layer, :, :ctx],
                    "V_cache": self.v_cache[layer, :, :ctx],
                    "indices": indices,
                    "input": hidden,
                    "mask": mask,
                },
                prefill=t > 1,
            )
            self.k_cache[layer, 0, pos : pos + n] = k_new[0, :n]
            self.v_cache[layer, 0, pos : pos + n] = v_new[0, :n]
        self.mask_row[pos : pos + n] = 0
        self.tokens.extend(ids[:n])
        return hidden[:, :n]

    def extend(self, ids: list[int]) -> np.ndarray:
        """Append `ids` to the context in prefill chunks; return the last token's hidden state."""
        if self.pos + len(ids) > self.kv_len:
            raise ModelError(f"context full: {self.pos} + {len(ids)} tokens exceed kv_cache_len {self.kv_len}")
        for start in range(0, len(ids), self.prefill_chunk):
            hidden = self._run(ids[start : start + self.prefill_chunk])
        return np.ascontiguousarray(hidden[:, -1:])

    def forward(self, ids: list[int]) -> np.ndarray:
        """Append `ids` to the context; return the logits [vocab] that follow the last one."""
        (logits,) = self.sessions.post.run({"input": self.extend(ids)})
        return logits[0, -1].astype(np.float32, copy=False)

    # -- context management ---------------------------------------------------------------------

    def truncate(self, n: int) -> None:
        """Forget every token after the first n (their rows are simply overwritten later)."""
        del self.tokens[n:]
        self.mask_row[n:] = MASKED

    def cache_prompt(self, ids: list[int]) -> None:
        """Prefill a prompt prefix (the system prompt) once and keep its rows for reuse."""
        self.truncate(_common_prefix(self.tokens, ids))
        self.extend(ids[self.pos :])
        n = len(ids)
        self.prompt_cache = PromptCache(list(ids), self.k_cache[:, 0, :n].copy(), self.v_cache[:, 0, :n].copy())

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Make the context exactly `ids`, computing only what is not cached; return the next logits."""
        if not ids:
            raise ValueError("empty prompt")
        if len(ids) > self.kv_len:
            raise ModelError(f"prompt of {len(ids)} tokens is longer than kv_cache_len {self.kv_len}")
        keep = _common_prefix(self.tokens, ids[:-1])  # the last token is always run, for its logits
        cache = self.prompt_cache
        if cache and keep < len(cache.tokens) < len(ids) and ids[: len(cache.tokens)] == cache.tokens:
            keep = len(cache.tokens)
            self.k_cache[:, 0, :keep] = cache.keys
            self.v_cache[:, 0, :keep] = cache.values
            self.tokens[:] = cache.tokens
            self.mask_row[:keep] = 0
        self.truncate(keep)
        return self.forward(ids[keep:])

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self,
        prompt: list[int],
        sampler: Sampler,
        max_new_tokens: int,
        cancel: threading.Event | None = None,
        allowed: AllowedTokens | None = None,
    ) -> Iterator[int]:
        """Yield new tokens until an eos id, max_new_tokens, a full cache or `cancel` is set."""
        start = time.perf_counter()
        cached = _common_prefix(self.tokens, prompt)
        logits = self.prefill(prompt)
        now = time.perf_counter()
        self.stats = stats = GenerationStats(len(prompt), len(prompt) - cached, now - start)
        generated: list[int] = []
        while max_new_tokens > 0:
            token = sampler(logits, self.tokens, allowed(generated) if allowed else None)
            if token in self.eos_ids:
                return
            generated.append(token)
            yield token
            cancelled = cancel is not None and cancel.is_set()
            if cancelled or len(generated) >= max_new_tokens or self.pos >= self.kv_len:
                return  # the last token is not run: nothing would read its logits
            step = time.perf_counter()
            logits = self.forward([token])
            stats.generated_tokens += 1
            stats.decode_seconds += time.perf_counter() - step


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
