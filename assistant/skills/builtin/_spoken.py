"""Times and days as the built-in skills say them, in English and in Chinese."""

from __future__ import annotations

import time

WEEKDAYS_ZH = "一二三四五六日"  # Monday first, as datetime.weekday() counts; strftime's %A is English


# Where each part of the day begins (24-hour clock), as said before a Chinese time: 早上7点, 晚上7点.
DAY_PARTS_ZH = ((0, "凌晨"), (5, "早上"), (9, "上午"), (12, "中午"), (13, "下午"), (18, "晚上"))


def clock(hour: int, minute: int, language: str = "en") -> str:
    """A time of day: "7:05", "19:30"; 早上7点05分, 晚上7点30分, 中午12点."""
    if language != "zh":
        return f"{hour}:{minute:02d}"
    part = [name for start, name in DAY_PARTS_ZH if hour >= start][-1]
    return f"{part}{hour - 12 if hour > 12 else hour}点" + (f"{minute:02d}分" if minute else "")


def follow_zone() -> None:
    """Read the local time zone as it is now: Python reads it once, and a board's is often set after the
    assistant started (timedatectl set-timezone changes /etc/localtime, which tzset() reads again)."""
    time.tzset()
