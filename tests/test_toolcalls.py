"""Tool calls end to end on the tiny random model: constrained decoding, the turn loop, failures."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Literal

import jsonschema
import numpy as np
import pytest
from tokenizers import Tokenizer

from assistant import Range, skill
from assistant.llm.chat_template import plain_tokenizer
from assistant.llm.conversation import Conversation, assistant_message, is_tool_response
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.constraint import OPEN, ToolCallConstraint, parse_tool_calls, visible_text
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from assistant.turn import NO_ANSWER, RESULTS_TOO_LONG, TOO_LONG, WONT, TurnManager, confirmation


@skill(sentences={"en": ["set a timer for {minutes} minute[s]"]})
def set_timer(minutes: Annotated[int, Range(1, 120)], label: str = "") -> str:
    """Start a countdown timer."""
    return f"Timer set for {minutes} minutes."


@skill
def light(room: Literal["kitchen", "hall"], on: bool) -> dict:
    """Switch a light and report its new state."""
    return {"room": room, "on": on}


@skill(sentences={"en": ["break something"], "zh": ["弄坏它"]})
def broken() -> str:
    """Always fails."""
    raise OSError("the device is unplugged")


@skill(timeout=0.2, sentences={"en": ["take your time"]})
def sleepy() -> str:
    """Never answers in time."""
    time.sleep(5)
    return "too late"


@skill(confirm=True, sentences={"en": ["unlock the door"]})
def unlock_door() -> str:
    """Unlock the front door."""
    return "The door is unlocked."


@skill(confirm=True, sentences={"en": ["open the gate"]}, answers={"en": ["the {gate} [one|gate]"]})
def open_gate(gate: str = "") -> str:
    """Open a gate."""
    return f"The {gate} gate is open." if gate else "Which gate: front or garden?"


@pytest.fixture()
def registry() -> Registry:
    registry = Registry()
    for func in (set_timer, light, broken, sleepy, unlock_door, open_gate):
        registry.add_function(func, "test")
    return registry


class OpeningFirst:
    """Force the reply to open a tool call, then let `hook` (the constraint, or None) decide."""

    def __init__(self, engine: Engine, hook: ToolCallConstraint | None):
        self.opening = engine.tokenizer.encode(OPEN, add_special_tokens=False).ids
        self.vocab_size = engine.manifest.vocab_size
        self.hook = hook

    def reset(self) -> None:
        if self.hook is not None:
            self.hook.reset()

    @property
    def tags_are_text(self) -> bool:
        return self.hook is not None and self.hook.tags_are_text

    def __call__(self, generated: list[int]) -> np.ndarray | None:
        mask = self.hook(generated) if self.hook is not None else None
        if len(generated) < len(self.opening):
            mask = np.zeros(self.vocab_size, dtype=bool)
            mask[self.opening[len(generated)]] = True
        return mask


def generate_calls(engine: Engine, registry: Registry, constrained: bool, count: int) -> list[str]:
    constraint = ToolCallConstraint(
        engine.tokenizer, engine.manifest.vocab_size, sorted(engine.eos_ids), registry.tools()
    )
    prompt = engine.tokenizer.encode("<|im_start|>user\nset a timer<|im_end|>\n<|im_start|>assistant\n").ids
    replies = []
    for seed in range(count):
        hook = OpeningFirst(engine, constraint if constrained else None)
        hook.reset()
        tokens: list[int] = []
        for token in engine.generate(prompt, Sampler(temperature=1.0, seed=seed), 200, allowed=hook):
            tokens.append(token)
            if "</tool_call>" in engine.tokenizer.decode(tokens, skip_special_tokens=False):
                break  # one call is what is measured; the model may go on with text or another call
        replies.append(engine.tokenizer.decode(tokens, skip_special_tokens=False))
    return replies


def valid_call(reply: str, registry: Registry) -> bool:
    _, calls = parse_tool_calls(reply)
    if len(calls) != 1 or "error" in calls[0] or not reply.rstrip().endswith("</tool_call>"):
        return False
    found = registry.skills.get(calls[0]["name"])
    try:
        jsonschema.validate(calls[0]["arguments"], found.parameters)
    except (jsonschema.ValidationError, AttributeError):
        return False
    return True


def test_constrained_calls_always_parse_and_validate(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    constrained = generate_calls(engine, registry, constrained=True, count=100)
    assert sum(valid_call(r, registry) for r in constrained) == 100
    names = {parse_tool_calls(r)[1][0]["name"] for r in constrained}
    assert len(names) >= 3  # the model's own (random) preferences pick among the tools
    unconstrained = generate_calls(engine, registry, constrained=False, count=100)
    assert sum(valid_call(r, registry) for r in unconstrained) < 100


def events(manager: TurnManager, text: str, asker: str | None = None) -> list[tuple[str, str]]:
    return [(e.kind, e.text) for e in manager.turn(text, asker=asker)]


def test_a_reply_the_model_ends_at_once_is_not_silence(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    im_start = engine.tokenizer.token_to_id("<|im_start|>")  # a stop token that is not eos

    def ends_at_once(logits: np.ndarray, tokens: list[int], allowed: np.ndarray | None) -> int:
        return im_start

    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, ends_at_once)
    assert events(manager, "tell me something") == [("text", NO_ANSWER["en"])]
    assert events(manager, "说点什么") == [("text", NO_ANSWER["zh"])]
    assert events(manager, "set a timer for 5 minutes")[-1] == ("text", "Timer set for 5 minutes.")  # intents


def test_a_turn_stopped_while_its_skill_runs_does_not_say_its_reply(tiny_int8: Path) -> None:
    stop = threading.Event()
    ran = []

    @skill(sentences={"en": ["have a rest"]})
    def rest() -> str:
        """Rest a moment."""
        ran.append(True)
        stop.set()  # "stop" arrives while the skill runs
        return "Rested."

    registry = Registry()
    registry.add_function(rest, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    seen = [(e.kind, e.text) for e in manager.turn("have a rest", stop)]
    assert ran and seen == [("tool_call", "rest"), ("skill_result", "rest")]  # done, and nothing said
    assert events(manager, "have a rest") == [("tool_call", "rest"), ("skill_result", "rest"), ("text", "Rested.")]


def test_failing_skills_end_the_turn_with_an_apology(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    assert events(manager, "break something")[-1] == ("error", "Sorry, broken failed: the device is unplugged.")
    assert events(manager, "弄坏它")[-1] == ("error", "抱歉，没办成，原因记在日志里。")  # no English cause
    start = time.monotonic()
    assert events(manager, "take your time")[-1] == ("error", "Sorry, sleepy took longer than 0.2 seconds.")
    assert time.monotonic() - start < 2
    assert events(manager, "set a timer for 5 minutes")[-1] == ("text", "Timer set for 5 minutes.")
    # and a turn for the LLM still works after all that
    reply = events(manager, "tell me something")
    assert all(kind != "error" for kind, _ in reply)


def test_confirmation_is_asked_before_a_guarded_skill(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    assert events(manager, "unlock the door")[-1][0] == "confirm"
    assert events(manager, "no") == [("text", WONT["en"])]
    events(manager, "unlock the door")
    assert events(manager, "Yes, do it.")[-1] == ("text", "The door is unlocked.")
    events(manager, "unlock the door")  # something else instead of an answer: a new request
    assert events(manager, "set a timer for 5 minutes")[-1] == ("text", "Timer set for 5 minutes.")
    assert "The door is unlocked." not in [text for _, text in events(manager, "yes")]
    # Confirmed, then asked which: the answer is not asked to be confirmed again.
    assert events(manager, "open the gate")[-1][0] == "confirm"
    assert events(manager, "yes")[-1] == ("text", "Which gate: front or garden?")
    assert events(manager, "the garden one")[-1] == ("text", "The garden gate is open.")
    too_long = events(manager, "light " * 3000)  # more than the context holds, even alone
    assert too_long == [("error", TOO_LONG["en"])]


def test_each_asker_has_a_conversation_of_its_own(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    prompt = lambda: engine.tokenizer.decode(engine.tokens, skip_special_tokens=False)  # noqa: E731
    events(manager, "my PIN is 4711", asker="kitchen")
    events(manager, "what did the other one say?", asker="phone")
    assert "what did the other one say?" in prompt() and "4711" not in prompt()  # another client's words
    events(manager, "and what is my PIN?")  # the microphone
    assert "4711" not in prompt() and "the other one" not in prompt()
    events(manager, "what is my PIN?", asker="kitchen")
    assert "my PIN is 4711" in prompt() and "what is my PIN?" in prompt()  # its own are kept
    manager.forget("kitchen")  # the connection closed
    events(manager, "hello again", asker="kitchen")
    assert "4711" not in prompt()


@pytest.mark.parametrize(
    ("answer", "meaning"),
    [("yes", True), ("Yes please!", True), ("go ahead", True), ("OK, do it.", True), ("好的。", True),
     ("no", False), ("No thanks.", False), ("don't", False), ("cancel", False), ("不要", False),
     ("what time is it", None), ("please", None), ("do you hear me", None), ("好的天气", None)],
)  # fmt: skip
def test_answers_to_a_confirmation(answer: str, meaning: bool | None) -> None:
    assert confirmation(answer) is meaning


def test_model_call_with_data_goes_back_for_a_second_pass(tiny_int8: Path) -> None:
    registry = Registry()
    registry.add_function(light, "test")  # returns data, not text: the model gets it back
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 60, registry.tools())
    assert "\nlight(room: kitchen|hall, on: bool): " in conversation.system["content"]  # one line a tool
    manager = TurnManager(conversation, registry, Sampler(temperature=1.0, seed=3))
    manager.constraint = OpeningFirst(engine, manager.constraint)  # this model would not call on its own
    seen = list(manager.turn("is the kitchen light on?"))
    calls = [e for e in seen if e.kind == "tool_call"]
    results = [e for e in seen if e.kind == "skill_result"]
    assert len(calls) == len(results) == 3  # every pass calls again here, up to the limit
    assert all(r.data == {"room": c.data["room"], "on": c.data["on"]} for c, r in zip(calls, results, strict=True))
    responses = [m for m in conversation.messages if m["content"].startswith("<tool_response>")]
    assert len(responses) == 2  # results of the first two passes went back to the model
    assert whole_exchanges(conversation.messages)  # the last call, whose results did not, is not kept
    assert json.loads(responses[0]["content"].split("\n")[1]) == {"name": "light", "content": results[0].data}


@skill(sentences={"en": ["what's the weather"]})
def weather() -> dict:
    """Today's weather, for the model to put in words."""
    return {"sky": "sunny", "celsius": 21}


