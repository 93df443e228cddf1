"""The decode engine against transformers' own forward pass, and its context management."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.export import export_model
from assistant.llm.manifest import ModelError
from assistant.llm.sampling import Sampler

GREEDY = Sampler()


def reference_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].numpy()


def prompt(seed: int, n: int = 20, vocab: int = 600) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, vocab, n)]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def greedy_path(model, ids: list[int], steps: int) -> list[int]:
    seq = list(ids)
    for _ in range(steps):
        seq.append(int(np.argmax(reference_logits(model, seq))))
    return seq[len(ids) :]


def test_float_export_matches_transformers(tiny_float: Path, hf_reference) -> None:
    engine = Engine(tiny_float)
    ids = prompt(0)
    logits = engine.prefill(ids)
    assert rel_err(logits, reference_logits(hf_reference, ids)) < 1e-3
    seq = list(ids)
    for _ in range(30):  # greedy decode, every step checked against a full forward pass
        token = int(np.argmax(logits))
        seq.append(token)
        logits = engine.forward([token])
        assert rel_err(logits, reference_logits(hf_reference, seq)) < 1e-3
    continuation = seq[len(ids) :]
    # A random model that repeats one token whatever the prompt would make this test vacuous.
    assert len(set(continuation)) > 3
    assert greedy_path(hf_reference, prompt(1), 10) != continuation[:10]


def test_int8_export_is_close_to_transformers(tiny_int8: Path, hf_reference) -> None:
    engine = Engine(tiny_int8)
    agree, cosines = 0, []
    for seed in range(4):
        ids = prompt(seed)
        path = greedy_path(hf_reference, ids, 30)
        logits = engine.prefill(ids)
        for step, token in enumerate(path):  # teacher-forced along the reference's greedy path
            ref = reference_logits(hf_reference, ids + path[:step])
            agree += int(np.argmax(logits)) == token
            cosines.append(float(logits @ ref / np.linalg.norm(logits) / np.linalg.norm(ref)))
            logits = engine.forward([token])
    assert agree >= 0.9 * 4 * 30, f"greedy agreement {agree}/120"
    assert min(cosines) >= 0.99


def test_llama_without_bias_and_rope_parameters(tiny_llama_hf: Path, tmp_path: Path) -> None:
    import json

    from transformers import AutoModelForCausalLM

    config = json.loads((tiny_llama_hf / "config.json").read_text())
    assert "rope_theta" not in config and config["rope_parameters"]["rope_theta"] == 1e6
    export_model(tiny_llama_hf, tmp_path / "m", weights="float", kv_cache_len=128)
    engine = Engine(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_hf, dtype=torch.float32).eval()
    ids = prompt(3)
    assert rel_err(engine.prefill(ids), reference_logits(model, ids)) < 1e-3


def test_chunked_prefill_equals_token_by_token(tiny_float: Path) -> None:
    ids = prompt(4, n=45)
    chunked = Engine(tiny_float, prefill_chunk=16).prefill(ids)
    one_by_one = Engine(tiny_float, prefill_chunk=1).prefill(ids)
    np.testing.assert_allclose(chunked, one_by_one, rtol=0, atol=1e-4 * np.abs(one_by_one).max())


def test_prompt_cache_restore_equals_full_prefill(tiny_float: Path) -> None:
    system, user_a, user_b = prompt(5, 40), prompt(6, 12), prompt(7, 15)
    engine = Engine(tiny_float)
    engine.cache_prompt(system)
    engine.prefill(system + user_a)
    for _ in range(5):  # the first conversation goes on and overwrites rows after the system prompt
        engine.forward([3])
    # A new conversation: the snapshot is restored, only the user turn is computed.
    tokens = list(engine.generate(system + user_b, GREEDY, 1))
    assert engine.stats.prefilled_tokens == len(user_b)
    fresh = Engine(tiny_float)
    expected = int(np.argmax(fresh.prefill(system + user_b)))
    assert tokens == [expected] or (not tokens and expected in fresh.eos_ids)
    np.testing.assert_allclose(engine.k_cache[:, :, : fresh.pos], fresh.k_cache[:, :, : fresh.pos], atol=1e-5)


def test_multi_turn_reuses_the_conversation_kv(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    chat = Conversation(engine, "You are a test.", max_new_tokens=8)
    first = "".join(chat.reply("turn on the kitchen light", GREEDY))
    assert chat.messages[-1] == {"role": "assistant", "content": first}
    prompt_tokens = engine.stats.prompt_tokens
    "".join(chat.reply("and the hallway", GREEDY))
    # Only the tail that is not already cached is computed on the second turn.
    assert engine.stats.prompt_tokens > prompt_tokens
    assert engine.stats.prefilled_tokens < engine.stats.prompt_tokens - prompt_tokens + 10


def test_overflowing_conversation_keeps_working(tiny_float: Path) -> None:
    engine = Engine(tiny_float, kv_cache_len=128)
    system = "You are a helpful assistant in the kitchen."
    chat = Conversation(engine, system, max_new_tokens=24)
    system_ids = engine.prompt_cache.tokens
    for turn in range(12):
        reply = "".join(
            chat.reply(f"turn {turn}: set a timer for {turn} minutes please", Sampler(temperature=0.8, seed=turn))
        )
        assert isinstance(reply, str)
        assert engine.tokens[: len(system_ids)] == system_ids  # the system prompt is never cut
        assert engine.pos <= engine.kv_len
    assert chat.messages[0]["content"].startswith("turn ") and "turn 0:" not in chat.messages[0]["content"]
    assert len(chat.messages) < 24  # old turns were dropped


def test_message_longer_than_the_cache_is_a_clear_error(tiny_float: Path) -> None:
    engine = Engine(tiny_float, kv_cache_len=64)
    chat = Conversation(engine, "Hi.", max_new_tokens=8)
    with pytest.raises(ModelError, match="too long"):
        list(chat.reply("light " * 200, GREEDY))
    assert chat.messages == []  # nothing half-recorded
    assert isinstance("".join(chat.reply("hello", GREEDY)), str)  # and the next turn works


def test_streamed_chinese_and_emoji_is_byte_identical(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    text = "好的，厨房的灯已经打开了 😀🎉 温度是23.5度。"
    target = engine.tokenizer.encode(text, add_special_tokens=False).ids
    split = [t for t in target if "\ufffd" in engine.tokenizer.decode([t])]
    assert split, "the fixture tokenizer must split some characters across tokens"
    eos = next(iter(engine.eos_ids))

    def force(generated: list[int]) -> np.ndarray:  # the logits-mask hook, used to force a reply
        allowed = np.zeros(engine.manifest.vocab_size, dtype=bool)
        allowed[target[len(generated)] if len(generated) < len(target) else eos] = True
        return allowed

    chat = Conversation(engine, "You are a test.", max_new_tokens=200)
    pieces = list(chat.reply("你好", GREEDY, allowed=force))
    assert "".join(pieces).encode() == engine.tokenizer.decode(target).encode() == text.encode()
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) > 5  # it really streamed


def test_cancellation_stops_within_one_token(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    cancel = threading.Event()
    ids = prompt(8)
    received = []
    never_eos = np.ones(engine.manifest.vocab_size, dtype=bool)
    never_eos[list(engine.eos_ids)] = False
    for token in engine.generate(ids, GREEDY, 100, cancel, allowed=lambda generated: never_eos):
        received.append(token)
        if len(received) == 3:
            cancel.set()
    assert len(received) == 3
    assert engine.pos == len(ids) + 2  # the cancelled token was never run


def broken_copy(model: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(model, out)
    return out


def test_missing_layer_file_is_named(tiny_int8: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_int8, tmp_path)
    (model / "onnx/layer_1.onnx").unlink()
    with pytest.raises(ModelError, match=r"onnx/layer_1\.onnx: missing model file; re-run `assistant setup`"):
        Engine(model)


def test_truncated_embedding_file_is_named(tiny_int8: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_int8, tmp_path)
    path = model / "model.embed_tokens.weight.bfloat16.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"model\.embed_tokens\.weight\.bfloat16\.bin: .* bytes, .*truncated"):
        Engine(model)


def test_manifest_dims_disagreeing_with_files(tiny_int8: Path, tmp_path: Path) -> None:
    model = broken_copy(tiny_int8, tmp_path)
    manifest = yaml.safe_load((model / "manifest.yaml").read_text())
    manifest["hidden_size"] *= 2
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelError, match=r"model\.embed_tokens\.weight\.bfloat16\.bin: .* do not hold"):
        Engine(model)
    # With the embedding check satisfied, the layer graphs' own shapes still disagree.
    manifest["hidden_size"] //= 2
    manifest["num_kv_heads"] = 1
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelError, match=r"layer_0\.onnx: input K_cache has last dimension"):
        Engine(model)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a model directory .*assistant setup"):
        Engine(tmp_path)
