"""Faults inside skills end the turn with their cause in words; they never stop the assistant.

Brokers here are real: mosquitto refusing a client, and a plain TCP server that accepts MQTT
connections and then never acknowledges a command (what a broker stuck on a full disk does).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

from tokenizers import Tokenizer

from assistant import SkillContext, background, skill
from assistant.config import Settings
from assistant.skills import registry as registry_module
from assistant.skills.constraint import ToolCallConstraint
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from tests.test_smart_home import DEVICES, free_port, mosquitto, smart_home


def assistant(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_nan_and_infinity_are_refused_before_any_skill_runs(tmp_path: Path) -> None:
    registry = smart_home(free_port(), tmp_path)  # nothing listens there: a call that got through would say so
    for bad in ("NaN", "Infinity", "-Infinity"):
        arguments = json.loads(f'{{"device": "thermostat", "celsius": {bad}}}')
        result = registry.call("set_temperature", arguments)
        assert result.error == "invalid arguments for set_temperature: numbers must be finite"


def test_a_broker_that_refuses_the_client_is_reported(tmp_path: Path) -> None:
    with mosquitto(tmp_path, allow_anonymous=False) as port:
        said = smart_home(port, tmp_path).call("switch_device", {"device": "kitchen light", "on": True}).text
    refused = "(it refused the connection: Not authorized; it may want mqtt.username and mqtt.password)"
    assert said == f"I can't reach the smart home broker at 127.0.0.1:{port} {refused}."


def run_background(task, state: Path, runs: list[float], wanted: int, seconds: float) -> None:
    """Run the @background `task` until it has started `wanted` times (it appends to `runs`) or `seconds` pass."""
    registry = Registry(context=SkillContext(state_dir=state))
    registry.background.append(task.__assistant_background__)
    stop = threading.Event()
    registry.start_background(stop)
    deadline = time.monotonic() + seconds
    while len(runs) < wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()


def test_a_background_task_that_fails_is_restarted_with_backoff(tmp_path: Path) -> None:
    runs: list[float] = []

    @background
    def flaky(context: SkillContext, stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise OSError("the sensor is unplugged")
        stop.wait()

    run_background(flaky, tmp_path, runs, wanted=3, seconds=10)
    assert len(runs) == 3
    assert 0.9 < runs[1] - runs[0] < 1.8 and 1.9 < runs[2] - runs[1] < 3.0  # 1 s, then 2 s


def test_a_background_task_failing_for_hours_is_logged_once_and_once_more_when_it_runs_again(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(registry_module, "BACKOFF_SECONDS", (0.02, 0.3))  # an hour of restarts in seconds
    runs: list[float] = []
    unplugged = threading.Event()
    unplugged.set()

    @background
    def sensor(context: SkillContext, stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if unplugged.is_set():
            raise OSError("the sensor is unplugged")
        stop.wait()

    with caplog.at_level(logging.DEBUG, logger="assistant.skills.registry"):
        registry = Registry(context=SkillContext(state_dir=tmp_path))
        registry.background.append(sensor.__assistant_background__)
        stop = threading.Event()
        registry.start_background(stop)
        try:
            deadline = time.monotonic() + 10
            while len(runs) < 12 and time.monotonic() < deadline:
                time.sleep(0.05)
            unplugged.clear()  # plugged back in: the next restart runs well
            time.sleep(1.5)
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
            infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
            assert len(runs) >= 12
            assert [r.getMessage() for r in errors] == [
                "background task sensor failed (OSError: the sensor is unplugged); restarting it with backoff, "
                "up to every 0.3 s"
            ]
            assert errors[0].exc_info is not None  # the traceback says where
            assert infos == [f"background task sensor is running again, after {len(runs) - 1} failures"]
        finally:
            stop.set()


def test_a_skill_that_cannot_be_described_is_skipped_not_fatal(tmp_path: Path) -> None:
    settings = Settings()
    settings.mqtt.devices = [*DEVICES, {"type": "light", "topic": "zigbee2mqtt/nameless"}]  # no name
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=tmp_path))

    @skill
    def noop() -> str:
        """Do nothing."""
        return "done"

    registry.add_function(noop, "test")
    registry.load_folder(BUILTIN_SKILLS)
    assert "noop" in registry.skills and "current_time" in registry.skills
    assert any("switch_device cannot be described: KeyError: 'name'" in p for p in registry.problems)


def test_built_in_skills_load_wherever_the_config_lives(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "config.yaml"
    config.parent.mkdir()
    config.write_text("mqtt:\n  devices:\n    - {name: lamp, type: light, topic: zigbee2mqtt/lamp}\n")
    listed = assistant("skills", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    names = [line.split(":")[0] for line in listed.stdout.splitlines() if not line.startswith(" ")]
    for name in ("current_time", "set_timer", "add_item", "switch_device", "what_can_you_do"):
        assert name in names
    said = "  say (en): (what's|what is) on [my|the] shopping list | read [me] [my|the] shopping list | what do I"
    assert said in listed.stdout  # (template, slots) pairs
    assert "  answer its question (en): [the|my] {label} [one|timer] | " in listed.stdout


def test_config_check_does_not_print_the_mqtt_password(tmp_path: Path, installed_models: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  username: me\n  password: hunter2\n")
    checked = assistant("config", "check", "--config", str(config), env=installed_models)
    assert checked.returncode == 0, checked.stderr
    assert "hunter2" not in checked.stdout and "password: (set, not shown)" in checked.stdout


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


PING = '''
from assistant import skill

@skill
def ping() -> str:
    """Answer pong."""
    return "pong"
'''


def test_a_module_that_exits_or_hangs_at_import_is_skipped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry_module, "IMPORT_SECONDS", 0.5)
    exits = write(tmp_path, "exits.py", "import sys\n\nsys.exit('no sensor here')\n")
    hangs = write(tmp_path, "hangs.py", "import time\n\ntime.sleep(3600)  # a device that never answers\n")
    write(tmp_path, "ping.py", PING)
    registry = Registry()
    start = time.monotonic()
    registry.load_folder(tmp_path)
    assert time.monotonic() - start < 5
    assert list(registry.skills) == ["ping"]
    assert registry.problems == [
        f"{exits}:3: cannot be imported: SystemExit: no sensor here; skipped",
        f"{hangs}:3: still importing after 0.5 s (does it wait for a device or the network? do that when the "
        "skill runs, not at import); skipped",
    ]


def test_a_module_that_hangs_at_import_is_not_imported_again_while_it_hangs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry_module, "IMPORT_SECONDS", 0.3)
    answered = tmp_path / "answered"
    folder = tmp_path / "skills"
    folder.mkdir()
    waits = write(
        folder, "waits.py", f"import os, time\n\nwhile not os.path.exists({str(answered)!r}):\n    time.sleep(0.05)\n"
    )

    def stuck() -> int:
        return sum(t.name == "import-waits" and t.is_alive() for t in threading.enumerate())

    try:
        for _ in range(5):  # five reloads while the device it waits for is away
            registry = Registry()
            registry.load_folder(folder)
            assert len(registry.problems) == 1 and registry.problems[0].startswith(f"{waits}:4: still importing")
        assert stuck() == 1
    finally:
        answered.touch()
    deadline = time.monotonic() + 5
    while stuck() and time.monotonic() < deadline:
        time.sleep(0.05)
    registry = Registry()
    registry.load_folder(folder)  # the device answers now: imported afresh
    assert registry.problems == [] and stuck() == 0


def test_results_that_cannot_be_spoken_or_sent_are_errors_of_the_call(tmp_path: Path, caplog) -> None:
    path = write(
        tmp_path,
        "odd.py",
        '''
        from assistant import skill

        @skill
        def page() -> str:
            """Read a web page out."""
            return "<p>weather</p>" * 100_000

        @skill
        def raw() -> bytes:
            """Return bytes."""
            return b"sunny"

        @skill
        def lazy() -> list:
            """Return a generator."""
            return (word for word in ["sunny"])

        @skill
        def deep() -> list:
            """Return data nested too deep for JSON."""
            data = []
            for _ in range(100_000):
                data = [data]
            return data

        @skill(timeout=5)
        def interrupted() -> str:
            """Raise KeyboardInterrupt."""
            raise KeyboardInterrupt

        @skill
        def quiet() -> str:
            """Raise an error without a message."""
            raise ValueError()

        @skill
        def forgot() -> str:
            """Start the coffee machine, and say nothing of it by mistake."""
            reply = "Coffee is brewing."
    ''',
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    assert registry.call("page", {}).error == "page returned more text than I can read out"
    assert f"{path}:4: skill page returned 1400000 characters of text" in caplog.text
    for name in ("raw", "lazy", "deep"):
        assert registry.call(name, {}).error == f"{name} returned something other than text or JSON data"
    assert f"{path}:9: skill raw returned bytes, which is neither text nor JSON data" in caplog.text
    assert "return a str to speak, or dicts, lists, strings and numbers for the model" in caplog.text
    start = time.monotonic()
    assert registry.call("interrupted", {}).error == "interrupted failed: KeyboardInterrupt"
    assert time.monotonic() - start < 2  # an answer, not a wait for the timeout
    assert registry.call("quiet", {}).error == "quiet failed: ValueError"
    assert f'File "{path}", line 35, in quiet' in caplog.text  # the traceback shows where
    # Not silence, which the person would take for not being heard, and the author for nothing at all.
    assert registry.call("forgot", {}).error == "forgot gave no answer"
    assert f"{path}:37: skill forgot returned None (does it end without a return?)" in caplog.text
    assert registry.call("ping", {}).error == "there is no skill called ping"  # and the registry still answers


def test_choices_that_wait_or_exit_skip_only_their_skill(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(registry_module, "IMPORT_SECONDS", 0.3)
    answered = tmp_path / "answered"
    path = write(
        tmp_path,
        "rooms.py",
        f'''
        import os
        import sys
        import time
        from typing import Annotated

        from assistant import Choices, skill

        def from_server(settings) -> list[str]:
            while not os.path.exists({str(answered)!r}):  # the home server does not answer
                time.sleep(0.05)
            return ["kitchen"]

        @skill
        def clean(room: Annotated[str, Choices(from_server)]) -> str:
            """Clean a room."""
            return "cleaning"

        @skill
        def mop(room: Annotated[str, Choices(lambda settings: sys.exit("no rooms"))]) -> str:
            """Mop a room."""
            return "mopping"
    ''',
    )
    write(tmp_path, "ping.py", PING)
    try:
        start = time.monotonic()
        registry = Registry(settings=Settings())
        registry.load_folder(tmp_path)  # neither waits for the server nor ends with the exit
        assert time.monotonic() - start < 3
    finally:
        answered.touch()
    assert list(registry.skills) == ["ping"]
    waits = "does a Choices function wait for a device or the network?"
    assert sorted(registry.problems) == [
        f"{path}:14: skill clean is still being described after 0.3 s ({waits}); skipped",
        f"{path}:19: mop cannot be described: SystemExit: no rooms; skipped",
    ]


def test_megabytes_of_data_end_the_call_before_the_turn_or_a_client_gets_them(tmp_path: Path, caplog) -> None:
    # A web page's JSON, or a sensor's whole history: tokenized for the model, 10 MB took half a
    # minute and left the daemon 1.6 GB larger, and the client that asked was cut off.
    path = write(
        tmp_path,
        "hoard.py",
        '''
        from assistant import skill

        @skill
        def page() -> dict:
            """Fetch a web page."""
            return {"html": "<p>weather</p>" * 700_000}

        @skill
        def history() -> list:
            """Every reading of the sensor."""
            return list(range(1_000_000))

        @skill
        def forecast() -> dict:
            """Tomorrow's forecast."""
            return {"sky": "晴" * 9_000}
    ''',
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    start = time.monotonic()
    for name in ("page", "history"):
        assert registry.call(name, {}).error == f"{name} returned more data than I can read"
    assert time.monotonic() - start < 5
    assert f"{path}:4: skill page returned 9800012 characters of data as JSON, more than the 10000" in caplog.text
    assert "return only what the answer needs" in caplog.text
    assert registry.call("forecast", {}).data == {"sky": "晴" * 9_000}  # characters, not bytes or escapes


def test_a_skills_own_classes_in_a_result_or_an_error_cannot_break_the_call(tmp_path: Path, caplog) -> None:
    # Their methods are the skill's code, run outside its thread and its guard when the result is
    # checked, logged, spoken or sent: a method that raised there escaped the call.
    write(
        tmp_path,
        "odd.py",
        '''
        from assistant import skill

        class Unspeakable(Exception):
            def __str__(self):
                raise RuntimeError("no words")

        class Text(str):
            def __len__(self):
                raise RuntimeError("no length")

            def strip(self):
                raise RuntimeError("no strip")

        class Sealed(dict):
            def items(self):
                raise RuntimeError("sealed")

        class Record(dict):
            pass

        @skill
        def fails() -> str:
            """Fail with an exception that cannot be put in words."""
            raise Unspeakable()

        @skill
        def says() -> str:
            """Say hello."""
            return Text("hello")

        @skill
        def measures() -> dict:
            """Measure the temperature."""
            return Sealed(celsius=21.5)

        @skill
        def records() -> dict:
            """Give a record."""
            return Record(room="kitchen", tags=("warm", "dry"))
    ''',
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    assert registry.call("fails", {}).error == "fails failed: Unspeakable"
    said = registry.call("says", {}).text
    assert type(said) is str and said.strip() == "hello"
    assert registry.call("measures", {}).error == "measures returned something other than text or JSON data"
    record = registry.call("records", {}).data
    assert type(record) is dict and record == {"room": "kitchen", "tags": ["warm", "dry"]}  # as the model gets it


def test_an_exit_or_a_coroutine_in_a_skill_is_said_in_words(tmp_path: Path, caplog) -> None:
    write(
        tmp_path,
        "odd.py",
        '''
        import asyncio
        import sys

        from assistant import skill

        @skill
        def leave() -> str:
            """Stop here."""
            sys.exit(0)

        @skill
        def later() -> str:
            """Wait a moment (a plain def that returns a coroutine, as a decorator made for async does)."""
            return asyncio.sleep(0)
    ''',
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    assert registry.call("leave", {}).error == "leave failed: it called sys.exit()"  # not "leave failed: 0"
    gc.collect()  # what earlier tests left unclosed (an event loop, a socket) warns now, not in the block below
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert registry.call("later", {}).error == "later returned something other than text or JSON data"
        gc.collect()
    # The coroutine is closed by the call: no "never awaited" warning later, pointing at another file.
    assert [str(w.message) for w in warned] == []
    assert "skill later returned coroutine, which is neither text nor JSON data" in caplog.text


def test_skills_the_loader_would_miss_or_misread_are_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "weather.py",
        '''
        import threading

        from assistant import SkillContext, background, skill

        class Weather:
            @skill
            def today(self, city: str) -> str:
                """Tell today's weather."""
                return "sunny"

            @staticmethod
            @skill
            def tomorrow(city: str) -> str:
                """Tell tomorrow's weather."""
                return "rain"

        @skill
        def louder() -> str:
            """Turn the volume up."""
            return "louder"

        volume_up = louder  # the same skill under a second name

        @background
        async def refresh(context: SkillContext, stop: threading.Event) -> None:
            """Fetch the forecast now and then."""
    ''',
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    assert list(registry.skills) == ["louder"] and registry.background == []
    assert registry.problems == [
        f"{path}:7: skill today is a method of class Weather: move it out of the class (skills are module functions); "
        "skipped",
        f"{path}:12: skill tomorrow is a method of class Weather: move it out of the class (skills are module "
        "functions); skipped",
        f"{path}:25: background task refresh is async: write it as a plain def (it runs in a thread of its own, "
        "so it may wait); skipped",
    ]


def test_a_schema_no_arguments_satisfy_skips_only_its_skill(tmp_path: Path, qwen2_tokenizer: Path) -> None:
    """The constraint compiles every tool into one grammar: one impossible schema would fail them all."""
    write(
        tmp_path,
        "impossible.py",
        '''
        from typing import Annotated

        from assistant import Choices, Range, skill

        @skill
        def between(n: Annotated[int, Range(1.2, 1.8)]) -> str:
            """Take a whole number between 1.2 and 1.8."""
            return "never"

        @skill
        def by_number(device: Annotated[str, Choices(lambda s: [1, 2])]) -> str:
            """Take a device by a number."""
            return "never"
    ''',
    )
    settings = Settings()
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(tmp_path)
    assert not {"between", "by_number"} & set(registry.skills) and "current_time" in registry.skills
    assert len(registry.problems) == 2
    assert all("no arguments can satisfy its schema" in p for p in registry.problems)
    tokenizer = Tokenizer.from_file(str(qwen2_tokenizer / "tokenizer.json"))
    constraint = ToolCallConstraint(tokenizer, 151936, [tokenizer.token_to_id("<|im_end|>")], registry.tools())
    assert constraint.grammar


def test_a_reload_reads_an_edit_of_the_same_size_within_the_same_second(tmp_path: Path, monkeypatch) -> None:
    """A cached .pyc counts as current while size and modification second match."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as a service runs, caching bytecode
    words = write(tmp_path, "_words.py", "GREETING = 'hello'\n")
    greet = write(
        tmp_path,
        "greet.py",
        '''
        from assistant import skill

        from ._words import GREETING

        @skill
        def greet() -> str:
            """Say hello."""
            return GREETING + " pong"
    ''',
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    assert registry.call("greet", {}).text == "hello pong"
    for path, old, new in ((words, "hello", "howdy"), (greet, "pong", "ping")):
        stat = path.stat()
        path.write_text(path.read_text().replace(old, new))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reloaded = Registry()
    reloaded.load_folder(tmp_path)
    assert reloaded.call("greet", {}).text == "howdy ping"


def test_a_background_task_that_exits_is_restarted(tmp_path: Path) -> None:
    runs: list[float] = []

    @background
    def clock(context: SkillContext, stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            sys.exit("the clock gave up")
        stop.wait()

    run_background(clock, tmp_path, runs, wanted=2, seconds=5)
    assert len(runs) == 2 and 0.9 < runs[1] - runs[0] < 1.8


def test_a_damaged_database_is_named_with_its_fix_and_nothing_else_is_lost(tmp_path: Path, caplog) -> None:
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    registry.call("add_item", {"text": "milk", "list": "shopping"})
    damaged = tmp_path / "timers.sqlite3"
    damaged.write_bytes(b"not a database, whatever wrote it " * 200)
    with caplog.at_level("ERROR"):
        result = registry.call("set_timer", {"minutes": 5})
    assert result.error == f"set_timer failed: {damaged} is damaged; move it aside and a new one is started"
    # One line in the log, not a traceback: the words already say what to do.
    assert [r.exc_info for r in caplog.records if "set_timer" in r.getMessage()] == [None]
    assert registry.call("read_items", {"list": "shopping"}).text == "On your shopping list: milk."
    assert damaged.read_bytes().startswith(b"not a database")  # left for whoever wants to rescue it
    damaged.rename(tmp_path / "timers.sqlite3.damaged")
    assert registry.call("set_timer", {"minutes": 5}).text == "Timer set for 5 minutes."


def test_a_call_runs_no_longer_than_its_caller_can_wait() -> None:
    ran = []

    @skill(timeout=5)
    def slow_door() -> str:
        """Open the door, slowly."""
        ran.append(True)
        time.sleep(1)
        return "The door is open."

    registry = Registry()
    registry.add_function(slow_door, "test")
    start = time.monotonic()
    assert registry.call("slow_door", {}, within=0.2).error == "slow_door took too long"
    assert time.monotonic() - start < 0.5  # the time left, not the skill's 5 s
    registry.left_running["slow_door"].join()
    ran.clear()
    assert registry.call("slow_door", {}, within=0).error == "slow_door took too long"
    assert not ran  # no time left: not started, so no command is left half done
    assert registry.call("slow_door", {}, within=30).text == "The door is open."  # its own timeout is less


WORKER = '''
import threading

