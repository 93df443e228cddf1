"""One turn from the person's words to the reply: tool calls the prompt does not offer, several calls
in one reply, replies with nothing to say, and the history they leave for the next turn."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from assistant import SkillContext, skill
from assistant import turn as turn_module
from assistant.daemon import run
from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from assistant.turn import CANT, NO_ANSWER, TOO_LONG, TurnManager, confirmation
from tests.test_toolcalls import events, light, scripted, set_timer, weather

TIMER_CALL = '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>'


def spoken(seen: list[tuple[str, str]]) -> str:
    """What the person hears (and `assistant say` prints), its pieces as they come."""
    return "".join(text for kind, text in seen if kind in ("text", "error", "confirm"))


@pytest.mark.parametrize("loaded", [False, True])  # every skill disabled, or loaded but left out of the prompt
def test_a_call_written_with_no_tool_in_the_prompt_is_not_run_and_not_an_apology(tiny_int8: Path, loaded: bool) -> None:
    registry = Registry()
    if loaded:
        registry.add_function(set_timer, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, tools=[])
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    for reply, said in [
        (TIMER_CALL, CANT["en"]),
        (f"Sure. {TIMER_CALL}", f"Sure. {CANT['en']}"),  # its words, then that it was not done
        ('<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}\n</tool_call>', CANT["en"]),  # malformed
    ]:
        scripted(engine, reply)
        seen = events(manager, "count down five minutes")
        assert [kind for kind, _ in seen] == ["text"] * len(seen), seen  # nothing run, no apology for a fault
        assert spoken(seen) == said
        # The history holds what was said, not a call the model could take as an example.
        assert conversation.messages[-1] == {"role": "assistant", "content": said}


def test_words_a_skill_said_go_back_to_the_model_with_the_data_of_the_others(tiny_int8: Path) -> None:
    registry = Registry()
    for func in (set_timer, light):
        registry.add_function(func, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    light_call = '<tool_call>\n{"name": "light", "arguments": {"room": "hall", "on": true}}\n</tool_call>'
    scripted(engine, f"{TIMER_CALL}\n{light_call}", "The hall light is on.")
    seen = events(manager, "start a timer and switch on the hall light")
    assert "Timer set for 5 minutes." in spoken(seen) and spoken(seen).endswith("The hall light is on.")
    request, calls, response, reply = conversation.messages
    # Every call of the reply has its response, in order: the words said for one, the data of the other.
    bodies = [json.loads(line) for line in response["content"].split("\n") if line.startswith("{")]
    assert bodies == [
        {"name": "set_timer", "said": "Timer set for 5 minutes."},
        {"name": "light", "content": {"room": "hall", "on": True}},
    ]


def test_a_reply_of_only_whitespace_is_not_silence(tiny_int8: Path) -> None:
    registry = Registry()
    registry.add_function(light, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    light_call = '<tool_call>\n{"name": "light", "arguments": {"room": "hall", "on": true}}\n</tool_call>'
    for replies, said in [
        ((light_call, "\n\n"), NO_ANSWER["en"]),  # after the skill's data went back
        ((f"Let me look.{light_call}", " "), f"Let me look. {NO_ANSWER['en']}"),  # the data still unanswered
        ((" \n ",), NO_ANSWER["en"]),  # at once
    ]:
        scripted(engine, *replies)
        assert spoken(events(manager, "is the hall light on?")) == said
        assert conversation.messages[-1] == {"role": "assistant", "content": NO_ANSWER["en"]}  # as it was heard


def test_words_longer_than_the_context_are_refused_at_once(tiny_int8: Path, tmp_path: Path) -> None:
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)  # their sentences, and Home Assistant's, to match
    engine = Engine(tiny_int8, kv_cache_len=8192)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    # A `say` request may be 64 KB. Matched against the sentence templates first, 10,000 characters
    # of Chinese kept the turn (and every other asker) waiting for about a minute.
    start = time.monotonic()
    assert events(manager, "打开厨房的灯" * 1700) == [("error", TOO_LONG["zh"])]
    assert time.monotonic() - start < 5
    assert events(manager, "add eggs to the shopping list")[-1] == ("text", "Added eggs to the shopping list.")


def test_a_turn_stopped_while_a_skill_fetched_data_does_not_go_on_to_read_it(tiny_int8: Path) -> None:
    stop = threading.Event()

    @skill
    def forecast() -> dict:
        """Tomorrow's weather."""
        stop.set()  # "stop" arrives while the skill runs
        return {"sky": "rain"}

    registry = Registry()
    registry.add_function(forecast, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    scripted(engine, 'Let me see.<tool_call>\n{"name": "forecast", "arguments": {}}\n</tool_call>', "It will rain.")
    seen = [(e.kind, e.text) for e in manager.turn("will it rain tomorrow?", stop)]
    assert seen[-2:] == [("tool_call", "forecast"), ("skill_result", "forecast")]
    # No reply was started for the results: the history holds what was said, and no call without its response.
    assert conversation.messages[-1] == {"role": "assistant", "content": "Let me see."}
    assert "It will rain." not in json.dumps(conversation.messages)
    scripted(engine, "Hello.")
    assert spoken(events(manager, "hello")) == "Hello."  # and the next turn goes on from there
    assert [m["role"] for m in conversation.messages] == ["user", "assistant"] * 2


def test_a_model_that_writes_the_tool_response_itself_is_not_read_out(tiny_int8: Path) -> None:
    registry = Registry()
    registry.add_function(weather, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    call = '<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
    echo = '<tool_response>\n{"name": "weather", "content": {"sky": "sunny", "celsius": 21}}\n</tool_response>'
    # SmolLM2-135M answers the weather's data by copying it, tags and all.
    for reply, said in [(echo, NO_ANSWER["en"]), (f"It is sunny.\n{echo}", "It is sunny.")]:
        scripted(engine, call, reply)
        assert spoken(events(manager, "how is the weather?")).strip() == said
        assert "celsius" not in conversation.messages[-1]["content"]  # the copy is not the model's reply


def test_text_that_is_not_unicode_through_and_through_neither_fails_its_turn_nor_the_next(tiny_int8: Path) -> None:
    registry = Registry()
    engine = Engine(tiny_int8, kv_cache_len=1024)
    conversation = Conversation(engine, "You are a test.", 8)
    manager = TurnManager(conversation, registry, Sampler())
    # A control client may send JSON with half of a surrogate pair ("\ud800"): Python decodes it into
    # the string, the tokenizer cannot take it. It once stayed in the history and failed every later turn.
    for text in ["hello \ud800 there", "hello", "how are you?"]:
        assert "error" not in [kind for kind, _ in events(manager, text)], text
    assert conversation.messages[0]["content"] == "hello ? there"
    before = list(conversation.messages)
    with pytest.raises(TypeError):  # `assistant chat` asks the conversation directly
        list(conversation.reply("hello \ud800 there"))
    assert conversation.messages == before


def test_a_reply_cut_short_inside_a_call_says_why_in_the_log(tiny_int8: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    registry.add_function(set_timer, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 24, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    # The label is free text: a model can write it on until llm.max_new_tokens ends the reply.
    scripted(engine, '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5, "label": "tea tea tea tea')
    assert events(manager, "a timer for the tea")[-1][0] == "error"
    assert "ended inside a tool call" in caplog.text and "llm.max_new_tokens (24)" in caplog.text


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("确定", True),  # the word of the question, 确定要这样做吗？
        ("确定。", True),
        ("好 的", True),  # as a Chinese recogniser writes it, apart
        ("是 的 谢谢", True),
        ("好的好的", True),
        ("好吧", True),
        ("没问题", True),
        ("好的，谢谢", True),
        ("不用了", False),
        ("算了吧", False),
        ("不要了，谢谢", False),
        ("不 要", False),
        ("不行", False),
        ("不，取消", False),  # "no, cancel": no-words one after another, as "no, don't" is a no
        ("不要，不用了", False),
        ("是的，确认", True),
        ("不，好的", None),  # both: neither is taken
        ("好不好", None),
        ("好的，设置一个计时器", None),  # more than an answer
        ("确定要这样做吗", None),
        ("嗯", None),  # a sound, not a yes to unlocking a door
        ("好了", None),  # "that will do", or "enough"
        ("可以了", None),
    ],
)
def test_a_chinese_yes_or_no_is_heard_as_people_say_it(text: str, answer: bool | None) -> None:
    assert confirmation(text) is answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("yes of course", True),
        ("yup", True),
        ("sure thing", True),
        ("yes I'm sure", True),
        ("yeah go for it", True),
        ("alright", True),
        ("of course not", None),  # not a yes: the question is dropped, nothing is done
        ("no of course not", False),
        ("I am", None),
    ],
)
def test_a_yes_or_no_in_english_is_heard_as_people_say_it(text: str, answer: bool | None) -> None:
    assert confirmation(text) is answer