@skill(confirm=True, sentences={"en": ["read the door log"]})
def door_log() -> list:
    """Who opened the door today."""
    return ["Anna at 7:10"]


def test_data_from_a_local_intent_or_a_confirmed_call_is_put_in_words_by_the_model(tiny_int8: Path) -> None:
    registry = Registry()
    for func in (weather, door_log):
        registry.add_function(func, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 60, registry.tools())
    manager = TurnManager(conversation, registry, Sampler())
    scripted(engine, "It is sunny, 21 degrees.")
    seen = events(manager, "what's the weather")
    assert seen[:2] == [("tool_call", "weather"), ("skill_result", "weather")]
    assert "".join(text for kind, text in seen[2:] if kind == "text") == "It is sunny, 21 degrees."
    request, call, response, reply = conversation.messages
    assert request == {"role": "user", "content": "what's the weather"}
    assert json.loads(call["content"].split("\n")[1]) == {"name": "weather", "arguments": {}}  # as the model calls
    assert json.loads(response["content"].split("\n")[1]) == {"name": "weather", "content": weather()}
    assert reply["content"] == "It is sunny, 21 degrees."
    scripted(engine, "Anna opened it at 7:10.")
    assert events(manager, "read the door log")[-1][0] == "confirm"
    assert "".join(text for kind, text in events(manager, "yes") if kind == "text") == "Anna opened it at 7:10."


