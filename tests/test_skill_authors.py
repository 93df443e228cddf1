"""What a skill author's mistakes, and a skill file another user could change, do to the assistant."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from assistant import SkillContext, skill
from assistant.skills.intents import IntentMatcher
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from tests.other_user import as_nobody
from tests.test_daemon import Daemon, Notifications, connect, reload, send, spoken, turn, until, write_config

COFFEE = '''
from assistant import skill


@skill(sentences={"en": ["make coffee"]})
def make_coffee() -> str:
    """Start the coffee machine."""
    return "Coffee is VERSION."
'''

TEA = '''
from assistant import skill


@skill(sentences={"en": ["make tea"]})
def make_tea() -> str:
    """Start the kettle."""
    return "Tea is on."
'''


def load(folder: Path) -> Registry:
    registry = Registry()
    registry.load_folder(folder)
    return registry


def test_an_edit_that_breaks_a_skill_keeps_its_last_good_version_in_this_process(tmp_path: Path) -> None:
    coffee = tmp_path / "coffee.py"
    coffee.write_text(COFFEE.replace("VERSION", "brewing"))
    assert load(tmp_path).call("make_coffee", {}).text == "Coffee is brewing."
    edits = {
        ":6: syntax error: expected ':'": COFFEE.replace("-> str:", "-> str"),
        "cannot be imported: NameError: name 'requests' is not defined": COFFEE + "requests.get('x')\n",
        "parameter 'strength' has no type hint": COFFEE.replace("make_coffee()", "make_coffee(strength)"),
    }
    for reason, text in edits.items():
        coffee.write_text(text)
        registry = load(tmp_path)
        assert registry.call("make_coffee", {}).text == "Coffee is brewing."
        assert len(registry.problems) == 1 and reason in registry.problems[0], registry.problems
        assert registry.problems[0].startswith(f"{coffee}:")
        assert registry.problems[0].endswith("; keeping the version loaded before")
    coffee.write_text(COFFEE.replace("VERSION", "ready"))
    assert load(tmp_path).call("make_coffee", {}).text == "Coffee is ready."
    coffee.unlink()
    assert "make_coffee" not in load(tmp_path).skills
    coffee.write_text(COFFEE.replace("-> str:", "-> str"))  # never good here: nothing to keep
    registry = load(tmp_path)
    assert "make_coffee" not in registry.skills and registry.problems[0].endswith("; skipped")


def problems(folder: Path) -> str:
    registry = Registry()
    registry.load_folder(folder)
    return "\n".join(registry.problems)


def skill_names(control: Path) -> list[str]:
    with connect(control) as client:
        send(client, {"type": "status"})
        return until(client, "status")[-1]["skills"]


def test_a_broken_edit_keeps_the_working_skill_until_it_is_fixed(tmp_path: Path, tiny_int8: Path) -> None:
    config = write_config(tmp_path, tiny_int8)
    folder = tmp_path / "extra_skills"
    coffee, tea = folder / "coffee.py", folder / "tea.py"
    coffee.write_text(COFFEE.replace("VERSION", "brewing"))
    tea.write_text(TEA)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify)
    try:
        assert spoken(turn(control, "make coffee")) == "Coffee is brewing."
        coffee.write_text(COFFEE.replace("VERSION", "brewing").replace("-> str:", "-> str"))  # a syntax error
        reload(daemon)
        assert f"{coffee}:6: syntax error" in daemon.log_text()
        assert "skills loaded, 1 kept at the version before" in daemon.log_text()
        assert spoken(turn(control, "make coffee")) == "Coffee is brewing."
        coffee.write_text(COFFEE.replace("VERSION", "ready"))
        tea.unlink()
        reload(daemon)
        assert spoken(turn(control, "make coffee")) == "Coffee is ready."
        assert "make_tea" not in skill_names(control) and "make_coffee" in skill_names(control)
    finally:
        assert daemon.stop() == 0
        notify.close()


BEANS = """
from assistant import skill

from ._beans import KIND


@skill
def beans() -> str:
    '''Say which beans are in the grinder.'''
    return KIND
