"""The bf16 embedding table: written by setup, memory-mapped by the engine.

The file is the one ax-llm reads on the board: [vocab_size, hidden_size] bf16, little-endian,
row-major, converted from fp32 with round-to-nearest-even. It is never loaded whole.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from assistant.llm.checkpoint import Checkpoint

EMBEDDINGS_FILE = "model.embed_tokens.weight.bfloat16.bin"


def f32_to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 → bf16 bits (uint16), round-to-nearest-even; NaN stays NaN (quieted), inf stays inf."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16).astype(np.uint16)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    # Rounding could carry a NaN's payload into the exponent and turn it into inf; keep it a NaN.
    rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bf16 bits (uint16) → float32, exact."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def write_bf16_table(rows: np.ndarray, path: Path, chunk_rows: int = 8192) -> None:
    """Write a [vocab, hidden] table (any float dtype, or bf16 bits as uint16) as bf16, chunk by chunk.

    `rows` is usually a memory map, so the whole float32 table never exists in memory at once.
    """
    with open(path, "wb") as out:
        for start in range(0, rows.shape[0], chunk_rows):
            chunk = rows[start : start + chunk_rows]
            bits = chunk if chunk.dtype == np.uint16 else f32_to_bf16(chunk)
            out.write(np.ascontiguousarray(bits).astype("<u2", copy=False).tobytes())


def write_embeddings(checkpoint: Checkpoint, out_dir: Path, keep_intermediate: bool = False) -> Path:
    """The embedding pipeline: safetensors embed_tokens (mapped, any dtype) → bf16 table file.

    With keep_intermediate, also the .npy and float32 .bin files of the step-by-step tools.
    """
    rows, _ = checkpoint.raw("model.embed_tokens.weight")
    path = out_dir / EMBEDDINGS_FILE
    write_bf16_table(rows, path)
    if keep_intermediate:
        values = checkpoint.f32("model.embed_tokens.weight")
        np.save(out_dir / "model.embed_tokens.weight.npy", values)
        values.tofile(out_dir / "model.embed_tokens.weight.float32.bin")
    return path


class EmbeddingTable:
    """Token id → float32 hidden vector, each row read from the bf16 file when it is needed.

    Rows are read with pread rather than through a memory map: the kernel maps whole large page
    cache folios around every faulting row, so a mapped table soon counts ~250 MB in the RSS
    for a few hundred tokens. A row read costs about a microsecond.
    """

    def __init__(self, path: Path, vocab_size: int, hidden_size: int):
        self.fd = os.open(path, os.O_RDONLY)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.row_bytes = hidden_size * 2

    def __call__(self, token_ids: list[int]) -> np.ndarray:
        """[1, T, hidden] float32 for T token ids."""
        rows = np.empty((len(token_ids), self.hidden_size), dtype="<u2")
        for i, token in enumerate(token_ids):
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} is outside the vocabulary of {self.vocab_size}")
            rows[i] = np.frombuffer(os.pread(self.fd, self.row_bytes, token * self.row_bytes), dtype="<u2")
        return bf16_to_f32(rows)[None]

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self.fd)
