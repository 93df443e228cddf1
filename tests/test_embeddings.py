"""The bf16 embedding table: round-to-nearest-even bit for bit, and the memory-mapped lookup."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from assistant.llm.embeddings import EmbeddingTable, bf16_to_f32, f32_to_bf16, write_bf16_table


def reference_bf16(values: np.ndarray) -> np.ndarray:
    return values.astype(ml_dtypes.bfloat16).view(np.uint16)


def test_round_to_nearest_even_matches_reference() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.standard_normal(100_000).astype(np.float32) * 10.0 ** rng.integers(-30, 30, 100_000),
            # Exact ties: the dropped half is 0x8000, so the result must round to the even neighbour.
            np.array([0x3F808000, 0x3F818000, 0xBF808000, 0x7F7F8000], dtype=np.uint32).view(np.float32),
            np.array([np.inf, -np.inf, 0.0, -0.0, 3.0e38, -3.4e38, 1e-45], dtype=np.float32),
        ]
    )
    assert np.array_equal(f32_to_bf16(values), reference_bf16(values))
    ties = f32_to_bf16(np.array([0x3F808000, 0x3F818000], dtype=np.uint32).view(np.float32))
    assert list(ties) == [0x3F80, 0x3F82]  # both round to the even mantissa


def test_nan_stays_nan_and_inf_stays_inf() -> None:
    nans = np.array([0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF], dtype=np.uint32).view(np.float32)
    assert np.isnan(bf16_to_f32(f32_to_bf16(nans))).all()
    assert list(bf16_to_f32(f32_to_bf16(np.array([np.inf, -np.inf], np.float32)))) == [np.inf, -np.inf]


def test_table_written_in_chunks_reads_back(tmp_path: Path) -> None:
    table = np.random.default_rng(1).standard_normal((1000, 48)).astype(np.float32)
    path = tmp_path / "e.bin"
    write_bf16_table(table, path, chunk_rows=97)
    assert path.stat().st_size == 1000 * 48 * 2
    assert np.array_equal(np.fromfile(path, "<u2").reshape(1000, 48), reference_bf16(table))
    rows = EmbeddingTable(path, 1000, 48)([5, 999, 5])
    assert rows.shape == (1, 3, 48)
    assert np.array_equal(rows[0, 1].view(np.uint32) >> 16, reference_bf16(table[999]))
    np.testing.assert_allclose(rows[0], table[[5, 999, 5]], rtol=2**-8)


def test_token_outside_the_table_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "e.bin"
    write_bf16_table(np.zeros((10, 4), np.float32), path)
    with pytest.raises(ValueError, match="token id 10 is outside the vocabulary of 10"):
        EmbeddingTable(path, 10, 4)([3, 10])
