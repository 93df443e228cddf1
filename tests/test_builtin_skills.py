"""The built-in skills (assistant/skills/builtin/), through the registry as the assistant uses them."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from assistant import SkillContext
from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.builtin._spoken import clock
from assistant.skills.intents import IntentMatcher
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from assistant.turn import TurnManager
from tests.small_disk import fill, small_disk

REPO = Path(__file__).resolve().parent.parent


def registry_in(state: Path, said: list[str] | None = None) -> Registry:
    context = SkillContext(state_dir=state, say=(said.append if said is not None else print))
    registry = Registry(context=context)
    registry.load_folder(BUILTIN_SKILLS)
    assert not registry.problems
    return registry


def test_shopping_list_and_notes_persist(tmp_path: Path) -> None:
    first = registry_in(tmp_path)
    assert first.call("add_item", {"text": "milk", "list": "shopping"}).text == "Added milk to the shopping list."
    first.call("add_item", {"text": "eggs", "list": "shopping"})
    first.call("add_item", {"text": "call the plumber"})
    second = registry_in(tmp_path)  # a restart
    assert second.call("read_items", {"list": "shopping"}).text == "On your shopping list: milk, eggs."
    assert second.call("read_items", {}).text == "On your notes: call the plumber."
    assert second.call("remove_item", {"text": "MILK"}).text == "Removed MILK."
    assert second.call("remove_item", {"text": "bread"}).text == "Bread is not on the shopping list."
    second.call("add_item", {"text": "Äpfel", "list": "shopping"})
    assert second.call("remove_item", {"text": "äpfel"}).text == "Removed äpfel."  # not only ASCII letters fold
    assert second.call("add_item", {"text": "  ", "list": "notes"}).text == "What should I note?"
    assert second.call("read_items", {}).text == "On your notes: call the plumber."  # nothing blank was kept
    second.call("add_item", {"text": "Buy stamps."})
    second.call("add_item", {"text": "给妈妈打电话。"})
    # A note that is a sentence keeps its words, and the list is not read as "plumber., Buy stamps.."
    assert second.call("read_items", {}).text == "On your notes: call the plumber, Buy stamps, 给妈妈打电话."
    assert second.call("remove_item", {"text": "buy stamps", "list": "notes"}).text == "Removed buy stamps."
    assert second.call("read_items", {}).text == "On your notes: call the plumber, 给妈妈打电话."
    assert second.skills["clear_shopping_list"].confirm
    second.call("clear_shopping_list", {})
    assert second.call("read_items", {"list": "shopping"}).text == "Your shopping list is empty."


def test_an_item_asked_for_twice_is_kept_once_and_lists_are_asked_for_as_people_ask(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("add milk to my shopping list") == "Added milk to the shopping list."
    assert say("add Milk to the shopping list") == "Milk is already on the shopping list."
    assert say("add milk to the shopping list") == "Milk is already on the shopping list."  # as a sentence starts
    assert say("take a note call the plumber") == "Noted."
    assert say("take a note Call the plumber") == "That is already in your notes."
    for asked in ("what is on my shopping list", "read me my shopping list", "what do I need to buy"):
        assert say(asked) == "On your shopping list: milk.", asked
    assert say("what are my notes") == "On your notes: call the plumber."
    assert say("volume down") == "Volume 50 percent." and say("volume up") == "Volume 60 percent."
    assert matched(registry, "empty my shopping list")[0] == "clear_shopping_list"  # asked to confirm, then
    registry.context.language = "zh"
    assert say("把牛奶加到购物清单") == "已把牛奶加到购物清单。"
    assert say("把牛奶加到购物清单") == "购物清单上已经有牛奶了。"
    assert say("我要买什么") == say("看看我的购物清单") == "购物清单上有：milk、牛奶。"
    assert matched(registry, "把购物清单清空")[0] == "clear_shopping_list"


def test_items_typed_as_a_list_are_added_one_by_one(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("add milk, eggs and bread to my shopping list") == "Added milk, eggs and bread to the shopping list."
    assert say("add mac and cheese to my shopping list") == "Added mac and cheese to the shopping list."  # no comma
    assert say("add butter, salt and pepper, and Eggs to the shopping list") == (
        "Added butter and salt and pepper to the shopping list. Eggs is already on it."
    )
    assert say("add bread, milk to my shopping list") == "Bread and milk are already on the shopping list."
    assert say("read me my shopping list") == (
        "On your shopping list: milk, eggs, bread, mac and cheese, butter, salt and pepper."
    )
    assert say("take a note that call Anna, then the plumber") == "Noted."  # a note is kept whole, as typed
    assert say("read me my notes") == "On your notes: call Anna, then the plumber."
    registry.context.language = "zh"
    assert say("把苹果、香蕉和橙子加到购物清单") == "已把苹果、香蕉和橙子加到购物清单。"
    assert say("在购物清单里加上苹果，梨") == "已把梨加到购物清单。苹果已经在上面了。"
    assert say("把和牛、香蕉加到购物清单") == "已把和牛加到购物清单。香蕉已经在上面了。"  # 和牛 is one item


def test_a_long_list_is_read_in_part_with_how_many_are_left(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    for n in range(150):
        registry.call("add_item", {"text": f"item number {n} " + "x" * 80, "list": "shopping"})
    said = registry.call("read_items", {"list": "shopping"})
    assert said.error is None
    assert said.text.startswith("On your shopping list: item number 0 ") and "item number 19 " in said.text
    assert "item number 20 " not in said.text and said.text.endswith(", and 130 more.")


def test_a_long_note_is_kept_whole_and_long_notes_are_read_in_part(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    note = (
        "the plumber is coming on Tuesday at five so leave the back door key under the mat for him "
        "and tell him the boiler is in the cellar behind the shelves next to the old bicycle"
    )
    assert say("take a note that " + note) == "Noted."  # not cut short, nor left to the model
    assert say("read me my notes") == f"On your notes: {note}."
    for n in range(25):
        registry.call("add_item", {"text": f"note {n} " + "x" * 480})
    said = registry.call("read_items", {})
    assert said.error is None and len(said.text) < 3000  # a minute or two of speech, not ten
    assert said.text.endswith(" more.") and "note 0 " in said.text


def test_the_date_tomorrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)
    monkeypatch.setitem(registry.skills["current_date"].func.__globals__, "datetime", ThreeInTheAfternoon)
    assert registry.call("current_date", {}).text == "Today is Monday, May 4, 2026."
    assert registry.call("current_date", {"tomorrow": True}).text == "Tomorrow is Tuesday, May 5, 2026."
    registry.context.language = "zh"
    assert chinese(registry.call("current_date", {"tomorrow": True}).text) == "明天是2026年5月5日，星期二。"


def test_timer_set_by_another_process_rings_after_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "skills", "call", "set_timer", "--config", str(config),
         "--args", '{"seconds": 1, "label": "tea"}'],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The tea timer is set for 1 second."
    chinese = subprocess.run(
        [sys.executable, "-m", "assistant", "skills", "call", "list_timers", "--config", str(config),
         "--language", "zh"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert chinese.stdout.startswith("现在有：tea计时器还剩"), chinese.stdout + chinese.stderr

    said: list[str] = []
    registry = registry_in(tmp_path / "state", said)  # the process that set it is gone
    assert "tea timer" in registry.call("list_timers", {}).text
    stop = threading.Event()
    registry.start_background(stop)
    deadline = time.monotonic() + 5
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    while registry.call("list_timers", {}).text != "No timers or alarms are set." and time.monotonic() < deadline:
        time.sleep(0.05)  # rung first, then forgotten: a crash in between rings again rather than never
    stop.set()
    assert said == ["Your tea timer is done."]  # it rang once
    assert registry.call("list_timers", {}).text == "No timers or alarms are set."


def test_alarms_and_cancelling(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    assert registry.call("set_alarm", {"hour": 7, "minute": 5}).text.startswith("Alarm set for 7:05")
    registry.call("set_timer", {"minutes": 10, "label": "pasta"})
    listing = registry.call("list_timers", {}).text
    assert "an alarm at 7:05" in listing
    assert "a pasta timer with 10 minutes left" in listing or "a pasta timer with 9 minutes and 59 seconds" in listing
    assert registry.call("cancel_alarms", {}).text == "Cancelled the alarm at 7:05."  # the timer keeps running
    assert "pasta timer" in registry.call("list_timers", {}).text
    assert registry.call("control_timer", {"action": "cancel", "label": "pasta"}).text == "Cancelled the pasta timer."
    assert registry.call("control_timer", {"action": "cancel"}).text == "No timer is running."
    assert registry.call("cancel_alarms", {}).text == "No alarm is set."
    assert registry.call("set_timer", {}).text == "How long should the timer run?"
    assert registry.call("set_alarm", {"hour": 25}).text == "Sorry, hour on a 24-hour clock can be from 0 to 23."


def ring_for(registry: Registry, said: list[str], count: int) -> None:
    """Run the timers' clock until it has said `count` things (or 5 s went by)."""
    stop = threading.Event()
    registry.start_background(stop)
    deadline = time.monotonic() + 5
    while len(said) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and nothing more
    stop.set()


