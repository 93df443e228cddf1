"""A tiny random Qwen2 (or Llama) checkpoint and a Qwen-style tokenizer, built locally for tests.

Nothing is downloaded: the tokenizer is trained on the text below and the weights are random, so
the fixtures are small (well under 1 MB) and build in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>"]  # added but not special, as in Qwen2.5
# Qwen2's pre-tokenizer split. transformers 5's Qwen2Tokenizer rebuilds its pipeline with exactly this
# regex (and NFC) whatever tokenizer.json says, so using it here keeps AutoTokenizer and
# tokenizers.Tokenizer.from_file giving the same ids.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
VOCAB_SIZE = 1000  # BPE vocabulary before the 5 added tokens: big enough for real merges, small enough
# that rarer Chinese characters and emoji stay split into several byte-level tokens.

# --- training text -------------------------------------------------------------------------------
_ENGLISH = [
    "turn on the {room} light",
    "turn off the {room} light please",
    "switch the {room} lamp off in {n} minutes",
    "dim the {room} lights to {n} percent",
    "make the {room} brighter",
    "open the {room} curtains and the blinds",
    "set a timer for {n} minutes",
    "set an alarm for {n}:30 in the morning",
    "cancel the {n} minute timer",
    "how much time is left on the timer?",
    "your pasta timer has {n} seconds remaining",
    "what time is it?",
    "what's the date today?",
    "wake me up at {n} o'clock tomorrow",
    "the temperature in the {room} is {n}.5 degrees",
    "set the {room} thermostat to {n} degrees",
    "is the humidity in the {room} above {n} percent?",
    "remind me to water the plants at {n} o'clock",
    "remind me to call mom on Sunday evening",
    "add milk, bread and eggs to the shopping list",
    "what is on my calendar for Friday?",
    "what is the weather like today, will it rain?",
    "it is sunny and {n} degrees outside",
    "there is a {n} percent chance of rain this afternoon",
    "expect heavy snow, strong wind and thunderstorms tonight",
    "the forecast for Tuesday: foggy, then clear skies",
    "lock the front door and close the garage",
    "is the back door locked?",
    "start the vacuum cleaner in the {room}",
    "play some jazz music in the {room}",
    "pause the music and turn the volume down",
    "what is {n} plus {n}?",
    "{n} times twelve equals {n}2",
    "convert {n} kilograms to pounds",
    "how many grams are in a quarter pound?",
    "okay, the {room} light is on now",
    "sorry, I could not find a device called {room}",
    "your timer for {n} minutes has started",
    "good morning! today will be cloudy with light rain",
    "Done. I've turned everything off; sleep well.",
    "the washing machine finished its cycle",
    "the dishwasher will be ready in {n} minutes",
    "close the window in the {room}, it's getting cold",
    "the air quality is good and pollen levels are low",
    "sunrise is at 6:{n} and sunset at 19:{n}",
    "how far is the moon from the earth?",
    "tell me a joke about robots",
    "which lights are still on upstairs?",
    "turn the heating down before we leave for work",
    "the battery of the smoke detector is almost empty",
    "somebody is at the door; should I unlock it?",
    "the package was delivered to the porch at noon",
    "please speak more slowly",
    "switch the fan to high speed",
    "is it going to be windy this weekend?",
    "warm and humid, with a UV index of {n}",
    "a quarter past {n} means {n}:15",
    "one hundred and twenty-three thousand",
    "three, two, one, zero!",
    "July, August, September, October, November, December",
]
_CHINESE = [
    "打开{room}的灯",
    "关闭{room}的灯",
    "把{room}的灯调暗一点",
    "设置一个{n}分钟的计时器",
    "取消计时器",
    "现在几点了",
    "明天早上{n}点叫醒我",
    "{room}的温度是{n}度",
    "把空调调到{n}度",
    "好的，已经为你打开了",
    "今天天气怎么样，会下雨吗",
    "明天是晴天，最高气温{n}度",
    "下午有雷阵雨，记得带伞",
    "提醒我给花浇水",
    "锁上前门，关上车库",
    "播放一些轻松的音乐",
    "{n}加{n}等于多少",
    "对不起，我没有找到这个设备",
    "洗衣机已经洗完了",
    "窗外正在下大雪，路上注意安全",
    "请把电视的声音调小",
    "这周末风很大，气温会下降",
    "空气质量良好，适合出门散步",
    "客人到了，要开门吗",
    "帮我查一下明天的日程",
    "烟雾报警器的电池快没电了",
    "晚安，所有的灯都已关闭",
    "一二三四五六七八九十百千万",
]
_TOOL_CALLS = [
    '{{"name": "set_timer", "arguments": {{"minutes": {n}}}}}',
    '{{"name": "turn_on", "arguments": {{"device": "{room} light"}}}}',
    '{{"name": "turn_off", "arguments": {{"device": "{room} light"}}}}',
    '{{"name": "get_weather", "arguments": {{"day": "today"}}}}',
    '{{"name": "set_temperature", "arguments": {{"room": "{room}", "degrees": {n}}}}}',
]
_ROOMS = ["kitchen", "living room", "bedroom", "hallway", "garden", "bathroom", "office"]
_ROOMS_ZH = ["厨房", "客厅", "卧室", "走廊", "花园", "浴室", "书房"]
_EMOJI = ["😀", "🎉", "🌧️", "☀️", "💡", "⏰", "🏠", "👍"]


def training_text(lines: int = 300) -> list[str]:
    """English on every line, an emoji on every other, tool calls on every 4th, Chinese on every 6th.

    Chinese and emoji are deliberately rarer than English, and VOCAB_SIZE is smaller than this text
    could fill, so BPE runs out of merges before it has joined the bytes of every character: some
    Chinese characters and emoji stay split across tokens, which the streaming detokenizer tests need.
    """
    text = []
    for i in range(lines):
        room, room_zh, n = _ROOMS[i % len(_ROOMS)], _ROOMS_ZH[i % len(_ROOMS)], i % 60 + 1
        emoji = " " + _EMOJI[i // 2 % len(_EMOJI)] if i % 2 else ""
        text.append(_ENGLISH[i % len(_ENGLISH)].format(room=room, n=n) + emoji)
        if i % 4 == 0:
            call = _TOOL_CALLS[i // 4 % len(_TOOL_CALLS)].format(room=room, n=n)
            text.append(f"<tool_call>\n{call}\n</tool_call>")
        if i % 6 == 0:
            text.append(_CHINESE[i // 6 % len(_CHINESE)].format(room=room_zh, n=n) + "。")
    return text


# --- tokenizer -----------------------------------------------------------------------------------
def make_tokenizer(out_dir: Path) -> None:
    """Train a byte-level BPE tokenizer like Qwen2's and save it with a Qwen2-Instruct tokenizer_config."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no unknown tokens
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_text(), trainer)
    # Added after training, so they take the last ids in this order, as in Qwen2.5's vocabulary.
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
    config = {  # the fields of Qwen2.5-Instruct's tokenizer_config.json that matter here
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "chat_template": QWEN2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


# --- model ---------------------------------------------------------------------------------------
def make_tiny_qwen2(
    out_dir: Path,
    *,
    model_type: str = "qwen2",
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
    weight_scale: float = 0.13,
    tie_word_embeddings: bool = True,
    rope_in_parameters: bool = False,
    max_position_embeddings: int = 2048,
) -> Path:
    """A complete Hugging Face folder: config, safetensors weights, generation config and tokenizer.

    model_type "qwen2" gives Qwen2ForCausalLM (q/k/v biases), "llama" LlamaForCausalLM (no biases).
    rope_in_parameters spells the rotary base inside "rope_parameters" (transformers 5) instead of
    as top-level "rope_theta" (the Qwen2 checkpoints on the hub).
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    make_tokenizer(out_dir)
    tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    endoftext, im_end = tokenizer.token_to_id("<|endoftext|>"), tokenizer.token_to_id("<|im_end|>")
    common = dict(
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=endoftext,  # Qwen2's config.json names <|endoftext|> for both
        eos_token_id=endoftext,
    )
    if model_type == "qwen2":
        config = Qwen2Config(**common)
    elif model_type == "llama":
        config = LlamaConfig(**common, attention_bias=False, mlp_bias=False)
    else:
        raise ValueError(f"model_type must be 'qwen2' or 'llama', not {model_type!r}")

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomise(model, weight_scale)
    # The chat model stops on <|im_end|>, and on <|endoftext|> too, as Qwen2-Instruct's generation_config says.
    model.generation_config.bos_token_id = endoftext
    model.generation_config.eos_token_id = [im_end, endoftext]
    model.generation_config.pad_token_id = endoftext
    model.save_pretrained(out_dir, safe_serialization=True)
    _rewrite_config(out_dir / "config.json", rope_in_parameters)
    return out_dir


def _randomise(model, weight_scale: float) -> None:
    """Redraw every parameter: weights and biases with std `weight_scale`, norm gains around 1.

    Why not the default init (std 0.02): the layers then add almost nothing to the residual stream,
    so greedy decoding repeats one token (1 distinct token in 30, for every prompt tried) and a
    comparison against the model proves little. Larger weights make the continuation depend on the
    prompt, but also make the random network more sensitive to rounding: its logits are Gaussian-like
    over ~1000 tokens, the top two are close, and the int8 export's noise flips more greedy choices.
    Measured on the default shape with bf16 weights, 30 greedy tokens per prompt:
      scale 0.05-0.08: 1-3 distinct tokens        0.10: 2-13 distinct
      scale 0.13: 18-27 distinct at seed 0; int8 export agrees with float on 112/120 greedy steps
                  at seed 0 (105-114 over seeds 0-7; the engine test asks for 108)
      scale 0.15-0.20: 12-30 distinct, but int8 agreement falls to 102-110/120
    At 0.13 the logits stay finite and small (|logit| < 5, std ~1, top softmax probability < 0.05),
    and the float32 engine matches transformers to ~1e-6 relative.
    """
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1.0 + 0.1 * torch.randn_like(param))
            else:
                param.copy_(weight_scale * torch.randn_like(param))


def _rewrite_config(path: Path, rope_in_parameters: bool) -> None:
    """Spell rope_theta as asked, whichever spelling the installed transformers wrote.

    transformers 5 writes {"rope_parameters": {"rope_type": "default", "rope_theta": ...}} and
    "dtype"; 4.x writes top-level "rope_theta" and "torch_dtype", as the Qwen2 checkpoints on the hub
    do. transformers 5 reads both spellings.
    """
    config = json.loads(path.read_text())
    config.setdefault("torch_dtype", config.get("dtype", "float32"))
    rope = config.pop("rope_parameters", None) or {"rope_type": "default"}
    theta = config.pop("rope_theta", None) or rope.get("rope_theta")
    if rope_in_parameters:
        config["rope_parameters"] = {**rope, "rope_theta": theta}
    else:
        config["rope_theta"] = theta
    path.write_text(json.dumps(config, indent=2) + "\n")
