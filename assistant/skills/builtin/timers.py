"""Built-in skills: timers and alarms, kept in SQLite so that they survive restarts.

A background clock rings whatever is due, including what fell due while the assistant was down.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Annotated

from assistant import Range, SkillContext, StorageError, background, skill

SCHEMA = """CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL NOT NULL);"""
TICK = 0.25  # seconds between looks at the clock
MAX_BACKOFF = 5.0  # seconds between looks while the stored timers cannot be read or written
log = logging.getLogger(__name__)


def _db(context: SkillContext):
    return context.database("timers", SCHEMA)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{n} {unit}{'s' if n != 1 else ''}"
        for n, unit in ((hours, "hour"), (minutes, "minute"), (seconds, "second"))
        if n
    ]
    return " and ".join(parts) or "0 seconds"


@skill(
    sentences={
        "en": ["set a timer for {minutes} minute[s]", "set a {minutes} minute timer",
               "set a timer for {seconds} second[s]", "set a {label} timer for {minutes} minute[s]"],
        "zh": ["设置一个{minutes}分钟的计时器", "{minutes}分钟后提醒我", "设置一个{seconds}秒的计时器"],
    }
)  # fmt: skip
def set_timer(
    context: SkillContext,
    minutes: Annotated[int, Range(0, 1440)] = 0,
    seconds: Annotated[int, Range(0, 3600)] = 0,
    label: str = "",
) -> str:
    """Start a countdown timer.

    Args:
        minutes: minutes to count down
        seconds: seconds to count down, added to the minutes
        label: what the timer is for, e.g. "pasta"
    """
    length = minutes * 60 + seconds
    if length <= 0:
        return "How long should the timer run?"
    with _db(context) as db:
        db.execute(
            "INSERT INTO timers (kind, label, due) VALUES ('timer', ?, ?)", (label.strip(), time.time() + length)
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
        "en": ["what timers do I have", "list my timers", "list my alarms"],
        "zh": ["有哪些计时器", "我有什么闹钟"],
    }
)
def list_timers(context: SkillContext) -> str:
    """Say which timers and alarms are set."""
    with _db(context) as db:
        rows = db.execute("SELECT kind, label, due FROM timers ORDER BY due").fetchall()
    if not rows:
        return "No timers or alarms are set."
    now = time.time()
    said = []
    for kind, label, due in rows:
        if kind == "alarm":
            said.append(f"an alarm at {datetime.fromtimestamp(due).strftime('%-H:%M')}")
        else:
            said.append(f"{'a ' + label if label else 'a'} timer with {_duration(max(due - now, 0))} left")
    return "You have " + ", ".join(said) + "."


@skill(
    sentences={
        "en": ["cancel the timer[s]", "cancel the {label} timer", "cancel my alarm[s]"],
        "zh": ["取消计时器", "取消闹钟"],
    }
)
def cancel_timers(context: SkillContext, label: str = "") -> str:
    """Cancel timers and alarms: those with this label, or all of them.

    Args:
        label: the label of the timer to cancel; empty cancels all
    """
    with _db(context) as db:
        if label.strip():
            removed = db.execute("DELETE FROM timers WHERE lower(label) = lower(?)", (label.strip(),)).rowcount
        else:
            removed = db.execute("DELETE FROM timers").rowcount
    return f"Cancelled {removed}." if removed else "There was nothing to cancel."


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
                    "SELECT id, kind, label FROM timers WHERE due <= ? ORDER BY due", (time.time(),)
                ).fetchall()
            for row_id, kind, label in due:
                if row_id not in rung:
                    what = f"Your {label} {kind}" if label else f"Your {kind}"
                    context.say(f"{what} is done." if kind == "timer" else f"{what} is ringing.")
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