def test_parse_and_visible_text() -> None:
    call = '{"name": "light", "arguments": {"room": "hall", "on": true}}'
    reply = f"Sure. <tool_call>\n{call}\n</tool_call> And <tool_call>\n{{bad json}}\n</tool_call>done"
    spoken, calls = parse_tool_calls(reply)
    assert spoken == "Sure.  And done"
    assert calls[0] == {"name": "light", "arguments": {"room": "hall", "on": True}}
    assert calls[1]["error"].startswith("malformed tool call")
    assert visible_text("Okay <tool") == "Okay "  # could be a call opening: held back
    assert visible_text("Okay <b") == "Okay <b"
    assert visible_text("Okay <tool", finished=True) == "Okay <tool"
    assert visible_text('A <tool_call>\n{"name"') == "A "
    stray = "Done.</tool_call> Bye </tool_cat"  # a closing tag outside a call is markup, never speech
    assert visible_text(stray, finished=True) == "Done. Bye </tool_cat"
    assert visible_text("Done.</tool_c") == "Done."  # could be that tag: held back
    for text in (reply, stray):
        previous = ""
        for end in range(len(text) + 1):  # what may be spoken only ever grows
            now = visible_text(text[:end])
            assert now.startswith(previous), (text[:end], previous)
            previous = now


