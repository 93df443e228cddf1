"""Built-in skills: stop, repeat, what can you do, and the speaker volume."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from typing import Annotated, Literal

from assistant import Range, SkillContext, skill

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS volume (id INTEGER PRIMARY KEY CHECK (id = 0), percent INTEGER NOT NULL);"
    # The volume before it was muted, which "unmute" (or "louder") goes back to.
    "CREATE TABLE IF NOT EXISTS unmuted (id INTEGER PRIMARY KEY CHECK (id = 0), percent INTEGER NOT NULL);"
)
DEFAULT_VOLUME = 60
STEP = 10


# These three answer fixed phrases: when the prompt is tight, the model need not know them.
@skill(
    sentences={
        # "Stop the alarm" stops one that rings and touches no alarm set for later (as "turn off the alarm" would).
        "en": ["stop", "be quiet", "cancel", "forget it", "(stop|silence) [the|my] alarm"],
        "zh": ["停", "停止", "别说了", "算了", "没事了", "停止闹钟", "[闹钟]别响了"],
    },
    intents={"HassNevermind": {}},
    optional_tool=True,
)
def stop(context: SkillContext) -> str:
    """Stop talking and forget the current request."""
    context.stopped_at = time.time()  # a ringing alarm stops too
    context.stop()
    return ""


@skill(
    sentences={"en": ["repeat that", "say that again", "what did you say"], "zh": ["再说一遍", "重复一下"]},
    optional_tool=True,
)
def repeat(context: SkillContext) -> str:
    """Say the last reply again."""
    return context.last_reply() or context.localized("I haven't said anything yet.", zh="我还没说过话。")


@skill(
    sentences={
        "en": ["what [else|all] can you do", "what can I ask you [to do]", "help"],
        "zh": ["你[都|还](能|会|可以)(做|干)[些]什么", "你会什么", "帮助"],
    },
    optional_tool=True,
)
def what_can_you_do(context: SkillContext) -> str:
    """List what the assistant can do."""
    skills = [s for s in context.skills() if s.name not in ("stop", "repeat", "what_can_you_do")]
    if not skills:
        return context.localized("Not much yet: no skills are installed.", zh="还不多：没有安装技能。")
    # The built-ins in a few spoken words each; other skills by their docstring's first line, which
    # is English: in Chinese, by name. Every skill is said, the ones added last too, up to a limit.
    builtin = dict.fromkeys(BUILTIN[s.name] for s in skills if s.name in BUILTIN)
    others = [s for s in skills if s.name not in BUILTIN]
    things = [en for en, _ in builtin] + [_gist(s.description) for s in others]
    things_zh = [zh for _, zh in builtin] + [s.name.replace("_", " ") for s in others]
    more = len(things) - MOST_SAID
    if more > 0:
        things = things[:MOST_SAID] + [f"{more} more thing{'s' if more > 1 else ''}"]
        things_zh = things_zh[:MOST_SAID] + [f"另外{more}件事"]
    listed = "; ".join(things[:-1]) + " and " + things[-1] if len(things) > 1 else things[0]  # descriptions hold commas
    return context.localized(f"I can {listed}.", zh="我可以" + "、".join(things_zh) + "。")


def _gist(description: str) -> str:
    """A skill's description as "I can ..." says it: its first sentence, "Tell the weather forecast. Uses
    the met.no API ..." as "tell the weather forecast"; only the first letter made small (not "api")."""
    sentence = re.split(r"(?<=[.!?])\s", description.strip(), maxsplit=1)[0].rstrip(".!?")
    return sentence if sentence[1:2].isupper() else sentence[:1].lower() + sentence[1:]


