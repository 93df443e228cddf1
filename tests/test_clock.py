"""Time on a board: a wall clock set while the assistant runs, the time zone, daylight saving."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from assistant.skills.builtin._spoken import clock
from assistant.skills.registry import Registry
from tests.test_builtin_skills import registry_in

REAL_TIME = time


class SettableClock:
    """The `time` module as the timers see it, with a wall clock that can be set (as NTP sets a board's
    at boot); the elapsed time goes on as before."""

    def __init__(self) -> None:
        self.step = 0.0

    def time(self) -> float:
        return REAL_TIME.time() + self.step

    def __getattr__(self, name: str) -> object:
        return getattr(REAL_TIME, name)

    def datetime(self) -> type[datetime]:
        """`datetime` with its now() on this clock."""
        wall = self

        class Datetime(datetime):
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> datetime:
                return datetime.fromtimestamp(wall.time(), tz)  # with its fold: a subclass's loses it

        return Datetime


class Running:
    """A registry on `state` whose timers' clock runs with a wall clock that can be set."""

    def __init__(self, state: Path, monkeypatch: pytest.MonkeyPatch, at: datetime | None = None) -> None:
        self.said: list[str] = []
        self.registry: Registry = registry_in(state, self.said)
        self.clock = SettableClock()
        if at is not None:  # the wall clock shows `at` from the start
            self.clock.step = at.timestamp() - REAL_TIME.time()
        timers = self.registry.skills["set_timer"].func.__globals__
        monkeypatch.setitem(timers, "time", self.clock)
        monkeypatch.setitem(timers, "datetime", self.clock.datetime())
        self.looks = 0  # looks of the timers' clock, counted as each begins
        follow_zone = timers["follow_zone"]  # what each look does first

        def counted() -> None:
            self.looks += threading.current_thread().name == "skill-ring_due_timers"
            follow_zone()

        monkeypatch.setitem(timers, "follow_zone", counted)
        self.registry.call("list_timers", {})  # the tables made
        self.stopped = threading.Event()
        self.registry.start_background(self.stopped)

    def looked(self, seconds: float = 10.0) -> None:
        """Wait until the clock has looked once more, whole, from now: on a busy machine a look can
        come late, and a test that slept a fixed time would then look before the clock did."""
        until, deadline = self.looks + 2, REAL_TIME.monotonic() + seconds  # the second begins as the first ends
        while self.looks < until:
            assert REAL_TIME.monotonic() < deadline, "the timers' clock stopped looking"
            REAL_TIME.sleep(0.01)

    def said_within(self, seconds: float) -> list[str]:
        deadline = REAL_TIME.monotonic() + seconds
        while not self.said and REAL_TIME.monotonic() < deadline:
            REAL_TIME.sleep(0.05)
        return self.said

    def stop(self) -> None:
        self.stopped.set()
        REAL_TIME.sleep(0.5)


@pytest.mark.parametrize("step", [3600.0, 56 * 365 * 86400.0, -3 * 3600.0])
def test_a_timer_rings_after_its_length_when_the_clock_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: float
) -> None:
    running = Running(tmp_path, monkeypatch)
    running.looked()
    assert running.registry.call("set_timer", {"seconds": 2}).text == "Timer set for 2 seconds."
    running.clock.step = step  # forward from 1970 or the last shutdown, or back from a clock that ran ahead
    assert running.said_within(1.2) == []  # not at once
    assert running.said_within(2.0) == ["Your timer is done."]  # nor late, nor never
    running.stop()


def test_a_timer_from_before_the_start_keeps_its_wall_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A timer set before a restart: only its wall time survives it, and a clock set since is right.
    registry_in(tmp_path).call("list_timers", {})
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.execute("INSERT INTO timers (kind, label, due, length) VALUES ('timer', 'tea', ?, 600)", (time.time() + 60,))
        db.execute("INSERT INTO timers (kind, label, due) VALUES ('alarm', 'gym', ?)", (time.time() + 0.5,))
    running = Running(tmp_path, monkeypatch)
    assert running.said_within(2.0) == ["Your gym alarm is ringing."]  # an alarm rang meanwhile
    running.clock.step = 70.0  # due 10 s ago
    running.looked()
    assert "Your tea timer is done." in running.said
    running.stop()


