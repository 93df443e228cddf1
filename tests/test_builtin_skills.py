"""The built-in skills (assistant/skills/builtin/), through the registry as the assistant uses them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    assert registry.call("set_alarm", {"hour": 7, "minute": 5}).text == "Alarm set for 7:05."
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