from assistant import skill


def _work():
    raise RuntimeError("the sensor is unplugged")


@skill
def start_worker() -> str:
    """Start a worker thread."""
    threading.Thread(target=_work, name="sensor-worker").start()
    return "Started."
'''


def test_a_thread_a_skill_started_that_raises_is_one_log_record_with_its_traceback(tmp_path: Path, caplog) -> None:
    """Python's default prints it on stderr in pieces, which a log line written meanwhile cut in two."""
    (tmp_path / "worker.py").write_text(WORKER)
    registry = registry_module.load_registry(Settings(), [tmp_path], SkillContext(state_dir=tmp_path / "state"))
    assert registry.call("start_worker", {}).text == "Started."
    deadline = time.monotonic() + 30
    while not [r for r in caplog.records if "sensor-worker" in r.getMessage()] and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = [r for r in caplog.records if "sensor-worker" in r.getMessage()]
    assert record.levelname == "ERROR" and record.name == "assistant.skills.registry"
    assert record.getMessage() == "thread sensor-worker ended with an error: RuntimeError: the sensor is unplugged"
    assert f'File "{tmp_path / "worker.py"}", line 8, in _work' in record.exc_text


OWN_FOLDER = '''
from assistant import SkillContext, skill


@skill
def weather(context: SkillContext) -> str:
    """Tell the weather."""
    context.state_dir = context.state_dir / "weather"  # a folder of its own, it thought
    with context.database("forecast") as db:
        db.execute("CREATE TABLE IF NOT EXISTS seen (day TEXT)")
    return "Sunny."

