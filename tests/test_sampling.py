"""The sampler's rules on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.llm.sampling import Sampler

LOGITS = np.array([1.0, 3.0, 2.5, -1.0, 0.5], dtype=np.float32)


def test_greedy_takes_the_largest() -> None:
    assert Sampler()(LOGITS, []) == 1


def test_allowed_mask_is_respected() -> None:
    allowed = np.array([True, False, False, True, False])
    assert Sampler()(LOGITS, [], allowed) == 0
    draws = {Sampler(temperature=2.0, seed=s)(LOGITS, [], allowed) for s in range(50)}
    assert draws <= {0, 3} and len(draws) == 2
    one = np.array([False, False, False, True, False])
    assert {Sampler(temperature=t, top_k=k, top_p=p, seed=1)(LOGITS, [], one) for t, k, p in CORNERS} == {3}


CORNERS = [(0.0, 0, 1.0), (1.0, 0, 1.0), (1.0, 1, 1.0), (1.0, 0, 0.01), (1e-9, 2, 0.5)]


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), CORNERS)
def test_a_mask_that_allows_no_token_is_a_clear_error(temperature: float, top_k: int, top_p: float) -> None:
    sampler = Sampler(temperature=temperature, top_k=top_k, top_p=top_p, seed=1)
    with pytest.raises(ValueError, match="allows no token"):
        sampler(LOGITS, [], np.zeros(5, dtype=bool))


def test_repetition_penalty_changes_the_choice() -> None:
    assert Sampler(repetition_penalty=1.5)(LOGITS, [1]) == 2  # 3.0 / 1.5 < 2.5
    # Negative logits are pushed further down, not up.
    assert Sampler(repetition_penalty=1.5, top_k=1)(np.array([-1.0, -0.9], np.float32), [0, 1]) == 1


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    top2 = {Sampler(temperature=5.0, top_k=2, seed=s)(LOGITS, []) for s in range(100)}
    assert top2 == {1, 2}
    nucleus = {Sampler(temperature=1.0, top_p=0.5, seed=s)(LOGITS, []) for s in range(100)}
    assert nucleus == {1}  # token 1 alone holds more than half the mass
    everything = {Sampler(temperature=5.0, seed=s)(LOGITS, []) for s in range(300)}
    assert everything == {0, 1, 2, 3, 4}


def test_seed_makes_sampling_reproducible() -> None:
    logits = np.random.default_rng(0).standard_normal(151936).astype(np.float32)
    a = [Sampler(temperature=1.0, top_p=0.9, seed=7)(logits, []) for _ in range(5)]
    b = [Sampler(temperature=1.0, top_p=0.9, seed=7)(logits, []) for _ in range(5)]
    assert a == b
    sampler = Sampler(temperature=1.0, seed=7)
    assert len({sampler(logits, []) for _ in range(20)}) > 10


@pytest.mark.parametrize("temperature", [1e-40, 1e-300])
def test_a_tiny_temperature_is_greedy_not_nan(temperature: float) -> None:
    assert {Sampler(temperature=temperature, seed=s)(LOGITS, []) for s in range(5)} == {1}
