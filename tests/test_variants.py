"""The checkpoints `assistant setup --model` may be given: each one either builds into a host model
whose logits are transformers' own, or is refused before any work, naming the field it cannot honour.

Every variant is a tiny random model saved by transformers itself (tests/tiny_model.py's weights,
scaled up so that greedy decoding varies), mimicking a real checkpoint's config: Qwen2.5-0.5B's
tied embeddings and rope_theta 1e6, Qwen2-1.5B's untied lm_head, float16 / float32 storage, sharded
safetensors, a head_dim other than hidden / heads, sliding-window fields, a list of eos ids, extra
added tokens and a Llama (SmolLM2) with and without biases. Refused: rope scaling, a sliding window
shorter than the model's positions, an activation other than SiLU, an untied model without its
lm_head, and integer (quantized) weights.
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
from assistant.llm.manifest import ModelError
from assistant.setup.build import SetupOptions, build_model
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
    drop: tuple[str, ...] = (),
    seed: int = 0,
    **config,
) -> Path:
    """A tiny checkpoint folder as transformers saves it, then config.json fields set (`edit`) or deleted (`drop`)."""
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
    cfg = json.loads((out / "config.json").read_text()) | (edit or {})
    (out / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k not in drop}, indent=2))
    return out


def reference(hf_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()


def compare(hf_dir: Path, model_dir: Path, seed: int = 0) -> tuple[float, int, list[int]]:
    """The model directory along transformers' greedy path: the least cosine, the top-1 agreements, the path."""
    engine, model = Engine(model_dir), reference(hf_dir)
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


def build(hf_dir: Path, models_dir: Path) -> Path:
    """`assistant setup --target host` of the folder: the int8 host export."""
    out, _ = build_model(SetupOptions(model=str(hf_dir), target="host", kv_cache_len=64, prefill_len=16), models_dir)
    return out


