"""Built-in skills: the time and the date."""

from __future__ import annotations

from datetime import datetime, timedelta

from assistant import SkillContext, skill

from ._spoken import WEEKDAYS_ZH, clock, follow_zone


@skill(
    sentences={
        "en": [
            "(what time is it|what's the time|what is the time) [now|right now]",
            "[do you know|tell me] what time it is [now|right now]",
            "tell me the time",
        ],
        "zh": ["现在几点[钟][了]", "几点[钟]了"],
    },
    intents={"HassGetCurrentTime": {}},
)
def current_time(context: SkillContext) -> str:
    """Tell the current local time."""
    follow_zone()
    now = datetime.now()
    return context.localized(f"It is {clock(now.hour, now.minute)}.", zh=f"现在是{clock(now.hour, now.minute, 'zh')}。")


@skill(
    sentences={
        "en": ["what (day|date|day of the week|month|year) is (it|today) [today]", "(what's|what is) the date [today]",
               ("(what's|what is) [the] date tomorrow", {"tomorrow": True}),
               ("what day is [it] tomorrow", {"tomorrow": True}),
               ("(what's|what is) tomorrow's date", {"tomorrow": True})],
        "zh": ["今天[是]几号", "今天[是]星期几", "今天[是]几月几号",
               ("明天[是]几号", {"tomorrow": True}), ("明天[是]星期几", {"tomorrow": True}),
               ("明天[是]几月几号", {"tomorrow": True})],
    },
    intents={"HassGetCurrentDate": {}},
)  # fmt: skip
def current_date(context: SkillContext, tomorrow: bool = False) -> str:
    """Tell today's date and day of the week.

    Args:
        tomorrow: true for tomorrow's instead
    """
    follow_zone()
    date = datetime.now() + timedelta(days=tomorrow)
    which, which_zh = ("Tomorrow", "明天") if tomorrow else ("Today", "今天")
    return context.localized(
        date.strftime(f"{which} is %A, %B %-d, %Y."),
        zh=f"{which_zh}是{date.year}年{date.month}月{date.day}日，星期{WEEKDAYS_ZH[date.weekday()]}。",
    )