def test_repeat_says_the_last_reply_again(tiny_int8: Path, tmp_path: Path) -> None:
    from assistant import SkillContext

    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    engine = Engine(tiny_int8, kv_cache_len=8192)  # every built-in tool in the tiny tokenizer's prompt
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    assert events(manager, "repeat that") == [("tool_call", "repeat"), ("skill_result", "repeat"),
                                              ("text", "I haven't said anything yet.")]  # fmt: skip
    said = events(manager, "add eggs to the shopping list")[-1]
    assert said == ("text", "Added eggs to the shopping list.")
    assert events(manager, "say that again")[-1] == said
    assert events(manager, "stop") == [("tool_call", "stop"), ("skill_result", "stop")]  # and nothing is said


def test_a_request_in_chinese_is_answered_in_chinese(tiny_int8: Path, tmp_path: Path) -> None:
    from assistant import SkillContext

    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    engine = Engine(tiny_int8, kv_cache_len=8192)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())

    def said(text: str) -> str:
        return "".join(t for kind, t in events(manager, text) if kind in ("text", "error", "confirm"))

    assert said("把牛奶加到购物清单") == "已把牛奶加到购物清单。"
    assert said("购物清单上有什么") == "购物清单上有：牛奶。"
    assert said("what's on the shopping list") == "On your shopping list: 牛奶."  # each request its own language
    assert said("再说一遍") == "On your shopping list: 牛奶."  # the reply as it was said
    now = said("现在几点")
    assert re.fullmatch(r"现在是(凌晨|早上|上午|中午|下午|晚上)\d{1,2}点(\d\d分)?。", now), now
    assert re.fullmatch(r"今天是\d{4}年\d{1,2}月\d{1,2}日，星期[一二三四五六日]。", said("今天几号"))
    assert said("音量调到150") == "抱歉，这个数要在0到100之间。"
    assert said("音量调到30") == "音量30%。"
    assert said("清空购物清单") == "确定要这样做吗？"
    assert said("不要") == WONT["zh"]
    registry.context.skills = lambda: list(registry.skills.values())
    can = said("你能做什么")
    assert can.startswith("我可以") and "报时" in can and "购物清单" in can and not re.search(r"[A-Za-z]", can)