"""


def test_skill_code_every_user_may_change_is_not_run(tmp_path: Path) -> None:
    """Skills run as the service's user: code that anyone may change would let anyone run code as it."""
    shared, private = tmp_path / "shared", tmp_path / "private"
    shared.mkdir()
    private.mkdir()
    (shared / "tea.py").write_text(TEA)
    shared.chmod(0o777)  # "chmod 777" to get past a permission error
    coffee, helper, beans = private / "coffee.py", private / "_beans.py", private / "beans.py"
    coffee.write_text(COFFEE.replace("VERSION", "brewing"))
    coffee.chmod(0o666)
    helper.write_text("KIND = 'arabica'\n")
    helper.chmod(0o646)
    beans.write_text(BEANS)
    registry = Registry()
    registry.load_folder(shared)
    registry.load_folder(private)
    assert registry.skills == {}
    fix = "every user may change it, and so run code as this user: chmod o-w"
    assert registry.problems == [
        f"{shared}: {fix} {shared}; skipped",
        f"{beans}:4: {helper}: {fix} {helper}; skipped",
        f"{coffee}: {fix} {coffee}; skipped",
    ]
    # Anyone may rename a folder in a folder they may write, and put theirs in its place; in a
    # sticky one (/tmp) only its owner may, and there it is uid 65534's.
    common, sticky = tmp_path / "common", tmp_path / "sticky"
    (common / "skills").mkdir(parents=True)
    (sticky / "skills").mkdir(parents=True)
    common.chmod(0o777)
    sticky.chmod(0o1777)
    os.chown(sticky / "skills", 65534, 65534)
    (tmp_path / "linked").symlink_to(common / "skills")
    for folder in (common / "skills", sticky / "skills", tmp_path / "linked"):
        registry.load_folder(folder)
    assert registry.problems[3:] == [
        f"{common / 'skills'}: every user may replace it through {common}: chmod o-w {common}; skipped",
        f"{sticky / 'skills'}: {sticky / 'skills'} belongs to uid 65534, in {sticky} where every user may put "
        "files: use a folder of your own; skipped",
        f"{tmp_path / 'linked'}: every user may replace it through {common}: chmod o-w {common}; skipped",
    ]
    for path in (shared, coffee, helper):
        path.chmod(0o755)
    registry = Registry()
    registry.load_folder(shared)
    registry.load_folder(private)
    assert sorted(registry.skills) == ["beans", "make_coffee", "make_tea"] and registry.problems == []


def test_a_skill_file_the_service_cannot_read_is_named_with_the_reason() -> None:
    with tempfile.TemporaryDirectory() as made:  # in /tmp: reachable by the other user, unlike tmp_path
        folder = Path(made)
        folder.chmod(0o755)
        (folder / "coffee.py").write_text(COFFEE)
        (folder / "coffee.py").chmod(0o600)  # root's, as an editor run with sudo leaves it
        (folder / "gone.py").symlink_to(folder / "moved.py")
        message = as_nobody(lambda: problems(folder))
    assert message.splitlines() == [
        f"{folder / 'coffee.py'}: cannot be imported: PermissionError: [Errno 13] Permission denied: "
        f"'{folder / 'coffee.py'}'; skipped",
        f"{folder / 'gone.py'}: cannot be imported: FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{folder / 'gone.py'}'; skipped",
    ]


def test_a_skill_still_running_past_its_timeout_is_not_run_again_meanwhile(tmp_path: Path) -> None:
    """A garage door that did not answer in time must not be sent a second command on top of the first."""
    (tmp_path / "garage.py").write_text(
        textwrap.dedent('''
        import threading
        from assistant import skill

        OPENED = []
        ANSWER = threading.Event()


        @skill(timeout=0.2)
        def open_garage() -> str:
            """Open the garage door."""
            OPENED.append(1)
            ANSWER.wait()
            return "The garage is open."
        ''')
    )
    registry = load(tmp_path)
    module = sys.modules[registry.skills["open_garage"].func.__module__]
    threads = threading.active_count()
    assert registry.call("open_garage", {}).error == "open_garage took longer than 0.2 seconds"
    for _ in range(20):  # the person asks again, and again
        assert registry.call("open_garage", {}).error == "open_garage is still busy with the last request"
    assert module.OPENED == [1] and threading.active_count() == threads + 1
    module.ANSWER.set()  # the door answers at last: the first call ends
    time.sleep(0.1)
    assert registry.call("open_garage", {}).text == "The garage is open."
    assert module.OPENED == [1, 1]


