"""The built-in skills (assistant/skills/builtin/), through the registry as the assistant uses them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from assistant import SkillContext
from assistant.skills.registry import BUILTIN_SKILLS, Registry

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
    assert second.call("remove_item", {"text": "bread"}).text == "bread is not on the list."
    second.call("add_item", {"text": "Äpfel", "list": "shopping"})
    assert second.call("remove_item", {"text": "äpfel"}).text == "Removed äpfel."  # not only ASCII letters fold
    assert second.call("add_item", {"text": "  ", "list": "notes"}).text == "What should I note?"
    assert second.call("read_items", {}).text == "On your notes: call the plumber."  # nothing blank was kept
    assert second.skills["clear_shopping_list"].confirm
    second.call("clear_shopping_list", {})
    assert second.call("read_items", {"list": "shopping"}).text == "Your shopping list is empty."


def test_a_long_list_is_read_in_part_with_how_many_are_left(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    for n in range(150):
        registry.call("add_item", {"text": f"item number {n} " + "x" * 80, "list": "shopping"})
    said = registry.call("read_items", {"list": "shopping"})
    assert said.error is None
    assert said.text.startswith("On your shopping list: item number 0 ") and "item number 19 " in said.text
    assert "item number 20 " not in said.text and said.text.endswith(", and 130 more.")


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
    assert registry.call("cancel_alarms", {}).text == "Cancelled 1 alarm."  # the timer keeps running
    assert "pasta timer" in registry.call("list_timers", {}).text
    assert registry.call("control_timer", {"action": "cancel", "label": "pasta"}).text == "Cancelled the pasta timer."
    assert registry.call("control_timer", {"action": "cancel"}).text == "No timer is running."
    assert registry.call("cancel_alarms", {}).text == "No alarm is set."
    assert registry.call("set_timer", {}).text == "How long should the timer run?"
    assert "invalid arguments" in registry.call("set_alarm", {"hour": 25}).error


def ring_for(registry: Registry, said: list[str], count: int) -> None:
    """Run the timers' clock until it has said `count` things (or 5 s went by)."""
    stop = threading.Event()
    registry.start_background(stop)
    deadline = time.monotonic() + 5
    while len(said) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # and nothing more
    stop.set()


def test_an_alarm_says_its_day_and_is_not_set_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = registry_in(tmp_path)

    class ThreeInTheAfternoon(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:
            return cls(2026, 5, 4, 15, 0)

    monkeypatch.setitem(registry.skills["set_alarm"].func.__globals__, "datetime", ThreeInTheAfternoon)
    set_alarm = lambda **arguments: registry.call("set_alarm", arguments).text  # noqa: E731
    assert set_alarm(hour=7) == "Alarm set for 7:00 tomorrow."  # already past today: said, not left to guess
    assert set_alarm(hour=19, minute=30) == "Alarm set for 19:30."
    assert set_alarm(hour=7) == "An alarm is already set for 7:00 tomorrow."  # not a second one that rings too
    assert registry.call("cancel_alarms", {}).text == "Cancelled 2 alarms."


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


def test_timers_of_one_label_are_told_apart(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    call = lambda name, **arguments: registry.call(name, arguments).text  # noqa: E731
    call("set_timer", minutes=10, label="pasta")
    call("set_timer", minutes=5, label="pasta")
    assert call("control_timer", action="cancel", label="pasta") == (
        "You have 2 timers: the 5 minute pasta timer, the 10 minute pasta timer. Which one?"
    )  # each named as it can be said back
    assert call("control_timer", action="cancel", label="pasta", start_minutes=10) == "Cancelled the pasta timer."
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


def test_volume_is_bounded_and_remembered(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    assert registry.call("set_volume", {"percent": 95}).text == "Volume 95 percent."
    assert registry.call("change_volume", {"direction": "up"}).text == "Volume 100 percent."
    restarted = registry_in(tmp_path)
    assert restarted.call("change_volume", {"direction": "down"}).text == "Volume 90 percent."
    assert "invalid arguments" in restarted.call("set_volume", {"percent": 150}).error


def test_stop_and_what_can_you_do(tmp_path: Path) -> None:
    stopped = []
    registry = Registry(context=SkillContext(state_dir=tmp_path, stop=lambda: stopped.append(True)))
    registry.context.skills = lambda: list(registry.skills.values())
    registry.load_folder(BUILTIN_SKILLS)
    assert registry.call("stop", {}).text == "" and stopped == [True]
    answer = registry.call("what_can_you_do", {}).text
    assert answer.startswith("I can ") and "start a countdown timer" in answer and "stop" not in answer
