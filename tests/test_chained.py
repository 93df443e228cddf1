"""Several requests in one sentence ("set an alarm for 7 and a timer for 5 minutes"): each done in
order as one turn, or the whole sentence left to the model; never a wrong half of it."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from assistant import skill
from assistant.config import MqttSettings, Settings
from assistant.llm.conversation import Conversation, is_tool_response
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.constraint import OPEN
from assistant.skills.intents import IntentMatcher
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from assistant.skills.sdk import SkillContext
from assistant.turn import TurnManager, confirmation
from tests.test_intents import DEVICES
from tests.test_toolcalls import open_gate, scripted, unlock_door, weather


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory) -> IntentMatcher:
    settings = Settings(mqtt=MqttSettings(devices=DEVICES))
    state = tmp_path_factory.mktemp("state")
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=state))
    registry.load_folder(BUILTIN_SKILLS)
    return IntentMatcher(registry.skills, DEVICES)


def parts(matcher: IntentMatcher, text: str) -> list[tuple[str, dict]] | None:
    found = matcher.match(text)
    return None if found is None else [(part.skill, part.arguments) for part in [found, *found.then]]


LAMP_ON = ("switch_device", {"device": "卧室灯", "on": True})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("set an alarm for 7 and a timer for 5 minutes", [("set_alarm", {"hour": 7}), ("set_timer", {"minutes": 5})]),
        ("set a timer for 5 minutes and turn on the kitchen light",
         [("set_timer", {"minutes": 5}), ("switch_device", {"device": "kitchen light", "on": True})]),
        ("turn off the bedroom lamp then set an alarm for 6:30 am",
         [("switch_device", {"device": "bedroom lamp", "on": False}), ("set_alarm", {"hour": 6, "minute": 30})]),
        ("set a timer for 5 minutes and then turn off the kitchen light, also add milk to my shopping list",
         [("set_timer", {"minutes": 5}), ("switch_device", {"device": "kitchen light", "on": False}),
          ("add_item", {"text": "milk", "list": "shopping"})]),
        ("set a timer for 5 minutes and a pasta timer for 10 minutes",
         [("set_timer", {"minutes": 5}), ("set_timer", {"label": "pasta", "minutes": 10})]),
        ("set a timer for 10 minutes and a rock and roll timer for 5 minutes",
         [("set_timer", {"minutes": 10}), ("set_timer", {"label": "rock and roll", "minutes": 5})]),
        ("set a 10 minute timer and a 5 minute timer", [("set_timer", {"minutes": 10}), ("set_timer", {"minutes": 5})]),
        ("set a 10 minute pasta timer and a 5 minute egg timer",
         [("set_timer", {"minutes": 10, "label": "pasta"}), ("set_timer", {"minutes": 5, "label": "egg"})]),
        ("set a 10 minute pasta timer and turn on the kitchen light",
         [("set_timer", {"minutes": 10, "label": "pasta"}),
          ("switch_device", {"device": "kitchen light", "on": True})]),
        # "and" right after the note's words is no part of the note: "take a note" asks what to note.
        ("take a note and set a timer for 5 minutes",
         [("add_item", {"list": "notes", "text": ""}), ("set_timer", {"minutes": 5})]),
        ("take a note that I need stamps and turn on the kitchen light",
         [("add_item", {"text": "I need stamps", "list": "notes"}),
          ("switch_device", {"device": "kitchen light", "on": True})]),
        # Typed: the end of a sentence, and any punctuation before "then".
        ("set a timer for 5 minutes. Turn on the kitchen light.",
         [("set_timer", {"minutes": 5}), ("switch_device", {"device": "kitchen light", "on": True})]),
        ("set a timer for 5 minutes; then turn on the kitchen light",
         [("set_timer", {"minutes": 5}), ("switch_device", {"device": "kitchen light", "on": True})]),
        ("what time is it? set a timer for 5 minutes", [("current_time", {}), ("set_timer", {"minutes": 5})]),
        ("打开卧室灯。设置一个10分钟的计时器", [LAMP_ON, ("set_timer", {"minutes": 10})]),
        ("设置一个10分钟的计时器然后打开卧室灯", [("set_timer", {"minutes": 10}), LAMP_ON]),
        ("打开卧室灯，设置一个10分钟的计时器", [LAMP_ON, ("set_timer", {"minutes": 10})]),
        ("打开卧室灯再设置一个10分钟的计时器", [LAMP_ON, ("set_timer", {"minutes": 10})]),
        ("把牛奶加到购物清单再打开卧室灯", [("add_item", {"text": "牛奶", "list": "shopping"}), LAMP_ON]),
        ("记一下买邮票并且关掉卧室灯", [("add_item", {"text": "买邮票", "list": "notes"}),
                                       ("switch_device", {"device": "卧室灯", "on": False})]),
        # A note ends where its sentence does.
        ("add a note buy milk. set a timer for 5 minutes",
         [("add_item", {"text": "buy milk", "list": "notes"}), ("set_timer", {"minutes": 5})]),
        ("take a note that I need stamps! Turn on the kitchen light.",
         [("add_item", {"text": "I need stamps", "list": "notes"}),
          ("switch_device", {"device": "kitchen light", "on": True})]),
        ("记一下买牛奶。 设置一个10分钟的计时器", [("add_item", {"text": "买牛奶", "list": "notes"}),
                                                 ("set_timer", {"minutes": 10})]),
        ("take a note call the plumber. He comes at 5. The code is 1234. Buy milk. Set a timer for 5 minutes",
         [("add_item", {"text": "call the plumber. He comes at 5. The code is 1234. Buy milk", "list": "notes"}),
          ("set_timer", {"minutes": 5})]),
        # As a Chinese recogniser writes the words, apart.
        ("记 一下 买 牛奶 然后 设置 一个 十 分钟 的 计时器", [("add_item", {"text": "买牛奶", "list": "notes"}),
                                                              ("set_timer", {"minutes": 10})]),
    ],
)  # fmt: skip
def test_requests_joined_in_one_sentence_are_each_matched_in_order(
    matcher: IntentMatcher, text: str, expected: list
) -> None:
    assert parts(matcher, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("set a timer for 1 hour and 30 minutes", ("set_timer", {"hours": 1, "minutes": 30})),
        ("set a timer for 5 minutes and 30 seconds", ("set_timer", {"minutes": 5, "seconds": 30})),
        ("set a rock and roll timer for 10 minutes", ("set_timer", {"label": "rock and roll", "minutes": 10})),
        ("add bread and butter to the shopping list", ("add_item", {"text": "bread and butter", "list": "shopping"})),
        ("note that I should call mom and dad", ("add_item", {"text": "I should call mom and dad", "list": "notes"})),
        ("把面包和黄油加到购物清单", ("add_item", {"text": "面包和黄油", "list": "shopping"})),
        ("再说一遍", ("repeat", {})),
        # 再 and 和 right after free text are its words ("again", "with"), not a second request.
        ("记一下明天再打开卧室灯", ("add_item", {"text": "明天再打开卧室灯", "list": "notes"})),
        ("记一下周五和小王打开会议室", ("add_item", {"text": "周五和小王打开会议室", "list": "notes"})),
        # A note of two sentences, the second no request of its own: one note, as typed.
        ("take a note the plumber comes at 5. Call him back.",
         ("add_item", {"text": "the plumber comes at 5. Call him back", "list": "notes"})),
        ("set an alarm for 7", ("set_alarm", {"hour": 7})),
    ],
)  # fmt: skip
def test_and_inside_one_request_keeps_its_meaning(matcher: IntentMatcher, text: str, expected: tuple) -> None:
    assert parts(matcher, text) == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "set an alarm for 7 and order a pizza",  # one part for the model: all of it goes there
        "turn on the kitchen light and tell me a joke",
        "set a timer for 5 minutes and what is the capital of France",
        "set a blah and a pasta timer for 10 minutes",  # a label that would swallow a request of its own
        "turn on the kitchen and living room lights",
        "打开卧室灯然后讲个笑话",
    ],
)
def test_a_sentence_with_a_part_not_understood_goes_whole_to_the_model(matcher: IntentMatcher, text: str) -> None:
    assert matcher.match(text) is None


def test_a_sentence_of_many_joined_words_is_matched_in_milliseconds(matcher: IntentMatcher) -> None:
    sentence = "and then, also ".join(["tell me about cats"] * 12)
    start = time.perf_counter()
    assert matcher.match(sentence) is None
    assert time.perf_counter() - start < 0.5


def manager_for(tiny_int8: Path, state: Path, *extra) -> TurnManager:
    settings = Settings(mqtt=MqttSettings(devices=DEVICES))
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=state))
    registry.load_folder(BUILTIN_SKILLS)
    for function in extra:
        registry.add_function(function, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    return TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())


def said(manager: TurnManager, text: str) -> str:
    return "".join(e.text for e in manager.turn(text) if e.kind in ("text", "error", "confirm"))


def test_each_request_of_a_sentence_is_done_and_confirmed_in_one_turn(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    cached = list(manager.conversation.engine.tokens)
    reply = said(manager, "set an alarm for 7 and a timer for 5 minutes")
    assert re.fullmatch(r"Alarm set for 7:00( tomorrow)?\. Timer set for 5 minutes\.", reply), reply
    assert manager.conversation.engine.tokens == cached  # the model ran no token
    listed = said(manager, "what timers do I have")
    assert "a timer with 5 minutes left, an alarm at 7:00" in listed and "alarm for 7" not in listed
    # The history holds the sentence once and the whole reply.
    assert manager.conversation.messages[-4:-2] == [
        {"role": "user", "content": "set an alarm for 7 and a timer for 5 minutes"},
        {"role": "assistant", "content": reply},
    ]
    assert said(manager, "repeat that").startswith("You have")  # the last reply, the list
    assert said(manager, "打开卧室灯，设置一个10分钟的计时器").endswith("已设好10分钟的计时器。")


def test_a_sentence_with_a_part_not_understood_is_answered_by_the_model(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    scripted(manager.conversation.engine, "I cannot order food.")
    assert said(manager, "set an alarm for 7 and order a pizza") == "I cannot order food."
    assert said(manager, "what timers do I have") == "No timers or alarms are set."  # no half of it was done


def test_a_chain_stops_at_a_part_that_asks_and_says_what_is_left(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    said(manager, "add milk to the shopping list")
    reply = said(manager, "set a timer for 5 minutes and clear the shopping list and turn on the kitchen light")
    assert reply == (
        "Timer set for 5 minutes. Not done yet: turn on the kitchen light. "
        "Do you really want me to run clear shopping list?"
    )
    assert said(manager, "yes") == "The shopping list is empty."  # the question is answered as usual
    # A skill's own question ("How long should the timer run?") stops it too, and its answer is heard.
    reply = said(manager, "turn on the kitchen light and set a timer and set an alarm for 7")
    assert reply.endswith("Not done yet: set an alarm for 7. How long should the timer run?"), reply
    assert said(manager, "10 minutes") == "Timer set for 10 minutes."
    assert "alarm" not in said(manager, "what timers do I have")
    # "Which one?"
    said(manager, "set a pasta timer for 10 minutes")
    reply = said(manager, "Cancel the timer, then set an alarm for 7.")
    assert reply.startswith("Not done yet: set an alarm for 7. You have 3 timers: ") and reply.endswith("Which one?")
    assert said(manager, "the pasta one") == "Cancelled the pasta timer."
    assert "alarm" not in said(manager, "what timers do I have")


def test_a_label_with_and_in_it_stays_one_label(tiny_int8: Path, tmp_path: Path) -> None:
    played = []

    @skill(sentences={"en": ["play [the] {playlist} playlist"]})
    def music(playlist: str) -> str:
        """Play a playlist.

        Args:
            playlist: its name
        """
        played.append(playlist)
        return f"Playing {playlist}."

    manager = manager_for(tiny_int8, tmp_path, music)
    assert said(manager, "play the rock and roll playlist") == "Playing rock and roll."
    assert (
        said(manager, "play the jazz playlist and set a timer for 5 minutes")
        == "Playing jazz. Timer set for 5 minutes."
    )
    assert played == ["rock and roll", "jazz"]


def test_a_stop_while_a_request_runs_leaves_the_ones_after_it_undone(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    cancel = threading.Event()
    for event in manager.turn("set a timer for 5 minutes and set an alarm for 7", cancel):
        if event.kind == "skill_result":
            cancel.set()  # "stop", said while the timer was being set
    assert said(manager, "what timers do I have") == "You have a timer with 5 minutes left."


def test_data_from_a_request_of_a_chain_is_put_in_words_by_the_model_after_the_others(
    tiny_int8: Path, tmp_path: Path
) -> None:
    manager = manager_for(tiny_int8, tmp_path, weather)
    scripted(manager.conversation.engine, "Sunny, 21 degrees.")
    assert (
        said(manager, "set a timer for 5 minutes and what's the weather")
        == "Timer set for 5 minutes. Sunny, 21 degrees."
    )
    roles = [m["role"] for m in manager.conversation.messages]
    # The request, what was said, the call whose data the model read, its results and the model's words.
    assert roles[-5:-1] == ["user", "assistant", "assistant", "user"] and manager.conversation.messages[-4] == {
        "role": "assistant",
        "content": "Timer set for 5 minutes.",
    }
    assert manager.conversation.messages[-1]["content"] == "Sunny, 21 degrees."


@skill(sentences={"en": ["how full is the bin"]})
def bin_level() -> dict:
    """How full the kitchen bin is, for the model to put in words."""
    return {"percent": 80}


def test_data_from_two_requests_of_a_chain_goes_back_in_one_call_turn_and_its_response(
    tiny_int8: Path, tmp_path: Path
) -> None:
    """Each call in the history is followed by its tool response: two calls are one turn with two tags."""
    manager = manager_for(tiny_int8, tmp_path, weather, bin_level)
    scripted(manager.conversation.engine, "Sunny, and the bin is nearly full.")
    assert said(manager, "what's the weather and how full is the bin") == "Sunny, and the bin is nearly full."
    request, calls, results, words = manager.conversation.messages[-4:]
    assert (request["role"], calls["role"], words["role"]) == ("user", "assistant", "assistant")
    assert calls["content"].count(OPEN) == 2 and '"weather"' in calls["content"] and '"bin_level"' in calls["content"]
    assert is_tool_response(results) and "80" in results["content"] and "21" in results["content"]


def test_an_answer_to_which_one_joined_to_a_request_answers_it_and_does_the_request(
    tiny_int8: Path, tmp_path: Path
) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    said(manager, "set a timer for 5 minutes")
    said(manager, "set a pasta timer for 10 minutes")
    assert said(manager, "cancel the timer").endswith("Which one?")
    cached = list(manager.conversation.engine.tokens)
    assert said(manager, "the pasta one and set an alarm for 7").startswith(
        "Cancelled the pasta timer. Alarm set for 7:00"
    )
    assert manager.conversation.engine.tokens == cached  # the model ran no token
    listed = said(manager, "what timers do I have")
    assert "pasta" not in listed and "an alarm at 7:00" in listed


def test_a_request_joined_to_the_answer_of_a_confirmed_call_asks_its_own_confirmation(
    tiny_int8: Path, tmp_path: Path
) -> None:
    manager = manager_for(tiny_int8, tmp_path, open_gate, unlock_door)
    assert said(manager, "open the gate") == "Do you really want me to run open gate?"
    assert said(manager, "yes") == "Which gate: front or garden?"
    reply = said(manager, "the garden one and unlock the door")
    assert reply == "The garden gate is open. Do you really want me to run unlock door?"


def test_requests_starting_with_cancel_or_stop_are_no_mere_no_to_a_confirmation(
    tiny_int8: Path, tmp_path: Path
) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    said(manager, "add milk to the shopping list")
    said(manager, "set a timer for 5 minutes")
    assert said(manager, "clear the shopping list") == "Do you really want me to run clear shopping list?"
    assert said(manager, "cancel the timer and set an alarm for 9").startswith(
        "Okay, I won't. Cancelled the 5 minute timer. Alarm set for 9:00"
    )
    assert said(manager, "yes") != "The shopping list is empty."  # the question lapsed, as for any new request
    assert said(manager, "clear the shopping list").endswith("clear shopping list?")
    assert said(manager, "stop and set a timer for 3 minutes") == "Okay, I won't. Timer set for 3 minutes."
    assert "3 minutes" in said(manager, "what timers do I have")
    assert said(manager, "what's on the shopping list") != "The shopping list is empty."
    # A "no" alone is still one.
    said(manager, "clear the shopping list")
    assert said(manager, "cancel") == "Okay, I won't."


def test_a_question_after_a_request_for_data_is_asked_after_the_data_is_said(tiny_int8: Path, tmp_path: Path) -> None:
    """The question comes last, in what is said and in the history, so that the answer follows it."""
    manager = manager_for(tiny_int8, tmp_path, weather)
    scripted(manager.conversation.engine, "Sunny, 21 degrees.")
    reply = said(manager, "what's the weather and set a timer and turn on the kitchen light")
    assert reply == "Sunny, 21 degrees. Not done yet: turn on the kitchen light. How long should the timer run?"
    assert manager.conversation.messages[-1] == {"role": "assistant", "content": reply}
    assert is_tool_response(manager.conversation.messages[-2])
    assert said(manager, "10 minutes") == "Timer set for 10 minutes."


def test_a_question_not_said_for_a_stop_waits_for_no_answer(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path, weather)
    said(manager, "add milk to the shopping list")
    scripted(manager.conversation.engine, "Sunny, 21 degrees.")
    cancel = threading.Event()
    heard = []
    for event in manager.turn("what's the weather and clear the shopping list", cancel):
        heard.append(event)
        if event.kind == "tool_call" and event.text == "clear_shopping_list":
            cancel.set()  # "stop", said while the data was being fetched
    assert not [event for event in heard if event.kind == "confirm"]
    assert said(manager, "yes") != "The shopping list is empty."
    assert "milk" in said(manager, "what's on the shopping list")


def test_a_yes_or_no_with_requests_joined_after_it_answers_the_confirmation_and_does_them(
    tiny_int8: Path, tmp_path: Path
) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    said(manager, "add milk to the shopping list")
    said(manager, "clear the shopping list")
    assert said(manager, "no, set a timer for 5 minutes") == "Okay, I won't. Timer set for 5 minutes."
    assert "milk" in said(manager, "what's on the shopping list")
    said(manager, "clear the shopping list")
    assert said(manager, "yes, and set an alarm for 7").startswith("The shopping list is empty. Alarm set for 7:00")
    listed = said(manager, "what timers do I have")
    assert "a timer with 5 minutes left" in listed and "an alarm at 7:00" in listed
    said(manager, "clear the shopping list")
    assert said(manager, "no set a timer for 3 minutes") == "Okay, I won't. Timer set for 3 minutes."  # vosk's


def test_a_note_and_a_request_in_two_typed_sentences_are_both_done(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    assert said(manager, "add a note buy milk. set a timer for 5 minutes") == "Noted. Timer set for 5 minutes."
    assert said(manager, "记一下买邮票。 设置一个10分钟的计时器") == "记下了。已设好10分钟的计时器。"
    assert said(manager, "read me my notes") == "On your notes: buy milk, 买邮票."
    assert said(manager, "what timers do I have").startswith("You have a timer with 5 minutes left, a timer with 10")


def test_a_request_instead_of_a_yes_or_no_is_done_and_the_confirmed_call_is_not(
    tiny_int8: Path, tmp_path: Path
) -> None:
    manager = manager_for(tiny_int8, tmp_path, unlock_door)
    said(manager, "set a timer for 5 minutes")
    assert said(manager, "unlock the door") == "Do you really want me to run unlock door?"
    assert said(manager, "cancel the timer") == "Okay, I won't. Cancelled the 5 minute timer."
    assert said(manager, "yes") != "The door is unlocked."  # the question was answered
    assert said(manager, "what timers do I have") == "No timers or alarms are set."
    said(manager, "set a timer for 3 minutes")
    assert said(manager, "unlock the door").endswith("?")
    assert said(manager, "stop the timer") == "Okay, I won't. Cancelled the 3 minute timer."
    # "cancel", "stop" and "never mind" alone are still a no.
    for no in ("cancel", "stop", "never mind", "cancel it"):
        assert said(manager, "unlock the door").endswith("?")
        assert said(manager, no) == "Okay, I won't.", no


def test_an_answer_with_requests_after_it_is_cut_at_a_join(matcher: IntentMatcher) -> None:
    answer, then = matcher.match_after("yes, and set an alarm for 7 and a timer for 5 minutes", confirmation)
    assert answer is True and [(m.skill, m.arguments, m.said) for m in then] == [
        ("set_alarm", {"hour": 7}, "set an alarm for 7"),
        ("set_timer", {"minutes": 5}, "a timer for 5 minutes"),
    ]
    assert matcher.match_after("no, set a timer for 5 minutes", confirmation)[0] is False
    assert matcher.match_after("yes, and order a pizza", confirmation) is None
    # As a recogniser writes them, without commas.
    answer, then = matcher.match_after("no thank you set a timer for five minutes", confirmation)
    assert answer is False and [(m.skill, m.arguments) for m in then] == [("set_timer", {"minutes": 5})]
    answer, then = matcher.match_after("好 的 设置 一个 十 分钟 的 计时器", confirmation)
    assert answer is True and [(m.skill, m.arguments) for m in then] == [("set_timer", {"minutes": 10})]
    assert matcher.match_after("maybe, set a timer for 5 minutes", confirmation) is None


def test_a_chinese_confirmation_is_answered_with_its_own_word(tiny_int8: Path, tmp_path: Path) -> None:
    manager = manager_for(tiny_int8, tmp_path)
    said(manager, "把牛奶加到购物清单")
    assert said(manager, "清空购物清单") == "确定要这样做吗？"
    assert said(manager, "确定") == "购物清单已清空。"
    said(manager, "把牛奶加到购物清单")
    assert said(manager, "清空购物清单") == "确定要这样做吗？"
    assert said(manager, "不用了") == "好的，不执行了。"
    assert said(manager, "我要买什么") == "购物清单上有：牛奶。"
    said(manager, "设置一个5分钟的计时器")
    assert said(manager, "清空购物清单") == "确定要这样做吗？"
    assert said(manager, "取消计时器") == "好的，不执行了。已取消5分钟的计时器。"  # as "cancel the timer" is
    assert said(manager, "我要买什么") == "购物清单上有：牛奶。"
    assert said(manager, "清空购物清单") == "确定要这样做吗？"
    assert said(manager, "不，取消") == "好的，不执行了。"  # not left to the model as a new request
    assert said(manager, "我要买什么") == "购物清单上有：牛奶。"