@pytest.fixture
def zone() -> Iterator[Callable[[str], None]]:
    """Sets the time zone as `timedatectl set-timezone` does for a process already running: what
    the C library reads next, without telling Python."""
    before = os.environ.get("TZ")

    def set_zone(name: str) -> None:
        os.environ["TZ"] = name

    yield set_zone
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_the_time_is_told_in_the_zone_set_now(tmp_path: Path, zone: Callable[[str], None]) -> None:
    registry = registry_in(tmp_path)
    zone("UTC")
    time.tzset()  # the zone at the start
    registry.call("current_time", {})
    zone("Asia/Shanghai")  # set since: UTC+8, no daylight saving
    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    told = registry.call("current_time", {}).text
    assert told in {f"It is {clock(t.hour, t.minute)}." for t in (now, now + timedelta(minutes=1))}
    tomorrow = registry.call("current_date", {"tomorrow": True}).text
    assert tomorrow == (now + timedelta(days=1)).strftime("Tomorrow is %A, %B %-d, %Y.") or now.hour == 23
    hour_ago = now - timedelta(hours=1)  # here the next one is tomorrow's (in UTC it may be today's)
    day = " tomorrow" if hour_ago.date() == now.date() else ""
    alarm = clock(hour_ago.hour, hour_ago.minute)
    assert (
        registry.call("set_alarm", {"hour": hour_ago.hour, "minute": hour_ago.minute}).text
        == f"Alarm set for {alarm}{day}."
    )


@pytest.mark.parametrize(
    ("real", "arguments", "listed"),
    [
        ((9, 0), {"hour": 9, "minute": 10}, "9:10"),
        ((13, 50), {"hour": 14}, "14:00"),  # more than half a day after the wrong clock's 00:00
        ((3, 0), {"hour": 7, "day": "tomorrow"}, "7:00 tomorrow"),
    ],
)
def test_an_alarm_set_before_the_clock_was_set_rings_at_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, real: tuple[int, int], arguments: dict, listed: str
) -> None:
    running = Running(tmp_path, monkeypatch)
    # The board started at 1970-01-01 00:00:30, without a clock battery, and the alarm was set then.
    running.clock.step = datetime(1970, 1, 1, 10 if "day" in arguments else 0, 0, 30).timestamp() - REAL_TIME.time()
    running.looked()
    assert running.registry.call("set_alarm", arguments).text.startswith("Alarm set for ")
    running.clock.step = datetime(2026, 5, 4, *real).timestamp() - REAL_TIME.time()  # NTP sets the clock
    assert running.said_within(1.5) == []  # not "Your alarm was due at … I could not ring it then."
    assert running.registry.call("list_timers", {}).text == f"You have an alarm at {listed}."
    running.stop()