class OpeningFirstFastForward(OpeningFirst):
    """OpeningFirst that also passes on the constraint's forced spans, so the engine fast-forwards."""

    def forced(self, generated: list[int]) -> list[int]:
        return self.hook.forced(generated) if len(generated) >= len(self.opening) else []


def test_forced_spans_of_a_call_run_in_one_forward(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    vocab, eos = engine.manifest.vocab_size, sorted(engine.eos_ids)
    constraint = ToolCallConstraint(engine.tokenizer, vocab, eos, registry.tools())
    prompt = engine.tokenizer.encode("<|im_start|>user\nset a timer<|im_end|>\n<|im_start|>assistant\n").ids
    tokens_run = forwards = 0
    for seed in range(20):
        hook = OpeningFirstFastForward(engine, constraint)
        hook.reset()
        tokens: list[int] = []
        for token in engine.generate(prompt, Sampler(temperature=1.0, seed=seed), 200, allowed=hook):
            tokens.append(token)
            if "</tool_call>" in engine.tokenizer.decode(tokens, skip_special_tokens=False):
                break
        assert valid_call(engine.tokenizer.decode(tokens, skip_special_tokens=False), registry)
        tokens_run += engine.stats.generated_tokens
        forwards += engine.stats.decode_forwards
    # `{"name": "`, `", "arguments": {"`, the rest of a name once it is unambiguous ... come at once.
    assert tokens_run / forwards > 2


def qwen_tokenizers(folder: Path) -> tuple[Tokenizer, Tokenizer]:
    """The real Qwen BPE as Qwen2.5 has it (<tool_call> one added token) and as Qwen2-0.5B-Instruct has
    it: the same vocabulary with only <|endoftext|>, <|im_start|> and <|im_end|> added."""
    spec = json.loads((folder / "tokenizer.json").read_text())
    with_tags = Tokenizer.from_str(json.dumps(spec))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in QWEN2_ADDED]
    return with_tags, Tokenizer.from_str(json.dumps(spec))


QWEN2_ADDED = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_VOCAB = 151936


def constrained_steps(constraint: ToolCallConstraint, ids: list[int]) -> tuple[int, int | None]:
    """How many of `ids` were decided under the grammar, and the first one it refused (None: all allowed)."""
    steps = 0
    for i, token in enumerate(ids):
        allowed = constraint(ids[:i])
        if allowed is not None:
            steps += 1
            if not allowed[token]:
                return steps, token
    return steps, None


def test_calls_are_constrained_whether_the_tag_is_a_token_or_text(qwen2_tokenizer: Path) -> None:
    tools = [{"type": "function", "function": {"name": "set_timer", "description": "Start a timer.",
              "parameters": set_timer_schema()}}]  # fmt: skip
    call = '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 500}}\n</tool_call>'  # over its 120
    for tokenizer in qwen_tokenizers(qwen2_tokenizer):
        eos = [tokenizer.token_to_id("<|im_end|>")]
        constraint = ToolCallConstraint(tokenizer, QWEN_VOCAB, eos, tools)
        ids = tokenizer.encode(call, add_special_tokens=False).ids
        steps, refused = constrained_steps(constraint, ids)
        assert steps > 10 and tokenizer.decode([refused]) == "0"  # 5, 50, then 500: over the bound, refused
        constraint.reset()
        fine = tokenizer.encode(call.replace("500", "50"), add_special_tokens=False).ids
        assert constrained_steps(constraint, fine)[1] is None

    with_tags, _ = qwen_tokenizers(qwen2_tokenizer)
    constraint = ToolCallConstraint(with_tags, QWEN_VOCAB, [with_tags.token_to_id("<|im_end|>")], tools)
    prose = plain_tokenizer(with_tags).encode("You typed <tool_call> and a newline.\n", add_special_tokens=False).ids
    assert constrained_steps(constraint, prose) == (0, None)  # spelling the tag in text is not opening a call


