"""Choosing the next token from the logits, on the CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Without top-k, top-p looks at this many most likely tokens: a full sort of a 151,936-token
# vocabulary costs milliseconds per token, and the mass beyond the top thousand is negligible.
TOP_P_CANDIDATES = 1024


@dataclass
class Sampler:
    temperature: float = 0.0  # 0 is greedy
    top_k: int = 0  # 0 disables it
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, logits: np.ndarray, history: list[int], allowed: np.ndarray | None = None) -> int:
        """The next token for float32 `logits` [vocab]; `allowed` is an optional boolean mask."""
        logits = np.array(logits, dtype=np.float32)
        if self.repetition_penalty != 1.0 and history:
            seen = np.unique(np.asarray(history, dtype=np.int64))
            values = logits[seen]
            logits[seen] = np.where(values > 0, values / self.repetition_penalty, values * self.repetition_penalty)
        if allowed is not None:
            logits[~allowed[: logits.shape[0]]] = -np.inf
        if self.temperature <= 0:
            return int(np.argmax(logits))

        k = self.top_k or (TOP_P_CANDIDATES if self.top_p < 1.0 else logits.shape[0])
        k = min(k, logits.shape[0])
        candidates = np.argpartition(-logits, k - 1)[:k] if k < logits.shape[0] else np.arange(k)
        scaled = logits[candidates] / self.temperature
        order = np.argsort(-scaled, kind="stable")
        candidates, scaled = candidates[order], scaled[order]
        probs = np.exp(scaled - scaled[0])
        probs /= probs.sum()
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), self.top_p)) + 1
            candidates, probs = candidates[:keep], probs[:keep] / probs[:keep].sum()
        return int(self.rng.choice(candidates, p=probs))