def at(when: datetime, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The timers and alarms of `registry` at the time `when` (its wall clock set to it)."""
    settable = SettableClock()
    settable.step = when.timestamp() - REAL_TIME.time()
    timers = registry.skills["set_timer"].func.__globals__
    monkeypatch.setitem(timers, "time", settable)
    monkeypatch.setitem(timers, "datetime", settable.datetime())


def test_a_snooze_as_daylight_saving_ends_is_minutes_of_real_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Callable[[str], None]
) -> None:
    zone("America/New_York")
    time.tzset()
    registry = registry_in(tmp_path)
    # 1:55 in the night daylight saving ends: at 2:00 the clock goes back to 1:00.
    rang = datetime(2026, 11, 1, 1, 55, tzinfo=ZoneInfo("America/New_York"))
    at(rang, registry, monkeypatch)
    registry.call("list_timers", {})  # the tables made
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.execute("INSERT INTO rung (id, label, at, language) VALUES (0, '', ?, 'en')", (rang.timestamp(),))
    assert registry.call("snooze", {}).text == "Snoozed until 1:04."  # not 2:04, an hour and 9 minutes later
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        assert db.execute("SELECT due FROM timers").fetchone()[0] == rang.timestamp() + 9 * 60


def test_a_hundred_timers_are_counted_not_read_out(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    for i in range(100):
        registry.call("set_timer", {"minutes": 5 + i % 3})
    registry.call("set_alarm", {"hour": (datetime.now() - timedelta(hours=1)).hour})  # after the timers
    listing = registry.call("list_timers", {}).text
    assert listing.startswith("You have a timer with ")
    assert listing.endswith(", and 96 more.") and listing.count(",") == 5
    status = registry.call("control_timer", {"action": "status"}).text
    assert status.startswith("The 5 minute timer has ") and status.endswith("; and 95 more timers.")
    assert status.count(";") == 5
    registry.context.language = "zh"
    assert registry.call("list_timers", {}).text.endswith("；还有96个。")


def test_timers_done_together_are_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry_in(tmp_path).call("list_timers", {})
    due = time.time() + 0.5
    with sqlite3.connect(tmp_path / "timers.sqlite3") as db:
        db.executemany(
            "INSERT INTO timers (kind, label, due, length, language) VALUES ('timer', ?, ?, 300, ?)",
            [*[("", due, "en")] * 98, ("tea", due, "en"), ("tea", due, "en"), ("pasta", due, "en"), ("茶", due, "zh")],
        )
    running = Running(tmp_path, monkeypatch)
    running.said_within(2.0)
    running.looked()
    assert sorted(running.said) == [
        "Your 2 tea timers are done.",
        "Your 98 timers are done.",
        "Your pasta timer is done.",
        "茶计时器时间到了。",
    ]
    running.stop()


def test_an_alarm_keeps_its_time_of_day_when_the_zone_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Callable[[str], None]
) -> None:
    zone("UTC")  # as a board starts
    time.tzset()
    running = Running(tmp_path, monkeypatch)
    assert running.registry.call("set_alarm", {"hour": 7, "minute": 30}).text.startswith("Alarm set for 7:30")
    running.looked()
    zone("Asia/Shanghai")  # then set, as `timedatectl set-timezone` does
    running.looked()
    assert running.registry.call("list_timers", {}).text in {
        "You have an alarm at 7:30.",
        "You have an alarm at 7:30 tomorrow.",
    }
    running.stop()
    assert running.said == []


@pytest.mark.parametrize(
    ("name", "evening"), [("Europe/Berlin", datetime(2026, 3, 28, 22)), ("America/New_York", datetime(2026, 3, 7, 22))]
)
def test_an_alarm_at_a_time_the_clock_skips_rings_as_it_skips_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Callable[[str], None], name: str, evening: datetime
) -> None:
    zone(name)
    time.tzset()
    registry = registry_in(tmp_path)
    at(evening.replace(tzinfo=ZoneInfo(name)), registry, monkeypatch)  # the evening before 2:00 becomes 3:00
    said = registry.call("set_alarm", {"hour": 2, "minute": 30}).text
    assert said == "Alarm set for 3:00 tomorrow: the clock skips 2:30."  # not 2:30, then ringing at 3:30
    assert registry.call("list_timers", {}).text == "You have an alarm at 3:00."
    registry.context.language = "zh"
    assert registry.call("set_alarm", {"hour": 2}).text == "明天凌晨3点已经有闹钟了。"  # 2:00 is skipped too
    assert registry.call("set_alarm", {"hour": 3}).text == "明天凌晨3点已经有闹钟了。"


def stored(state: Path) -> list[tuple[float, str]]:
    """The alarms' next rings and the weekdays they repeat on, the soonest first."""
    with sqlite3.connect(state / "timers.sqlite3") as db:
        return db.execute("SELECT due, repeat FROM timers WHERE kind = 'alarm' ORDER BY due").fetchall()


@pytest.mark.parametrize(
    ("name", "friday", "hours"),
    [("Asia/Shanghai", datetime(2026, 5, 8, 7), 72), ("America/New_York", datetime(2026, 3, 6, 7), 71)],
)
def test_an_alarm_every_weekday_rings_on_friday_then_on_monday_at_its_time(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    zone: Callable[[str], None],
    name: str,
    friday: datetime,
    hours: int,
) -> None:
    zone(name)  # without daylight saving, and with it beginning on that Sunday
    time.tzset()
    friday = friday.replace(tzinfo=ZoneInfo(name))
    monday = friday + timedelta(days=3)  # 7:00 on Monday in that zone: 72 hours later, or 71 as the clock skips one
    assert monday.timestamp() - friday.timestamp() == hours * 3600
    running = Running(tmp_path, monkeypatch, at=friday - timedelta(seconds=2))
    set_alarm = running.registry.call("set_alarm", {"hour": 7, "day": "every weekday"}).text
    assert set_alarm == "Alarm set for 7:00 every weekday."
    assert running.said_within(5.0) == ["Your alarm is ringing."]
    running.looked()
    assert stored(tmp_path) == [(monday.timestamp(), "01234")]  # not on Saturday, nor at 8:00 or 6:00
    assert running.registry.call("list_timers", {}).text == "You have an alarm at 7:00 every weekday."
    snoozed = running.registry.call("snooze", {}).text
    assert snoozed.startswith("Snoozed until 7:")
    assert stored(tmp_path)[1:] == [(monday.timestamp(), "01234")]  # the snooze is an alarm of its own
    minute = int(snoozed.removesuffix(".").split(":")[-1])
    assert (
        running.registry.call("cancel_alarms", {"hour": 7, "minute": minute}).text
        == f"Cancelled the alarm at 7:{minute:02d}."
    )
    running.stop()
    # A restart over the weekend: it rings on Monday, and then on Tuesday.
    restarted = Running(tmp_path, monkeypatch, at=monday - timedelta(seconds=2))
    assert restarted.said_within(5.0) == ["Your alarm is ringing."]
    restarted.looked()
    assert stored(tmp_path) == [((monday + timedelta(days=1)).timestamp(), "01234")]
    restarted.stop()


def test_an_alarm_every_day_at_a_time_the_clock_skips_rings_as_it_skips_it_then_at_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Callable[[str], None]
) -> None:
    zone("America/New_York")
    time.tzset()
    new_york = ZoneInfo("America/New_York")
    running = Running(tmp_path, monkeypatch, at=datetime(2026, 3, 8, 1, 59, 58, tzinfo=new_york))  # then 3:00
    set_alarm = running.registry.call("set_alarm", {"hour": 2, "minute": 30, "day": "every day"}).text
    assert set_alarm == "Alarm set for 2:30 every day."
    assert stored(tmp_path) == [(datetime(2026, 3, 8, 3, tzinfo=new_york).timestamp(), "0123456")]
    assert running.said_within(5.0) == ["Your alarm is ringing."]
    running.looked()
    assert stored(tmp_path) == [(datetime(2026, 3, 9, 2, 30, tzinfo=new_york).timestamp(), "0123456")]
    assert running.registry.call("list_timers", {}).text == "You have an alarm at 2:30 every day."
    running.stop()


