"""The decode engine against transformers' own forward pass, its quantized exports against the
float one on a real model (SmolLM2-135M-Instruct), and its context management."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from assistant.llm.chat_template import plain_tokenizer
from assistant.llm.conversation import Conversation, TooLong
from assistant.llm.detok import StreamDecoder
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


# A fixed English passage (192 SmolLM2 tokens), written for these tests.
PASSAGE = (
    "The lighthouse stood at the end of a narrow spit of land, where the river met the sea. For more than a "
    "hundred years its keepers had climbed the spiral stairs every evening to light the lamp, and every morning "
    "they had come down again to write the night's weather in a thick leather book. Ships passing in the dark "
    "looked for its beam, which turned once every twelve seconds, and sailors learned to count the seconds "
    "between flashes to be sure which light they were seeing. In winter the storms came from the north, and "
    "waves broke over the rocks below the tower. The last keeper left in the spring of 1987, when the lamp was "
    "replaced by an automatic light that needed no one to tend it. Today the tower is a small museum. Visitors "
    "can climb the same stairs, read the old weather books, and look out over the water from the gallery at "
    "the top, where the wind is always stronger than it is on the ground."
)
# Plain questions whose greedy answers are compared over 32 tokens. Others tried (spiders' legs,
# Spain's language, water's boiling point) reach a near-tie between two tokens within 3-20 tokens,
# where any quantization may pick the other one; the README gives the figures.
QUESTIONS = [
    "What is the capital of France?",
    "How many days are there in a week?",
    "Name three fruits.",
    "What is two plus two?",
    "What is the largest planet in the solar system?",
]


@dataclass
class Scored:
    perplexity: float
    top1: np.ndarray  # the most likely next token at every position of the passage


def score_passage(model_dir: Path) -> Scored:
    """Perplexity of PASSAGE, every token predicted from the ones before it (teacher forcing)."""
    engine = Engine(model_dir)
    ids = engine.tokenizer.encode(PASSAGE, add_special_tokens=False).ids
    logits, nll, top1 = engine.prefill(ids[:1]), 0.0, []
    for token in ids[1:]:
        log_probs = torch.log_softmax(torch.from_numpy(logits).double(), -1)
        nll -= float(log_probs[token])
        top1.append(int(np.argmax(logits)))
        logits = engine.forward([token])
    return Scored(float(np.exp(nll / (len(ids) - 1))), np.array(top1))


@pytest.fixture(scope="module")
def smollm2(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("smollm2")
    for weights in ("float", "int8", "s4"):
        export_model(smollm2_hf, out / weights, weights=weights, kv_cache_len=512)
    return {weights: out / weights for weights in ("float", "int8", "s4")}


@pytest.fixture(scope="module")
def smollm2_scores(smollm2: dict[str, Path]) -> dict[str, Scored]:
    return {weights: score_passage(model) for weights, model in smollm2.items()}


def test_smollm2_float_export_perplexity_is_transformers(smollm2_hf: Path, smollm2_scores) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    ids = AutoTokenizer.from_pretrained(smollm2_hf)(PASSAGE, return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    reference = float(torch.exp(loss))
    assert reference < 40  # a real language model on plain English (a random one scores ~50,000)
    assert smollm2_scores["float"].perplexity == pytest.approx(reference, rel=1e-3)


def test_int8_perplexity_within_one_percent_of_float(smollm2_scores: dict[str, Scored]) -> None:
    float_, int8 = smollm2_scores["float"], smollm2_scores["int8"]
    assert int8.perplexity <= 1.01 * float_.perplexity
    assert np.mean(int8.top1 == float_.top1) >= 0.9


def test_s4_perplexity_within_its_margin(smollm2_scores: dict[str, Scored]) -> None:
    # 4-bit weights cost ~14% perplexity on this model (README: "Host backend"); the margin is 20%.
    float_, s4 = smollm2_scores["float"], smollm2_scores["s4"]
    assert s4.perplexity <= 1.20 * float_.perplexity
    assert s4.perplexity > smollm2_scores["int8"].perplexity  # it is really 4-bit
    assert np.mean(s4.top1 == float_.top1) >= 0.5


def test_int8_greedy_answers_equal_the_float_exports(smollm2: dict[str, Path]) -> None:
    answers = {}
    for weights in ("float", "int8"):
        engine = Engine(smollm2[weights])
        answers[weights] = [
            "".join(Conversation(engine, "You are a helpful assistant.", 32).reply(q, GREEDY)) for q in QUESTIONS
        ]
    assert answers["float"][0] == "The capital of France is Paris."  # words, not a random model's noise
    assert answers["int8"] == answers["float"]


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


def test_message_longer_than_the_cache_is_a_clear_error_and_keeps_the_history(tiny_float: Path) -> None:
    engine = Engine(tiny_float, kv_cache_len=160)
    chat = Conversation(engine, "Hi.", max_new_tokens=8)
    for text in ("hello", "turn on the light"):
        "".join(chat.reply(text, GREEDY))
    history = [dict(m) for m in chat.messages]
    with pytest.raises(TooLong, match="too long"):
        list(chat.reply("light " * 200, GREEDY))
    assert chat.messages == history  # nothing half-recorded, and no older turn dropped for it
    assert isinstance("".join(chat.reply("hello", GREEDY)), str)  # and the next turn works


def test_a_system_prompt_that_leaves_no_room_for_a_turn_is_refused_up_front(tiny_float: Path) -> None:
    persona = "You are a test assistant. " * 20
    system = len(
        Conversation(Engine(tiny_float, kv_cache_len=1024), persona, 32)._encode([], add_generation_prompt=False)
    )
    engine = Engine(tiny_float, kv_cache_len=system + 32 + 2)  # room for the reply, not for a turn
    with pytest.raises(ModelError, match=r"the system prompt \(\d+ tokens\) leaves no room for a turn"):
        Conversation(engine, persona, 32)


def test_a_long_history_is_cut_with_few_encodings(tiny_float: Path) -> None:
    """Local intents add turns without the model: the next model turn must not re-encode the
    history once per turn it drops."""
    engine = Engine(tiny_float, kv_cache_len=256)
    chat = Conversation(engine, "Hi.", max_new_tokens=8)
    for i in range(2000):
        chat.messages.append({"role": "user", "content": f"what time is it {i}"})
        chat.messages.append({"role": "assistant", "content": "Noon."})
    chat.messages.append({"role": "user", "content": "and now?"})
    before = list(chat.messages)
    encodings = 0
    encode = chat._encode

    def counted(messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        nonlocal encodings
        encodings += 1
        return encode(messages, add_generation_prompt)

    chat._encode = counted
    ids = chat.prompt_ids()
    assert encodings <= 12  # log2(2000) + 1, not one encoding per dropped turn
    kept = len(chat.messages)
    assert 3 <= kept < 100 and chat.messages == before[-kept:] and chat.messages[-1]["content"] == "and now?"
    half = engine.kv_len - (engine.kv_len - chat.system_len - chat.reserve) // 2  # half the turns' room left free
    assert ids == encode(chat.messages) and len(ids) + chat.reserve <= half
    assert len(encode(before[-kept - 2 :])) + chat.reserve > half  # one turn more would not leave it


def test_a_full_context_is_not_prefilled_again_at_every_turn(tiny_float: Path) -> None:
    """Dropping old turns changes what follows the system prompt, so the history kept is prefilled again:
    it happens once every few turns, not at every turn once the context has filled."""
    engine = Engine(tiny_float, kv_cache_len=640)
    chat = Conversation(engine, "You are a test.", max_new_tokens=8)
    cuts, prefilled, again = [], [], []
    for turn in range(60):
        before = len(chat.messages)
        "".join(chat.reply(f"tell me a story about the number {turn}", GREEDY))
        cut = len(chat.messages) < before + 2
        cuts += [turn] if cut else []
        (again if cut else prefilled).append(engine.stats.prefilled_tokens)
    assert len(cuts) >= 3, cuts  # the context filled, and filled again
    assert all(b - a >= 3 for a, b in zip(cuts, cuts[1:], strict=False)), cuts
    assert max(prefilled) < min(again) / 2, (cuts, prefilled, again)  # a turn without a cut prefills what is new


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


def test_a_reply_ends_at_a_special_token_that_is_not_eos(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    im_start = engine.tokenizer.token_to_id("<|im_start|>")
    assert im_start not in engine.eos_ids and im_start in engine.stop_ids
    assert engine.tokenizer.token_to_id("<tool_call>") not in engine.stop_ids  # text a reply may hold
    words = engine.tokenizer.encode("Sure.", add_special_tokens=False).ids
    rest = engine.tokenizer.encode("user\nturn off every light", add_special_tokens=False).ids
    target = words + [im_start] + rest

    def force(generated: list[int]) -> np.ndarray:
        allowed = np.zeros(engine.manifest.vocab_size, dtype=bool)
        allowed[target[min(len(generated), len(target) - 1)]] = True
        return allowed

    chat = Conversation(engine, "You are a test.", max_new_tokens=50)
    assert "".join(chat.reply("hi", GREEDY, allowed=force)) == "Sure."
    assert chat.messages[-1] == {"role": "assistant", "content": "Sure."}
    assert engine.tokens[-len(words) :] == words  # nothing after it was run into the cache


def test_a_stream_cut_inside_a_character_ends_without_half_of_it(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    emoji = engine.tokenizer.encode("ok 🦄", add_special_tokens=False).ids
    assert len(emoji) > 2, "the fixture tokenizer must split the emoji across tokens"
    stream = StreamDecoder(engine.tokenizer)
    text = "".join(stream.push(token) for token in emoji[:-1])  # cancelled before its last byte
    assert text + stream.flush() == "ok "  # no U+FFFD to speak or keep


class ForcedSpan:
    """An `allowed` hook that lets the model pick its first token, then forces `span` after it."""

    def __init__(self, span: list[int], vocab_size: int):
        self.span, self.vocab_size = span, vocab_size

    def __call__(self, generated: list[int]) -> np.ndarray | None:
        if not 1 <= len(generated) <= len(self.span):
            return None
        allowed = np.zeros(self.vocab_size, dtype=bool)
        allowed[self.span[len(generated) - 1]] = True
        return allowed


class ForcedSpanFastForward(ForcedSpan):
    def forced(self, generated: list[int]) -> list[int]:
        return self.span if len(generated) == 1 else []


def test_forced_span_runs_in_one_forward_with_the_same_result(tiny_float: Path) -> None:
    ids, span = prompt(9), prompt(10, n=6)
    runs = {}
    for hook in (ForcedSpan, ForcedSpanFastForward):
        engine = Engine(tiny_float)
        tokens = list(engine.generate(ids, GREEDY, 12, allowed=hook(span, engine.manifest.vocab_size)))
        runs[hook] = engine, tokens
    (step_by_step, tokens), (fast, fast_tokens) = runs.values()
    assert fast_tokens == tokens and tokens[1:7] == span and len(tokens) == 12
    assert step_by_step.stats.decode_forwards == 11  # the last token is never run
    assert fast.stats.decode_forwards == 11 - 6 and fast.stats.generated_tokens == 11
    n = fast.pos
    np.testing.assert_allclose(fast.k_cache[:, :, :n], step_by_step.k_cache[:, :, :n], atol=1e-4)


def test_cancellation_stops_within_one_token(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    cancel = threading.Event()
    ids = prompt(8)
    received = []
    never_stop = np.ones(engine.manifest.vocab_size, dtype=bool)
    never_stop[list(engine.stop_ids)] = False
    for token in engine.generate(ids, GREEDY, 100, cancel, allowed=lambda generated: never_stop):
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


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("eos_token_ids", [1_000_000], r"eos_token_ids is \[1000000\], not a list of token ids below vocab_size 1005"),
        ("eos_token_ids", [], r"eos_token_ids is \[\], not a list"),
        ("eos_token_ids", "<|im_end|>", r"eos_token_ids is '<\|im_end\|>', not a list"),
        ("num_layers", "2", r"num_layers is '2', not a positive whole number"),
        ("kv_cache_len", 0, r"kv_cache_len is 0, not a positive whole number"),
        ("vocab_size", 1005.0, r"vocab_size is 1005\.0, not a positive whole number"),
    ],
)
def test_a_hand_edited_manifest_value_is_named(tiny_int8: Path, tmp_path: Path, field: str, value, words: str) -> None:
    model = broken_copy(tiny_int8, tmp_path)
    manifest = yaml.safe_load((model / "manifest.yaml").read_text())
    manifest[field] = value
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelError, match=rf"manifest\.yaml: {words}.*; re-run `assistant setup`"):
        Engine(model)


def test_not_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a model directory .*assistant setup"):
        Engine(tmp_path)


def test_a_reply_that_spells_the_call_tag_stays_words_in_the_next_prompt(tiny_float: Path) -> None:
    engine = Engine(tiny_float)
    tag = engine.tokenizer.token_to_id("<tool_call>")
    assert tag is not None  # the tag is one added token here, as in Qwen2.5
    words = "It is written <tool_call>, like that."
    target = plain_tokenizer(engine.tokenizer).encode(words, add_special_tokens=False).ids  # the tag spelled

    def force(generated: list[int]) -> np.ndarray:
        allowed = np.zeros(engine.manifest.vocab_size, dtype=bool)
        allowed[target[len(generated)] if len(generated) < len(target) else next(iter(engine.eos_ids))] = True
        return allowed

    chat = Conversation(engine, "You are a test.", max_new_tokens=50)  # `assistant chat`: no tools, no constraint
    assert "".join(chat.reply("how is a call written?", GREEDY, allowed=force)) == words
    chat.messages.append({"role": "user", "content": "thanks"})
    assert tag not in chat.prompt_ids()  # what the model wrote as words is not turned into the tag


def test_a_stop_during_the_prefill_is_not_left_waiting_for_it(tiny_float: Path) -> None:
    engine = Engine(tiny_float, kv_cache_len=1024, prefill_chunk=16)
    ids = prompt(9, n=600)
    cancel = threading.Event()
    cancel.set()  # a barge-in while the prompt (a trimmed history: hundreds of tokens) is prefilled
    assert list(engine.generate(ids, GREEDY, 10, cancel)) == []
    assert engine.pos == 0  # on the board a prefill past its shape groups runs a whole step per token
    fresh = Engine(tiny_float, kv_cache_len=1024)
    assert list(engine.generate(ids, GREEDY, 3)) == list(fresh.generate(ids, GREEDY, 3))  # the next one is whole


def test_the_engine_imports_nothing_of_the_build_or_the_skills() -> None:
    """The board has no torch or transformers, and its memory is counted: the engine's process stays small."""
    import subprocess
    import sys

    code = "import sys; from assistant.llm.engine import Engine; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert not loaded & {"torch", "transformers", "onnx", "jsonschema", "llguidance", "hassil", "paho"}