def clock_at(hour: int) -> type[datetime]:
    """datetime whose now() is that hour of 2026-05-04, for the alarm skill to read."""

    class At(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:
            return cls(2026, 5, 4, hour, 0)

    return At


ThreeInTheAfternoon, FiveInTheMorning, OneAtNight = clock_at(15), clock_at(5), clock_at(1)


def test_an_alarm_says_its_day_and_is_not_set_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", ThreeInTheAfternoon)
    set_alarm = lambda **arguments: registry.call("set_alarm", arguments).text  # noqa: E731
    assert set_alarm(hour=7) == "Alarm set for 7:00 tomorrow."  # already past today: said, not left to guess
    assert set_alarm(hour=19, minute=30) == "Alarm set for 19:30."
    assert set_alarm(hour=7) == "An alarm is already set for 7:00 tomorrow."  # not a second one that rings too
    cancel = lambda **arguments: registry.call("cancel_alarms", arguments).text  # noqa: E731
    assert cancel() == "You have 2 alarms: at 19:30 and 7:00. Which one?"  # "cancel my alarm" cancels no two
    assert cancel(hour=8) == "There is no alarm at 8:00."
    assert cancel(hour=7, minute=0) == "Cancelled the alarm at 7:00."
    set_alarm(hour=6, minute=45)
    assert cancel(every=True) == "Cancelled 2 alarms."
    assert cancel(every=True) == cancel() == "No alarm is set."


def test_an_alarm_for_tomorrow_is_set_for_tomorrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", FiveInTheMorning)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("set an alarm for 7 am tomorrow") == "Alarm set for 7:00 tomorrow."  # not today's 7:00
    assert say("set an alarm for 7 am") == "Alarm set for 7:00."  # today's: a second alarm, not the same one
    assert say("wake me up tomorrow at 6:30") == "Alarm set for 6:30 tomorrow."
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        due = sorted(datetime.fromtimestamp(d) for (d,) in db.execute("SELECT due FROM timers"))
    assert due == [datetime(2026, 5, 4, 7), datetime(2026, 5, 5, 6, 30), datetime(2026, 5, 5, 7)]
    restarted = registry_in(tmp_path)  # a restart keeps the day
    monkeypatch.setitem(restarted.skills["list_timers"].func.__globals__, "datetime", FiveInTheMorning)
    listing = restarted.call("list_timers", {}).text
    assert listing == "You have an alarm at 7:00, an alarm at 6:30 tomorrow, an alarm at 7:00 tomorrow.", listing
    question = say("cancel my alarm")
    assert question == "You have 3 alarms: at 7:00, 6:30 tomorrow and 7:00 tomorrow. Which one?"
    answer = lambda text: IntentMatcher(registry.skills).match_answer(text, question, {  # noqa: E731
        "name": "cancel_alarms", "arguments": {}}).arguments  # fmt: skip
    assert answer("tomorrow's") == answer("the one tomorrow") == {"day": "tomorrow"}
    assert (
        registry.call("cancel_alarms", answer("the 7 am one tomorrow")).text == "Cancelled the alarm at 7:00 tomorrow."
    )
    assert say("cancel the alarm for tomorrow") == "Cancelled the alarm at 6:30 tomorrow."
    assert say("cancel the alarm for tomorrow") == "There is no alarm tomorrow."
    assert say("cancel the 7 am alarm") == "Cancelled the alarm at 7:00."
    registry.context.language = "zh"
    assert chinese(say("设一个明天早上7点的闹钟")) == "闹钟定在明天早上7点。"
    assert chinese(say("明天早上7点的闹钟")) == "明天早上7点已经有闹钟了。"
    assert chinese(registry.call("list_timers", {}).text) == "现在有：明天早上7点的闹钟。"
    assert chinese(say("取消明天早上7点的闹钟")) == "已取消明天早上7点的闹钟。"
    # Past midnight, before sleep, "tomorrow" is the coming morning.
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", OneAtNight)
    assert chinese(say("明天早上7点叫醒我")) == "闹钟定在早上7点。"
    registry.context.language = "en"
    assert say("set an alarm for 7 tomorrow morning") == "An alarm is already set for 7:00."


def test_an_alarm_for_a_day_rings_on_that_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", ThreeInTheAfternoon)  # a Monday
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("set an alarm for the day after tomorrow at 7") == "Alarm set for 7:00 on Wednesday, May 6."
    assert say("set an alarm on Friday at 7") == "Alarm set for 7:00 on Friday, May 8."
    assert say("set an alarm for next Monday at 8 am") == "Alarm set for 8:00 on Monday, May 11."
    assert say("set an alarm on Monday at 9") == "Alarm set for 9:00 on Monday, May 11."  # today's 9:00 has passed
    assert say("wake me up on Monday at 7 pm") == "Alarm set for 19:00."  # today's has not
    assert say("set an alarm for Tuesday at 6:30") == "Alarm set for 6:30 tomorrow."
    registry.context.language = "zh"
    assert chinese(say("后天早上六点叫醒我")) == "闹钟定在5月6日星期三早上6点。"
    assert chinese(say("设一个周五七点的闹钟")) == "5月8日星期五早上7点已经有闹钟了。"
    assert chinese(say("下周一早上8点叫醒我")) == "5月11日星期一早上8点已经有闹钟了。"
    registry.context.language = "en"
    # As the model may write the day.
    assert registry.call("set_alarm", {"hour": 7, "day": "Next Friday"}).text == "Alarm set for 7:00 on Friday, May 15."
    assert registry.call("set_alarm", {"hour": 7, "day": "someday"}).text == "Sorry, I can't tell which day someday is."
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        due = [datetime.fromtimestamp(d) for (d,) in db.execute("SELECT due FROM timers ORDER BY due")]
    assert due == [datetime(2026, 5, 4, 19), datetime(2026, 5, 5, 6, 30), datetime(2026, 5, 6, 6),
                   datetime(2026, 5, 6, 7), datetime(2026, 5, 8, 7), datetime(2026, 5, 11, 8),
                   datetime(2026, 5, 11, 9), datetime(2026, 5, 15, 7)]  # fmt: skip
    monkeypatch.setitem(registry.skills["list_timers"].func.__globals__, "datetime", ThreeInTheAfternoon)
    listing = registry.call("list_timers", {}).text
    assert listing.startswith("You have an alarm at 19:00, an alarm at 6:30, an alarm at 6:00 on Wednesday, May 6, ")
    # Cancelled by their day, or picked by it when asked which.
    monkeypatch.setitem(registry.skills["cancel_alarms"].func.__globals__, "datetime", ThreeInTheAfternoon)
    assert say("cancel the alarm on Friday") == "Cancelled the alarm at 7:00 on Friday, May 8."
    question = say("cancel the alarm next Monday")
    assert question == "You have 2 alarms: at 8:00 on Monday, May 11 and 9:00 on Monday, May 11. Which one?"
    # Today's alarm is named "19:00", not "on Monday": the day names the alarms a reply names by it.
    assert say("cancel the alarm on Monday") == question
    assert say("cancel the alarm at 7 pm") == "Cancelled the alarm at 19:00."
    answer = IntentMatcher(registry.skills).match_answer("the 9 am one", question, {
        "name": "cancel_alarms", "arguments": {"day": "next monday"}})  # fmt: skip
    assert registry.call("cancel_alarms", answer.arguments).text == "Cancelled the alarm at 9:00 on Monday, May 11."
    assert say("cancel my 8 am alarm next Monday") == "Cancelled the alarm at 8:00 on Monday, May 11."
    assert say("cancel the alarm at 7 the day after tomorrow") == "Cancelled the alarm at 7:00 on Wednesday, May 6."
    assert say("cancel the alarm at 7 the day after tomorrow") == "There is no alarm at 7:00 on Wednesday, May 6."
    registry.context.language = "zh"
    assert chinese(say("取消后天的闹钟")) == "已取消5月6日星期三早上6点的闹钟。"
    question = chinese(say("取消闹钟"))
    assert question == "你有2个闹钟：早上6点30分、5月15日星期五早上7点。要取消哪一个？"
    answer = IntentMatcher(registry.skills).match_answer("周五的那个", question, {
        "name": "cancel_alarms", "arguments": {}})  # fmt: skip
    assert answer.arguments == {"day": "星期五"}  # as the question named it
    registry.context.language = "en"
    assert say("cancel the alarm on Wednesday") == "There is no alarm on Wednesday, May 6."
    question = say("cancel my alarm")
    assert question == "You have 2 alarms: at 6:30 and 7:00 on Friday, May 15. Which one?"
    answer = IntentMatcher(registry.skills).match_answer("the one on Friday", question, {
        "name": "cancel_alarms", "arguments": {}})  # fmt: skip
    assert registry.call("cancel_alarms", answer.arguments).text == "Cancelled the alarm at 7:00 on Friday, May 15."


def test_an_alarm_in_some_days_rings_that_many_days_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", ThreeInTheAfternoon)  # a Monday
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("set an alarm in 3 days at 7") == "Alarm set for 7:00 on Thursday, May 7."
    assert say("wake me up in two days at 6:30") == "Alarm set for 6:30 on Wednesday, May 6."
    assert say("set an alarm for 8 in 30 days") == "Alarm set for 8:00 on Wednesday, June 3."
    registry.context.language = "zh"
    assert chinese(say("三天后早上七点叫醒我")) == "5月7日星期四早上7点已经有闹钟了。"
    registry.context.language = "en"
    # As the model may write the day.
    assert registry.call("set_alarm", {"hour": 9, "day": "In 3 days"}).text == "Alarm set for 9:00 on Thursday, May 7."
    assert registry.call("set_alarm", {"hour": 9, "day": "in 1 day"}).text == "Alarm set for 9:00 tomorrow."
    assert registry.call("set_alarm", {"hour": 9, "day": "in 31 days"}).text.startswith("Sorry, I can't tell")
    # Past midnight, before sleep, the days are counted as "tomorrow" is: from the day just ended.
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", OneAtNight)
    assert say("set an alarm in 2 days at 7") == "Alarm set for 7:00 tomorrow."


def test_an_alarm_for_a_date_the_model_wrote_rings_on_that_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_in(tmp_path)
    for name in ("set_alarm", "cancel_alarms"):
        monkeypatch.setitem(registry.skills[name].func.__globals__, "datetime", ThreeInTheAfternoon)  # May 4
    # "Set an alarm for May 20 at 7", which no sentence takes: the model writes the date as a date.
    assert (
        registry.call("set_alarm", {"hour": 7, "day": "2026-05-20"}).text == "Alarm set for 7:00 on Wednesday, May 20."
    )
    assert registry.call("set_alarm", {"hour": 19, "day": "2026-05-04"}).text == "Alarm set for 19:00."
    assert registry.call("set_alarm", {"hour": 7, "day": "2026-05-04"}).text == "Sorry, 7:00 on that day has passed."
    assert registry.call("set_alarm", {"hour": 7, "day": "2026-05-01"}).text == "Sorry, 7:00 on that day has passed."
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        due = [datetime.fromtimestamp(d) for (d,) in db.execute("SELECT due FROM timers ORDER BY due")]
    assert due == [datetime(2026, 5, 4, 19), datetime(2026, 5, 20, 7)]
    registry.context.language = "zh"
    assert registry.call("set_alarm", {"hour": 7, "day": "2026-05-01"}).text == "抱歉，那天早上7点已经过去了。"
    registry.context.language = "en"
    reply = registry.call("cancel_alarms", {"day": "2026-05-20"}).text
    assert reply == "Cancelled the alarm at 7:00 on Wednesday, May 20."


def on_monday_afternoon(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """The alarm skills at 15:00 on Monday, May 4, 2026, and a function that says a sentence to them."""
    for name in ("set_alarm", "list_timers", "cancel_alarms"):
        monkeypatch.setitem(registry.skills[name].func.__globals__, "datetime", ThreeInTheAfternoon)
    return lambda text: registry.call(*matched(registry, text)).text


def stored_alarms(state: Path) -> list[tuple[datetime, str, int]]:
    with sqlite3.connect(state / "timers.sqlite3") as db:
        rows = db.execute("SELECT due, repeat, at_minute FROM timers WHERE kind = 'alarm' ORDER BY due").fetchall()
    return [(datetime.fromtimestamp(due), repeat, at_minute) for due, repeat, at_minute in rows]


def test_an_alarm_that_repeats_is_set_listed_and_cancelled_by_its_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_in(tmp_path)
    say = on_monday_afternoon(registry, monkeypatch)
    assert say("set an alarm for 7 am every day") == "Alarm set for 7:00 every day."
    assert say("wake me up at 6:30 every weekday") == "Alarm set for 6:30 every weekday."
    assert say("an alarm every Monday at 8 am") == "Alarm set for 8:00 every Monday."
    assert say("set an alarm for 9 on weekends") == "Alarm set for 9:00 on weekends."
    assert say("set an alarm every Monday and Thursday at 7") == "Alarm set for 7:00 every Monday and Thursday."
    assert say("set an alarm for 7 every day") == "An alarm is already set for 7:00 every day."
    assert say("set an alarm on Friday at 7") == "Alarm set for 7:00 on Friday, May 8."  # once, beside them
    # Each at its next ring after Monday 15:00, with its weekdays (Monday 0) and time of day.
    assert stored_alarms(tmp_path) == [
        (datetime(2026, 5, 5, 6, 30), "01234", 390), (datetime(2026, 5, 5, 7), "0123456", 420),
        (datetime(2026, 5, 7, 7), "03", 420), (datetime(2026, 5, 8, 7), "", 0),
        (datetime(2026, 5, 9, 9), "56", 540), (datetime(2026, 5, 11, 8), "0", 480),
    ]  # fmt: skip
    assert registry.call("list_timers", {}).text == (
        "You have an alarm at 6:30 every weekday, an alarm at 7:00 every day, an alarm at 7:00 every Monday and "
        "Thursday, an alarm at 7:00 on Friday, May 8, an alarm at 9:00 on weekends, and 1 more."
    )
    assert say("cancel the alarm on Friday") == "Cancelled the alarm at 7:00 on Friday, May 8."  # not a rule's
    assert say("cancel the weekday alarm") == "Cancelled the alarm at 6:30 every weekday."
    assert say("cancel the weekday alarm") == "There is no alarm every weekday."
    assert say("cancel the alarm every day at 7") == "Cancelled the alarm at 7:00 every day."
    question = say("cancel my alarm")
    assert question == (
        "You have 3 alarms: at 7:00 every Monday and Thursday, 9:00 on weekends and 8:00 every Monday. Which one?"
    )
    for answer, cancelled in [("the weekend one", "9:00 on weekends"), ("the one every Monday", "8:00 every Monday")]:
        picked = IntentMatcher(registry.skills).match_answer(
            answer, question, {"name": "cancel_alarms", "arguments": {}}
        )
        assert registry.call("cancel_alarms", picked.arguments).text == f"Cancelled the alarm at {cancelled}.", answer
    assert say("cancel the alarm at 7") == "Cancelled the alarm at 7:00 every Monday and Thursday."  # by its time
    say("set an alarm for 9 on weekends")
    say("set an alarm for 7 am every day")
    assert say("cancel my alarms") == "Cancelled 2 alarms."


def test_a_days_ring_of_an_alarm_that_repeats_is_skipped_and_the_rule_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_in(tmp_path)
    say = on_monday_afternoon(registry, monkeypatch)
    say("wake me up at 6:30 every weekday")
    assert say("skip tomorrow's alarm") == "Cancelled the alarm at 6:30 tomorrow; the one every weekday stays."
    assert stored_alarms(tmp_path) == [(datetime(2026, 5, 6, 6, 30), "01234", 390)]
    reply = say("cancel the alarm on Wednesday")
    assert reply == "Cancelled the alarm at 6:30 on Wednesday, May 6; the one every weekday stays."
    assert say("cancel the alarm on Friday") == "There is no alarm on Friday, May 8."  # only its next ring is skipped
    registry.context.language = "zh"
    assert chinese(say("跳过周四的闹钟")) == "已取消5月7日星期四早上6点30分的闹钟，工作日的闹钟保留。"
    assert stored_alarms(tmp_path) == [(datetime(2026, 5, 8, 6, 30), "01234", 390)]
    registry.context.language = "en"
    assert say("cancel the weekday alarm") == "Cancelled the alarm at 6:30 every weekday."
    assert stored_alarms(tmp_path) == []


def test_turning_off_an_alarm_that_rang_unheeded_keeps_the_next_one(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    registry.call("set_alarm", {"hour": 7, "day": "every day"})
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:  # it rang 6 minutes ago, and rang on for 5
        db.execute("INSERT INTO rung (id, label, at, language) VALUES (0, '', ?, 'en')", (time.time() - 360,))
    assert registry.call(*matched(registry, "turn off the alarm")).text == "Alarm off."  # not every day's
    assert registry.call("list_timers", {}).text == "You have an alarm at 7:00 every day."
    assert registry.call("snooze", {}).text == "No alarm has rung just now."  # off, as while it rang
    assert registry.call("cancel_alarms", {}).text == "Cancelled the alarm at 7:00 every day."  # asked again
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:  # half an hour on, it is the next alarm's business
        db.execute("INSERT INTO rung (id, label, at, language) VALUES (0, '', ?, 'en')", (time.time() - 1900,))
    registry.call("set_alarm", {"hour": 7, "day": "every day"})
    assert registry.call("cancel_alarms", {}).text == "Cancelled the alarm at 7:00 every day."


def test_an_alarm_that_repeats_is_set_and_cancelled_in_chinese(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)
    registry.context.language = "zh"
    say = on_monday_afternoon(registry, monkeypatch)
    assert chinese(say("每天早上七点叫醒我")) == "闹钟定在每天早上7点。"
    assert chinese(say("工作日早上七点的闹钟")) == "闹钟定在工作日早上7点。"
    assert chinese(say("每周一早上八点的闹钟")) == "闹钟定在每周一早上8点。"
    assert chinese(say("周末九点叫醒我")) == "闹钟定在周末上午9点。"
    assert chinese(say("每周一和周四早上七点叫醒我")) == "闹钟定在每周一和周四早上7点。"
    assert chinese(say("设一个每天早上7点的闹钟")) == "每天早上7点已经有闹钟了。"
    assert sorted((at, repeat) for at, repeat, _ in stored_alarms(tmp_path)) == [
        (datetime(2026, 5, 5, 7), "01234"), (datetime(2026, 5, 5, 7), "0123456"), (datetime(2026, 5, 7, 7), "03"),
        (datetime(2026, 5, 9, 9), "56"), (datetime(2026, 5, 11, 8), "0"),
    ]  # fmt: skip
    listing = chinese(registry.call("list_timers", {}).text)
    assert (
        "每天早上7点的闹钟；工作日早上7点的闹钟；" in listing or "工作日早上7点的闹钟；每天早上7点的闹钟；" in listing
    )
    assert listing.endswith("；每周一和周四早上7点的闹钟；周末上午9点的闹钟；每周一早上8点的闹钟。")
    assert chinese(say("取消工作日的闹钟")) == "已取消工作日早上7点的闹钟。"
    assert chinese(say("取消每天早上七点的闹钟")) == "已取消每天早上7点的闹钟。"
    question = chinese(say("取消闹钟"))
    assert question == "你有3个闹钟：每周一和周四早上7点、周末上午9点、每周一早上8点。要取消哪一个？"
    picked = IntentMatcher(registry.skills).match_answer(
        "周末的那个", question, {"name": "cancel_alarms", "arguments": {}}
    )
    assert chinese(registry.call("cancel_alarms", picked.arguments).text) == "已取消周末上午9点的闹钟。"
    assert chinese(say("取消所有闹钟")) == "已取消2个闹钟。"


@pytest.mark.parametrize(("language", "answer"), [("en", "the one on Tuesday"), ("zh", "周二的那个")])
def test_a_day_answering_which_alarm_picks_the_one_the_question_named_by_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, language: str, answer: str
) -> None:
    registry = registry_in(tmp_path)
    for name in ("set_alarm", "cancel_alarms"):  # on a Monday: tomorrow is a Tuesday, and so is May 12
        monkeypatch.setitem(registry.skills[name].func.__globals__, "datetime", ThreeInTheAfternoon)
    registry.call("set_alarm", {"hour": 7, "day": "tuesday"})
    registry.call("set_alarm", {"hour": 7, "day": "next tuesday"})
    registry.context.language = language
    question = registry.call("cancel_alarms", {}).text
    assert question in ("You have 2 alarms: at 7:00 and 7:00 on Tuesday, May 12. Which one?",
                        "你有2个闹钟：早上7点、5月12日星期二早上7点。要取消哪一个？")  # fmt: skip
    picked = IntentMatcher(registry.skills).match_answer(answer, question, {"name": "cancel_alarms", "arguments": {}})
    assert registry.call("cancel_alarms", picked.arguments).text in (
        "Cancelled the alarm at 7:00 on Tuesday, May 12.", "已取消5月12日星期二早上7点的闹钟。"
    )  # fmt: skip
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:  # tomorrow's still rings
        assert [datetime.fromtimestamp(due) for (due,) in db.execute("SELECT due FROM timers")] == [
            datetime(2026, 5, 5, 7)
        ]


def around_the_call(call: Callable[[], str], minutes: int, says: Callable[[datetime], str]) -> tuple[str, datetime]:
    """The reply, and the whole minute it should name: the clock may turn a minute during the call."""
    before = datetime.now().replace(second=0, microsecond=0) + timedelta(minutes=minutes)
    reply = call()
    after = datetime.now().replace(second=0, microsecond=0) + timedelta(minutes=minutes)
    return reply, after if reply == says(after) else before


def test_an_alarm_that_just_rang_can_be_snoozed(tmp_path: Path) -> None:
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    snooze = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert snooze("snooze") == "No alarm has rung just now."
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:  # due now, as set_alarm keeps it; and one long past
        db.execute("INSERT INTO timers (kind, label, due, language) VALUES ('alarm', 'gym', ?, 'zh')", (time.time(),))
        db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', '', ?)", (time.time() - 86400,))
    ring_for(registry, said, 2)
    assert said[1] == "gym闹钟响了。"  # on time, after the late one
    reply, again = around_the_call(
        lambda: snooze("snooze for 5 minutes"), minutes=5, says=lambda at: f"Snoozed until {at.hour}:{at.minute:02d}."
    )
    assert reply == f"Snoozed until {again.hour}:{again.minute:02d}."
    assert snooze("snooze") == "No alarm has rung just now."  # once a ring
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        assert db.execute("SELECT kind, label, due, language FROM timers").fetchall() == [
            ("alarm", "gym", again.timestamp(), "zh")  # rings as it was set
        ]
        db.execute("UPDATE timers SET due = ?", (time.time(),))
    ring_for(registry, said, 3)
    registry.context.language = "zh"
    says = lambda at: f"好的，{clock(at.hour, at.minute, 'zh')}再叫你。"  # noqa: E731
    reply, again = around_the_call(lambda: chinese(snooze("让我再睡10分钟")), minutes=10, says=says)
    assert reply == says(again)
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.execute("UPDATE timers SET due = ?", (time.time(),))
    ring_for(registry, said, 4)
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.execute("UPDATE rung SET at = ?", (time.time() - 3600,))  # an hour ago: the next alarm's business
    assert chinese(snooze("贪睡")) == "刚才没有闹钟响。"
    registry.call("set_timer", {"seconds": 1})
    ring_for(registry, said, 5)
    assert said[4] == "计时器时间到了。" and chinese(snooze("贪睡")) == "刚才没有闹钟响。"  # timers are not snoozed


def test_an_alarm_rings_on_until_stopped_turned_off_or_snoozed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    timers = registry.skills["cancel_alarms"].func.__globals__
    monkeypatch.setitem(timers, "RING_EVERY", 0.2)
    monkeypatch.setitem(timers, "RING_FOR", 5.0)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("what alarms do I have") == "No timers or alarms are set."
    clock_running = threading.Event()
    registry.start_background(clock_running)

    def alarm_rings() -> None:
        """An alarm due now, and its first ring."""
        with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
            db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', '', ?)", (time.time(),))
        start, deadline = len(said), time.monotonic() + 5
        while len(said) == start and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(said) == start + 1

    def rings_in(seconds: float) -> int:
        start = len(said)
        time.sleep(seconds)
        return len(said) - start

    try:
        alarm_rings()
        assert rings_in(1.0) >= 2 and set(said) == {"Your alarm is ringing."}  # a sleeper may not hear it once
        assert say("stop") == "" and rings_in(1.0) == 0
        alarm_rings()
        assert say("turn off the alarm") == "Alarm off." and rings_in(1.0) == 0
        assert say("snooze") == "No alarm has rung just now."  # turned off: not snoozed
        alarm_rings()
        assert say("snooze").startswith("Snoozed until ") and rings_in(1.0) == 0
        assert say("turn off the alarm").startswith("Cancelled the alarm at ")  # the snoozed one
        monkeypatch.setitem(timers, "RING_FOR", 0.5)
        alarm_rings()
        assert rings_in(1.0) >= 1 and rings_in(1.0) == 0  # unheeded, it gives up
    finally:
        clock_running.set()


class Ringing:
    """A registry on `state` with its timers' clock running, as the assistant (re)starts it, with rings
    every 0.2 s for 5 s."""

    def __init__(self, state: Path, monkeypatch: pytest.MonkeyPatch):
        self.said: list[str] = []
        self.registry = registry_in(state, self.said)
        timers = self.registry.skills["cancel_alarms"].func.__globals__
        monkeypatch.setitem(timers, "RING_EVERY", 0.2)
        monkeypatch.setitem(timers, "RING_FOR", 5.0)
        monkeypatch.setitem(timers, "MAX_BACKOFF", 0.3)
        self.registry.call("list_timers", {})  # the tables made
        self.stopped = threading.Event()
        self.registry.start_background(self.stopped)

    def say(self, text: str) -> str:
        match = IntentMatcher(self.registry.skills).match(text)
        result = self.registry.call(match.skill, match.arguments)
        return result.text if result.error is None else result.error

    def rings_in(self, seconds: float) -> int:
        start = len(self.said)
        time.sleep(seconds)
        return len(self.said) - start

    def stop(self) -> None:
        self.stopped.set()
        time.sleep(0.5)  # as the daemon waits for its background tasks


def an_alarm_rings(ringing: Ringing, state: Path, meanwhile: Callable[[], None] = lambda: None) -> datetime:
    """An alarm due in a moment, and when; `meanwhile` runs before it rings."""
    due = time.time() + 0.5
    with sqlite3.connect(state / "timers.sqlite3") as db:
        db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', 'gym', ?)", (due,))
    meanwhile()
    deadline = time.monotonic() + 5
    while not ringing.said and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ringing.said == ["Your gym alarm is ringing."]
    return datetime.fromtimestamp(due)


def test_an_alarm_rings_on_across_a_restart_until_it_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Ringing(tmp_path, monkeypatch)
    an_alarm_rings(first, tmp_path)
    first.stop()  # a restart, or a reload (which starts the skills' clock anew), while it rings
    second = Ringing(tmp_path, monkeypatch)
    assert second.rings_in(1.0) >= 2 and set(second.said) == {"Your gym alarm is ringing."}
    assert second.say("stop") == "" and second.rings_in(0.6) == 0
    second.stop()
    third = Ringing(tmp_path, monkeypatch)
    assert third.rings_in(1.0) == 0  # stopped is stopped, restart or not
    assert third.say("turn off the alarm") == "No alarm is set."  # nothing rings: not "Alarm off."
    assert third.say("snooze").startswith("Snoozed until ")  # as after a stop without a restart
    third.stop()


def test_a_ringing_alarm_is_stopped_as_people_say_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ringing = Ringing(tmp_path, monkeypatch)
    ways = [("stop the alarm", ""), ("停止闹钟", ""), ("闹钟别响了", ""), ("turn the alarm off", "Alarm off."),
            ("关闭闹钟", "闹钟关了。")]  # fmt: skip
    for said, reply in ways:
        ringing.said.clear()
        an_alarm_rings(ringing, tmp_path)
        ringing.registry.context.language = "zh" if reply.startswith("闹") else "en"
        assert ringing.say(said) == reply and ringing.rings_in(0.6) == 0, said
    ringing.registry.context.language = "en"
    ringing.said.clear()
    at = an_alarm_rings(ringing, tmp_path)  # its row is gone once rung: cancelled by its time, it is the ringing one
    assert ringing.say(f"cancel the alarm at {at.hour}:{at.minute:02d}") == "Alarm off." and ringing.rings_in(0.6) == 0
    ringing.registry.call("set_alarm", {"hour": 7})
    ringing.said.clear()
    an_alarm_rings(ringing, tmp_path)
    assert ringing.say("turn off all my alarms") == "Alarm off. Cancelled 1 alarm." and ringing.rings_in(0.6) == 0
    ringing.registry.call("set_alarm", {"hour": 7})
    assert ringing.say("stop the alarm") == "" and "7:00" in ringing.say("what alarms do I have")  # nothing rang
    ringing.stop()


def test_two_alarms_that_ring_close_together_both_ring_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ringing = Ringing(tmp_path, monkeypatch)
    an_alarm_rings(ringing, tmp_path)
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', 'pills', ?)", (time.time(),))
    start = len(ringing.said)
    time.sleep(1.5)
    assert {"Your gym alarm is ringing.", "Your pills alarm is ringing."} <= set(ringing.said[start + 1 :])
    assert ringing.say("snooze").startswith("Snoozed until ") and ringing.rings_in(0.6) == 0  # both
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        assert sorted(db.execute("SELECT label FROM timers WHERE kind = 'alarm'")) == [("gym",), ("pills",)]
    ringing.stop()


def test_stop_said_while_a_question_waits_stops_the_alarm_too(
    tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ringing = Ringing(tmp_path, monkeypatch)
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 16, ringing.registry.tools())
    manager = TurnManager(conversation, ringing.registry, Sampler())
    replies = lambda text: [e.text for e in manager.turn(text) if e.kind in ("text", "confirm")]  # noqa: E731
    assert replies("clear my shopping list") == ["Do you really want me to run clear shopping list?"]
    an_alarm_rings(ringing, tmp_path)
    assert replies("stop") == ["Okay, I won't."] and ringing.rings_in(0.6) == 0  # the question, and the alarm
    ringing.stop()


def test_an_alarm_rings_on_while_the_disk_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with small_disk(tmp_path / "state", "size=1m") as state:
        ringing = Ringing(state, monkeypatch)
        an_alarm_rings(ringing, state, meanwhile=lambda: fill(state))  # it cannot be stored as rung
        assert ringing.rings_in(1.5) >= 2  # the clock goes on, and so does the alarm
        assert ringing.say("stop") == "" and ringing.rings_in(1.0) == 0
        (state / "filler").unlink()
        assert ringing.rings_in(1.0) == 0 and ringing.say("snooze").startswith("Snoozed until ")
        ringing.stop()


def matched(registry: Registry, text: str) -> tuple[str, dict]:
    match = IntentMatcher(registry.skills).match(text)
    return match.skill, match.arguments


def test_what_came_due_while_the_assistant_was_stopped_is_said_late(tmp_path: Path) -> None:
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    registry.call("set_alarm", {"hour": 7})
    registry.call("set_timer", {"minutes": 5, "label": "tea"})
    registry.call("set_timer", {"seconds": 1, "label": "egg"})
    two_days_ago, ten_minutes_ago = time.time() - 2 * 86400, time.time() - 600
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:  # as if the assistant had been stopped meanwhile
        db.execute("UPDATE timers SET due = ? WHERE kind = 'alarm'", (two_days_ago,))
        db.execute("UPDATE timers SET due = ? WHERE label = 'tea'", (ten_minutes_ago,))
    ring_for(registry, said, 3)
    alarm, tea = datetime.fromtimestamp(two_days_ago), datetime.fromtimestamp(ten_minutes_ago)
    tea_day = "" if tea.date() == datetime.now().date() else f" on {tea:%A}"
    assert said == [
        f"Your alarm was due at {alarm.hour}:{alarm.minute:02d} on {alarm:%A}; I could not ring it then.",
        f"Your tea timer was due at {tea.hour}:{tea.minute:02d}{tea_day}; I could not ring it then.",
        "Your egg timer is done.",  # on time
    ]


def test_an_alarm_that_repeats_missed_while_stopped_is_said_late_once_and_rings_at_its_next_time(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    assert registry.call("set_alarm", {"hour": 7, "day": "every day"}).text == "Alarm set for 7:00 every day."
    missed = (datetime.now() - timedelta(days=2)).replace(hour=7, minute=0, second=0, microsecond=0)
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:  # as if the assistant had been stopped for two days
        db.execute("UPDATE timers SET due = ?", (missed.timestamp(),))
    ring_for(registry, said, 2)
    assert said == [f"Your alarm was due at 7:00 on {missed:%A}; I could not ring it then."]  # once, not each day
    today = datetime.now().replace(hour=7, minute=0, second=0, microsecond=0)
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        (due,) = db.execute("SELECT due FROM timers WHERE repeat = '0123456'").fetchone()
    assert datetime.fromtimestamp(due) in (today, today + timedelta(days=1))  # the next 7:00
    assert due > time.time() - 60


def test_timers_of_one_label_are_told_apart(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    call = lambda name, **arguments: registry.call(name, arguments).text  # noqa: E731
    call("set_timer", minutes=10, label="pasta")
    call("set_timer", minutes=5, label="pasta")
    assert call("control_timer", action="cancel", label="pasta") == (
        "You have 2 timers: the 5 minute pasta timer, the 10 minute pasta timer. Which one?"
    )  # each named as it can be said back
    assert call("control_timer", action="cancel", label="pasta", start_minutes=10) == "Cancelled the pasta timer."
    call("set_timer", minutes=1, seconds=30, label="pasta")
    question = call("control_timer", action="cancel", label="pasta")
    assert question == "You have 2 timers: the 1 minute and 30 second pasta timer, the 5 minute pasta timer. Which one?"
    match = IntentMatcher(registry.skills).match("cancel the 1 minute and 30 second pasta timer")
    assert call(match.skill, **match.arguments) == "Cancelled the pasta timer."
    left = call("list_timers")  # the 5 minute one
    assert re.fullmatch(r"You have a pasta timer with (5 minutes|4 minutes and \d+ seconds) left\.", left), left
    call("control_timer", action="cancel_all")
    call("set_timer", minutes=3, label="egg")
    call("set_timer", minutes=3, label="Egg")
    # Nothing that can be said picks one of two identical timers, so "Which one?" would never end.
    assert call("control_timer", action="pause", label="egg") == "Paused the egg timer with the least time left."
    listing = call("list_timers")
    assert listing.lower().count("an egg timer with ") == 2 and listing.count("(paused)") == 1, listing


def test_a_chinese_label_is_the_name_without_its_measure_word(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    call = lambda name, **arguments: registry.call(name, arguments).text  # noqa: E731
    said = call("set_timer", minutes=5, label="一个叫意大利面的")  # "a (timer) called pasta"
    assert said == "The 意大利面 timer is set for 5 minutes."
    assert call("control_timer", action="cancel", label="意大利面") == "Cancelled the 意大利面 timer."


def chinese(text: str) -> str:
    """`text`, checked to be all Chinese but for digits: no English word leaks into a Chinese reply."""
    assert text and not re.search(r"[A-Za-z]", text), text
    return text


def test_timers_answer_in_chinese_when_asked_in_chinese(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    registry.context.language = "zh"
    call = lambda name, **arguments: chinese(registry.call(name, arguments).text)  # noqa: E731
    assert call("set_timer", minutes=10, label="一个叫意大利面的") == "已设好10分钟的意大利面计时器。"
    assert call("set_timer", hours=1, minutes=30) == "已设好1小时30分钟的计时器。"
    assert call("set_timer", seconds=45) == "已设好45秒的计时器。"
    assert call("set_timer") == "计时器要设多长时间？"
    assert call("set_timer", hours=24, minutes=1) == "计时器最长24小时，更久的请设闹钟。"
    listing = call("list_timers")
    assert listing.startswith("现在有：计时器还剩4"), listing  # 45 or 44 seconds
    assert "意大利面计时器还剩" in listing and "1小时" in listing
    assert call("control_timer", action="pause", start_seconds=45) == "已暂停45秒的计时器。"
    assert call("control_timer", action="pause", start_seconds=45) == "45秒的计时器已经暂停了。"
    status = call("control_timer", action="status")
    assert status.startswith("45秒的计时器还剩") and "，已暂停；" in status and status.endswith("。"), status
    assert call("control_timer", action="resume") == "已恢复45秒的计时器。"  # the only paused one
    assert call("control_timer", action="add", start_seconds=45, minutes=2) in (
        "45秒的计时器还剩2分钟45秒。",
        "45秒的计时器还剩2分钟44秒。",
    )
    assert call("control_timer", action="cancel", label="茶") == "没有这个计时器。"
    assert call("control_timer", action="cancel_all") == "已取消3个计时器。"  # no English plural
    assert call("control_timer", action="cancel") == "没有正在运行的计时器。"
    assert call("list_timers") == "没有设置计时器或闹钟。"


def test_which_one_names_chinese_timers_as_the_chinese_sentences_take_them_back(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    registry.context.language = "zh"
    call = lambda name, **arguments: chinese(registry.call(name, arguments).text)  # noqa: E731
    matcher = IntentMatcher(registry.skills)
    call("set_timer", seconds=45, label="茶")
    call("set_timer", hours=1, minutes=30, label="茶")
    call("set_timer", minutes=10, label="茶")
    call("set_timer", minutes=1, seconds=30, label="茶")
    question = call("control_timer", action="cancel", label="茶")
    assert question == (
        "你有4个计时器：45秒的茶计时器、1分钟30秒的茶计时器、10分钟的茶计时器、1小时30分钟的茶计时器。要哪一个？"
    )
    names = question.split("：")[1].split("。")[0].split("、")
    names.pop(1)  # said back below
    for verb, said in (("暂停", "已暂停茶计时器。"), ("继续", "已恢复茶计时器。"), ("取消", "已取消茶计时器。")):
        match = matcher.match(verb + names[1])  # "暂停10分钟的茶计时器"
        assert match is not None and match.arguments["label"] == "茶", (verb, match)
        assert call(match.skill, **match.arguments) == said
    for name in (names[0], names[2], "1分钟30秒的茶计时器"):
        match = matcher.match("取消" + name)
        assert call(match.skill, **match.arguments) == "已取消茶计时器。", name
    assert call("list_timers") == "没有设置计时器或闹钟。"  # each name picked the one it names
    call("set_timer", minutes=3, label="鸡蛋")
    call("set_timer", minutes=3, label="鸡蛋")
    assert call("control_timer", action="pause", label="鸡蛋") == "已暂停剩余时间最短的鸡蛋计时器。"


def test_alarms_answer_in_chinese_with_the_day_and_the_part_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_in(tmp_path)
    registry.context.language = "zh"
    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", ThreeInTheAfternoon)
    set_alarm = lambda **arguments: chinese(registry.call("set_alarm", arguments).text)  # noqa: E731
    assert set_alarm(hour=7, minute=5) == "闹钟定在明天早上7点05分。"  # already past today
    assert set_alarm(hour=19, minute=30) == "闹钟定在晚上7点30分。"
    assert set_alarm(hour=0, minute=30) == "闹钟定在明天凌晨0点30分。"
    assert set_alarm(hour=12) == "闹钟定在明天中午12点。"
    assert set_alarm(hour=15, minute=1) == "闹钟定在下午3点01分。"
    assert set_alarm(hour=7, minute=5) == "明天早上7点05分已经有闹钟了。"
    listing = chinese(registry.call("list_timers", {}).text)
    assert "晚上7点30分的闹钟" in listing and "早上7点05分的闹钟" in listing, listing
    assert chinese(registry.call("cancel_alarms", {"hour": 19}).text) == "晚上7点没有闹钟。"  # 7:00, not 7:30
    assert chinese(registry.call("cancel_alarms", {"hour": 19, "minute": 30}).text) == "已取消晚上7点30分的闹钟。"
    assert chinese(registry.call("cancel_alarms", {}).text).startswith("你有4个闹钟：下午3点01分、")
    assert chinese(registry.call("cancel_alarms", {"every": True}).text) == "已取消4个闹钟。"
    assert chinese(registry.call("cancel_alarms", {}).text) == "没有设置闹钟。"


def test_a_timer_rings_in_the_language_it_was_set_in(tmp_path: Path) -> None:
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    registry.context.language = "zh"
    registry.call("set_timer", {"seconds": 1, "label": "意大利面"})
    registry.call("set_alarm", {"hour": 7, "minute": 5})
    registry.context.language = "en"
    registry.call("set_timer", {"seconds": 1, "label": "tea"})
    registry.context.language = "zh"  # the last request was in Chinese: the tea timer still rings in English
    # The alarm came due two days ago, while the assistant was stopped.
    due = (datetime.now() - timedelta(days=2)).replace(hour=7, minute=5, second=0, microsecond=0)
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.execute("UPDATE timers SET due = ? WHERE kind = 'alarm'", (due.timestamp(),))
    ring_for(registry, said, 3)
    weekday = "一二三四五六日"[due.weekday()]
    assert said == [f"闹钟本该在星期{weekday}早上7点05分响，当时我没能提醒你。", "意大利面计时器时间到了。",
                    "Your tea timer is done."]  # fmt: skip


def test_a_timer_rings_in_the_language_the_voice_on_the_speaker_speaks(tmp_path: Path) -> None:
    """A Chinese request from a text client, an English voice: said in Chinese, it would be noise."""
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    registry.context.voice_language = "en"
    registry.context.language = "zh"
    assert chinese(registry.call("set_timer", {"seconds": 1}).text) == "已设好1秒的计时器。"  # the reply is text
    registry.context.voice_language, registry.context.language = "zh", "en"
    registry.call("set_timer", {"seconds": 2, "label": "tea"})
    registry.context.voice_language = "en"
    ring_for(registry, said, 1)
    registry.context.voice_language = "zh"
    ring_for(registry, said, 2)
    assert said == ["Your timer is done.", "tea计时器时间到了。"]


def test_processes_that_find_an_old_table_together_all_get_their_answer(tmp_path: Path) -> None:
    """The daemon's clock and `assistant skills call` may both add the new columns at once."""
    for trial in range(10):
        state = tmp_path / str(trial)
        state.mkdir()
        with sqlite3.connect(state / "timers.sqlite3") as old:  # as the first release left it
            old.execute("PRAGMA journal_mode=WAL")
            old.execute(
                "CREATE TABLE timers (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL)"
            )
        registry, together, answers = registry_in(state), threading.Barrier(3), []

        def ask(registry: Registry, together: threading.Barrier, answers: list) -> None:
            together.wait()
            answers.append(registry.call("list_timers", {}))

        threads = [threading.Thread(target=ask, args=(registry, together, answers)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.text for a in answers] == ["No timers or alarms are set."] * 3, [a.error for a in answers]


def test_a_timers_table_from_before_languages_works_and_rings_in_english(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "timers.sqlite3") as old:  # as the first release made it
        old.execute("CREATE TABLE timers (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL)")
        old.execute("INSERT INTO timers (kind, label, due) VALUES ('timer', 'tea', ?)", (time.time() + 1,))
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    registry.context.language = "zh"
    assert chinese(registry.call("set_timer", {"seconds": 1, "label": "茶"}).text) == "已设好1秒的茶计时器。"
    ring_for(registry, said, 2)
    assert said == ["Your tea timer is done.", "茶计时器时间到了。"]


# The tables as the release before alarms that repeat made them.
TABLES_BEFORE_REPEATING = """CREATE TABLE timers (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL NOT NULL,
    length REAL NOT NULL DEFAULT 0, paused_left REAL, language TEXT NOT NULL DEFAULT 'en');
CREATE TABLE rung (
    id INTEGER PRIMARY KEY CHECK (id = 0), label TEXT NOT NULL, at REAL NOT NULL, language TEXT NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL DEFAULT 0, others TEXT NOT NULL DEFAULT '[]');"""


def test_a_timers_table_from_before_repeating_alarms_keeps_its_alarms_and_takes_new_ones(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "timers.sqlite3") as old:
        old.executescript(TABLES_BEFORE_REPEATING)
        old.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', 'gym', ?)", (time.time() + 0.5,))
        old.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', '', ?)", (time.time() + 86000,))
    said: list[str] = []
    registry = registry_in(tmp_path, said)
    assert registry.call("set_alarm", {"hour": 7, "day": "weekdays"}).text == "Alarm set for 7:00 every weekday."
    ring_for(registry, said, 1)
    assert said == ["Your gym alarm is ringing."]  # an alarm set before rings once, as it did
    listing = registry.call("list_timers", {}).text
    assert listing.count("an alarm at ") == 2 and "an alarm at 7:00 every weekday" in listing, listing
    assert registry.call("cancel_alarms", {"day": "every weekday"}).text == "Cancelled the alarm at 7:00 every weekday."


def test_a_chinese_request_gets_a_chinese_reply_through_the_local_intents(tiny_int8: Path, tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    cached = list(engine.tokens)
    replies = lambda text: [e.text for e in manager.turn(text) if e.kind == "text"]  # noqa: E731
    assert replies("设一个十分钟的计时器") == ["已设好10分钟的计时器。"]
    assert replies("what timers do I have")[0] in ("You have a timer with 10 minutes left.",
                                                   "You have a timer with 9 minutes and 59 seconds left.")  # fmt: skip
    assert replies("取消十分钟的计时器") == ["已取消10分钟的计时器。"]
    assert engine.tokens == cached  # answered by the local intents, not the model


def test_a_timer_asked_for_without_a_length_asks_how_long(tiny_int8: Path, tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    replies = lambda text: [e.text for e in manager.turn(text) if e.kind == "text"]  # noqa: E731
    assert replies("设置一个计时器") == ["计时器要设多长时间？"]  # not a timer of an hour
    assert replies("5分钟") == ["已设好5分钟的计时器。"]
    assert replies("set a timer") == ["How long should the timer run?"]
    assert replies("ten minutes") == ["Timer set for 10 minutes."]
    assert replies("set a timer") == ["How long should the timer run?"]
    assert replies("for 1 hour and 30 minutes") == ["Timer set for 1 hour and 30 minutes."]


def test_which_one_is_answered_without_the_verb(
    tiny_int8: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_in(tmp_path)
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 16, registry.tools()), registry, Sampler())
    cached = list(engine.tokens)
    replies = lambda text, asker=None: [e.text for e in manager.turn(text, asker=asker) if e.kind == "text"]  # noqa: E731
    alarms = lambda: registry.call("list_timers", {}).text  # noqa: E731
    registry.call("set_alarm", {"hour": 7})
    registry.call("set_alarm", {"hour": 21, "minute": 30})
    assert replies("cancel my alarm")[0].endswith("Which one?")
    assert replies("the 9:30 pm one") == ["Cancelled the alarm at 21:30."]
    assert "21:30" not in alarms() and "7:00" in alarms()
    registry.call("set_alarm", {"hour": 21, "minute": 30})
    assert replies("cancel my alarm")[0].endswith("Which one?")
    assert replies("the 7 one") == ["Cancelled the alarm at 7:00."]  # "one" is no minute
    registry.call("set_alarm", {"hour": 7})
    assert replies("cancel my alarm")[0].endswith("Which one?")
    assert replies("both") == ["Cancelled 2 alarms."]

    registry.call("set_timer", {"minutes": 10, "label": "pasta"})
    registry.call("set_timer", {"minutes": 5, "label": "tea"})
    assert replies("cancel my timer") == [
        "You have 2 timers: the 5 minute tea timer, the 10 minute pasta timer. Which one?"
    ]
    assert replies("set a timer for 3 minutes") == ["Timer set for 3 minutes."]  # a new request, not a name
    assert replies("cancel the timer")[0].endswith("Which one?")
    assert replies("the pasta one") == ["Cancelled the pasta timer."]
    registry.call("set_timer", {"minutes": 5, "label": "茶"})
    assert replies("取消计时器")[0].endswith("要哪一个？")
    assert replies("茶的那个") == ["已取消茶计时器。"]
    assert replies("pasta") != ["Cancelled the pasta timer."]  # nothing was asked: "pasta" is for the model
    assert engine.tokens[: len(cached)] == cached

    # Only the one asked answers, and only for a while.
    registry.call("set_timer", {"minutes": 10, "label": "pasta"})
    assert replies("cancel the timer", asker="kitchen")[0].endswith("Which one?")
    replies("pasta", asker="bedroom")
    assert "pasta" in registry.call("list_timers", {}).text
    monkeypatch.setattr("assistant.turn.CONFIRM_SECONDS", -1.0)
    assert replies("cancel the timer", asker="kitchen")[0].endswith("Which one?")
    replies("pasta", asker="kitchen")
    assert "pasta" in registry.call("list_timers", {}).text


def test_volume_is_bounded_and_remembered(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    assert registry.call("set_volume", {"percent": 95}).text == "Volume 95 percent."
    assert registry.call("change_volume", {"direction": "up"}).text == "Volume 100 percent."
    restarted = registry_in(tmp_path)
    assert restarted.call("change_volume", {"direction": "down"}).text == "Volume 90 percent."
    assert restarted.call("set_volume", {"percent": 150}).text == "Sorry, the volume in percent can be from 0 to 100."
    assert restarted.call("change_volume", {"direction": "up"}).text == "Volume 100 percent."  # 90 was kept


def test_stop_and_what_can_you_do(tmp_path: Path) -> None:
    stopped = []
    registry = Registry(context=SkillContext(state_dir=tmp_path, stop=lambda: stopped.append(True)))
    registry.context.skills = lambda: list(registry.skills.values())
    registry.load_folder(BUILTIN_SKILLS)
    assert registry.call("stop", {}).text == "" and stopped == [True]
    can = lambda: registry.call("what_can_you_do", {}).text  # noqa: E731
    builtins = "keep notes and a shopping list; change the volume; tell the time; tell the date; set timers"
    assert can() == f"I can {builtins} and set alarms."  # said as a person would, never "stop"
    for asked in ("what else can you do", "what can I ask you", "你会做什么", "你都能干什么", "你会什么"):
        assert matched(registry, asked)[0] == "what_can_you_do", asked

    # The household's own skills are said too, after the built-ins, even with a dozen of them.
    def skill_file(folder: Path, name: str, description: str) -> None:
        folder.mkdir(exist_ok=True)
        code = f'from assistant import skill\n\n@skill\ndef {name}() -> str:\n    """{description}"""\n    return ""\n'
        (folder / f"{name}.py").write_text(code)

    skill_file(tmp_path / "mine", "forecast", "Tell the weather forecast.")
    registry.load_folder(tmp_path / "mine")
    assert can() == f"I can {builtins}; set alarms and tell the weather forecast."
    for i in range(9):
        skill_file(tmp_path / "more", f"extra_{i}", f"Do thing {i}.")
    registry.load_folder(tmp_path / "more")
    assert can().endswith("; set alarms; tell the weather forecast; do thing 0; do thing 1; do thing 2; do thing 3; "
                          "do thing 4 and 4 more things.")  # fmt: skip
    registry.context.language = "zh"
    said_zh = "我可以记笔记和购物清单、调音量、报时、说日期、定计时器、定闹钟、forecast、"
    assert can() == said_zh + "extra 0、extra 1、extra 2、extra 3、extra 4、另外4件事。"


def test_the_shopping_list_and_notes_are_read_and_changed_as_a_recogniser_writes_it(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    say("add milk to my shopping list")
    say("add an apple to the shopping list")
    for asked in ("what's on my list", "whats on my shopping list", "what is on the list"):
        assert say(asked) == "On your shopping list: milk, an apple.", asked
    assert say("remove the milk from the shopping list") == "Removed the milk."  # "the" is not the item's
    assert say("take the apple off the list") == "Removed the apple."
    assert say("what's on my list") == "Your shopping list is empty."
    say("take a note buy stamps")
    assert say("what's in my notes") == "On your notes: buy stamps."
    assert say("delete buy stamps from my notes") == "Removed buy stamps."
    assert say("read me my notes") == "You have no notes."
    say("add bread to the shopping list")
    assert matched(registry, "clear the list")[0] == matched(registry, "clear my list")[0] == "clear_shopping_list"


def test_the_volume_is_set_to_the_most_or_muted_as_people_say_it(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("volume to max") == say("max volume") == "Volume 100 percent."
    assert say("mute") == "Volume 0 percent."
    assert say("louder") == "Volume 100 percent."  # back to where it was before mute
    registry.context.language = "zh"
    assert say("音量 调到 最大") == "音量100%。"
    assert say("静音") == "音量0%。"


def test_an_item_said_in_the_singular_is_the_one_on_the_list_in_the_plural(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("add eggs, tomatoes, berries and glass to the shopping list") == (
        "Added eggs, tomatoes, berries and glass to the shopping list."
    )
    assert say("add egg, glasses to the shopping list") == "Egg and glasses are already on the shopping list."
    assert (
        say("add egg, bus and tomato to the shopping list")
        == "Added bus to the shopping list. Egg and tomato are already on it."
    )
    assert say("remove berry from the shopping list") == "Removed berry."
    assert say("remove the tomato from my list") == "Removed the tomato."
    assert say("what's on my list") == "On your shopping list: eggs, glass, bus."
    say("take a note buy stamps")
    assert say("note that buy stamp") == "That is already in your notes."


def test_notes_are_taken_off_and_the_list_read_in_chinese_as_a_recogniser_writes_it(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    registry.context.language = "zh"
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    say("记 一下 买 邮票")
    say("记 一下 给 妈妈 打电话")
    assert say("把 买 邮票 从 笔记 里 删掉") == "已删除买邮票。"
    assert say("从 我的 笔记 里 删除 给 妈妈 打电话") == "已删除给妈妈打电话。"
    assert say("我 记 了 什么") == "你没有笔记。"
    say("把 牛奶 加到 购物清单")
    assert say("购物清单 里 有 什么") == "购物清单上有：牛奶。"
    for asked in ("what year is it", "what month is it"):
        assert matched(registry, asked)[0] == "current_date", asked


def test_two_clients_adding_the_same_items_at_once_keep_each_once(tmp_path: Path) -> None:
    households = [registry_in(tmp_path) for _ in range(4)]  # each with its own connection, as processes have
    start = threading.Barrier(len(households))
    problems: list[str] = []

    def add_all(registry: Registry) -> None:
        start.wait()
        for n in range(30):
            if (error := registry.call("add_item", {"text": f"bread {n}", "list": "shopping"}).error) is not None:
                problems.append(error)

    threads = [threading.Thread(target=add_all, args=(registry,)) for registry in households]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert problems == []
    with sqlite3.connect(tmp_path / "notes.sqlite3") as db:
        assert db.execute("SELECT count(*), count(DISTINCT text) FROM items").fetchone() == (30, 30)


def test_unmute_goes_back_to_the_volume_before_mute_after_a_restart_too(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("volume thirty") == "Volume 30 percent."
    assert say("mute") == "Volume 0 percent."
    registry = registry_in(tmp_path)  # a restart
    assert say("unmute") == "Volume 30 percent."  # not a whisper of 10
    say("mute")
    assert say("louder") == "Volume 30 percent."
    registry.context.language = "zh"
    say("静音")
    assert say("取消 静音") == "音量30%。"
    assert say("大声 一点") == "音量40%。"  # not muted: a step up


def test_removing_everything_from_the_list_is_clearing_it_with_its_question(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    for asked in ("delete everything from my shopping list", "remove all items from the list"):
        assert matched(registry, asked) == ("clear_shopping_list", {}), asked  # not an item named "everything"
    assert registry.skills["clear_shopping_list"].confirm
    assert matched(registry, "remove milk from the list") == ("remove_item", {"text": "milk"})


def test_removing_what_is_not_there_or_nothing_says_so_clearly(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    registry.call("add_item", {"text": "milk", "list": "shopping"})
    for nothing in ("", "  ", "."):
        assert registry.call("remove_item", {"text": nothing}).text == "What should I remove?", nothing
    assert registry.call("remove_item", {"text": "bread"}).text == "Bread is not on the shopping list."
    assert registry.call("remove_item", {"text": "call mom", "list": "notes"}).text == "Call mom is not in your notes."
    registry.context.language = "zh"
    assert registry.call("remove_item", {"text": ""}).text == "要删除什么？"
    assert registry.call("remove_item", {"text": "面包"}).text == "购物清单上没有面包。"
    assert registry.call("remove_item", {"text": "买邮票", "list": "notes"}).text == "笔记里没有买邮票。"
    assert registry.call("read_items", {"list": "shopping"}).text == "购物清单上有：milk。"  # nothing was removed


def test_an_item_said_with_an_article_is_the_one_listed_without(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    say = lambda text: registry.call(*matched(registry, text)).text  # noqa: E731
    assert say("add the milk to the shopping list") == "Added the milk to the shopping list."
    assert say("add milk to the shopping list") == "Milk is already on the shopping list."
    assert say("add some eggs to the shopping list") == "Added some eggs to the shopping list."
    assert say("add an egg to the shopping list") == "An egg is already on the shopping list."
    assert say("remove eggs from the shopping list") == "Removed eggs."
    assert say("what's on my list") == "On your shopping list: the milk."