def test_an_error_in_a_helper_is_named_in_the_helper(tmp_path: Path) -> None:
    news, helper = tmp_path / "news.py", tmp_path / "_api.py"
    news.write_text("from assistant import skill\n\nfrom ._api import fetch\n\n\n@skill\ndef news() -> str:\n")
    news.write_text(news.read_text() + "    '''Read the headlines.'''\n    return fetch()\n")
    helper.write_text("import json\n\n\ndef fetch(:\n    return json.dumps('quiet day')\n")
    assert load(tmp_path).problems == [f"{news}:3: {helper}:4: syntax error: invalid syntax; skipped"]
    helper.write_text("import os\n\n\nKEY = os.environ['NEWS_API_KEY']\n")
    assert load(tmp_path).problems == [
        f"{news}:3: cannot be imported: KeyError: 'NEWS_API_KEY' (at {helper}:4); skipped"
    ]


def test_a_helper_imported_as_a_script_would_is_told_to_be_imported_relatively(tmp_path: Path) -> None:
    (tmp_path / "_api.py").write_text("def fetch() -> str:\n    return 'sunny'\n")
    news = tmp_path / "news.py"
    for line in ("from _api import fetch", "import _api.fetch"):
        news.write_text(f"from assistant import skill\n{line}\n")
        problem = f"{news}:2: cannot be imported: ModuleNotFoundError: No module named '_api'"
        assert load(tmp_path).problems == [
            f"{problem} (_api.py beside it is imported relatively: from ._api import ...); skipped"
        ]
    news.write_text("from assistant import skill\nimport requests_that_are_not_installed\n")  # not a helper: no advice
    assert load(tmp_path).problems[0].endswith("No module named 'requests_that_are_not_installed'; skipped")


def test_options_given_as_a_list_are_told_the_dict_they_take(tmp_path: Path) -> None:
    weather = tmp_path / "weather.py"
    for option, value in (("sentences", '["what is the weather"]'), ("lists", '["sunny", "rainy"]')):
        weather.write_text(f"from assistant import skill\n\n\n@skill({option}={value})\ndef weather() -> str:\n")
        weather.write_text(weather.read_text() + "    '''Tell the weather.'''\n    return 'sunny'\n")
        example = {"sentences": '{"en": ["what is the weather"]}', "lists": '{"pm": {"7": 19}}'}[option]
        # Not "ValueError: dictionary update sequence element #0 has length 20; 2 is required".
        wanted = f"{weather}:4: @skill({option}=...) takes a dict, as in {option}={example}, not a list; skipped"
        assert load(tmp_path).problems == [wanted]


def test_what_can_you_do_says_a_skills_first_sentence_as_written(tmp_path: Path) -> None:
    mine = tmp_path / "skills"
    mine.mkdir()
    (mine / "weather.py").write_text(
        "from assistant import skill\n\n\n@skill\ndef weather() -> str:\n"
        '    """Tell the weather forecast. Uses the met.no API, with the key in WEATHER_KEY;\n'
        '    results are kept for ten minutes."""\n    return "sunny"\n'
        "\n\n@skill\ndef television() -> str:\n"
        '    """Turn on the TV in the living room!"""\n    return "on"\n'
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path / "state"))
    registry.context.skills = lambda: list(registry.skills.values())
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(mine)
    # Not "... and tell the weather forecast. uses the met.no api, with the key in weather_key; results ...".
    said = registry.call("what_can_you_do", {}).text
    assert said.endswith("; set alarms; tell the weather forecast and turn on the TV in the living room."), said


def test_skills_in_a_folder_of_the_skills_folder_are_not_lost_without_a_word(tmp_path: Path, caplog) -> None:
    cloned = tmp_path / "weather-skill"  # `git clone` in the skills folder
    for folder in (cloned, tmp_path / "lib", tmp_path / "_vendor", tmp_path / "sounds"):
        folder.mkdir()
    (cloned / "weather.py").write_text(TEA.replace("make_tea", "forecast"))
    (tmp_path / "lib" / "__init__.py").write_text("KIND = 'arabica'\n")  # a helper package, imported
    (tmp_path / "beans.py").write_text(BEANS.replace("._beans", ".lib"))
    (tmp_path / "_vendor" / "six.py").write_text("")
    (tmp_path / "sounds" / "ding.wav").write_bytes(b"RIFF")
    registry = load(tmp_path)
    assert list(registry.skills) == ["beans"] and registry.problems == []
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{cloned} holds Python files, but skills are loaded only from the .py files of {tmp_path}: "
        f"move them there, or add {cloned} to skills.paths"
    ]


