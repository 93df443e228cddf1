"""Built-in skills: timers and alarms, kept in SQLite so that they survive restarts.

A background clock rings whatever is due, including what fell due while the assistant was down.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Literal

from assistant import Range, SkillContext, StorageError, background, skill

SCHEMA = """CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL NOT NULL,
    length REAL NOT NULL DEFAULT 0, paused_left REAL);"""
# Columns added since the first release, for state directories that have the older table.
NEW_COLUMNS = ("length REAL NOT NULL DEFAULT 0", "paused_left REAL")
TICK = 0.25  # seconds between looks at the clock
MAX_TIMER = 24 * 3600  # seconds; longer is an alarm's job
MAX_BACKOFF = 5.0  # seconds between looks while the stored timers cannot be read or written
LATE = 60  # seconds past due after which a ring says when it was due (the assistant was not running)
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _db(context: SkillContext) -> Iterator[sqlite3.Connection]:
    with context.database("timers", SCHEMA) as db:
        present = {row[1] for row in db.execute("PRAGMA table_info(timers)")}
        for column in NEW_COLUMNS:
            if column.split()[0] not in present:
                db.execute(f"ALTER TABLE timers ADD COLUMN {column}")
        yield db


def _duration(seconds: float, before_noun: bool = False) -> str:
    """Spoken length: "1 hour and 30 minutes", or before a noun "1 hour and 30 minute" (timer)."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{n} {unit}{'s' if n != 1 and not before_noun else ''}"
        for n, unit in ((hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if n
    ]
    return " and ".join(parts) or "0 seconds"


def _timer_name(label: str, length: float) -> str:
    if label:
        return f"the {label} timer"
    return f"the {_duration(length, True)} timer" if length else "the timer"  # set before lengths were kept


def _full_name(label: str, length: float) -> str:
    """The name that tells apart timers of one label: "the 10 minute pasta timer", as it can be said back."""
    return f"the {_duration(length, True)} {label} timer" if label and length else _timer_name(label, length)


def _label(text: str) -> str:
    """A timer's label without the Chinese words around it: "一个意大利面的" and "一个叫意大利面的" are 意大利面."""
    label = text.strip().removeprefix("一个")
    if called := re.fullmatch(r"(叫做|叫|名为|名叫)(.+)的", label):
        label = called.group(2)
    return label.removesuffix("的").strip()


def _an(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _timers(db: sqlite3.Connection, label: str, start_hours: int, start_minutes: int, start_seconds: int) -> list:
    """The timers named `label`, or those first set for the given length; all timers if neither is given."""
    rows = db.execute(
        "SELECT id, label, due, length, paused_left FROM timers WHERE kind = 'timer' ORDER BY due"
    ).fetchall()
    length = start_hours * 3600 + start_minutes * 60 + start_seconds
    if _label(label):
        rows = [r for r in rows if _label(r[1]).lower() == _label(label).lower()]
    if length:
        rows = [r for r in rows if round(r[3]) == length]
    return rows


def _left(due: float, paused_left: float | None) -> float:
    return paused_left if paused_left is not None else max(due - time.time(), 0)


# Durations the sentence library has no template for.
HOUR_AND_A_HALF = {"hours": 1, "minutes": 30}
HALF_AN_HOUR = {"minutes": 30}
SETTING = "[(set|start)] [a|an|the|my] "


@skill(
    sentences={
        "en": [(SETTING + "timer for (an|one) hour and a half", HOUR_AND_A_HALF),
               (SETTING + "(hour and a half|90 minute) timer", HOUR_AND_A_HALF),
               (SETTING + "timer for half an hour", HALF_AN_HOUR), (SETTING + "half hour timer", HALF_AN_HOUR),
               "[set|start] (a|an|the|my) {label} timer for {minutes} minute[s]",
               "[set|start] (a|an|the|my) {label} timer for {hours} hour[s]",
               "[set|start] (a|an|the|my) {label} timer for {seconds} second[s]"],
        "zh": [("[设置|设定|开始|定][一个]半(个)小时[的]计时[器]", HALF_AN_HOUR),
               ("[设置|设定|开始|定][一个]一个半小时[的]计时[器]", HOUR_AND_A_HALF),
               "[设置|设定|定][一个]{minutes}分钟[的]计时器", "[设置|设定|定][一个]{seconds}秒[钟][的]计时器",
               "{minutes}分钟后提醒我", "{hours}(个)小时后提醒我"],
    },
    intents={"HassStartTimer": {"label": "{name}"}},
)  # fmt: skip
def set_timer(
    context: SkillContext,
    hours: Annotated[int, Range(0, 24)] = 0,
    minutes: Annotated[int, Range(0, 1440)] = 0,
    seconds: Annotated[int, Range(0, 3600)] = 0,
    label: str = "",
) -> str:
    """Start a countdown timer.

    Args:
        hours: hours to count down
        minutes: minutes to count down, added to the hours
        seconds: seconds to count down, added to the hours and minutes
        label: what the timer is for, e.g. "pasta"
    """
    length = hours * 3600 + minutes * 60 + seconds
    if length <= 0:
        return "How long should the timer run?"
    if length > MAX_TIMER:
        return "I can set timers for up to 24 hours; for later, set an alarm."
    label = _label(label)
    with _db(context) as db:
        db.execute(
            "INSERT INTO timers (kind, label, due, length) VALUES ('timer', ?, ?, ?)",
            (label, time.time() + length, length),
        )
    name = f"The {label} timer" if label else "Timer"
    return f"{name} {'is ' if label else ''}set for {_duration(length)}."


# How alarms are asked for. hassil's number lists cannot add 12 to an hour, so a time after noon
# ("7 pm", "晚上7点") has one template per hour, each with its 24-hour clock hour fixed.
ALARM = "(set [an|the|my] alarm (for|at)|wake me [up] at) "
EN_TIME = "(:{minute}| [{minute}]) [o'clock]"  # "7:30", "7 30", "seven thirty", "7 o'clock"
AM = " (am|a m|a.m.|in the morning)"
PM = " (pm|p m|p.m.|in the afternoon|in the evening|at night|tonight)"
EN_HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
ZH_ALARM = "[设置|设定|定][一个][明天]{time}(叫醒我|[的]闹钟)"
ZH_AFTERNOON = "(下午|晚上|傍晚)"
ZH_HOURS = ["一", "(二|两)", "三", "四", "五", "六", "七", "八", "九", "十", "十一"]  # 晚上十二点 is midnight: not here


def _after_noon(template: str, words: list[str], fixed: dict | None = None) -> list[tuple[str, dict]]:
    """`template` once for each hour after noon, its {pm} the hour as said (12 pm is noon)."""
    return [
        (template.replace("{pm}", f"({hour}|{word})"), {"hour": hour % 12 + 12, **(fixed or {})})
        for hour, word in enumerate(words, start=1)
    ]


@skill(
    sentences={
        "en": [
            (ALARM + "(12|twelve)" + EN_TIME + AM, {"hour": 0}),  # before {hour}, which wins a tie
            ALARM + "{hour}" + EN_TIME + f"[{AM}] [tomorrow]",
            (ALARM + "midnight", {"hour": 0}),
            (ALARM + "noon", {"hour": 12}),
            *_after_noon(ALARM + "{pm}" + EN_TIME + PM + " [tomorrow]", EN_HOURS),
        ],
        "zh": [
            ZH_ALARM.replace("{time}", "[早上|上午|凌晨]{hour}(点[钟]|点{minute}[分]|:{minute})"),
            (ZH_ALARM.replace("{time}", "[早上|上午|凌晨]{hour}点半"), {"minute": 30}),
            *_after_noon(ZH_ALARM.replace("{time}", ZH_AFTERNOON + "{pm}(点[钟]|点{minute}[分])"), ZH_HOURS),
            *_after_noon(ZH_ALARM.replace("{time}", ZH_AFTERNOON + "{pm}点半"), ZH_HOURS, {"minute": 30}),
        ],
    }
)
def set_alarm(
    hour: Annotated[int, Range(0, 23)], context: SkillContext, minute: Annotated[int, Range(0, 59)] = 0, label: str = ""
) -> str:
    """Set an alarm for the next time the clock shows hour:minute.

    Args:
        hour: hour on a 24-hour clock
        minute: minute
        label: what the alarm is for
    """
    now = datetime.now()
    due = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if due <= now:
        due += timedelta(days=1)
    # Said with the day when it is not today: "set an alarm for 7" at 15:00 is 7:00 tomorrow morning.
    when = f"{hour}:{minute:02d}" + (" tomorrow" if due.date() != now.date() else "")
    with _db(context) as db:
        if db.execute("SELECT 1 FROM timers WHERE kind = 'alarm' AND due = ?", (due.timestamp(),)).fetchone():
            return f"An alarm is already set for {when}."  # one alarm, not two that ring together
        db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', ?, ?)", (label.strip(), due.timestamp()))
    return f"Alarm set for {when}."


@skill(
    sentences={
        "en": ["what timers do I have", "list my timers", "list my alarms", "what alarms do I have"],
        "zh": ["有哪些计时器", "我有什么闹钟"],
    }
)
def list_timers(context: SkillContext) -> str:
    """Say which timers and alarms are set."""
    with _db(context) as db:
        rows = db.execute("SELECT kind, label, due, paused_left FROM timers ORDER BY due").fetchall()
    if not rows:
        return "No timers or alarms are set."
    said = []
    for kind, label, due, paused_left in rows:
        if kind == "alarm":
            said.append(f"an alarm at {datetime.fromtimestamp(due).strftime('%-H:%M')}")
        else:
            paused = " (paused)" if paused_left is not None else ""
            timer = _an(f"{label} timer" if label else "timer")
            said.append(f"{timer} with {_duration(_left(due, paused_left))} left{paused}")
    return "You have " + ", ".join(said) + "."


def _status(rows: list) -> str:
    said = []
    for _, label, due, length, paused_left in rows:
        paused = ", paused" if paused_left is not None else ""
        said.append(f"{_timer_name(label, length)} has {_duration(_left(due, paused_left))} left{paused}")
    text = "; ".join(said)
    return text[0].upper() + text[1:] + "."


def _change(db: sqlite3.Connection, row: tuple, action: str, seconds: int, name: str) -> str:
    row_id, label, due, length, paused_left = row
    if action == "cancel":
        db.execute("DELETE FROM timers WHERE id = ?", (row_id,))
        return f"Cancelled {name}."
    if action == "pause":
        if paused_left is not None:
            return f"{name[0].upper()}{name[1:]} is already paused."
        db.execute("UPDATE timers SET paused_left = ? WHERE id = ?", (_left(due, None), row_id))
        return f"Paused {name}."
    if action == "resume":
        if paused_left is None:
            return f"{name[0].upper()}{name[1:]} is running."
        db.execute("UPDATE timers SET due = ?, paused_left = NULL WHERE id = ?", (time.time() + paused_left, row_id))
        return f"Resumed {name}."
    left = max(_left(due, paused_left) + (seconds if action == "add" else -seconds), 0)
    if paused_left is None:
        db.execute("UPDATE timers SET due = ? WHERE id = ?", (time.time() + left, row_id))
    else:
        db.execute("UPDATE timers SET paused_left = ? WHERE id = ?", (left, row_id))
    return f"{name[0].upper()}{name[1:]} has {_duration(left)} left."


# A timer by its length and label ("the 10 minute pasta timer"), as the question "Which one?" names
# it when two share a label: the sentence library has a name or a length, never both.
LENGTH = "({start_hours} hour[s] [and {start_minutes} minute[s]]|{start_minutes} minute[s]|{start_seconds} second[s])"
PICK = "[the|my] " + LENGTH + " {label} timer"
ZH_PICK = "({start_hours}[个]小时|{start_minutes}分钟)[的]"


@skill(
    sentences={
        "en": [("how (much time|long) is left", {"action": "status"}),
               ("how much time (remains|do I have left)", {"action": "status"}),
               # Not "remove": "remove 5 minutes from the pizza timer" takes time off.
               ("(cancel|stop|delete) " + PICK, {"action": "cancel"}),
               ("pause " + PICK, {"action": "pause"}),
               ("(resume|unpause|continue) " + PICK, {"action": "resume"}),
               ("how (much time|long) is left on " + PICK, {"action": "status"}),
               ("add {minutes} minute[s] to " + PICK, {"action": "add"})],
        "zh": [("取消(所有|全部)[的]计时器", {"action": "cancel_all"}),
               ("把(所有|全部)[的]计时器[都]取消", {"action": "cancel_all"}),
               # "取消10分钟的计时器": the library reads "10分钟的" as a timer's name.
               ("取消[那个|一个]" + ZH_PICK + "[{label}]计时器", {"action": "cancel"})],
    },
    intents={
        "HassTimerStatus": {"action": "status", "label": "{name}"},
        "HassCancelTimer": {"action": "cancel", "label": "{name}"},
        "HassCancelAllTimers": {"action": "cancel_all"},
        "HassPauseTimer": {"action": "pause", "label": "{name}"},
        "HassUnpauseTimer": {"action": "resume", "label": "{name}"},
        "HassIncreaseTimer": {"action": "add", "label": "{name}"},
        "HassDecreaseTimer": {"action": "subtract", "label": "{name}"},
    },
)  # fmt: skip
def control_timer(
    action: Literal["status", "cancel", "cancel_all", "pause", "resume", "add", "subtract"],
    context: SkillContext,
    label: str = "",
    start_hours: Annotated[int, Range(0, 24)] = 0,
    start_minutes: Annotated[int, Range(0, 1440)] = 0,
    start_seconds: Annotated[int, Range(0, 3600)] = 0,
    hours: Annotated[int, Range(0, 24)] = 0,
    minutes: Annotated[int, Range(0, 1440)] = 0,
    seconds: Annotated[int, Range(0, 3600)] = 0,
) -> str:
    """Time left on timers, or cancel, pause, resume, lengthen or shorten one (cancel_all: every timer).

    Args:
        action: what to do
        label: the timer's label, to pick it out
        start_hours: the hours it was set for, to pick it out
        start_minutes: the minutes it was set for, to pick it out
        start_seconds: the seconds it was set for, to pick it out
        hours: hours to add or subtract
        minutes: minutes to add or subtract
        seconds: seconds to add or subtract
    """
    with _db(context) as db:
        rows = _timers(db, label, start_hours, start_minutes, start_seconds)
        if not rows:
            picked = label.strip() or start_hours or start_minutes or start_seconds
            return "There is no such timer." if picked else "No timer is running."
        if action == "status":
            return _status(rows)
        if action == "cancel_all":
            db.executemany("DELETE FROM timers WHERE id = ?", [(r[0],) for r in rows])
            return f"Cancelled {len(rows)} timer{'s' if len(rows) != 1 else ''}."
        if action in ("pause", "resume") and len(rows) > 1:
            # "pause the timer" with one running and one paused means the running one.
            rows = [r for r in rows if (r[4] is None) == (action == "pause")] or rows
        seconds = hours * 3600 + minutes * 60 + seconds
        if len(rows) == 1:
            return _change(db, rows[0], action, seconds, _timer_name(rows[0][1], rows[0][3]))
        names = list(dict.fromkeys(_full_name(r[1].lower(), r[3]) for r in rows))  # "Pasta" is "pasta"
        if len(names) > 1:
            return f"You have {len(rows)} timers: {', '.join(names)}. Which one?"
        # Same label, same length: no answer to "Which one?" could pick one, so the one that ends first.
        first = min(rows, key=lambda r: _left(r[2], r[4]))
        return _change(db, first, action, seconds, f"{_timer_name(first[1], first[3])} with the least time left")


@skill(
    sentences={
        "en": ["(cancel|delete|remove|turn off) [my|the] alarm[s]", "(cancel|delete|remove) all [my|the] alarms"],
        "zh": ["取消[我的][所有]闹钟", "(关掉|删除|删掉)[我的][所有]闹钟", "把闹钟(取消|关掉|删掉)"],
    }
)
def cancel_alarms(context: SkillContext) -> str:
    """Cancel every alarm (timers keep running)."""
    with _db(context) as db:
        removed = db.execute("DELETE FROM timers WHERE kind = 'alarm'").rowcount
    return f"Cancelled {removed} alarm{'s' if removed != 1 else ''}." if removed else "No alarm is set."


def _ring(kind: str, label: str, due: float) -> str:
    """What is said when a timer or alarm comes due; late (the assistant was not running), with when it was due."""
    what = f"Your {label} {kind}" if label else f"Your {kind}"
    if time.time() - due > LATE:
        then = datetime.fromtimestamp(due)
        day = "" if then.date() == datetime.now().date() else f" on {then.strftime('%A')}"
        return f"{what} was due at {then.hour}:{then.minute:02d}{day}; I could not ring it then."
    return f"{what} is done." if kind == "timer" else f"{what} is ringing."


@background
def ring_due_timers(context: SkillContext, stop: threading.Event) -> None:
    """Ring every timer or alarm that is due, once, then forget it.

    Stored data that cannot be read or written (a full disk) does not stop the clock: it looks
    again with backoff, and a timer rung but not yet deleted is never rung twice.
    """
    rung: set[int] = set()  # rung, and still to be deleted
    wait, failing = TICK, False
    while not stop.wait(wait):
        try:
            with _db(context) as db:
                due = db.execute(
                    "SELECT id, kind, label, due FROM timers WHERE due <= ? AND paused_left IS NULL ORDER BY due",
                    (time.time(),),
                ).fetchall()
            for row_id, kind, label, due_at in due:
                if row_id not in rung:
                    context.say(_ring(kind, label, due_at))
                    rung.add(row_id)
            if rung:
                with _db(context) as db:
                    db.executemany("DELETE FROM timers WHERE id = ?", [(row_id,) for row_id in rung])
                rung.clear()
        except StorageError as e:
            if not failing:
                log.error("timers: %s; trying again with backoff", e)
            wait, failing = min(wait * 2, MAX_BACKOFF), True
            continue
        if failing:
            log.info("timers: the stored timers can be read and written again")
        wait, failing = TICK, False
