"""Built-in skills: stop, repeat, what can you do, and the speaker volume."""

from __future__ import annotations

import shutil
import subprocess
from typing import Annotated, Literal

from assistant import Range, SkillContext, skill

SCHEMA = "CREATE TABLE IF NOT EXISTS volume (id INTEGER PRIMARY KEY CHECK (id = 0), percent INTEGER NOT NULL);"
DEFAULT_VOLUME = 60
STEP = 10


# These three answer fixed phrases: when the prompt is tight, the model need not know them.
@skill(
    sentences={"en": ["stop", "be quiet", "cancel", "forget it"], "zh": ["停", "停止", "别说了", "算了", "没事了"]},
    intents={"HassNevermind": {}},
    optional_tool=True,
)
def stop(context: SkillContext) -> str:
    """Stop talking and forget the current request."""
    context.stop()
    return ""


@skill(
    sentences={"en": ["repeat that", "say that again", "what did you say"], "zh": ["再说一遍", "重复一下"]},
    optional_tool=True,
)
def repeat(context: SkillContext) -> str:
    """Say the last reply again."""
    return context.last_reply() or context.localized("I haven't said anything yet.", zh="我还没说过话。")


@skill(sentences={"en": ["what can you do", "help"], "zh": ["你能做什么", "帮助"]}, optional_tool=True)
def what_can_you_do(context: SkillContext) -> str:
    """List what the assistant can do."""
    skills = [s for s in context.skills() if s.name not in ("stop", "repeat", "what_can_you_do")]
    if not skills:
        return context.localized("Not much yet: no skills are installed.", zh="还不多：没有安装技能。")
    things = [s.description.rstrip(".").lower() for s in skills[:12]]
    # Descriptions are docstrings, in English: in Chinese the built-ins have their own words, others their names.
    things_zh = dict.fromkeys(BUILTIN_ZH.get(s.name, s.name.replace("_", " ")) for s in skills[:12])
    return context.localized("I can " + "; ".join(things) + ".", zh="我可以" + "、".join(things_zh) + "。")


BUILTIN_ZH = {
    "current_time": "报时",
    "current_date": "说日期",
    "set_timer": "定计时器",
    "list_timers": "查计时器和闹钟",
    "control_timer": "暂停、继续或取消计时器",
    "set_alarm": "定闹钟",
    "cancel_alarms": "取消闹钟",
    "add_item": "记笔记和购物清单",
    "read_items": "读笔记和购物清单",
    "remove_item": "从清单上删东西",
    "clear_shopping_list": "清空购物清单",
    "set_volume": "调音量",
    "change_volume": "调音量",
    "switch_device": "开关家里的设备",
    "switch_all": "开关一个房间的灯",
    "set_brightness": "调亮度",
    "set_cover": "开关窗帘",
    "set_temperature": "调温度",
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
    with context.database("system", SCHEMA) as db:
        db.execute("INSERT OR REPLACE INTO volume (id, percent) VALUES (0, ?)", (percent,))
    _apply(percent)
    return percent


@skill(
    sentences={
        "en": ["volume [to] {percent} [percent]"],
        "zh": ["音量(调到|调成|设为|设置为){percent}[%]", "把音量(调到|设为){percent}[%]"],
    },
    intents={"HassSetVolume": {"percent": "{volume_level}"}},
)
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
               ("turn down the volume", {"direction": "down"}), ("[a bit] quieter", {"direction": "down"})],
        "zh": [("大声[一]点", {"direction": "up"}), ("小声[一]点", {"direction": "down"}),
               ("(调高|增大|提高)音量", {"direction": "up"}), ("(调低|减小|降低)音量", {"direction": "down"})],
    }
)  # fmt: skip
def change_volume(direction: Literal["up", "down"], context: SkillContext) -> str:
    """Make the speaker louder or quieter by a step.

    Args:
        direction: "up" for louder, "down" for quieter
    """
    step = STEP if direction == "up" else -STEP
    return _said_volume(context, _store(context, current_volume(context) + step))


def _said_volume(context: SkillContext, percent: int) -> str:
    return context.localized(f"Volume {percent} percent.", zh=f"音量{percent}%。")