VARIANTS = {
    "qwen2.5-0.5b": dict(),  # tied embeddings, rope_theta 1e6, bf16
    "qwen2-1.5b-untied": dict(tie_word_embeddings=False),
    "float16": dict(dtype=torch.float16),
    "float32": dict(dtype=torch.float32),
    "sharded": dict(shard_size="100KB"),  # three shards and model.safetensors.index.json
    "head_dim": dict(head_dim=24),  # not hidden_size / num_attention_heads (16)
    # A top-level rope_theta beside transformers 5's rope_parameters: transformers reads the latter.
    "two rope_thetas": dict(edit={"rope_theta": 10000.0}),
    # Qwen2's hub configs carry the window fields with use_sliding_window false: no layer has a window.
    "sliding-unused": dict(use_sliding_window=False, sliding_window=4, max_window_layers=1),
    # A window as long as the model's positions never limits attention.
    "sliding-wide": dict(use_sliding_window=True, sliding_window=512, max_window_layers=1),
    # max_window_layers at num_hidden_layers: no layer is a sliding one.
    "sliding-no-layer": dict(use_sliding_window=True, sliding_window=4, max_window_layers=2),
    # Llama has no sliding window, whatever its config says.
    "llama-window": dict(model_type="llama", edit={"use_sliding_window": True, "sliding_window": 4}),
    "smollm2-llama": dict(model_type="llama", attention_bias=False, mlp_bias=False),
    "llama-biases": dict(model_type="llama", attention_bias=True, mlp_bias=True),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_exports_transformers_logits(name: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    hf = make_variant(tmp_path / name, tokenizer_dir, **VARIANTS[name])
    assert (hf / "model.safetensors.index.json").is_file() == (name == "sharded")
    export_model(hf, tmp_path / "float", weights="float", kv_cache_len=64)
    cosine, agree, path = compare(hf, tmp_path / "float")
    assert len(set(path)) > 3  # a path that repeats one token would prove little
    assert cosine >= 0.9999
    assert agree == STEPS


@pytest.mark.parametrize(
    "name", ["qwen2.5-0.5b", "qwen2-1.5b-untied", "float16", "sharded", "head_dim", "llama-biases"]
)
def test_setup_builds_each_variant_close_to_transformers(name: str, tokenizer_dir: Path, tmp_path: Path) -> None:
    hf = make_variant(tmp_path / name, tokenizer_dir, **VARIANTS[name])
    cosine, agree, _ = compare(hf, build(hf, tmp_path / "models"))
    assert cosine >= 0.99
    # 8-bit rounding flips near-ties of this random model's top two logits (tests/tiny_model.py):
    # 17-20 of 20 measured on these variants, cosines 0.998-0.999.
    assert agree >= 0.8 * STEPS


def test_setup_keeps_every_eos_id_and_extra_added_tokens(tokenizer_dir: Path, tmp_path: Path) -> None:
    """Qwen2.5's layout: more added tokens than the base tokenizer's, and vocab_size padded above them."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import AutoTokenizer

    extra = ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|box_start|>"]
    tokens = tmp_path / "tokens"
    shutil.copytree(tokenizer_dir, tokens)
    tokenizer = Tokenizer.from_file(str(tokens / "tokenizer.json"))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    tokenizer.save(str(tokens / "tokenizer.json"))
    config = json.loads((tokens / "tokenizer_config.json").read_text())
    for t in extra:
        config["added_tokens_decoder"][str(tokenizer.token_to_id(t))] = {
            "content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True
        }  # fmt: skip
    (tokens / "tokenizer_config.json").write_text(json.dumps(config))
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    hf = make_variant(tmp_path / "hf", tokens, vocab_size=size + 27)

    engine = Engine(build(hf, tmp_path / "models"))
    im_end, endoftext = tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")
    assert engine.manifest.eos_token_ids == [im_end, endoftext]  # generation_config's list, in its order
    assert engine.manifest.vocab_size == size + 27
    text = "<|fim_prefix|>turn on the light<|fim_suffix|> in the kitchen<|box_start|><|im_end|>"
    ids = engine.tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == AutoTokenizer.from_pretrained(hf)(text, add_special_tokens=False).input_ids
    assert tokenizer.token_to_id("<|box_start|>") in ids
    cosine, agree, _ = compare(hf, tmp_path / "models" / "hf")

    assert cosine >= 0.99 and agree >= 0.8 * STEPS


def declare(tokens: Path, names: list[str], first_id: int, special: bool = True) -> None:
    """Declare tokens in tokenizer_config.json's added_tokens_decoder only, from `first_id` on."""
    config = json.loads((tokens / "tokenizer_config.json").read_text())
    for i, name in enumerate(names):
        config["added_tokens_decoder"][str(first_id + i)] = {
            "content": name, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
            "special": special,
        }  # fmt: skip
    (tokens / "tokenizer_config.json").write_text(json.dumps(config))


def test_tokens_only_tokenizer_config_declares_are_one_token_each(tokenizer_dir: Path, tmp_path: Path) -> None:
    """transformers adds the added_tokens_decoder entries tokenizer.json lacks; so does setup."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tokens = tmp_path / "tokens"
    shutil.copytree(tokenizer_dir, tokens)
    size = Tokenizer.from_file(str(tokens / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    declare(tokens, ["<|extra_0|>", "<|extra_1|>"], size)
    declare(tokens, ["<think>"], size + 2, special=False)
    hf = make_variant(tmp_path / "hf", tokens, vocab_size=size + 8)
    engine = Engine(build(hf, tmp_path / "models"))
    text = "turn on<|extra_1|> the light <think>in the kitchen<|extra_0|>"
    ids = engine.tokenizer.encode(text, add_special_tokens=False).ids
    assert ids == AutoTokenizer.from_pretrained(hf)(text, add_special_tokens=False).input_ids
    assert {size, size + 1, size + 2} <= set(ids)

    declare(tokens, ["<|far|>"], size + 5)  # transformers could not give it that id either
    hf = make_variant(tmp_path / "far", tokens, vocab_size=size + 8)
    with pytest.raises(ModelError, match=r"added token '<\|far\|>' has id \d+, which is not in tokenizer.json"):
        build(hf, tmp_path / "models")


YARN = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}  # as Qwen2.5's README adds it
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
REFUSED = {
    "rope_scaling yarn": (dict(edit={"rope_scaling": YARN}), "rope_scaling of type 'yarn' is not supported"),
    "rope_scaling llama3": (
        dict(model_type="llama", edit={"rope_scaling": LLAMA3 | {"original_max_position_embeddings": 8192}}),
        "rope_scaling of type 'llama3' is not supported",
    ),
    "rope_parameters linear": (
        dict(edit={"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6}}),
        "rope_parameters of type 'linear' is not supported",
    ),
    "sliding window": (
        dict(use_sliding_window=True, sliding_window=4, max_window_layers=1),
        "use_sliding_window with sliding_window 4 is not supported",
    ),
    "sliding window by default": (  # Qwen2Config's defaults: 4096 tokens from layer 28 on
        dict(
            num_hidden_layers=30,
            hidden_size=16,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=16,
            max_position_embeddings=8192,
            edit={"use_sliding_window": True},
            drop=("sliding_window", "max_window_layers", "layer_types"),
        ),
        "use_sliding_window with sliding_window 4096 is not supported",
    ),  # fmt: skip
    "hidden_act": (dict(edit={"hidden_act": "gelu"}), "hidden_act 'gelu' is not supported"),
    "untied without lm_head": (
        dict(edit={"tie_word_embeddings": False}),
        "tie_word_embeddings is false, but the checkpoint has no lm_head.weight",
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_setup_refuses_what_the_export_cannot_honour_before_any_work(
    name: str, tokenizer_dir: Path, tmp_path: Path
) -> None:
    kwargs, message = REFUSED[name]
    hf = make_variant(tmp_path / "hf", tokenizer_dir, **kwargs)
    models = tmp_path / "models"
    with pytest.raises(ModelError, match=message) as refused:
        build(hf, models)
    assert "\n" not in str(refused.value)
    assert [p.name for p in models.iterdir()] == []  # nothing started
    with pytest.raises(ModelError, match=message):
        export_model(hf, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_window_shorter_than_the_context_changes_transformers_logits(tokenizer_dir: Path, tmp_path: Path) -> None:
    """Why the window is refused: past `sliding_window` tokens transformers' logits are not the
    whole-context ones the export computes (before it, they are the same)."""
    sliding = make_variant(
        tmp_path / "sliding", tokenizer_dir, use_sliding_window=True, sliding_window=4, max_window_layers=1
    )
    full = make_variant(tmp_path / "full", tokenizer_dir)
    ids = torch.tensor([[int(t) for t in np.random.default_rng(0).integers(0, 600, 12)]])
    with torch.no_grad():
        a, b = reference(sliding)(ids).logits[0], reference(full)(ids).logits[0]
    assert torch.allclose(a[:4], b[:4], atol=1e-5)
    assert not torch.allclose(a[-1], b[-1], atol=1e-2)


def test_setup_refuses_integer_weights_before_any_work(tokenizer_dir: Path, tmp_path: Path) -> None:
    """bitsandbytes' 8-bit checkpoints keep each linear weight as int8 under its float name (with
    its scales beside): read as numbers, they would build a model that says nothing sensible."""
    from safetensors.torch import load_file, save_file

    hf = make_variant(tmp_path / "hf", tokenizer_dir, edit={"quantization_config": {"load_in_8bit": True}})
    tensors = load_file(hf / "model.safetensors")
    for name in [n for n in tensors if n.endswith("proj.weight")]:
        tensors[name] = (tensors[name].float() * 400).round().to(torch.int8)
        tensors[name.removesuffix("weight") + "SCB"] = torch.ones(tensors[name].shape[0])
    save_file(tensors, hf / "model.safetensors", metadata={"format": "pt"})
    models = tmp_path / "models"
    with pytest.raises(ModelError, match=r"model.layers.0.self_attn.q_proj.weight is I8: a quantized checkpoint"):
        build(hf, models)
    assert [p.name for p in models.iterdir()] == []
