"""Built-in skills: the time and the date."""

from __future__ import annotations

from datetime import datetime

from assistant import SkillContext, skill

from ._spoken import WEEKDAYS_ZH, clock


@skill(
    sentences={
        "en": ["what time is it", "what's the time", "tell me the time"],
        "zh": ["现在几点[钟][了]", "几点[钟]了"],
    },
    intents={"HassGetCurrentTime": {}},
)
def current_time(context: SkillContext) -> str:
    """Tell the current local time."""
    now = datetime.now()
    return context.localized(f"It is {clock(now.hour, now.minute)}.", zh=f"现在是{clock(now.hour, now.minute, 'zh')}。")


@skill(
    sentences={
        "en": ["what day is it", "what's the date", "what is the date today"],
        "zh": ["今天[是]几号", "今天[是]星期几", "今天[是]几月几号"],
    },
    intents={"HassGetCurrentDate": {}},
)
def current_date(context: SkillContext) -> str:
    """Tell today's date and day of the week."""
    today = datetime.now()
    weekday = WEEKDAYS_ZH[today.weekday()]
    return context.localized(
        today.strftime("Today is %A, %B %-d, %Y."),
        zh=f"今天是{today.year}年{today.month}月{today.day}日，星期{weekday}。",
    )