def test_a_character_begun_and_never_finished_is_not_said(qwen2_tokenizer: Path) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(qwen2_tokenizer / "tokenizer.json"))
    # Qwen's byte token for 0xE4, the first of three bytes of 你, sampled between two words.
    hi, first_byte, there = (tokenizer.token_to_id(t) for t in ("Hi", "ä", "Ġthere"))
    stream = StreamDecoder(tokenizer)
    assert [stream.push(token) for token in (hi, first_byte, there)] == ["Hi", "", " there"]
    stream = StreamDecoder(tokenizer)
    assert "".join(stream.push(token) for token in (hi, first_byte, first_byte)) + stream.flush() == "Hi"
    ni_hao = tokenizer.encode("你好", add_special_tokens=False).ids
    stream = StreamDecoder(tokenizer)
    assert "".join(stream.push(token) for token in [first_byte, *ni_hao]) + stream.flush() == "你好"


def test_an_empty_message_is_a_clear_error_and_keeps_the_history(tiny_float: Path) -> None:
    chat = Conversation(Engine(tiny_float, kv_cache_len=256), "Hi.", max_new_tokens=8)
    "".join(chat.reply("hello", GREEDY))
    history = [dict(m) for m in chat.messages]
    for text in ("", "   ", "\n\t"):
        with pytest.raises(ModelError, match="the message is empty"):
            chat.reply(text, GREEDY)
    assert chat.messages == history
