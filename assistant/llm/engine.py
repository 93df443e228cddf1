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

import itertools
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
# Host prefill runs in chunks of this many tokens. onnxruntime's integer kernels prefill 64 at a
# time as fast as 128, and the smaller activations keep the peak RSS ~16 MB lower (README: "Host backend").
DEFAULT_PREFILL_CHUNK = 64

# Given the tokens generated so far, a boolean mask of the tokens allowed next (None: all).
AllowedTokens = Callable[[list[int]], "np.ndarray | None"]


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prefilled_tokens: int = 0  # the part of the prompt that was not already cached
    prefill_seconds: float = 0.0  # prompt in → first logits (time to first token, but for sampling)
    generated_tokens: int = 0  # run after the prompt (not counting the last one, which is never run)
    decode_forwards: int = 0  # forward passes that ran them: fewer when a grammar forced spans
    decode_seconds: float = 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        return self.generated_tokens / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class RunShape:
    """The shapes of one run through the layers."""

    group: int  # pyaxengine shape group (0 decodes; onnxruntime ignores it)
    count: int  # real tokens in this run
    tokens: int  # T: tokens fed, the real ones then padding
    history: int  # H: cache rows fed before them
    dummy_kv: tuple[int, ...] | None = None  # a history-free board group takes zeros of this shape instead


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
        self.board = self.sessions.board  # fixed shape groups on the NPU; None: any shape (ONNX)
        self.kv_len = kv_cache_len or m.kv_cache_len
        if self.board and self.kv_len != self.board.kv_rows:
            raise ModelError(
                f"{model_dir}: the {self.sessions.backend} graphs are built for kv_cache_len "
                f"{self.board.kv_rows}, not {self.kv_len}"
            )
        self.prefill_chunk = prefill_chunk or DEFAULT_PREFILL_CHUNK  # host only: the board's groups fix it
        self._warned_token_by_token = False

        self.tokenizer = Tokenizer.from_file(str(model_dir / m.tokenizer))
        self.embed = EmbeddingTable(model_dir / m.embeddings, m.vocab_size, m.hidden_size)
        self.eos_ids = set(m.eos_token_ids)
        self.stop_ids = stop_tokens(self.tokenizer, self.eos_ids)
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

    def _shape(self, n: int) -> RunShape:
        """How the next of n tokens run: how many at once, in which shape group, after how many cache rows."""
        if not self.board:  # ONNX: any number of tokens after exactly the valid rows
            count = min(n, self.prefill_chunk)
            return RunShape(0, count, count, self.pos)
        if n > 1 and (group := self.board.prefill_group(self.pos)):
            dummy = None if group.history else group.kv_shape
            return RunShape(group.index, min(n, group.tokens), group.tokens, group.history, dummy)
        if n > 1 and not self._warned_token_by_token:
            self._warned_token_by_token = True
            largest = self.board.prefill[-1].history if self.board.prefill else 0
            log.warning(
                "prefill at position %d: no NPU prefill group holds that much history (the largest holds %d rows); "
                "the rest of this prompt runs one token at a time, a whole decode step each (a model built with "
                "a larger --last-kv-cache-len avoids it)",
                self.pos,
                largest,
            )
        return RunShape(0, 1, 1, self.board.kv_rows)  # group 0 decodes one token over all L rows

    def _run(self, ids: list[int], shape: RunShape) -> np.ndarray:
        """Run `ids` at positions pos.. through every layer; return their final hidden states.

        The board's graphs take exactly shape.tokens tokens (padding rows after the real ones, so
        the real ones never attend to them) after exactly shape.history cache rows (rows from pos
        on are masked), or a dummy cache when the group has no history.
        """
        n, t, h, pos = len(ids), shape.tokens, shape.history, self.pos
        ids = ids + [ids[-1]] * (t - n)
        mask = np.empty((1, t, h + t), self.dtype)  # (1, T, H + T): 0 attends, MASKED does not
        mask[0, :, :h] = self.mask_row[:h]
        mask[0, :, h:] = np.triu(np.full((t, t), MASKED, self.dtype), 1)
        indices = np.arange(pos, pos + t, dtype=np.uint32)[None]  # (1, T) absolute positions, for rotary
        hidden = self.embed(ids).astype(self.dtype, copy=False)  # (1, T, hidden)
        dummy = None if shape.dummy_kv is None else np.zeros(shape.dummy_kv, self.dtype)
        for layer, session in enumerate(self.sessions.layers):
            k_new, v_new, hidden = session.run(
                {
                    "K_cache": self.k_cache[layer, :, :h] if dummy is None else dummy,  # (1, H, kv_dim)
                    "V_cache": self.v_cache[layer, :, :h] if dummy is None else dummy,
                    "indices": indices,
                    "input": hidden,
                    "mask": mask,
                },
                shape.group,
            )  # k_new, v_new: (1, T, kv_dim); hidden: (1, T, hidden)
            self.k_cache[layer, 0, pos : pos + n] = k_new[0, :n]
            self.v_cache[layer, 0, pos : pos + n] = v_new[0, :n]
        self.mask_row[pos : pos + n] = 0
        self.tokens.extend(ids[:n])
        return hidden[:, :n]

    def extend(
        self,
        ids: list[int],
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray | None:
        """Append `ids` to the context in the largest pieces the graphs take; return the last token's state.

        `progress(done, total)` is called after each piece. Once `cancel` is set no further piece
        runs and None is returned; the pieces that ran stay in the cache.
        """
        if not ids:
            raise ValueError("nothing to extend the context with")
        if self.pos + len(ids) > self.kv_len:
            raise ModelError(f"context full: {self.pos} + {len(ids)} tokens exceed kv_cache_len {self.kv_len}")
        start = 0
        while start < len(ids):
            if cancel is not None and cancel.is_set():
                return None
            shape = self._shape(len(ids) - start)
            hidden = self._run(ids[start : start + shape.count], shape)
            start += shape.count
            if progress:
                progress(start, len(ids))
        return np.ascontiguousarray(hidden[:, -1:])

    def forward(self, ids: list[int], cancel: threading.Event | None = None) -> np.ndarray | None:
        """Append `ids` to the context; return the logits [vocab] that follow the last one (None: cancelled)."""
        hidden = self.extend(ids, cancel=cancel)
        if hidden is None:
            return None
        logits = self.sessions.post.run({"input": hidden})[0]  # (1, 1, vocab)
        return logits[0, -1].astype(np.float32, copy=False)

    # -- context management ---------------------------------------------------------------------

    def truncate(self, n: int) -> None:
        """Forget every token after the first n (their rows are simply overwritten later)."""
        del self.tokens[n:]
        self.mask_row[n:] = MASKED

    def cache_prompt(self, ids: list[int], progress: Callable[[int, int], None] | None = None) -> None:
        """Prefill a prompt prefix (the system prompt) once and keep its rows for reuse."""
        self.truncate(_common_prefix(self.tokens, ids))
        if self.pos < len(ids):  # nothing new when the same prompt is cached again (a reload)
            self.extend(ids[self.pos :], progress)
        n = len(ids)
        self.prompt_cache = PromptCache(list(ids), self.k_cache[:, 0, :n].copy(), self.v_cache[:, 0, :n].copy())

    def prefill(self, ids: list[int], cancel: threading.Event | None = None) -> np.ndarray | None:
        """Make the context exactly `ids`, computing only what is not cached; return the next logits
        (None once `cancel` is set: the context is then a part of `ids`)."""
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
        return self.forward(ids[keep:], cancel)

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self,
        prompt: list[int],
        sampler: Sampler,
        max_new_tokens: int,
        cancel: threading.Event | None = None,
        allowed: AllowedTokens | None = None,
    ) -> Iterator[int]:
        """Yield new tokens until a stop id (`stop_tokens`), max_new_tokens, a full cache or `cancel` is set."""
        start = time.perf_counter()
        cached = _common_prefix(self.tokens, prompt)
        logits = self.prefill(prompt, cancel)  # a long prompt is seconds of work: a stop ends it too
        now = time.perf_counter()
        self.stats = stats = GenerationStats(len(prompt), len(prompt) - cached, now - start)
        if logits is None:
            return
        generated: list[int] = []
        # An `allowed` hook may also name the tokens that must come next (a grammar's forced span):
        # they run together with the sampled token in one forward pass, with one lm_head after them.
        forced = getattr(allowed, "forced", None)
        ran: list[int] = []  # tokens of that span: already run, not yet yielded
        while max_new_tokens > 0:
            fast = bool(ran)
            token = ran.pop(0) if fast else sampler(logits, self.tokens, allowed(generated) if allowed else None)
            if token in self.stop_ids:
                return
            generated.append(token)
            yield token
            cancelled = cancel is not None and cancel.is_set()
            if cancelled or len(generated) >= max_new_tokens or (not fast and self.pos >= self.kv_len):
                return  # the last token is not run: nothing would read its logits
            if fast:
                continue  # it ran with the sampled token before it; the logits after the span are there
            step = time.perf_counter()
            room = min(max_new_tokens - len(generated), self.kv_len - self.pos - 1)  # every token yielded
            span = forced(generated)[:room] if forced else []
            ran = list(itertools.takewhile(lambda t: t not in self.stop_ids, span))
            logits = self.forward([token, *ran])
            stats.generated_tokens += 1 + len(ran)
            stats.decode_forwards += 1
            stats.decode_seconds += time.perf_counter() - step


def stop_tokens(tokenizer: Tokenizer, eos_ids: set[int]) -> set[int]:
    """The ids a reply ends at: eos, and any other special token (`<|im_start|>`: the model opening
    the next message). They are chat markup, never words to speak or to keep as text in the history."""
    return set(eos_ids) | {i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
