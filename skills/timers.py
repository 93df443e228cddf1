"""Built-in skills: timers and alarms, kept in SQLite so that they survive restarts.

A background clock rings whatever is due, including what fell due while the assistant was down.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated, Any

from assistant import Range, SkillContext, background, skill

SCHEMA = """CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL NOT NULL,
    length REAL NOT NULL DEFAULT 0, paused_left REAL);"""
# Columns added since the first release, for state directories that have the older table.
NEW_COLUMNS = ("length REAL NOT NULL DEFAULT 0", "paused_left REAL")
TICK = 0.25  # seconds between looks at the clock
MAX_TIMER = 24 * 3600  # seconds; longer is an alarm's job


@contextlib.contextmanager
def _db(context: SkillContext) -> Iterator[sqlite3.Connection]:
    with context.database("timers", SCHEMA) as db:
        present = {row[1] for row in db.execute("PRAGMA table_info(timers)")}
        for column in NEW_COLUMNS:
            if column.split()[0] not in present:
                db.execute(f"ALTER TABLE timers ADD COLUMN {column}")
        yield db


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{n} {unit}{'s' if n != 1 else ''}"
        for n, unit in ((hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if n
    ]
    return " and ".join(parts) or "0 seconds"


def _timer_name(label: str, length: float) -> str:
    return f"the {label} timer" if label else f"the {_duration(length)} timer"


def _timers(db: sqlite3.Connection, label: str, start_hours: int, start_minutes: int, start_seconds: int) -> list:
    """The timers named `label`, or those first set for the given length; all timers if neither is given."""
    rows = db.execute(
        "SELECT id, label, due, length, paused_left FROM timers WHERE kind = 'timer' ORDER BY due"
    ).fetchall()
    length = start_hours * 3600 + start_minutes * 60 + start_seconds
    if label.strip():
        rows = [r for r in rows if r[1].lower() == label.strip().lower()]
    if length:
        rows = [r for r in rows if round(r[3]) == length]
    return rows


def _left(due: float, paused_left: float | None) -> float:
    return paused_left if paused_left is not None else max(due - time.time(), 0)


def _one_timer(rows: list) -> tuple[Any, str | None]:
    """The single timer a request means, or what to say instead."""
    if not rows:
        return None, "There is no such timer."  # none with that label or length, or none at all
    if len(rows) > 1:
        names = [_timer_name(r[1], r[3]) for r in rows]
        return None, f"You have {len(rows)} timers: {', '.join(names)}. Which one?"
    return rows[0], None


# Durations Home Assistant's library has no template for, and the alarm (which its timers are not).
HOUR_AND_A_HALF = {"hours": 1, "minutes": 30}
HALF_AN_HOUR = {"minutes": 30}
SETTING = "[(set|start)] [a|an|the|my] "


@skill(
    sentences={
        "en": [(SETTING + "timer for (an|one) hour and a half", HOUR_AND_A_HALF),
               (SETTING + "(hour and a half|90 minute) timer", HOUR_AND_A_HALF),
               (SETTING + "timer for half an hour", HALF_AN_HOUR), (SETTING + "half hour timer", HALF_AN_HOUR),
               "[set|start] (a|an|the|my) {label} timer for {minutes} minute[s]",
               "[set|start] (a|an|the|my) {label} timer for {hours} hour[s]"],
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
    with _db(context) as db:
        db.execute(
            "INSERT INTO timers (kind, label, due, length) VALUES ('timer', ?, ?, ?)",
            (label.strip(), time.time() + length, length),
        )
    name = f"The {label.strip()} timer" if label.strip() else "Timer"
    return f"{name} {'is ' if label.strip() else ''}set for {_duration(length)}."


@skill(
    sentences={
        "en": ["set an alarm for {hour} o'clock", "wake me up at {hour} o'clock", "set an alarm for {hour} {minute}"],
        "zh": ["{hour}点叫醒我", "设置{hour}点的闹钟", "设置{hour}点{minute}分的闹钟"],
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
    with _db(context) as db:
        db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', ?, ?)", (label.strip(), due.timestamp()))
    return f"Alarm set for {hour}:{minute:02d}."


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
            said.append(
                f"{'a ' + label if label else 'a'} timer with {_duration(_left(due, paused_left))} left{paused}"
            )
    return "You have " + ", ".join(said) + "."


# Parameters that pick a timer, as Home Assistant names them: its label, or the length it was set for.
Label = str
StartHours = Annotated[int, Range(0, 24)]
StartMinutes = Annotated[int, Range(0, 1440)]
StartSeconds = Annotated[int, Range(0, 3600)]


@skill(
    sentences={"en": ["how (much time|long) is left", "how much time (remains|do I have left)"]},
    intents={"HassTimerStatus": {"label": "{name}"}},
)
def timer_status(
    context: SkillContext,
    label: Label = "",
    start_hours: StartHours = 0,
    start_minutes: StartMinutes = 0,
    start_seconds: StartSeconds = 0,
) -> str:
    """Say how much time is left on a timer, or on every timer.

    Args:
        label: the label of the timer; empty means every timer
        start_hours: the hours the timer was set for, to pick it out
        start_minutes: the minutes the timer was set for, to pick it out
        start_seconds: the seconds the timer was set for, to pick it out
    """
    with _db(context) as db:
        rows = _timers(db, label, start_hours, start_minutes, start_seconds)
    if not rows:
        return "No timer is running." if not label.strip() else "There is no such timer."
    said = []
    for _, name, due, length, paused_left in rows:
        paused = ", paused" if paused_left is not None else ""
        said.append(f"{_timer_name(name, length)} has {_duration(_left(due, paused_left))} left{paused}")
    text = "; ".join(said)
    return text[0].upper() + text[1:] + "."


@skill(
    sentences={
        "zh": [("取消(所有|全部)[的]计时器", {"every": True}), ("把(所有|全部)[的]计时器[都]取消", {"every": True})]
    },
    intents={"HassCancelTimer": {"label": "{name}"}, "HassCancelAllTimers": {"every": True}},
)
def cancel_timer(
    context: SkillContext,
    label: Label = "",
    start_hours: StartHours = 0,
    start_minutes: StartMinutes = 0,
    start_seconds: StartSeconds = 0,
    every: bool = False,
) -> str:
    """Cancel a timer (not an alarm): the one with this label or length, the only one, or every timer.

    Args:
        label: the label of the timer to cancel
        start_hours: the hours the timer was set for, to pick it out
        start_minutes: the minutes the timer was set for, to pick it out
        start_seconds: the seconds the timer was set for, to pick it out
        every: true to cancel every timer
    """
    with _db(context) as db:
        rows = _timers(db, label, start_hours, start_minutes, start_seconds)
        if every:
            db.executemany("DELETE FROM timers WHERE id = ?", [(r[0],) for r in rows])
            return f"Cancelled {len(rows)} timer{'s' if len(rows) != 1 else ''}." if rows else "No timer is running."
        row, problem = _one_timer(rows)
        if problem:
            return problem
        db.execute("DELETE FROM timers WHERE id = ?", (row[0],))
    return f"Cancelled {_timer_name(row[1], row[3])}."


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


@skill(intents={"HassPauseTimer": {"label": "{name}"}, "HassUnpauseTimer": {"label": "{name}", "resume": True}})
def pause_timer(
    context: SkillContext,
    label: Label = "",
    start_hours: StartHours = 0,
    start_minutes: StartMinutes = 0,
    start_seconds: StartSeconds = 0,
    resume: bool = False,
) -> str:
    """Pause a timer, or let a paused one run again.

    Args:
        label: the label of the timer
        start_hours: the hours the timer was set for, to pick it out
        start_minutes: the minutes the timer was set for, to pick it out
        start_seconds: the seconds the timer was set for, to pick it out
        resume: true to let a paused timer run again
    """
    with _db(context) as db:
        rows = [
            r
            for r in _timers(db, label, start_hours, start_minutes, start_seconds)
            if (r[4] is not None) == resume  # only paused timers can resume, only running ones pause
        ]
        row, problem = _one_timer(rows)
        if problem:
            return problem
        _, name, due, length, paused_left = row
        if resume:
            db.execute(
                "UPDATE timers SET due = ?, paused_left = NULL WHERE id = ?", (time.time() + paused_left, row[0])
            )
        else:
            db.execute("UPDATE timers SET paused_left = ? WHERE id = ?", (_left(due, None), row[0]))
    return f"{'Resumed' if resume else 'Paused'} {_timer_name(name, length)}."


@skill(
    intents={
        "HassIncreaseTimer": {"label": "{name}"},
        "HassDecreaseTimer": {"label": "{name}", "shorter": True},
    }
)
def change_timer(
    context: SkillContext,
    hours: Annotated[int, Range(0, 24)] = 0,
    minutes: Annotated[int, Range(0, 1440)] = 0,
    seconds: Annotated[int, Range(0, 3600)] = 0,
    label: Label = "",
    start_hours: StartHours = 0,
    start_minutes: StartMinutes = 0,
    start_seconds: StartSeconds = 0,
    shorter: bool = False,
) -> str:
    """Add time to a timer, or take time off it.

    Args:
        hours: hours to add or take off
        minutes: minutes to add or take off
        seconds: seconds to add or take off
        label: the label of the timer
        start_hours: the hours the timer was set for, to pick it out
        start_minutes: the minutes the timer was set for, to pick it out
        start_seconds: the seconds the timer was set for, to pick it out
        shorter: true to take the time off
    """
    change = (hours * 3600 + minutes * 60 + seconds) * (-1 if shorter else 1)
    with _db(context) as db:
        row, problem = _one_timer(_timers(db, label, start_hours, start_minutes, start_seconds))
        if problem:
            return problem
        row_id, name, due, length, paused_left = row
        left = max(_left(due, paused_left) + change, 0)
        if paused_left is None:
            db.execute("UPDATE timers SET due = ? WHERE id = ?", (time.time() + left, row_id))
        else:
            db.execute("UPDATE timers SET paused_left = ? WHERE id = ?", (left, row_id))
    return f"{_timer_name(name, length)[0].upper()}{_timer_name(name, length)[1:]} has {_duration(left)} left."


@background
def ring_due_timers(context: SkillContext, stop: threading.Event) -> None:
    """Ring every timer or alarm that is due, once, then forget it."""
    while not stop.wait(TICK):
        with _db(context) as db:
            due = db.execute(
                "SELECT id, kind, label FROM timers WHERE due <= ? AND paused_left IS NULL ORDER BY due", (time.time(),)
            ).fetchall()
        for row_id, kind, label in due:
            what = f"Your {label} {kind}" if label else f"Your {kind}"
            context.say(f"{what} is done." if kind == "timer" else f"{what} is ringing.")
            with _db(context) as db:
                db.execute("DELETE FROM timers WHERE id = ?", (row_id,))
