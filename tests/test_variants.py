"""The checkpoints `assistant setup --model` may be given: each one either builds into a host model
whose logits are transformers' own, or is refused before any work, naming the field it cannot honour.

Every variant is a tiny random model saved by transformers itself (tests/tiny_model.py's weights,
scaled up so that greedy decoding varies), mimicking a real checkpoint's config: Qwen2.5-0.5B's
tied embeddings and rope_theta 1e6, Qwen2-1.5B's untied lm_head, float16 / float32 storage, sharded
safetensors, a head_dim other than hidden / heads, sliding-window fields, a list of eos ids, extra
added tokens and a Llama (SmolLM2) with and without biases.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from assistant.llm.engine import Engine
from assistant.llm.export import export_model
from tests.tiny_model import _randomise, make_tokenizer

STEPS = 20  # greedy tokens compared along transformers' path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    make_tokenizer(out)
    return out


def make_variant(
    out: Path,
    tokenizer_dir: Path,
    *,
    model_type: str = "qwen2",
    dtype: torch.dtype = torch.bfloat16,
    shard_size: str | None = None,
    edit: dict | None = None,
    seed: int = 0,
    **config,
) -> Path:
    """A tiny checkpoint folder as transformers saves it; `edit` then overwrites config.json fields."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    out.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, out / name)
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    endoftext, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    shape = dict(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
        bos_token_id=endoftext,
        eos_token_id=endoftext,
    )
    kind = {"qwen2": Qwen2Config, "llama": LlamaConfig}[model_type]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(kind(**(shape | config)), dtype=torch.float32)
    _randomise(model, 0.13)
    model.generation_config.eos_token_id = [im_end, endoftext]
    model.to(dtype).save_pretrained(out, safe_serialization=True, max_shard_size=shard_size or "5GB")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(cfg | (edit or {}), indent=2))
    return out


def reference(hf_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()


def compare(hf_dir: Path, out: Path, weights: str = "float", seed: int = 0) -> tuple[float, int, list[int]]:
    """Export, then follow transformers' greedy path: the least cosine, the top-1 agreements, the path."""
    export_model(hf_dir, out, weights=weights, kv_cache_len=64)
    engine, model = Engine(out), reference(hf_dir)
    ids = [int(t) for t in np.random.default_rng(seed).integers(0, 600, 12)]
    logits, seq, cosines, agree = engine.prefill(ids), list(ids), [], 0
    for _ in range(STEPS):
        with torch.no_grad():
            ref = model(torch.tensor([seq])).logits[0, -1].numpy()
        cosines.append(float(logits @ ref / np.linalg.norm(logits) / np.linalg.norm(ref)))
        token = int(np.argmax(ref))
        agree += int(np.argmax(logits)) == token
        seq.append(token)
        logits = engine.forward([token])
    return min(cosines), agree, seq[len(ids) :]


VARIANTS = {
    "qwen2.5-0.5b": dict(),
    "qwen2-1.5b-untied": dict(tie_word_embeddings=False),
    "float16": dict(dtype=torch.float16),
    "float32": dict(dtype=torch.float32),
    "sharded": dict(shard_size="100KB"),
    "head_dim": dict(head_dim=24),
    "sliding-unused": dict(use_sliding_window=False, sliding_window=4, max_window_layers=1),
    "sliding-wide": dict(use_sliding_window=True, sliding_window=512, max_window_layers=1),
    "llama": dict(model_type="llama", attention_bias=False, mlp_bias=False),
    "llama-biases": dict(model_type="llama", attention_bias=True, mlp_bias=True),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_float_export_is_transformers(name: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    hf = make_variant(tmp_path / name, tokenizer_dir, **VARIANTS[name])
    cosine, agree, path = compare(hf, tmp_path / "out")
    print(name, cosine, agree, len(set(path)))
    assert len(set(path)) > 3
    assert cosine >= 0.9999
    assert agree == STEPS
