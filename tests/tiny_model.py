"""A tiny random Qwen2 (or Llama) checkpoint and a Qwen-style tokenizer, built locally for tests."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]  # added, not special, as in Qwen2.5

_ENGLISH = [
    "turn on the {room} light",
    "turn off the {room} light please",
    "set a timer for {n} minutes",
    "what time is it in the {room}",
    "the temperature in the {room} is {n}.5 degrees",
    "remind me to water the plants at {n} o'clock",
    "add milk and eggs to the shopping list",
    "what is the weather like today, will it rain?",
]
_CHINESE = [
    "打开{room_zh}的灯",
    "关闭{room_zh}的灯",
    "设置一个{n}分钟的计时器",
    "现在几点了",
    "{room_zh}的温度是{n}度",
    "好的，已经为你打开了",
    "今天天气怎么样，会下雨吗",
]
_ROOMS = ["kitchen", "living room", "bedroom", "hallway", "garden"]
_ROOMS_ZH = ["厨房", "客厅", "卧室", "走廊", "花园"]
_EMOJI = ["😀", "🎉", "🌧️", "💡", "⏰", "🏠"]


def training_text() -> list[str]:
    """Varied lines so BPE learns real merges but leaves rarer CJK and emoji split across tokens."""
    lines = []
    for i, (en, zh) in enumerate(itertools.product(_ENGLISH, _CHINESE)):
        room, room_zh, n = _ROOMS[i % 5], _ROOMS_ZH[i % 5], i % 60 + 1
        lines.append(en.format(room=room, n=n) + " " + _EMOJI[i % len(_EMOJI)])
        if i % 2:  # Chinese less often than English, so some of its characters stay split
            lines.append(zh.format(room_zh=room_zh, n=n))
        lines.append(f'<tool_call>{{"name": "set_timer", "arguments": {{"minutes": {n}}}}}</tool_call>')
    return lines


def make_tokenizer(out_dir: Path, vocab_size: int = 1200) -> int:
    """Train a byte-level BPE tokenizer like Qwen's and save it with a Qwen2-Instruct config.

    Returns the vocabulary size including the special and added tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(training_text(), trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out_dir / "tokenizer.json"))

    added = {
        str(tokenizer.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL_TOKENS,
        }
        for t in SPECIAL_TOKENS + TOOL_TOKENS
    }
    config = {
        "added_tokens_decoder": added,
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 32768,
        "tokenizer_class": "Qwen2Tokenizer",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return tokenizer.get_vocab_size(with_added_tokens=True)


def make_tiny_qwen2(
    out_dir: Path,
    *,
    model_type: str = "qwen2",
    num_layers: int = 2,
    hidden_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 256,
    seed: int = 0,
    weight_scale: float = 0.09,
    embed_scale: float = 0.08,
    tie_word_embeddings: bool = True,
    rope_in_parameters: bool = False,
    max_position_embeddings: int = 2048,
) -> Path:
    """A complete Hugging Face folder (config, safetensors, generation config, tokenizer).

    Weights are redrawn with std `weight_scale` (embeddings: `embed_scale`) instead of the default
    0.02: at the default, the greedy continuation of a random model is one token repeated whatever
    the prompt, which would make every comparison with it vacuous. Much larger weights make the
    network chaotic, so that any rounding flips its greedy choices. The defaults sit between the
    two: continuations of 16-21 distinct tokens in 30 that change with the prompt, and stable
    enough that an int8 export agrees with float on over 90% of greedy steps.
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    vocab = make_tokenizer(out_dir)
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    endoftext, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    common = dict(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=endoftext,
        eos_token_id=endoftext,
    )
    config = Qwen2Config(**common) if model_type == "qwen2" else LlamaConfig(**common, attention_bias=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            elif "embed_tokens" in name or "lm_head" in name:
                param.copy_(embed_scale * torch.randn_like(param))
            else:
                param.copy_(weight_scale * torch.randn_like(param))
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end, endoftext]}))

    path = out_dir / "config.json"
    saved = json.loads(path.read_text())
    rope = saved.get("rope_parameters") or {"rope_type": "default"}
    theta = saved.pop("rope_theta", None) or rope.get("rope_theta")
    if rope_in_parameters:
        saved["rope_parameters"] = {**rope, "rope_theta": theta}
    else:  # the older spelling, as the Qwen2 checkpoints on the hub have it
        saved.pop("rope_parameters", None)
        saved["rope_theta"] = theta
    path.write_text(json.dumps(saved, indent=2))
    return out_dir
