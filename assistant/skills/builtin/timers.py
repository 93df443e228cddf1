"""Built-in skills: timers and alarms, kept in SQLite so that they survive restarts.

A background clock rings whatever is due, including what fell due while the assistant was down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from assistant import Range, SkillContext, StorageError, background, skill

from ._spoken import WEEKDAYS_ZH, clock, follow_zone

SCHEMA = """CREATE TABLE IF NOT EXISTS timers (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, label TEXT NOT NULL, due REAL NOT NULL,
    length REAL NOT NULL DEFAULT 0, paused_left REAL, language TEXT NOT NULL DEFAULT 'en',
    repeat TEXT NOT NULL DEFAULT '', at_minute INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS rung (
    id INTEGER PRIMARY KEY CHECK (id = 0), label TEXT NOT NULL, at REAL NOT NULL, language TEXT NOT NULL,
    stopped INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL DEFAULT 0, others TEXT NOT NULL DEFAULT '[]');"""
# `rung` is the last alarm that rang on time, which "snooze" sets again; `stopped` once "stop" was said
# to it, so that a restart does not ring it on; `due` the time it was set for, by which it is cancelled;
# `others` the alarms still ringing when it rang ([label, language] each), snoozed with it.
# Columns added since the first release, for state directories that have the older tables.
# `language` is that of the request that set the timer: it rings later, outside any turn. An alarm that
# repeats has the weekdays it rings on in `repeat` (digits, Monday 0: "01234" every weekday) and its time
# of day in `at_minute` (minutes after midnight), as `due`, its next ring, may be at another time: the
# time daylight saving skips to.
NEW_COLUMNS = {
    "timers": (
        "length REAL NOT NULL DEFAULT 0",
        "paused_left REAL",
        "language TEXT NOT NULL DEFAULT 'en'",
        "repeat TEXT NOT NULL DEFAULT ''",
        "at_minute INTEGER NOT NULL DEFAULT 0",
    ),
    "rung": ("stopped INTEGER NOT NULL DEFAULT 0", "due REAL NOT NULL DEFAULT 0", "others TEXT NOT NULL DEFAULT '[]'"),
}
TICK = 0.25  # seconds between looks at the clock
MAX_TIMER = 24 * 3600  # seconds; longer is an alarm's job
MAX_BACKOFF = 5.0  # seconds between looks while the stored timers cannot be read or written
LATE = 60  # seconds past due after which a ring says when it was due (the assistant was not running)
SNOOZE_WITHIN = 30 * 60  # seconds after an alarm rang in which "snooze" still means it
# An alarm on time rings again every RING_EVERY seconds for RING_FOR, a sleeper may not hear it once,
# until "stop", "snooze" or "turn off the alarm".
RING_EVERY, RING_FOR = 30, 5 * 60
SAID_AT_MOST = 5  # timers and alarms a reply names, the soonest first; the others are counted
# The wall clock moved by more than this between two looks was set (NTP at boot on a board without a
# clock battery, `date -s`), not slewed: NTP slews at most 0.5 ms a second.
CLOCK_STEP = 2.0
log = logging.getLogger(__name__)


@contextlib.contextmanager
def _db(context: SkillContext) -> Iterator[sqlite3.Connection]:
    with context.database("timers", SCHEMA) as db:
        for table, columns in NEW_COLUMNS.items():
            present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            for column in columns:
                if column.split()[0] not in present:
                    try:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
                    except sqlite3.OperationalError as e:  # another process added it since we looked
                        if "duplicate column" not in str(e):
                            raise
        yield db


def _duration(seconds: float, before_noun: bool = False, language: str = "en") -> str:
    """Spoken length: "1 hour and 30 minutes", or before a noun "1 hour and 30 minute" (timer); 1小时30分钟."""
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    amounts = ((hours, "hour", "小时"), (minutes, "minute", "分钟"), (seconds, "second", "秒"))
    if language == "zh":
        return "".join(f"{n}{zh}" for n, _, zh in amounts if n) or "0秒"
    parts = [f"{n} {unit}{'s' if n != 1 and not before_noun else ''}" for n, unit, _ in amounts if n]
    return " and ".join(parts) or "0 seconds"


def _timer_name(label: str, length: float, language: str = "en") -> str:
    """A timer as a reply names it: "the pasta timer", "the 10 minute timer"; 意大利面计时器, 10分钟的计时器."""
    if language == "zh":
        return f"{_duration(length, language='zh')}的计时器" if length and not label else f"{label}计时器"
    if label:
        return f"the {label} timer"
    return f"the {_duration(length, True)} timer" if length else "the timer"  # set before lengths were kept


def _full_name(label: str, length: float, language: str = "en") -> str:
    """The name that tells apart timers of one label: "the 10 minute pasta timer", 10分钟的意大利面计时器,
    as the templates for cancel, pause and resume take it back."""
    if not (label and length):
        return _timer_name(label, length, language)
    if language == "zh":
        return f"{_duration(length, language='zh')}的{label}计时器"
    return f"the {_duration(length, True)} {label} timer"


def _label(text: str) -> str:
    """A timer's label without the Chinese words around it: "一个意大利面的" and "一个叫意大利面的" are 意大利面."""
    label = text.strip().removeprefix("一个")
    if called := re.fullmatch(r"(叫做|叫|名为|名叫)(.+)的", label):
        label = called.group(2)
    return label.removesuffix("的").strip()


def _first(said: list[str], more: str) -> list[str]:
    """The first SAID_AT_MOST of `said`, then `more` ({n}: how many others): a hundred timers are not read out."""
    if len(said) <= SAID_AT_MOST:
        return said
    return [*said[:SAID_AT_MOST], more.format(n=len(said) - SAID_AT_MOST)]


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


def _elapsed() -> float:
    """Seconds since boot, on a clock that setting the time does not move; it counts while the board sleeps."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _clock_set(db: sqlite3.Connection, step: float, earlier: set[tuple[int, float]]) -> None:
    """The wall clock was set `step` seconds forward (or back): a timer set since the start still rings
    after its length in real time, and an alarm set since at the time of day it was set for. One of
    `earlier`, stored by an earlier run, has only its wall time, and keeps it."""
    now = time.time()
    moved = [
        (due + step if kind == "timer" else _same_time_of_day(due, now - step), row_id)
        for row_id, kind, due in db.execute("SELECT id, kind, due FROM timers WHERE paused_left IS NULL")
        if (row_id, due) not in earlier
    ]
    db.executemany("UPDATE timers SET due = ? WHERE id = ?", moved)
    _next_rings(db, keep=earlier)
    log.info(
        "timers: the clock was set %+.0f s; %d timers and alarms set since the start ring on time", step, len(moved)
    )


def _same_time_of_day(due: float, shown: float) -> float:
    """An alarm set by a clock that was wrong (1970 on a board without a clock battery), which showed `shown`
    until it was set right: at the time of day it was set for, as many days after today as it was after the
    day that clock showed (an alarm "tomorrow" stays tomorrow's), the next time the clock shows it. How far
    ahead it was says nothing: the wrong clock's time of day is not the day's."""
    at, then, now = datetime.fromtimestamp(due), datetime.fromtimestamp(shown), datetime.now()
    day = now.date() + (at.date() - then.date())
    new = now.replace(year=day.year, month=day.month, day=day.day, hour=at.hour, minute=at.minute)
    new = new.replace(second=0, microsecond=0)
    return (new if new > now else new + timedelta(days=1)).timestamp()


def _zone() -> tuple:
    """The local time zone as the C library has it (daylight saving does not change it)."""
    return time.tzname, time.timezone, time.altzone


def _zone_set(db: sqlite3.Connection, walls: dict[int, datetime]) -> None:
    """The time zone was set: an alarm rings at the time of day it was set for (`walls`, as the old zone
    had it), the next time the clock shows it, as an alarm clock does."""
    now = datetime.now()
    moved = [((wall if wall > now else wall + timedelta(days=1)).timestamp(), row_id) for row_id, wall in walls.items()]
    db.executemany("UPDATE timers SET due = ? WHERE id = ? AND kind = 'alarm'", moved)
    _next_rings(db)
    log.info("timers: the time zone is now %s; %d alarms keep their time of day", time.tzname[0], len(moved))


def _next_rings(db: sqlite3.Connection, keep: set[tuple[int, float]] | None = None) -> None:
    """Each alarm that repeats at its next ring by the clock and the time zone as they are now, but those of
    `keep` ((id, due) each): stored by an earlier run, when the clock was right, they keep their wall time."""
    now = datetime.now()
    rules = db.execute("SELECT id, due, repeat, at_minute FROM timers WHERE kind = 'alarm' AND repeat != ''")
    db.executemany(
        "UPDATE timers SET due = ? WHERE id = ?",
        [
            (_next_ring(repeat, at_minute, now).timestamp(), row_id)
            for row_id, due, repeat, at_minute in rules.fetchall()
            if (row_id, due) not in (keep or set())
        ],
    )


def _left(due: float, paused_left: float | None) -> float:
    return paused_left if paused_left is not None else max(due - time.time(), 0)


# Durations the sentence library has no template for.
HOUR_AND_A_HALF = {"hours": 1, "minutes": 30}
HALF_AN_HOUR = {"minutes": 30}
AN_HOUR, A_MINUTE = {"hours": 1}, {"minutes": 1}
QUARTER_HOUR, THREE_QUARTERS = {"minutes": 15}, {"minutes": 45}  # 一刻钟, 三刻钟
MINUTE_AND_A_HALF = {"minutes": 1, "seconds": 30}
SETTING = "[(set|start)] [a|an|the|my] "
# "Set a timer for 10 minutes", "timer 10 minutes", and as 10分钟后提醒我 says it, "remind me in 10 minutes".
FOR = f"({SETTING}timer [for]|(remind|wake) me [up] in) "
LATER = "[[以|之]后](提醒|叫)我"  # 10分钟后提醒我, 10分钟以后叫我, 过10分钟提醒我


@skill(
    sentences={
        "en": [(FOR + "(an|one) hour and a half", HOUR_AND_A_HALF),
               (SETTING + "(hour and a half|90 minute) timer", HOUR_AND_A_HALF),
               (FOR + "(half an|a half) hour", HALF_AN_HOUR), (SETTING + "half hour timer", HALF_AN_HOUR),
               (FOR + "(a|one) quarter [of an] hour", QUARTER_HOUR),
               (FOR + "an hour", AN_HOUR), (FOR + "a minute", A_MINUTE),
               (FOR + "an hour and {minutes} minute[s]", AN_HOUR), (FOR + "a minute and {seconds} second[s]", A_MINUTE),
               (FOR + "a minute and a half", MINUTE_AND_A_HALF),
               ("(set|start) [a|an|new] timer", {}),  # "How long?" is asked
               # The sentence library hears up to 100 of each unit: "120 minutes" would go to the model.
               FOR + "({hours} hour[s] [and {minutes} minute[s]]|{minutes} minute[s] [and {seconds} second[s]]"
               "|{seconds} second[s])",
               "(set|start) [a|an] {minutes} minute timer",
               # Length and name in one breath, and after "and" in a chain ("... and a 5 minute timer").
               "[set|start] (a|an) {minutes} minute {label} timer", "[set|start] (a|an) {hours} hour {label} timer",
               "(a|an) {minutes} minute timer",
               "[set|start] (a|an|the|my) {label} timer for {minutes} minute[s]",
               "[set|start] (a|an|the|my) {label} timer for {hours} hour[s]",
               "[set|start] (a|an|the|my) {label} timer for {seconds} second[s]"],
        "zh": [("[设置|设定|设|开始|定][一个]半(个)小时[的]计时[器]", HALF_AN_HOUR),
               ("[设置|设定|设|开始|定][一个]一个半小时[的]计时[器]", HOUR_AND_A_HALF),
               ("[设置|设定|设|开始|定][一个]一刻钟[的]计时[器]", QUARTER_HOUR),
               ("[设置|设定|设|开始|定][一个]三刻钟[的]计时[器]", THREE_QUARTERS),
               ("半[个]小时" + LATER, HALF_AN_HOUR), ("一个半小时" + LATER, HOUR_AND_A_HALF),
               ("一刻钟" + LATER, QUARTER_HOUR), ("三刻钟" + LATER, THREE_QUARTERS),
               "[设置|设定|设|定][一个]{minutes}分钟[的]计时器", "[设置|设定|设|定][一个]{seconds}秒[钟][的]计时器",
               "[设置|设定|设|定][一个]{minutes}分[钟]{seconds}秒[钟][的]计时器",
               "[设置|设定|设|定][一个]{hours}[个]小时[的]计时器",
               ("[设置|设定|设|定][一个]{minutes}分半[钟][的]计时器", {"seconds": 30}),
               "[设置|设定|设|定][一个]{minutes}分钟[的]{label}计时器",
               "[过]{minutes}分钟" + LATER, "[过]{hours}[个]小时" + LATER, "[过]{seconds}秒[钟]" + LATER,
               ("[设置|设定|设|定][一个]{hours}个半小时[的]计时器", {"minutes": 30}),
               ("{hours}个半小时" + LATER, {"minutes": 30}),
               # The library hears "一个" as one hour (个 is an hour for it): this asks how long.
               ("(设置|设定|设|定|开始|创建)[一][个](计时器|倒计时|定时器)", {})],
    },
    intents={"HassStartTimer": {"label": "{name}"}},
    # Answers to "How long should the timer run?".
    answers={
        "en": ["[for] {hours} hour[s] [and {minutes} minute[s]]", "[for] {minutes} minute[s] [and {seconds} second[s]]",
               "[for] {seconds} second[s]"],
        "zh": ["{hours}[个]小时[{minutes}分[钟]]", "{minutes}分钟[{seconds}秒[钟]]", "{seconds}秒[钟]"],
    },
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
        return context.localized("How long should the timer run?", zh="计时器要设多长时间？")
    if length > MAX_TIMER:
        return context.localized(
            "I can set timers for up to 24 hours; for later, set an alarm.", zh="计时器最长24小时，更久的请设闹钟。"
        )
    label = _label(label)
    with _db(context) as db:
        db.execute(
            "INSERT INTO timers (kind, label, due, length, language) VALUES ('timer', ?, ?, ?, ?)",
            (label, time.time() + length, length, context.language),
        )
    name = f"The {label} timer" if label else "Timer"
    return context.localized(
        f"{name} {'is ' if label else ''}set for {_duration(length)}.", zh=f"已设好{_full_name(label, length, 'zh')}。"
    )


# How alarms are asked for. A number list cannot add 12 to an hour, so an hour after noon ("7
# pm", "晚上7点") is heard through a list of the skill's own that maps the words to the hour; and so is
# the hour before one ("quarter to 8", 差一刻八点) and the minutes of "quarter to".
# The day, where people say it: "set an alarm for 7 am tomorrow", "wake me up tomorrow at 6:30", "set an alarm on
# Friday at 7", "cancel the alarm on Friday". Cancelling takes the words as said: an answer to "Which one?" names
# a day the question did ("the one on Friday"), and 明天 is in a Chinese question where "tomorrow" is not. The
# days an alarm repeats on are said where a day is: "set an alarm for 7 every weekday", 工作日早上七点的闹钟, "cancel
# the weekday alarm", "the one on weekends". "An alarm every Monday at 8" asks for one without a verb.
ON_DAY, SAID_DAY, ON_DAY_ZH, SAID_DAY_ZH = "{days:day}", "{said_day:day}", "{days_zh:day}", "{said_day_zh:day}"
ALARM = f"((set [an|the|my]|an) alarm [[for] {ON_DAY}] (for|at)|wake me [up] [{ON_DAY}] at) "
EN_TIME = "(:{minute}| [{minute}]| oh {minute}) [o'clock]"  # "7:30", "7 30", "seven thirty", "seven oh five"
AM = " (am|a m|a.m.|in the morning)"
PM = " (pm|p m|p.m.|in the afternoon|in the evening|this evening|at night|tonight)"
AM_OR_NIGHT, PM_NOON = " (am|a m|a.m.|at night|tonight)", " (pm|p m|p.m.|in the afternoon)"  # 12 at night, 12 pm
# "Half past seven", "ten past 7", "quarter to eight", "twenty to nine": the hour before comes from a list.
PAST = "({minute} [minute[s]]|{past:minute}) (past|after) "
TO = "{minute_to:minute} [minute[s]] (to|before|of) "
EN_HOURS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
EN_TEENS = ["thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
# A verb or 叫醒我: "早上7点的闹钟" alone may answer "which one?" as well as ask for a new alarm.
ZH_SET = "(设置|设定|设|定)[一个|个]"
# With a day, "明天早上7点的闹钟" alone asks for a new alarm (an answer to "which one?" is tried first).
ZH_DAY = f"[{ON_DAY_ZH}|{{days_later_zh:day}}|今天]"
ZH_ALARM = (
    f"({ZH_SET}{ZH_DAY}{{time}}[的]闹钟|{ZH_SET}闹钟[在]{ZH_DAY}{{time}}|{ZH_DAY}{{time}}(叫醒我|叫我起床)"
    f"|({ON_DAY_ZH}|{{days_later_zh:day}}){{time}}的闹钟)"
)
ZH_AFTERNOON = "(下午|晚上|傍晚|今晚)"
ZH_DIGITS = "一二三四五六七八九"
ZH_HOURS = [*ZH_DIGITS, "十", "十一", "十二"]


def _words(words: list[str], value: Callable[[int], int], extra: dict[str, int] | None = None) -> dict[str, int]:
    """1, 2... as said in digits or `words` (the first for 1) → `value` of the number, with `extra` words. Longest
    first: hassil takes the first value that fits, and "10 pm" heard as 1 and minute 0 would be 13:00."""
    said = {}
    for number, word in enumerate(words, start=1):
        said[str(number)] = said[word] = value(number)
    said |= extra or {}
    return dict(sorted(said.items(), key=lambda item: -len(item[0])))


def _chinese(number: int) -> str:
    """1 to 99 in Chinese characters: 五, 十五, 二十五."""
    tens, ones = divmod(number, 10)
    said = "" if not tens else "十" if tens == 1 else ZH_DIGITS[tens - 1] + "十"
    return said + (ZH_DIGITS[ones - 1] if ones else "")


# The days an alarm is set for, as set_alarm takes them ("next friday": the Friday of next week, as 下周五).
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAYS = ("today", "tomorrow", "day after tomorrow", *WEEKDAYS, *(f"next {day}" for day in WEEKDAYS))


def _day_words() -> dict[str, str]:
    """The words of a day, in English and in Chinese → the day as set_alarm takes it."""
    said = {"tomorrow morning": "tomorrow", "tomorrow's": "tomorrow", "the day after tomorrow": "day after tomorrow"}
    said["今天"] = "today"
    said |= {"明天": "tomorrow", "明早": "tomorrow", "后天": "day after tomorrow"}
    for number, day in enumerate(WEEKDAYS):
        zh = [f"{week}{WEEKDAYS_ZH[number]}" for week in ("周", "星期", "礼拜")]
        zh += ["周天", "星期天", "礼拜天"] if day == "sunday" else []
        # "On Friday morning" and "Friday's alarm", as "tomorrow morning" and "tomorrow's alarm" are said.
        en = (f"on {day}", f"this {day}", f"{day} morning", f"on {day} morning", f"this {day} morning", f"{day}'s")
        said |= {word: day for word in (*en, *zh, *(f"这{word}" for word in zh))}
        said |= {f"本{word}": day for word in zh if word.startswith("周")}
        next_en = (f"on next {day}", f"next {day} morning")
        said |= {word: f"next {day}" for word in (*next_en, *(f"下{word}" for word in zh))}
        said |= {f"下个{word}": f"next {day}" for word in zh if not word.startswith("周")}
    # "In 3 days", "in three days", 三天后, 3天以后: up to a month ahead ("in 1 day" is tomorrow).
    for number, word in enumerate([*EN_MINUTES, "thirty"], start=1):
        day = "tomorrow" if number == 1 else f"in {number} days"
        zh = {str(number), _chinese(number)} | ({"两"} if number == 2 else set())
        en = {f"in {said_number} day{'s' if number > 1 else ''}" for said_number in (str(number), word)}
        said |= {words: day for words in (*en, *(f"{n}天{later}" for n in zh for later in ("后", "以后", "之后")))}
    return {**{day: day for day in (*DAYS, *RULES)}, **said, **_rule_words()}


# What set_alarm takes in `day` for an alarm that repeats → the weekdays it rings on (digits, Monday 0).
RULES = {"every day": "0123456", "every weekday": "01234", "every weekend": "56"}
RULES |= {f"every {day}": str(number) for number, day in enumerate(WEEKDAYS)}
RULES |= {f"every {WEEKDAYS[i]} and {WEEKDAYS[j]}": f"{i}{j}" for i in range(7) for j in range(i + 1, 7)}
RULES_NAMED = {"0123456": ("every day", "每天"), "01234": ("every weekday", "工作日"), "56": ("on weekends", "周末")}


def _rule_named(repeat: str) -> tuple[str, str]:
    """The weekdays an alarm repeats on as replies name them, in English and in Chinese: "every weekday"
    (工作日), "on weekends" (周末), "every Monday and Thursday" (每周一和周四)."""
    if repeat in RULES_NAMED:
        return RULES_NAMED[repeat]
    days = [int(day) for day in repeat]
    en = "every " + " and ".join(WEEKDAYS[day].title() for day in days)
    return en, "每" + "和".join(f"周{WEEKDAYS_ZH[day]}" for day in days)


def _rule_words() -> dict[str, str]:
    """The words of a rule, in English and in Chinese → the rule as set_alarm takes it (one of RULES)."""
    said = {word: "every day" for word in ("daily", "each day", "every morning", "每天", "天天", "每日")}
    weekdays = ("weekday", "weekdays", "on weekdays", "every weekday morning", "monday to friday")
    said |= {word: "every weekday" for word in (*weekdays, "工作日", "每个工作日", "周一到周五", "每周一到周五")}
    weekends = ("weekend", "weekends", "on weekends", "at weekends", "every weekend morning")
    said |= {word: "every weekend" for word in (*weekends, "周末", "每个周末", "每周末")}
    for number, day in enumerate(WEEKDAYS):
        # Fewer words than for a day: each word of the list costs every sentence that has it a try.
        zh = [f"每周{WEEKDAYS_ZH[number]}", f"每星期{WEEKDAYS_ZH[number]}"] + (["每周天"] if day == "sunday" else [])
        said |= {word: f"every {day}" for word in (f"{day}s", f"on {day}s", f"every {day} morning", *zh)}
        for other in range(number + 1, len(WEEKDAYS)):
            said[f"每周{WEEKDAYS_ZH[number]}和周{WEEKDAYS_ZH[other]}"] = f"every {day} and {WEEKDAYS[other]}"
    return said


EN_MINUTES = [*EN_HOURS, *EN_TEENS, "twenty", *(f"twenty {word}" for word in EN_HOURS[:9])]  # one to twenty nine
DAY_WORDS = _day_words()
# "{pm_hour:hour}" in English, "{pm_hour_zh:hour}" in Chinese (12 pm and 晚上12点 have templates of their own),
# "{hour_before:hour}" for the hour of "quarter to 8", "{past:minute}" and "{minute_to:minute}" for the minutes
# of "half past", "quarter to"; "{days:day}" for the words of a day (as one of DAYS; today is none: "set an alarm
# for 7" is the next 7:00), "{said_day:day}" for the same words as said.
TIME_WORDS = {
    "pm_hour": _words(EN_HOURS[:11], lambda hour: hour + 12),
    "hour_before": _words(EN_HOURS, lambda hour: hour - 1, {"noon": 11, "midnight": 23}),
    "pm_hour_before": _words(EN_HOURS[:11], lambda hour: hour + 11),
    "noon": {"noon": 12, "midnight": 0},
    "past": {"a quarter": 15, "quarter": 15, "half": 30},
    "minute_to": _words(EN_MINUTES, lambda minutes: 60 - minutes, {"a quarter": 45, "quarter": 45}),
    "pm_hour_zh": _words(ZH_HOURS[:11], lambda hour: hour + 12, {"两": 14}),  # 晚上十二点 is midnight: not here
    # 差一刻八点 and 八点差一刻 are 7:45, 晚上差一刻十二点 23:45; 中午 is 11 to 1 o'clock.
    "hour_before_zh": _words(ZH_HOURS, lambda hour: hour - 1, {"两": 1}),
    "pm_hour_before_zh": _words(ZH_HOURS, lambda hour: hour + 11, {"两": 13}),
    "noon_hour_zh": {"十一": 11, "11": 11, "十二": 12, "12": 12, "一": 13, "1": 13},
    "quarters_zh": {"一刻": 15, "半": 30, "三刻": 45},
    "minute_to_zh": _words([_chinese(n) for n in range(1, 30)], lambda minutes: 60 - minutes, {"一刻": 45, "两": 58}),
    "days": dict(sorted(((w, d) for w, d in DAY_WORDS.items() if d != "today"), key=lambda item: -len(item[0]))),
}
# 三天后 apart, in the Chinese sentences only: each word of a list costs every sentence that has it a try.
LATER_ZH = [word for word in TIME_WORDS["days"] if re.search("天[以之]?后$", word)]
TIME_WORDS["days_later_zh"] = {word: TIME_WORDS["days"].pop(word) for word in LATER_ZH}
# As said, but a weekday in Chinese as replies name it, so that 周五的那个 answers a question that named 星期五.
AS_REPLIES_SAY = {f"{week}{day}": f"星期{day}" for week in ("周", "礼拜") for day in WEEKDAYS_ZH}
AS_REPLIES_SAY |= {"周天": "星期日", "星期天": "星期日", "礼拜天": "星期日"}
# A rule as replies name it, in the language it was said in: "the weekday one" answers a question that named
# "7:00 every weekday", 周末的那个 one that named 周末早上9点.
AS_REPLIES_SAY |= {
    word: _rule_named(RULES[rule])[0 if word.isascii() else 1] for word, rule in DAY_WORDS.items() if rule in RULES
}
TIME_WORDS["said_day"] = {word: AS_REPLIES_SAY.get(word, word.removesuffix("'s")) for word in TIME_WORDS["days"]}
# Each language's words in its own sentences only: each word of a list costs every sentence that has it a try.
for _name in ("days", "said_day"):
    TIME_WORDS[f"{_name}_zh"] = {word: day for word, day in TIME_WORDS[_name].items() if not word.isascii()}
    TIME_WORDS[_name] = {word: day for word, day in TIME_WORDS[_name].items() if word.isascii()}
# Before this hour "tomorrow" is the coming morning: the person has not slept yet.
NIGHT_ENDS = 4


def _tomorrow(now: datetime) -> date:
    """The day "tomorrow" means at `now`: the next one, or before NIGHT_ENDS the one just begun."""
    return (now - timedelta(hours=NIGHT_ENDS)).date() + timedelta(days=1)


def _when(at: datetime, now: datetime) -> tuple[str, str]:
    """An alarm's time as a reply names it, in English and in Chinese: with the day when it is more
    than a day away ("7:00 tomorrow"), so that it is told apart from the 7:00 before it."""
    en, zh = clock(at.hour, at.minute), clock(at.hour, at.minute, "zh")
    if at - now <= timedelta(days=1):
        return en, zh
    day, day_zh = _day_named(at.date(), now.date())
    return en + day, day_zh + zh


def _day_named(day: date, today: date) -> tuple[str, str]:
    """A day as said after a time in English, and before it in Chinese: "" (today), " tomorrow" (明天),
    " on Friday, November 27" (11月27日星期五)."""
    if day == today:
        return "", ""
    if day == today + timedelta(days=1):
        return " tomorrow", "明天"
    return f" on {day:%A, %B} {day.day}", f"{day.month}月{day.day}日星期{WEEKDAYS_ZH[day.weekday()]}"


def _said_day(day: str) -> str | None:
    """`day` as one of DAYS ("On Friday" is "friday", 后天 "day after tomorrow") or as a date ("2026-12-01", as the
    model writes "December 1", which no sentence takes), or None if it names none."""
    said = " ".join(day.casefold().split())
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", said):
        with contextlib.suppress(ValueError):  # 2026-02-30
            return date.fromisoformat(said).isoformat()
    return DAY_WORDS.get(said)


def _no_such_day(day: str, context: SkillContext) -> str:
    return context.localized(f"Sorry, I can't tell which day {day.strip()} is.", zh="抱歉，我听不出是哪一天。")


def _first_day(day: str, now: datetime) -> date:
    """The first date an alarm for `day` (one of DAYS, or a date) can ring on: a weekday's is today's if it is today."""
    today = now.date()
    if day in ("tomorrow", "day after tomorrow"):
        return _tomorrow(now) + timedelta(days=day != "tomorrow")
    if day.startswith("in "):  # "in 3 days": counted from the day "tomorrow" is the first of
        return _tomorrow(now) + timedelta(days=int(day.split()[1]) - 1)
    if day.startswith("next "):  # in the week after this one, which begins on Monday
        return today + timedelta(days=7 - today.weekday() + WEEKDAYS.index(day.removeprefix("next ")))
    if day in WEEKDAYS:
        return today + timedelta(days=(WEEKDAYS.index(day) - today.weekday()) % 7)
    return date.fromisoformat(day) if day[:1].isdigit() else today


def _times(sentence: Callable[[str], str]) -> list:
    """The English sentences of an alarm's time, each `sentence(the words of a time)`, with the hour
    a word fixes. Needs `lists=TIME_WORDS`. A template whose words say 12 wins over {hour}, which has
    fewer words of its own."""
    return [
        (sentence("(12|twelve)" + EN_TIME + AM_OR_NIGHT), {"hour": 0}),
        sentence("[12 |twelve ]{noon:hour}"),
        sentence("{hour}" + EN_TIME + f"[{AM}]"),
        sentence("{pm_hour:hour}" + EN_TIME + PM),
        sentence("(tonight|this evening) at {pm_hour:hour}" + EN_TIME),
        (sentence("(12|twelve)" + EN_TIME + PM_NOON), {"hour": 12}),
        (sentence(PAST + "(12|twelve)" + AM_OR_NIGHT), {"hour": 0}),
        sentence(PAST + "({hour}|{noon:hour})" + f"[{AM}]"),
        sentence(PAST + "{pm_hour:hour}" + PM),
        (sentence(PAST + "(12|twelve)" + PM_NOON), {"hour": 12}),
        (sentence(TO + "(12|twelve)" + AM_OR_NIGHT), {"hour": 23}),
        sentence(TO + "{hour_before:hour}" + f"[{AM}]"),
        sentence(TO + "{pm_hour_before:hour}" + PM),
        (sentence(TO + "(12|twelve)" + PM_NOON), {"hour": 11}),
    ]


def _times_zh(sentence: str) -> list:
    """The Chinese sentences of an alarm's time: `sentence` with the time for its {time}."""
    # 7点, 7点05分, 7点零五分, 7点过五分, 7点半, 7点一刻, 7点过一刻, 7:05
    minutes = "(点[钟]|点[零|过]{minute}[分]|点[过]{quarters_zh:minute}|:{minute})"
    to = "差{minute_to_zh:minute}[分][钟]"  # 差一刻, 差五分
    before, pm_before = (
        f"({to}{{{hours}:hour}}点|{{{hours}:hour}}点{to})" for hours in ("hour_before_zh", "pm_hour_before_zh")
    )
    return [
        # 凌晨12点 and 晚上12点 are 0:00, 中午12点 is noon; before {hour}, which wins a tie.
        (sentence.replace("{time}", "(凌晨|半夜|晚上|今晚)(12|十二)" + minutes), {"hour": 0}),
        sentence.replace("{time}", "中午{noon_hour_zh:hour}" + minutes),
        sentence.replace("{time}", "[早上|上午|凌晨]{hour}" + minutes),
        sentence.replace("{time}", ZH_AFTERNOON + "{pm_hour_zh:hour}" + minutes),
        sentence.replace("{time}", "[早上|上午|凌晨]" + before),
        sentence.replace("{time}", ZH_AFTERNOON + pm_before),
    ]


def _on_the_clock(due: datetime) -> datetime:
    """`due` as the clock shows it: a time the clock skips as daylight saving begins (2:30, as 2:00 becomes
    3:00) is when it skips it, 3:00; datetime takes it for 3:30."""
    shown = datetime.fromtimestamp(due.timestamp())
    return due if (shown.hour, shown.minute) == (due.hour, due.minute) else shown - timedelta(minutes=due.minute)


def _next_ring(repeat: str, at_minute: int, after: datetime) -> datetime:
    """The first time after `after` that an alarm rings at `at_minute` (minutes after midnight) on the
    weekdays `repeat`: local time, at the same time of day whether daylight saving is on or off."""
    hour, minute = divmod(at_minute, 60)
    for ahead in range(8):
        day = after.date() + timedelta(days=ahead)
        due = _on_the_clock(datetime(day.year, day.month, day.day, hour, minute))
        if str(day.weekday()) in repeat and due > after:
            return due
    raise ValueError(f"no weekday in {repeat!r}")


@dataclass
class Alarm:
    """An alarm as stored."""

    id: int
    at: datetime
    """When it rings next."""
    repeat: str
    """The weekdays it rings on (digits, Monday 0), or "" for an alarm that rings once."""
    at_minute: int
    """The time of day of one that repeats, in minutes after midnight."""

    @property
    def time_of_day(self) -> tuple[int, int]:
        """Its hour and minute, as set: the next ring may be when daylight saving skips to."""
        return divmod(self.at_minute, 60) if self.repeat else (self.at.hour, self.at.minute)

    def named(self, now: datetime) -> tuple[str, str]:
        """As replies name it, in English and in Chinese: "7:00 tomorrow", "7:00 every weekday" (工作日早上7点)."""
        if not self.repeat:
            return _when(self.at, now)
        rule, rule_zh = _rule_named(self.repeat)
        return f"{clock(*self.time_of_day)} {rule}", rule_zh + clock(*self.time_of_day, "zh")


def _alarms(db: sqlite3.Connection) -> list[Alarm]:
    """The alarms set, the next to ring first."""
    rows = db.execute("SELECT id, due, repeat, at_minute FROM timers WHERE kind = 'alarm' ORDER BY due")
    return [Alarm(row_id, datetime.fromtimestamp(due), repeat, at_minute) for row_id, due, repeat, at_minute in rows]


@skill(
    sentences={"en": _times(lambda time: ALARM + time + f" [{ON_DAY}]"), "zh": _times_zh(ZH_ALARM)},
    lists=TIME_WORDS,
)
def set_alarm(
    hour: Annotated[int, Range(0, 23)],
    context: SkillContext,
    minute: Annotated[int, Range(0, 59)] = 0,
    label: str = "",
    day: Annotated[str, Range(maximum=40)] = "",
) -> str:
    """Set an alarm for hour:minute (the next time the clock shows it, or on the day said).

    Args:
        hour: hour on a 24-hour clock
        minute: minute
        label: what the alarm is for
        day: the day if one was said: tomorrow, day after tomorrow, friday, next friday, or a date (2026-12-01);
            for an alarm that repeats: every day, every weekday, every weekend, every monday, every monday and thursday
    """
    follow_zone()
    now = datetime.now()
    said = _said_day(day) if day.strip() else "today"
    if said is None:
        return _no_such_day(day, context)
    if said in RULES:
        return _set_repeating(context, hour * 60 + minute, RULES[said], label.strip(), now)
    on = _first_day(said, now)
    due = now.replace(year=on.year, month=on.month, day=on.day, hour=hour, minute=minute, second=0, microsecond=0)
    if due <= now and said[:1].isdigit():  # a date: not the next day instead
        return context.localized(
            f"Sorry, {clock(hour, minute)} on that day has passed.",
            zh=f"抱歉，那天{clock(hour, minute, 'zh')}已经过去了。",
        )
    if due <= now:  # today's time has passed: the next day, or for a weekday the same day next week
        due += timedelta(days=7 if said in WEEKDAYS else 1)
    # A time the clock skips as daylight saving begins rings as it is skipped, and the reply says so.
    due = _on_the_clock(due)
    skipped = (due.hour, due.minute) != (hour, minute)
    # Said with the day when it is not today: "set an alarm for 7" at 15:00 is 7:00 tomorrow morning.
    day_named, day_zh = _day_named(due.date(), now.date())
    when = clock(due.hour, due.minute) + day_named
    when_zh = day_zh + clock(due.hour, due.minute, "zh")
    skips = context.localized(f": the clock skips {clock(hour, minute)}", zh=f"（时钟跳过{clock(hour, minute, 'zh')}）")
    with _db(context) as db:
        if db.execute("SELECT 1 FROM timers WHERE kind = 'alarm' AND due = ?", (due.timestamp(),)).fetchone():
            # One alarm, not two that ring together.
            return context.localized(f"An alarm is already set for {when}.", zh=f"{when_zh}已经有闹钟了。")
        db.execute(
            "INSERT INTO timers (kind, label, due, language) VALUES ('alarm', ?, ?, ?)",
            (label.strip(), due.timestamp(), context.language),
        )
    return context.localized(
        f"Alarm set for {when}{skips if skipped else ''}.", zh=f"闹钟定在{when_zh}{skips if skipped else ''}。"
    )


def _set_repeating(context: SkillContext, at_minute: int, repeat: str, label: str, now: datetime) -> str:
    """An alarm at `at_minute` (minutes after midnight) on the weekdays `repeat`, from its next ring on."""
    alarm = Alarm(0, _next_ring(repeat, at_minute, now), repeat, at_minute)
    when, when_zh = alarm.named(now)
    with _db(context) as db:
        if db.execute(
            "SELECT 1 FROM timers WHERE kind = 'alarm' AND repeat = ? AND at_minute = ?", (repeat, at_minute)
        ).fetchone():
            return context.localized(f"An alarm is already set for {when}.", zh=f"{when_zh}已经有闹钟了。")
        db.execute(
            "INSERT INTO timers (kind, label, due, language, repeat, at_minute) VALUES ('alarm', ?, ?, ?, ?, ?)",
            (label, alarm.at.timestamp(), context.language, repeat, at_minute),
        )
    return context.localized(f"Alarm set for {when}.", zh=f"闹钟定在{when_zh}。")


@skill(
    sentences={
        "en": ["what timers do I have", "list my timers", "list my alarms", "what alarms do I have"],
        "zh": ["[我](有|设了)(哪些|什么)(计时器|闹钟)"],
    }
)
def list_timers(context: SkillContext) -> str:
    """Say which timers and alarms are set."""
    follow_zone()
    now = datetime.now()
    with _db(context) as db:
        rows = db.execute(
            "SELECT id, kind, label, due, paused_left, repeat, at_minute FROM timers ORDER BY due"
        ).fetchall()
    if not rows:
        return context.localized("No timers or alarms are set.", zh="没有设置计时器或闹钟。")
    said, said_zh = [], []
    for row_id, kind, label, due, paused_left, repeat, at_minute in rows:
        if kind == "alarm":
            when, when_zh = Alarm(row_id, datetime.fromtimestamp(due), repeat, at_minute).named(now)
            said.append(f"an alarm at {when}")
            said_zh.append(f"{when_zh}的闹钟")
        else:
            left = _left(due, paused_left)
            paused = paused_left is not None
            timer = _an(f"{label} timer" if label else "timer")
            said.append(f"{timer} with {_duration(left)} left{' (paused)' if paused else ''}")
            said_zh.append(f"{label}计时器还剩{_duration(left, language='zh')}{'，已暂停' if paused else ''}")
    return context.localized(
        "You have " + ", ".join(_first(said, "and {n} more")) + ".",
        zh="现在有：" + "；".join(_first(said_zh, "还有{n}个")) + "。",
    )


def _status(rows: list, context: SkillContext) -> str:
    said, said_zh = [], []
    for _, label, due, length, paused_left in rows:
        left, paused = _left(due, paused_left), paused_left is not None
        said.append(f"{_timer_name(label, length)} has {_duration(left)} left{', paused' if paused else ''}")
        said_zh.append(
            f"{_timer_name(label, length, 'zh')}还剩{_duration(left, language='zh')}{'，已暂停' if paused else ''}"
        )
    text = "; ".join(_first(said, "and {n} more timers"))
    return context.localized(text[0].upper() + text[1:] + ".", zh="；".join(_first(said_zh, "还有{n}个计时器")) + "。")


def _change(db: sqlite3.Connection, row: tuple, action: str, seconds: int, name: str, context: SkillContext) -> str:
    """Do `action` to the timer `row` and say so; `name` is the timer's, in the language of the reply."""
    row_id, label, due, length, paused_left = row
    capitalized = name[0].upper() + name[1:]
    if action == "cancel":
        db.execute("DELETE FROM timers WHERE id = ?", (row_id,))
        return context.localized(f"Cancelled {name}.", zh=f"已取消{name}。")
    if action == "pause":
        if paused_left is not None:
            return context.localized(f"{capitalized} is already paused.", zh=f"{name}已经暂停了。")
        db.execute("UPDATE timers SET paused_left = ? WHERE id = ?", (_left(due, None), row_id))
        return context.localized(f"Paused {name}.", zh=f"已暂停{name}。")
    if action == "resume":
        if paused_left is None:
            return context.localized(f"{capitalized} is running.", zh=f"{name}正在计时。")
        db.execute("UPDATE timers SET due = ?, paused_left = NULL WHERE id = ?", (time.time() + paused_left, row_id))
        return context.localized(f"Resumed {name}.", zh=f"已恢复{name}。")
    left = max(_left(due, paused_left) + (seconds if action == "add" else -seconds), 0)
    if paused_left is None:
        db.execute("UPDATE timers SET due = ? WHERE id = ?", (time.time() + left, row_id))
    else:
        db.execute("UPDATE timers SET paused_left = ? WHERE id = ?", (left, row_id))
    return context.localized(
        f"{capitalized} has {_duration(left)} left.", zh=f"{name}还剩{_duration(left, language='zh')}。"
    )


# A timer by its length and label ("the 10 minute pasta timer"), as the question "Which one?" names
# it when two share a label: the sentence library has a name or a length, never both.
LENGTH = (
    "({start_hours} hour[s] [and {start_minutes} minute[s]]|{start_minutes} minute[s] [and {start_seconds} second[s]]"
    "|{start_seconds} second[s])"
)
PICK = "[the|my] " + LENGTH + " {label} timer"
ZH_LENGTH = (
    "({start_hours}[个]小时[{start_minutes}分[钟]]|{start_minutes}分钟[{start_seconds}秒[钟]]|{start_seconds}秒[钟])"
)
ZH_PICK = "[那个|一个]" + ZH_LENGTH + "[的][{label}]计时器"


@skill(
    sentences={
        "en": [("how (much time|long) is left", {"action": "status"}),
               ("how much time (remains|do I have left)", {"action": "status"}),
               # Not "remove": "remove 5 minutes from the pizza timer" takes time off.
               ("(cancel|stop|delete) " + PICK, {"action": "cancel"}),
               ("pause " + PICK, {"action": "pause"}),
               ("(resume|unpause|continue) " + PICK, {"action": "resume"}),
               ("how (much time|long) is left on " + PICK, {"action": "status"}),
               ("add {minutes} minute[s] to " + PICK, {"action": "add"}),
               ("add a minute to [the|my] timer", {"action": "add", **A_MINUTE})],
        "zh": [("取消(所有|全部)[的]计时器", {"action": "cancel_all"}),
               ("把(所有|全部)[的]计时器[都]取消", {"action": "cancel_all"}),
               # "取消10分钟的计时器", "暂停10分钟的意大利面计时器": the library reads "10分钟的" as a timer's name.
               ("取消" + ZH_PICK, {"action": "cancel"}),
               ("暂停" + ZH_PICK, {"action": "pause"}),
               ("(恢复|继续)" + ZH_PICK, {"action": "resume"}),
               # The library has these only for a timer by its name or length.
               ("[我的]计时器还剩(多久|多长时间|几分钟)", {"action": "status"}),
               ("还剩(多少时间|多久|多长时间)", {"action": "status"}),
               ("(取消|删除|停止)[一]个计时器", {"action": "cancel"}),  # 一个 is no hour here either
               ("暂停[一]个计时器", {"action": "pause"}),
               ("[给|把][我的]计时器(加|增加|延长|多加)[上]{minutes}分钟", {"action": "add"}),
               ("[给|把][我的]计时器(加|增加|延长|多加)[上]{seconds}秒[钟]", {"action": "add"})],
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
    # Answers to "Which one?": "the pasta one", "the 10 minute timer", 茶的那个 (labels the question named).
    answers={
        "en": ["[the|my] {label} [one|timer]", "[the|my] " + LENGTH + " [{label}] [one|timer]"],
        "zh": ["[那个|要]{label}[的][那个|计时器]", "[那个|要]" + ZH_LENGTH + "[的][{label}][那个|计时器]"],
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
            if label.strip() or start_hours or start_minutes or start_seconds:
                return context.localized("There is no such timer.", zh="没有这个计时器。")
            return context.localized("No timer is running.", zh="没有正在运行的计时器。")
        if action == "status":
            return _status(rows, context)
        if action == "cancel_all":
            db.executemany("DELETE FROM timers WHERE id = ?", [(r[0],) for r in rows])
            n = len(rows)
            return context.localized(f"Cancelled {n} timer{'s' if n != 1 else ''}.", zh=f"已取消{n}个计时器。")
        if action in ("pause", "resume") and len(rows) > 1:
            # "pause the timer" with one running and one paused means the running one.
            rows = [r for r in rows if (r[4] is None) == (action == "pause")] or rows
        seconds = hours * 3600 + minutes * 60 + seconds
        language = context.language
        if len(rows) == 1:
            return _change(db, rows[0], action, seconds, _timer_name(rows[0][1], rows[0][3], language), context)
        names = list(dict.fromkeys(_full_name(r[1].lower(), r[3], language) for r in rows))  # "Pasta" is "pasta"
        if len(names) > 1:
            return context.localized(
                f"You have {len(rows)} timers: {', '.join(names)}. Which one?",
                zh=f"你有{len(rows)}个计时器：{'、'.join(names)}。要哪一个？",
            )
        # Same label, same length: no answer to "Which one?" could pick one, so the one that ends first.
        first = min(rows, key=lambda r: _left(r[2], r[4]))
        name = _timer_name(first[1], first[3], language)
        least = context.localized(f"{name} with the least time left", zh=f"剩余时间最短的{name}")
        return _change(db, first, action, seconds, least, context)


# Cancelling one alarm by its time, said as set_alarm takes it: "cancel the alarm at 7 pm", "cancel
# my 7 pm alarm" (each template costs every sentence some match time: both word orders in one).
CANCEL = "(cancel|delete|remove|turn off) [my|the] "
ZH_CANCEL = f"(取消|关掉|关闭|删除|删掉)[我的][{SAID_DAY_ZH}]{{time}}的闹钟"


def _cancel_at(time: str) -> str:
    return CANCEL + f"(alarm [{SAID_DAY}] (for|at) {time} [{SAID_DAY}]|{time} alarm [{SAID_DAY}])"


@skill(
    sentences={
        "en": [
            CANCEL + "alarm",
            "turn [my|the] alarm off",
            (CANCEL + "alarms", {"every": True}),
            ("(cancel|delete|remove|turn off) all [of] [my|the] alarm[s]", {"every": True}),
            # "Skip tomorrow's alarm": a day's ring of an alarm that repeats, or a day's alarm.
            f"(cancel|delete|remove|turn off|skip) [my|the] (alarm[s] [for] {SAID_DAY}|{SAID_DAY} alarm[s])",
            *_times(_cancel_at),
        ],
        "zh": [
            "(取消|关掉|关闭|删除|删掉)[我的]闹钟",
            "把闹钟(取消|关掉|关闭|关了|删掉)",
            ("(取消|关掉|删除|删掉)[我的](所有|全部)[的]闹钟", {"every": True}),
            ("把(所有|全部)[的]闹钟[都](取消|关掉|删掉)", {"every": True}),
            f"(取消|关掉|关闭|删除|删掉|跳过)[我的]{SAID_DAY_ZH}的闹钟",
            f"把{SAID_DAY_ZH}的闹钟(取消|关掉|关闭|关了|删掉)",
            *_times_zh(ZH_CANCEL),
        ],
    },
    lists=TIME_WORDS,
    # Answers to "Which one?": "the 7 pm one", "the one at 6:30", "the one tomorrow", "the one on Friday", "both",
    # 早上7点的那个, 明天的那个, 周五的那个, 都取消.
    answers={
        "en": [
            # First, as a template listed earlier wins a tie: "the one on Friday" is no alarm at 1:00, and "the 7
            # one" is 7:00, not 7:01 ("one" as the minute).
            f"([the|my] (one|alarm) [for] {SAID_DAY}|[the|my] {SAID_DAY} [one|alarm])",
            *_times(lambda time: f"[the|my] {time} (one|alarm) [{SAID_DAY}]"),
            *_times(lambda time: f"([the|my] [one|alarm] (at|for) {time}|[the|my] {time}) [{SAID_DAY}]"),
            ("(both|all) [of them]", {"every": True}),
        ],
        "zh": [
            *_times_zh(f"[取消][那个][{SAID_DAY_ZH}]{{time}}[的][那个|闹钟]"),
            f"[取消][那个]{SAID_DAY_ZH}[的][那个|闹钟]",
            ("(都|全部|所有的|两个都)[取消]", {"every": True}),
        ],
    },
)
def cancel_alarms(
    context: SkillContext,
    hour: Annotated[int, Range(0, 23)] | None = None,
    minute: Annotated[int, Range(0, 59)] = 0,
    every: bool = False,
    day: Annotated[str, Range(maximum=40)] = "",
) -> str:
    """Cancel the alarm at a time, or every alarm (timers keep running).

    Args:
        hour: the alarm's hour on a 24-hour clock
        minute: the alarm's minute
        every: true to cancel every alarm
        day: the day if one was said, for its alarms only: tomorrow, friday, next friday, or a date (2026-12-01);
            or the days an alarm repeats on, for those alarms only: every day, every weekday, every monday
    """
    follow_zone()
    now = datetime.now()
    said = _said_day(day) if day.strip() else None
    if day.strip() and said is None:
        return _no_such_day(day, context)
    repeat = RULES.get(said or "", "")
    first = _first_day(said, now) if said and not repeat else None
    with _db(context) as db:
        rang = db.execute("SELECT at, due FROM rung WHERE NOT stopped").fetchone()
        # "Turn off the alarm" said once the one that rang has stopped ringing by itself is for it still, until
        # "snooze" could no longer be: not for the next alarm in its place, nor for the rule it rang for.
        just_rang = rang and not said and context.stopped_at < rang[0] and time.time() - rang[0] <= SNOOZE_WITHIN
        ringing = just_rang and _rings_on(rang[0], context)
        set_for = datetime.fromtimestamp(rang[1]) if ringing else None
        # The alarm ringing is turned off by "turn off the alarm", by its time, or with all the others.
        off = (just_rang and hour is None and not every) or (
            ringing and (every or (set_for.hour, set_for.minute) == (hour, minute))
        )
        if off:
            db.execute("DELETE FROM rung")  # and no snooze after
            if not every:
                return context.localized("Alarm off.", zh="闹钟关了。")
        alarms = _alarms(db)
        if repeat:
            alarms = [alarm for alarm in alarms if alarm.repeat == repeat]
        if said in WEEKDAYS:
            # The nearest of that weekday with such an alarm, of those a reply names by it first: one today or
            # tomorrow is named "7:00" or "7:00 tomorrow", so "the one on Friday" answers a question that named
            # "7:00 on Friday, May 15" only for the alarm a week after tomorrow's.
            fits = [alarm.at for alarm in alarms if alarm.at.weekday() == WEEKDAYS.index(said)]
            fits = [at for at in fits if hour is None or (at.hour, at.minute) == (hour, minute)]
            by_name = [at for at in fits if at.date() > now.date() + timedelta(days=1)]
            first = min((at.date() for at in by_name or fits), default=first)
        if first:
            alarms = [alarm for alarm in alarms if alarm.at.date() == first]
        named, named_zh = _day_named(first, now.date()) if first and first != now.date() else (" today", "今天")
        if said == "tomorrow":  # as said, also between midnight and NIGHT_ENDS
            named, named_zh = " tomorrow", "明天"
        if repeat:
            named, named_zh = _rule_named(repeat)
            named = " " + named
        none = context.localized(
            f"There is no alarm{named}." if said else "No alarm is set.",
            zh=f"{named_zh}没有闹钟。" if said else "没有设置闹钟。",
        )
        if hour is not None:
            picked = [alarm for alarm in alarms if alarm.time_of_day == (hour, minute)]
            # The next one at that time (with those snoozed with it): a later one is asked for with its day.
            picked = [alarm for alarm in picked if alarm.at == picked[0].at]
            if not picked:
                on, on_zh = (named, named_zh) if said else ("", "")
                return context.localized(
                    f"There is no alarm at {clock(hour, minute)}{on}.",
                    zh=f"{on_zh}{clock(hour, minute, 'zh')}没有闹钟。",
                )
        elif every or len(alarms) == 1:
            picked = alarms
        elif not alarms:
            return none
        else:  # "cancel my alarm" with several set: not all of them, unasked
            times, times_zh = zip(*(alarm.named(now) for alarm in alarms), strict=True)
            return context.localized(
                f"You have {len(alarms)} alarms: at {', '.join(times[:-1])} and {times[-1]}. Which one?",
                zh=f"你有{len(alarms)}个闹钟：{'、'.join(times_zh)}。要取消哪一个？",
            )
        # An alarm that repeats, cancelled by the day of its next ring, skips that ring only.
        skipped = [alarm for alarm in picked if alarm.repeat and first]
        db.executemany(
            "UPDATE timers SET due = ? WHERE id = ?",
            [(_next_ring(alarm.repeat, alarm.at_minute, alarm.at).timestamp(), alarm.id) for alarm in skipped],
        )
        db.executemany("DELETE FROM timers WHERE id = ?", [(alarm.id,) for alarm in picked if alarm not in skipped])
    if off and not picked:
        return context.localized("Alarm off.", zh="闹钟关了。")
    if not picked:
        return none
    if len(picked) == 1 and skipped:  # named with its day, which is what was cancelled
        at, (rule, rule_zh) = picked[0].at, _rule_named(picked[0].repeat)
        day_named, day_zh = _day_named(at.date(), now.date())
        return context.localized(
            f"Cancelled the alarm at {clock(at.hour, at.minute)}{day_named}; the one {rule} stays.",
            zh=f"已取消{day_zh}{clock(at.hour, at.minute, 'zh')}的闹钟，{rule_zh}的闹钟保留。",
        )
    if len(picked) == 1 and not every:
        when, when_zh = picked[0].named(now)
        return context.localized(f"Cancelled the alarm at {when}.", zh=f"已取消{when_zh}的闹钟。")
    count = len(picked)
    cancelled = context.localized(f"Cancelled {count} alarm{'s' if count != 1 else ''}.", zh=f"已取消{count}个闹钟。")
    return context.localized("Alarm off. ", zh="闹钟关了。") + cancelled if off else cancelled


@skill(
    sentences={
        "en": ["snooze [the alarm|it]", "snooze [the alarm|it] for {minutes} minute[s]"],
        "zh": ["贪睡", "再睡一会[儿]", "[让我]再睡{minutes}分钟", "{minutes}分钟后再叫我"],
    },
    optional_tool=True,
)
def snooze(context: SkillContext, minutes: Annotated[int, Range(1, 60)] = 9) -> str:
    """Ring the alarm that just rang again in a few minutes.

    Args:
        minutes: minutes until it rings again
    """
    follow_zone()
    with _db(context) as db:
        rang = db.execute("SELECT label, at, language, others FROM rung").fetchone()
        if rang is None or time.time() - rang[1] > SNOOZE_WITHIN:
            return context.localized("No alarm has rung just now.", zh="刚才没有闹钟响。")
        label, _, language, others = rang
        # Minutes of real time (on the clock, 1:55 + 9 minutes is 1:04 as daylight saving ends), from this minute.
        due = time.time() // 60 * 60 + minutes * 60
        db.executemany(
            "INSERT INTO timers (kind, label, due, language) VALUES ('alarm', ?, ?, ?)",
            [(name, due, said_in) for name, said_in in [*json.loads(others), (label, language)]],
        )
        db.execute("DELETE FROM rung")  # snoozed once: a second "snooze" is for the next ring
    again = datetime.fromtimestamp(due)
    return context.localized(
        f"Snoozed until {clock(again.hour, again.minute)}.", zh=f"好的，{clock(again.hour, again.minute, 'zh')}再叫你。"
    )


def _ring(kind: str, label: str, due: float, language: str) -> str:
    """What is said when a timer or alarm comes due, in the language it was set in; late (the assistant was
    not running), with when it was due."""
    late = time.time() - due > LATE
    then = datetime.fromtimestamp(due)
    today = then.date() == datetime.now().date()
    if language == "zh":
        what = f"{label}{'计时器' if kind == 'timer' else '闹钟'}"
        if late:
            day = "" if today else f"星期{WEEKDAYS_ZH[then.weekday()]}"
            return f"{what}本该在{day}{clock(then.hour, then.minute, 'zh')}响，当时我没能提醒你。"
        return f"{what}时间到了。" if kind == "timer" else f"{what}响了。"
    what = f"Your {label} {kind}" if label else f"Your {kind}"
    if late:
        day = "" if today else f" on {then.strftime('%A')}"
        return f"{what} was due at {clock(then.hour, then.minute)}{day}; I could not ring it then."
    return f"{what} is done." if kind == "timer" else f"{what} is ringing."


def _done(label: str, count: int, language: str) -> str:
    """What is said when `count` timers of one label are done together: once, not `count` times."""
    if count == 1:
        return _ring("timer", label, time.time(), language)
    if language == "zh":
        return f"{count}个{label}计时器时间到了。"
    return f"Your {count} {label + ' ' if label else ''}timers are done."


@background
def ring_due_timers(context: SkillContext, stop: threading.Event) -> None:
    """Ring every timer or alarm that is due, then forget it; an alarm on time rings on for a while.

    Stored data that cannot be read or written (a full disk) does not stop the clock: it looks
    again with backoff, an alarm rings on meanwhile, and a timer rung but not yet deleted is never
    rung twice. An alarm ringing when the assistant restarts (or reloads) rings on after it.
    """
    rung: dict[int, float | None] = {}  # rung, and still to be deleted (None) or set for its next ring
    snoozable = None  # the alarm among them that rang on time, still to be stored: a row of `rung`
    ringing = None  # the alarms that rang on time and ring on: (label, language) each, when the last rang, when said
    wait, failing = TICK, False
    skew, earlier = None, set()  # wall clock less _elapsed() at the last look; the timers stored before the start
    zone, walls = None, {}  # the time zone at the last look, and the alarms' times of day in it
    while not stop.wait(wait):
        follow_zone()  # for the day and time a ring says
        try:
            with _db(context) as db:
                now_skew = time.time() - _elapsed()
                if skew is None:
                    earlier = set(db.execute("SELECT id, due FROM timers"))
                elif abs(now_skew - skew) > CLOCK_STEP:
                    _clock_set(db, now_skew - skew, earlier)
                if zone is not None and _zone() != zone:
                    _zone_set(db, walls)
                alarms_set = db.execute("SELECT id, due FROM timers WHERE kind = 'alarm'").fetchall()
                due = db.execute(
                    "SELECT id, kind, label, due, language, repeat, at_minute FROM timers"
                    " WHERE due <= ? AND paused_left IS NULL ORDER BY due",
                    (time.time(),),
                ).fetchall()
                stored = db.execute("SELECT label, at, language, stopped, others FROM rung").fetchone()
                if ringing is None and stored and not stored[3] and time.time() - stored[1] <= RING_FOR:
                    alarms = (*map(tuple, json.loads(stored[4])), (stored[0], stored[2]))
                    ringing = (alarms, stored[1], time.time())  # rang before a restart: rings on at the next time
                elif ringing and snoozable is None and (stored is None or stored[1] != ringing[1]):
                    ringing = None  # turned off or snoozed: its row is gone
                if ringing and context.stopped_at >= ringing[1] and stored and not stored[3]:
                    db.execute("UPDATE rung SET stopped = 1")  # a restart does not ring it again
            skew = now_skew  # once stored: a step not stored is found again at the next look
            zone, walls = _zone(), {row_id: datetime.fromtimestamp(at) for row_id, at in alarms_set}
            done: dict[tuple[str, str], int] = {}  # timers done on time, by label and language: said once, counted
            rang_now: set[tuple[str, str]] = set()  # alarms rung on time, by label and language: said once
            for row_id, kind, label, due_at, language, repeat, at_minute in due:
                if row_id not in rung:
                    key, on_time = (label, context.announced_in(language)), time.time() - due_at <= LATE
                    if kind == "timer" and on_time:
                        done[key] = done.get(key, 0) + 1
                    elif not (kind == "alarm" and on_time and key in rang_now):
                        context.say(_ring(kind, label, due_at, key[1]))
                    # One that repeats is set for its next ring at once: a snooze is an alarm of its own.
                    rung[row_id] = _next_ring(repeat, at_minute, datetime.now()).timestamp() if repeat else None
                    if kind == "alarm" and on_time:  # not one said late
                        rang_now.add(key)
                        # One ringing already rings on with it, and is snoozed with it, unless "stop" was said to it.
                        still = ringing and context.stopped_at < ringing[1]
                        before = [alarm for alarm in ringing[0] if alarm != (label, language)] if still else []
                        snoozable = (label, time.time(), language, due_at, json.dumps(before))
                        ringing = ((*before, (label, language)), snoozable[1], snoozable[1])
            for (label, language), count in done.items():
                context.say(_done(label, count, language))
            if rung:
                with _db(context) as db:
                    db.executemany(
                        "DELETE FROM timers WHERE id = ?", [(i,) for i, again in rung.items() if again is None]
                    )
                    db.executemany(
                        "UPDATE timers SET due = ? WHERE id = ?", [(again, i) for i, again in rung.items() if again]
                    )
                    if snoozable is not None:
                        db.execute(
                            "INSERT OR REPLACE INTO rung (id, label, at, language, due, others)"
                            " VALUES (0, ?, ?, ?, ?, ?)",
                            snoozable,
                        )
                rung.clear()
                snoozable = None
        except StorageError as e:
            if not failing:
                log.error("timers: %s; trying again with backoff", e)
            wait, failing = min(wait * 2, MAX_BACKOFF), True
        else:
            if failing:
                log.info("timers: the stored timers can be read and written again")
            wait, failing = TICK, False
        ringing = _ring_on(context, ringing)


Ringing = tuple[tuple[tuple[str, str], ...], float, float]


def _ring_on(context: SkillContext, ringing: Ringing | None) -> Ringing | None:
    """Say the ringing alarms again when it is time to; None once they have rung for long enough or "stop" was said."""
    if ringing is None:
        return None
    alarms, rang, last = ringing
    if not _rings_on(rang, context):
        return None
    now = time.time()
    if now - last >= RING_EVERY:
        for label, language in alarms:
            context.say(_ring("alarm", label, now, context.announced_in(language)))
        return alarms, rang, now
    return ringing


def _rings_on(rang: float, context: SkillContext) -> bool:
    """Whether an alarm that rang at `rang` (time.time()) rings on: not for RING_FOR yet, nor "stop" said since."""
    return time.time() - rang <= RING_FOR and context.stopped_at < rang