MOST_SAID = 12  # things listed by "what can you do": past that, a list is not heard to its end
# What each built-in does, as "I can ..." says it; skills that do one thing share their words.
BUILTIN = {
    "current_time": ("tell the time", "报时"),
    "current_date": ("tell the date", "说日期"),
    "set_timer": ("set timers", "定计时器"),
    "list_timers": ("set timers", "定计时器"),
    "control_timer": ("set timers", "定计时器"),
    "set_alarm": ("set alarms", "定闹钟"),
    "cancel_alarms": ("set alarms", "定闹钟"),
    "snooze": ("set alarms", "定闹钟"),
    "add_item": ("keep notes and a shopping list", "记笔记和购物清单"),
    "read_items": ("keep notes and a shopping list", "记笔记和购物清单"),
    "remove_item": ("keep notes and a shopping list", "记笔记和购物清单"),
    "clear_shopping_list": ("keep notes and a shopping list", "记笔记和购物清单"),
    "set_volume": ("change the volume", "调音量"),
    "change_volume": ("change the volume", "调音量"),
    "switch_device": ("switch lights and devices", "开关家里的设备"),
    "switch_all": ("switch lights and devices", "开关家里的设备"),
    "device_state": ("switch lights and devices", "开关家里的设备"),
    "set_brightness": ("dim the lights", "调亮度"),
    "set_cover": ("open and close the blinds", "开关窗帘"),
    "set_temperature": ("set the heating", "调温度"),
}


def _apply(percent: int) -> None:
    # On the board the speaker is an ALSA mixer control; elsewhere the level is only remembered.
    if shutil.which("amixer"):
        subprocess.run(["amixer", "-q", "sset", "Master", f"{percent}%"], check=False, timeout=5)


def current_volume(context: SkillContext) -> int:
    with context.database("system", SCHEMA) as db:
        row = db.execute("SELECT percent FROM volume WHERE id = 0").fetchone()
    return row[0] if row else DEFAULT_VOLUME


def _store(context: SkillContext, percent: int) -> int:
    percent = max(0, min(100, percent))
    before = current_volume(context)
    with context.database("system", SCHEMA) as db:
        if percent == 0 and before > 0:
            db.execute("INSERT OR REPLACE INTO unmuted (id, percent) VALUES (0, ?)", (before,))
        db.execute("INSERT OR REPLACE INTO volume (id, percent) VALUES (0, ?)", (percent,))
    _apply(percent)
    return percent


@skill(
    sentences={
        "en": ["[set the] volume [to] {percent} [percent]",
               ("[set the] volume to (max|maximum|full)", {"percent": 100}), ("max volume", {"percent": 100}),
               ("mute [the volume|the sound|the speaker]", {"percent": 0})],
        "zh": ["音量(调到|调成|设为|设置为){percent}[%]", "把音量(调到|设为){percent}[%]",
               ("[把]音量(调到|调成|开到)最大", {"percent": 100}), ("静音", {"percent": 0})],
    },
    intents={"HassSetVolume": {"percent": "{volume_level}"}},
)  # fmt: skip
def set_volume(percent: Annotated[int, Range(0, 100)], context: SkillContext) -> str:
    """Set the speaker volume.

    Args:
        percent: the volume in percent
    """
    return _said_volume(context, _store(context, percent))


@skill(
    sentences={
        "en": [("turn (it|the volume) up", {"direction": "up"}), ("turn up the volume", {"direction": "up"}),
               ("[a bit] louder", {"direction": "up"}), ("turn (it|the volume) down", {"direction": "down"}),
               ("turn down the volume", {"direction": "down"}), ("[a bit] quieter", {"direction": "down"}),
               ("[the] volume up", {"direction": "up"}), ("[the] volume down", {"direction": "down"}),
               ("unmute [the volume|the sound|the speaker]", {"direction": "up"})],
        "zh": [("大声[一]点", {"direction": "up"}), ("小声[一]点", {"direction": "down"}),
               ("(调高|增大|提高)音量", {"direction": "up"}), ("(调低|减小|降低)音量", {"direction": "down"}),
               ("(取消|关闭)静音", {"direction": "up"})],
    }
)  # fmt: skip
def change_volume(direction: Literal["up", "down"], context: SkillContext) -> str:
    """Make the speaker louder or quieter by a step.

    Args:
        direction: "up" for louder, "down" for quieter
    """
    current = current_volume(context)
    if direction == "up" and current == 0:  # muted: back to where it was, not to a whisper
        with context.database("system", SCHEMA) as db:
            row = db.execute("SELECT percent FROM unmuted WHERE id = 0").fetchone()
        if row:
            return _said_volume(context, _store(context, row[0]))
    step = STEP if direction == "up" else -STEP
    return _said_volume(context, _store(context, current + step))


def _said_volume(context: SkillContext, percent: int) -> str:
    return context.localized(f"Volume {percent} percent.", zh=f"音量{percent}%。")