def test_decorator_mistakes_are_explained(tmp_path: Path, caplog) -> None:
    (tmp_path / "named.py").write_text(
        "from assistant import skill\n\n\n@skill('weather')\ndef forecast() -> str:\n    '''Tell the weather.'''\n"
    )
    (tmp_path / "spelt.py").write_text(
        "from assistant import skill\n\n\n@skill(sentence={'en': ['make toast']})\ndef toast() -> str:\n"
        '    """Make toast."""\n'
    )
    (tmp_path / "wrapped.py").write_text(
        textwrap.dedent('''
        from assistant import skill


        def retry(func):
            def again(*args, **kwargs):
                return func(*args, **kwargs)

            return again


        @skill
        @retry
        def lamp(on: bool) -> str:
            """Switch the lamp."""
            return "Done."
        ''')
    )
    (tmp_path / "units.py").write_text(
        textwrap.dedent('''
        from typing import Annotated, Literal

        from assistant import Range, skill


        @skill
        def temperature(unit: Literal["c", "f"] = "celsius") -> str:
            """Tell the temperature."""
            return unit


        @skill
        def wait(minutes: Annotated[int, Range(1, 60)] = 0) -> str:
            """Wait a while."""
            return "Waited."
        ''')
    )
    registry = load(tmp_path)
    assert sorted(registry.skills) == ["temperature", "wait"]  # "" or 0 may be a "not given" of its own
    named, units, wrapped = tmp_path / "named.py", tmp_path / "units.py", tmp_path / "wrapped.py"
    assert registry.problems == [
        f"{named}:4: @skill takes its options by name, as in @skill(name='weather'), not 'weather'; skipped",
        f"{tmp_path / 'spelt.py'}:4: @skill has no option 'sentence' (did you mean sentences?); its options are "
        "name, confirm, timeout, sentences, intents, optional_tool, lists, answers; skipped",
        f"{wrapped}:6: skill again needs a docstring: it is the description the model sees (again is a "
        "function made inside another, as a decorator's: give that decorator @functools.wraps(func)); skipped",
    ]
    gets = "yet the skill gets it when the model leaves the parameter out"
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{units}:7: skill temperature: parameter 'unit': the default 'celsius' is not a value the model can "
        f"give ('celsius' is not one of ['c', 'f']), {gets}",
        f"{units}:13: skill wait: parameter 'minutes': the default 0 is not a value the model can give (0 is "
        f"less than the minimum of 1), {gets}",
    ]


def test_a_reload_reads_an_installed_package_changed_since(tmp_path: Path, monkeypatch) -> None:
    """`pip install -e` of a skill package, then an edit and `systemctl reload`."""
    source = tmp_path / "coffee_skill" / "__init__.py"
    source.parent.mkdir()
    info = tmp_path / "coffee_skill-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: coffee-skill\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[assistant.skills]\ncoffee = coffee_skill\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def loaded() -> Registry:
        registry = Registry()
        registry.load_entry_points()
        return registry

    source.write_text(COFFEE.replace("VERSION", "brewing"))
    assert loaded().call("make_coffee", {}).text == "Coffee is brewing."
    source.write_text(COFFEE.replace("VERSION", "ready"))
    assert loaded().call("make_coffee", {}).text == "Coffee is ready."
    source.write_text(COFFEE.replace("-> str:", "-> str"))  # and an edit that breaks it
    registry = loaded()
    assert registry.call("make_coffee", {}).text == "Coffee is ready."
    assert registry.problems[0].startswith("coffee_skill (package entry point 'coffee'): cannot be imported: ")
    assert registry.problems[0].endswith("; keeping the version loaded before")


POLL = """
import time

from assistant import background

LOOPS = []
ENDED = False


@background
def poll(context, stop):
    LOOPS.append(time.monotonic())
    while not ENDED:  # never looks at stop
        time.sleep(0.05)
"""


def test_a_background_task_that_ignores_its_stop_runs_once_across_reloads(tmp_path: Path, monkeypatch, caplog) -> None:
    from assistant.skills import registry as registry_module

    monkeypatch.setattr(registry_module, "STOP_WAIT_SECONDS", 0.5)
    (tmp_path / "poll.py").write_text(POLL)
    loops: list[float] = []
    modules = []
    stops = [threading.Event() for _ in range(3)]
    for stop in stops:  # start, then two reloads: each stops the tasks it started, then starts the new ones
        for earlier in stops[: stops.index(stop)]:
            earlier.set()
        registry = load(tmp_path)
        modules.append(sys.modules[registry.background[0].func.__module__])
        modules[-1].LOOPS = loops
        registry.start_background(stop)
        time.sleep(0.2)
    time.sleep(0.5)
    assert len(loops) == 1  # not three copies polling the sensor
    assert "background task poll has not stopped" in caplog.text and "stop.wait(" in caplog.text
    modules[0].ENDED = True  # it ends at last: the newest copy takes over
    time.sleep(0.3)
    assert len(loops) == 2
    stops[-1].set()
    modules[-1].ENDED = True