def set_timer_schema() -> dict:
    registry = Registry()
    registry.add_function(set_timer, "test")
    return registry.skills["set_timer"].parameters


def test_a_closing_tag_inside_an_argument_is_part_of_the_call() -> None:
    call = '{"name": "note", "arguments": {"text": "use </tool_call> to close"}}'
    reply = f"Sure. <tool_call>\n{call}\n</tool_call> Done."
    spoken, calls = parse_tool_calls(reply)
    assert spoken == "Sure.  Done."
    assert calls == [{"name": "note", "arguments": {"text": "use </tool_call> to close"}}]
    assert visible_text(reply[: reply.index(" to close")]) == "Sure. "  # streaming: the call is still open
    assert visible_text(reply, finished=True) == "Sure.  Done."
    markup = [part for part, is_markup in assistant_message(reply)["parts"] if is_markup]
    assert markup == ["<tool_call>", "</tool_call>"]  # the tag in the argument stays the user's text


def scripted(engine: Engine, *texts: str, spelled: bool = False) -> None:
    """Make the model say `texts`, one a reply and the last one from then on (the tiny random model
    cannot be asked to), token by token through the engine's real prefill and its `allowed` hook,
    which must allow every token. `spelled`: the tags in them as ordinary tokens, not as the tag tokens."""
    tokenizer = plain_tokenizer(engine.tokenizer) if spelled else engine.tokenizer
    replies = list(texts)

    def generate(prompt, sampler, max_new_tokens, cancel=None, allowed=None):
        engine.prefill(prompt)
        text = replies.pop(0) if len(replies) > 1 else replies[0]
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        for i, token in enumerate(ids):
            mask = allowed(ids[:i]) if allowed else None
            assert mask is None or mask[token], engine.tokenizer.decode([token])
            yield token

    engine.generate = generate


def test_a_reply_that_only_spells_the_tag_is_said_not_run(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    assert engine.tokenizer.token_to_id(OPEN) is not None  # the tag is a token here, as in Qwen2.5
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    text = 'You typed <tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call> there.'
    scripted(engine, text, spelled=True)
    seen = [(e.kind, e.text) for e in manager.turn("what does <tool_call> mean?")]
    assert "tool_call" not in [kind for kind, _ in seen]  # nothing ran
    assert "".join(t for kind, t in seen if kind == "text") == text  # it was all said
    assert "parts" not in conversation.messages[-1]  # and kept as words, not as the tag token


def test_skill_results_too_long_to_read_are_not_blamed_on_the_person(tiny_int8: Path) -> None:
    @skill
    def everything() -> dict:
        """Return a lot of data."""
        return {"items": ["milk and honey"] * 500}  # under the 10,000 characters a result may have: the turn judges it

    registry = Registry()
    registry.add_function(everything, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 64, registry.tools()), registry, Sampler())
    scripted(engine, '<tool_call>\n{"name": "everything", "arguments": {}}\n</tool_call>')
    seen = [(e.kind, e.text) for e in manager.turn("read me everything")]
    assert seen[-1] == ("error", RESULTS_TOO_LONG["en"]) and TOO_LONG["en"] not in [t for _, t in seen]
    # The call is not left in the history without its response: what was said stands in for it.
    request, answer = manager.conversation.messages
    assert request["content"] == "read me everything" and answer == {"role": "assistant", "content": seen[-1][1]}