def test_two_alarms_that_repeat_at_one_time_ring_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Callable[[str], None]
) -> None:
    zone("Asia/Shanghai")
    time.tzset()
    monday = datetime(2026, 5, 4, 7, tzinfo=ZoneInfo("Asia/Shanghai"))
    running = Running(tmp_path, monkeypatch, at=monday - timedelta(seconds=2))
    for day in ("every day", "every monday"):  # two rules, one ring on Mondays
        assert running.registry.call("set_alarm", {"hour": 7, "day": day}).text.startswith("Alarm set for 7:00 every ")
    assert running.said_within(5.0) == ["Your alarm is ringing."]
    running.looked()
    assert running.said == ["Your alarm is ringing."]  # not twice in a row
    assert [due for due, _ in stored(tmp_path)] == [(monday + timedelta(days=d)).timestamp() for d in (1, 7)]
    running.stop()


def test_an_alarm_that_repeats_from_before_the_start_is_said_late_when_the_clock_is_set_past_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_in(tmp_path).call("set_alarm", {"hour": 7, "day": "every day"})  # before the board was off
    ((due, _),) = stored(tmp_path)
    running = Running(tmp_path, monkeypatch, at=datetime(1970, 1, 1, 0, 0, 30))  # it starts without a clock battery
    running.looked()
    running.clock.step = due + 600 - REAL_TIME.time()  # then NTP sets it: ten minutes after the alarm was due
    assert running.said_within(3.0) == [
        "Your alarm was due at 7:00; I could not ring it then."
    ]  # as one that rings once
    running.looked()
    ((again, _),) = stored(tmp_path)
    assert datetime.fromtimestamp(again) == datetime.fromtimestamp(due) + timedelta(days=1)  # and tomorrow
    running.stop()


def test_an_alarm_that_repeats_keeps_its_time_of_day_when_the_zone_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: Callable[[str], None]
) -> None:
    zone("UTC")  # as a board starts
    time.tzset()
    running = Running(tmp_path, monkeypatch)
    assert running.registry.call("set_alarm", {"hour": 7, "minute": 30, "day": "every day"}).text.endswith("every day.")
    running.looked()
    zone("Asia/Shanghai")  # then set, as `timedatectl set-timezone` does
    running.looked()
    time.tzset()
    ((due, _),) = stored(tmp_path)
    assert datetime.fromtimestamp(due).time() == datetime(2026, 1, 1, 7, 30).time() and 0 < due - time.time() <= 86400
    running.stop()
    assert running.said == []