def test_a_skill_that_changes_its_arguments_changes_only_its_own_copy() -> None:
    """The call's arguments are also what the model said in its history and what clients were sent."""

    @skill
    def tidy(items: list[str], groups: list[list[int]]) -> str:
        """Tidy the lists up."""
        items.append("more")
        groups[0].append(99)
        return "Tidied."

    registry = Registry()
    registry.add_function(tidy, "test")
    arguments = {"items": ["milk"], "groups": [[1]]}
    assert registry.call("tidy", arguments).text == "Tidied."
    assert arguments == {"items": ["milk"], "groups": [[1]]}


CLOCK = '''
from typing import Annotated

from assistant import Range, skill


@skill(sentences={"en": ["what time is it [now]", "what time is it in {city}"], "zh": ["现在几点[了]"]})
def world_clock(city: str = "") -> str:
    """Tell the time in a city."""
    return "It is noon."


@skill(sentences={"en": ["set a timer for {minutes} minutes"]})
def egg_timer(minutes: Annotated[int, Range(1, 30)]) -> str:
    """Boil an egg."""
    return "Boiling."
'''


def test_a_sentence_another_skill_already_answers_is_named_in_a_warning(tmp_path: Path, caplog) -> None:
    """A copy of a built-in's sentence is answered by the built-in: the skill would never hear it."""
    (tmp_path / "clock.py").write_text(CLOCK)
    (tmp_path / "coffee.py").write_text(COFFEE.replace("VERSION", "brewing"))
    (tmp_path / "more_coffee.py").write_text(COFFEE.replace("make_coffee()", "brew_coffee()"))  # "make coffee" again
    registry = Registry(context=SkillContext(state_dir=tmp_path / "state"))
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(tmp_path)
    matcher = IntentMatcher(registry.skills)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    time_date, timers = BUILTIN_SKILLS / "time_date.py", BUILTIN_SKILLS / "timers.py"
    clock, brew = tmp_path / "clock.py", tmp_path / "more_coffee.py"
    line = {name: found.source for name, found in registry.skills.items()}
    assert warned == [
        f"{clock}:7: skill world_clock: its sentence 'what time is it [now]' (en) is heard as current_time "
        f"({line['current_time']}) instead: reword it, or turn current_time off with "
        "skills.disabled",
        f"{clock}:7: skill world_clock: its sentence '现在几点[了]' (zh) is heard as current_time "
        f"({line['current_time']}) instead: reword it, or turn current_time off with "
        "skills.disabled",
        f"{clock}:13: skill egg_timer: its sentence 'set a timer for {{minutes}} minutes' (en) is heard as "
        f"set_timer ({line['set_timer']}) instead: reword it, or turn set_timer off with "
        "skills.disabled",
        f"{brew}:5: skill brew_coffee: its sentence 'make coffee' (en) is heard as make_coffee "
        f"({line['make_coffee']}) instead: reword it, or turn make_coffee off with skills.disabled",
    ]
    assert str(time_date) in line["current_time"] and str(timers) in line["set_timer"]
    # Its own words still reach it.
    assert matcher.match("what time is it in Paris").skill == "world_clock"
    assert matcher.match("make coffee").skill == "make_coffee"


POLLER = """
from assistant import background


@background
def poll_sensor(stop):
    while not stop.wait(5):
        pass


@background
def poll_door(context, stop, seconds=5):
    while not stop.wait(seconds):
        pass
"""


def test_a_background_task_that_cannot_take_its_context_and_stop_is_named_at_load(tmp_path: Path) -> None:
    """It failed on every start instead, each a traceback through the registry, none naming its file."""
    (tmp_path / "poller.py").write_text(POLLER)
    registry = load(tmp_path)
    assert registry.problems == [
        f"{tmp_path / 'poller.py'}:5: background task poll_sensor takes (stop): it cannot be called as "
        "poll_sensor(context, stop); skipped"
    ]
    assert [spec.name for spec in registry.background] == ["poll_door"]