'''


def test_a_skill_that_changes_what_it_was_given_changes_nothing_for_the_others(tmp_path: Path, caplog) -> None:
    """The context is every skill's: a skill that moved its state_dir moved the timers' alarms out of sight."""
    (tmp_path / "weather.py").write_text(OWN_FOLDER)
    state = tmp_path / "state"
    registry = registry_module.load_registry(Settings(), [tmp_path], SkillContext(state_dir=state))
    assert registry.call("weather", {}).text == "Sunny."
    assert registry.context.state_dir == state and (state / "weather" / "forecast.sqlite3").exists()
    assert registry.call("set_timer", {"minutes": 5}).text == "Timer set for 5 minutes."
    assert (state / "timers.sqlite3").exists() and not (state / "weather" / "timers.sqlite3").exists()
    assert registry.call("weather", {}).text == "Sunny."  # the same folder again, not weather/weather
    assert not (state / "weather" / "weather").exists()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    changed_back = (
        f"{tmp_path / 'weather.py'}:5: skill weather set context.state_dir, which every skill shares: "
        "changed back (keep what is the skill's own in its module)"
    )
    assert warned == [changed_back, changed_back]


def test_a_skill_file_that_is_no_python_text_is_named_without_a_made_up_place(tmp_path: Path, monkeypatch) -> None:
    """Bytes saved under a .py name, and a FIFO, said "None:None:" and ":0" where a line would be."""
    monkeypatch.setattr(registry_module, "IMPORT_SECONDS", 0.5)
    (tmp_path / "binary.py").write_bytes(b"\x00\x01\x02 not python")
    os.mkfifo(tmp_path / "pipe.py")
    (tmp_path / "tea.py").write_text(
        "from assistant import skill\n\n\n@skill\ndef make_tea() -> str:\n"
        "    '''Start the kettle.'''\n    return 'On.'\n"
    )
    registry = Registry()
    registry.load_folder(tmp_path)
    assert registry.problems == [
        f"{tmp_path / 'binary.py'}: syntax error: source code string cannot contain null bytes; skipped",
        f"{tmp_path / 'pipe.py'}: still importing after 0.5 s ({registry_module.WAITS_AT_IMPORT}); skipped",
    ]
    assert registry.call("make_tea", {}).text == "On."
    with open(tmp_path / "pipe.py", "w"):  # lets the import that waits on it go
        pass


def test_many_modules_that_hang_at_import_wait_together_only_so_long(tmp_path: Path, monkeypatch) -> None:
    """30 s each, ten files that wait for one server that is down held the start past systemd's
    TimeoutStartSec (300 s), and the assistant was killed and started again, and again."""
    monkeypatch.setattr(registry_module, "IMPORT_SECONDS", 0.5)
    monkeypatch.setattr(registry_module, "LOAD_WAIT_SECONDS", 0.9)
    monkeypatch.setattr(registry_module, "SHORT_WAIT_SECONDS", 0.1)
    hanging = [
        write(tmp_path, f"sensor{i}.py", "import time\n\ntime.sleep(3600)  # the server is down\n") for i in range(4)
    ]
    write(tmp_path, "ping.py", PING)
    registry = Registry()
    registry.load_folder(tmp_path)
    assert list(registry.skills) == ["ping"]
    waits = f"({registry_module.WAITS_AT_IMPORT}); skipped"
    spent = "the load had spent its 0.9 s of waiting on others"
    assert registry.problems == [
        f"{hanging[0]}:3: still importing after 0.5 s {waits}",
        f"{hanging[1]}:3: still importing after 0.5 s {waits}",
        f"{hanging[2]}:3: still importing after 0.1 s ({spent}) {waits}",
        f"{hanging[3]}:3: still importing after 0.1 s ({spent}) {waits}",
    ]
    assert Registry().waited == 0  # a reload waits afresh