def test_a_turn_ends_within_its_time_however_many_slow_skills_it_calls(
    tiny_int8: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each skill within its own timeout, but the two together past the turn's time: the second one gets
    # what is left, and the turn ends with its apology before the daemon would count it as hung.
    monkeypatch.setattr(turn_module, "TURN_SECONDS", 0.6)
    started = []

    @skill(timeout=0.5, sentences={"en": ["warm the oven"]})
    def warm_oven() -> str:
        """Warm the oven."""
        time.sleep(0.4)
        return "The oven is warm."

    @skill(timeout=0.5, sentences={"en": ["fill the bath"]})
    def fill_bath() -> str:
        """Fill the bath."""
        time.sleep(3)
        return "The bath is full."

    @skill(timeout=0.5, sentences={"en": ["close the blinds"]})
    def close_blinds() -> str:
        """Close the blinds."""
        started.append(True)
        return "The blinds are closed."

    registry = Registry()
    for func in (warm_oven, fill_bath, close_blinds):
        registry.add_function(func, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 64, registry.tools()), registry, Sampler())
    start = time.monotonic()
    said = spoken(events(manager, "warm the oven and fill the bath and close the blinds"))
    assert time.monotonic() - start < 0.75
    assert said == "The oven is warm. Sorry, fill_bath took too long. Not done yet: close the blinds."
    assert not started

    # The model's calls, over its passes, share the turn's time too.
    monkeypatch.setattr(turn_module, "TURN_SECONDS", 0.3)

    @skill(timeout=0.25)
    def forecast() -> dict:
        """Tomorrow's weather."""
        time.sleep(0.2)
        return {"sky": "rain"}

    registry = Registry()
    registry.add_function(forecast, "test")
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)
    call = '<tool_call>\n{"name": "forecast", "arguments": {}}\n</tool_call>'
    scripted(engine, call, call, "It will rain.")
    start = time.monotonic()
    said = spoken(events(manager, "will it rain tomorrow?"))
    assert time.monotonic() - start < 0.45
    assert said == "Sorry, forecast took too long."


def test_a_turn_s_skills_end_before_the_daemon_counts_it_as_hung() -> None:
    # Room is left for the model's reply to the skills' results.
    assert turn_module.TURN_SECONDS + 30 < run.TURN_LIMIT_SECONDS
