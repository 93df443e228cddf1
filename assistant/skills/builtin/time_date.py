"""Built-in skills: the time and the date."""

from __future__ import annotations

from datetime import datetime

from assistant import skill


@skill(
    sentences={
        "en": ["what time is it", "what's the time", "tell me the time"],
        "zh": ["现在几点[钟][了]", "几点[钟]了"],
    },
    intents={"HassGetCurrentTime": {}},
)
def current_time() -> str:
    """Tell the current local time."""
    now = datetime.now()
    return f"It is {now.hour}:{now.minute:02d}."


@skill(
    sentences={
        "en": ["what day is it", "what's the date", "what is the date today"],
        "zh": ["今天[是]几号", "今天[是]星期几", "今天[是]几月几号"],
    },
    intents={"HassGetCurrentDate": {}},
)
def current_date() -> str:
    """Tell today's date and day of the week."""
    return datetime.now().strftime("Today is %A, %B %-d, %Y.")