def test_a_call_whose_skill_only_speaks_leaves_what_it_said_in_the_history(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    scripted(engine, 'Sure.<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>')
    seen = events(manager, "count down five minutes")
    assert "".join(text for kind, text in seen if kind == "text") == "Sure. Timer set for 5 minutes."  # no tag; apart
    # Nothing went back to the model: the call is not left in the history without a response.
    assert conversation.messages[-1] == {"role": "assistant", "content": "Sure. Timer set for 5 minutes."}
    scripted(engine, '<tool_call>\n{"name": "unlock_door", "arguments": {}}\n</tool_call>')
    question = events(manager, "let me in")[-1]
    assert question[0] == "confirm" and conversation.messages[-1] == {"role": "assistant", "content": question[1]}
    events(manager, "yes")
    assert [m["role"] for m in conversation.messages] == ["user", "assistant"] * 3
    assert conversation.messages[-1]["content"] == "The door is unlocked."


@skill(sentences={"en": ["read the log"]})
def read_log() -> dict:
    """A long result for the model to put in words."""
    return {"lines": ["the door opened at seven and closed again"] * 5}


def whole_exchanges(messages: list[dict]) -> bool:
    """Whether the history starts with the person's words and every call in it has its response."""
    starts = not messages or (messages[0]["role"] == "user" and not is_tool_response(messages[0]))
    calls = [i for i, m in enumerate(messages) if m["role"] == "assistant" and OPEN in m["content"]]
    return starts and all(i + 1 < len(messages) and is_tool_response(messages[i + 1]) for i in calls)


def test_hundreds_of_turns_of_several_askers_keep_whole_exchanges(tiny_int8: Path, registry: Registry) -> None:
    registry.add_function(read_log, "test")
    engine = Engine(tiny_int8, kv_cache_len=512)
    conversation = Conversation(engine, "You are a test.", 48, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(temperature=1.0, seed=5))
    constraint, calling = manager.constraint, OpeningFirst(engine, manager.constraint)
    system = len(engine.prompt_cache.tokens)
    for turn in range(240):
        asker = ("kitchen", "phone", None)[turn % 3]
        manager.constraint = calling if turn % 5 == 0 else constraint  # the model calls a skill now and then
        text = "read the log" if turn % 4 == 0 else f"tell me about the number {turn} " * (turn % 7 + 1)
        assert list(manager.turn(text, asker=asker)), turn
        assert all(whole_exchanges(messages) for messages in manager.histories.values()), turn
        assert manager.histories[asker][-1]["role"] == "assistant"
        assert engine.stats.prompt_tokens - engine.stats.prefilled_tokens >= system  # never prefilled again


def test_a_reply_that_ends_on_the_opening_tag_opened_a_call(tiny_int8: Path, registry: Registry) -> None:
    """The tag as the reply's last token (at max_new_tokens): the engine asks the constraint nothing after
    it, yet it opened a call: neither said as the words "<tool_call>" nor left open in the history."""
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 3, registry.tools())
    tag, greedy = engine.tokenizer.token_to_id(OPEN), Sampler()

    def tag_last(logits: np.ndarray, history: list[int], allowed: np.ndarray | None) -> int:
        done = len(history) - engine.stats.prompt_tokens
        return tag if done == 2 else greedy(logits, history, allowed)

    manager = TurnManager(conversation, registry, tag_last, intents=False)
    said = "".join(event.text for event in manager.turn("tell me a story") if event.kind == "text")
    assert OPEN not in said and OPEN not in conversation.messages[-1]["content"], (said, conversation.messages)


def test_a_reply_stopped_inside_a_call_leaves_no_call_in_the_history(tiny_int8: Path, registry: Registry) -> None:
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    stop, greedy = threading.Event(), Sampler()

    def barge_in_at_the_fifth_token(logits: np.ndarray, history: list[int], allowed: np.ndarray | None) -> int:
        stop.set() if len(history) - engine.stats.prompt_tokens == 4 else None
        return greedy(logits, history, allowed)

    manager = TurnManager(conversation, registry, barge_in_at_the_fifth_token, intents=False)
    manager.constraint = OpeningFirst(engine, manager.constraint)
    assert list(manager.turn("set a timer for ten minutes", stop)) == []
    assert conversation.messages == [
        {"role": "user", "content": "set a timer for ten minutes"},
        {"role": "assistant", "content": ""},
    ]
