"""The skill SDK and registry: schemas from hints, loading that survives broken modules, safe calls."""

from __future__ import annotations

import datetime
import gc
import math
import os
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Annotated, Literal

import pytest

from assistant import Choices, Range, SkillContext, skill
from assistant.config import Settings
from assistant.skills.intents import IntentMatcher
from assistant.skills.prompt import example_exchange, prompt_messages, shared_values, tool_line
from assistant.skills.registry import BUILTIN_SKILLS, Registry, load_registry
from assistant.skills.sdk import SkillError, build_skill

REPO = Path(__file__).resolve().parent.parent


def spec_of(func):
    return func.__assistant_skill__


def test_schema_for_every_supported_hint() -> None:
    @skill(confirm=True, sentences={"en": ["set the {room} light"]})
    def light(
        room: Annotated[str, Choices(lambda s: [d["name"] for d in s.mqtt.devices])],
        on: bool,
        brightness: Annotated[int, Range(0, 100)] = 100,
        mode: Literal["warm", "cold"] = "warm",
        level: Literal[1, 2, 3] | None = None,
        fade: Annotated[float, Range(minimum=0.0)] = 0.5,
        tags: list[str] | None = None,
        label: str = "",
        note: Annotated[str, Range(1, 500)] = "none",
        context: SkillContext | None = None,
    ) -> str:
        """Switch a light.

        Args:
            room: which light
            on: true to switch it on
        """
        return "ok"

    settings = Settings()
    settings.mqtt.devices = [{"name": "kitchen"}, {"name": "hall"}]
    built = build_skill(spec_of(light), settings)
    assert built.description == "Switch a light."
    assert built.confirm and built.sentences == {"en": ["set the {room} light"]}
    assert built.parameters == {
        "type": "object",
        "properties": {
            "room": {"type": "string", "enum": ["kitchen", "hall"], "description": "which light"},
            "on": {"type": "boolean", "description": "true to switch it on"},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100, "default": 100},
            "mode": {"type": "string", "enum": ["warm", "cold"], "default": "warm"},
            "level": {"type": "integer", "enum": [1, 2, 3]},
            "fade": {"type": "number", "minimum": 0.0, "default": 0.5},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 100}},
            "label": {"type": "string", "maxLength": 100, "default": ""},
            "note": {"type": "string", "minLength": 1, "maxLength": 500, "default": "none"},  # its length
        },
        "required": ["room", "on"],
        "additionalProperties": False,
    }


def test_context_parameter_is_injected_not_described() -> None:
    @skill
    def whoami(context: SkillContext) -> str:
        """Say where state is kept."""
        return str(context.state_dir)

    registry = Registry(context=SkillContext(state_dir=Path("/var/lib/x")))
    registry.add_function(whoami, "test")
    assert registry.skills["whoami"].parameters["properties"] == {}
    assert registry.call("whoami", {}).text == "/var/lib/x"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def f(x: dict) -> str:\n    '''Doc.'''", "parameter 'x': type 'dict' is not supported"),
        ("def f(x) -> str:\n    '''Doc.'''", "parameter 'x' has no type hint"),
        ("def f(x: int) -> str:\n    pass", "needs a docstring"),
        ("def f(*x: int) -> str:\n    '''Doc.'''", "*args and **kwargs"),
        ("def f(x: Annotated[bool, Range(1, 2)]) -> str:\n    '''Doc.'''", "Range applies to int, float or str"),
        ("def f(x: Annotated[str, Range(0.5, 2)]) -> str:\n    '''Doc.'''", "the Range of a str counts characters"),
        ("def f(x: Annotated[str, Range(-1, 2)]) -> str:\n    '''Doc.'''", "the Range of a str counts characters"),
        ("def f(x: int | str) -> str:\n    '''Doc.'''", "only Optional[X] unions"),
        ("def f(x: int, /) -> str:\n    '''Doc.'''", "parameter 'x' is positional-only"),
        ("def f(x: float = math.nan) -> str:\n    '''Doc.'''", "parameter 'x': the default must be a finite number"),
        ("def f(x: Annotated[float, Range(0, math.inf)]) -> str:\n    '''Doc.'''", "Range bounds must be finite"),
        ("def f(x: Annotated[int, Range(5, 1)]) -> str:\n    '''Doc.'''", "Range(5, 1): the minimum is above"),
        ("def f(x: str = datetime.date(2026, 1, 1)) -> str:\n    '''Doc.'''", "datetime.date(2026, 1, 1) is not JSON"),
        ("async def f(city: str) -> str:\n    '''Doc.'''", "skill f is async: write it as a plain def"),
        ("def f() -> str:\n    '''Doc.'''\n    yield 'one'", "skill f yields: return its text or data instead"),
    ],
)
def test_unsupported_signatures_are_explained(source: str, reason: str) -> None:
    scope = {"Annotated": Annotated, "Range": Range, "math": math, "datetime": datetime}
    exec(source, scope)  # noqa: S102 (test input)
    with pytest.raises(SkillError, match=re.escape(reason)):
        build_skill(spec_of(skill(scope["f"])))


def test_a_skill_named_in_chinese_is_told_how_to_name_it() -> None:
    def 天气(城市: str) -> str:
        """查询天气。"""
        return 城市 + "晴"

    with pytest.raises(
        SkillError,
        match=re.escape(
            "skill name '天气' must be ASCII letters, digits and underscores: name it with @skill(name=\"...\")"
        ),
    ):
        build_skill(spec_of(skill(天气)))
    registry = Registry()
    registry.add_function(skill(name="weather")(天气), "test")  # the fix the message names
    assert registry.call("weather", {"城市": "北京"}).text == "北京晴"


@pytest.mark.parametrize("timeout", ["5", 0, -1, math.inf, math.nan, 301, 3600])
def test_a_timeout_that_a_thread_cannot_wait_for_is_explained(timeout: object) -> None:
    """Otherwise the call raises from the thread's join() (TypeError, OverflowError) or never waits,
    or, past the 300 s a turn may run, the daemon counts as hung and is restarted during the call."""

    def nap() -> str:
        """Nap."""
        return "done"

    wanted = "skill nap: timeout must be a number of seconds above 0 and at most 300 (a turn running longer counts "
    with pytest.raises(SkillError, match=re.escape(wanted + f"as hung), not {timeout!r}")):
        build_skill(spec_of(skill(timeout=timeout)(nap)))
    assert build_skill(spec_of(skill(timeout=300)(nap))).timeout == 300


@pytest.mark.parametrize(("option", "value"), [("confirm", "no"), ("confirm", 0), ("optional_tool", "false")])
def test_a_yes_or_no_option_given_as_anything_but_a_bool_is_explained(option: str, value: object) -> None:
    """confirm="no" asked for confirmation all the same, and optional_tool="false" made the skill optional."""

    def unlock() -> str:
        """Unlock the door."""
        return "Unlocked."

    wanted = f"skill unlock: {option} is True or False, not {value!r}"
    with pytest.raises(SkillError, match=re.escape(wanted)):
        build_skill(spec_of(skill(**{option: value})(unlock)))
    assert getattr(build_skill(spec_of(skill(**{option: True})(unlock))), option) is True


def test_a_range_given_as_the_hint_itself_is_told_the_annotated_form() -> None:
    def wait(minutes: Range(1, 60)) -> str:
        """Wait a while."""
        return "Waited."

    wanted = "skill wait: parameter 'minutes': Range(1, 60) goes inside Annotated: Annotated[int, Range(1, 60)]"
    with pytest.raises(SkillError, match=re.escape(wanted)):
        build_skill(spec_of(skill(wait)))


def test_a_misspelt_name_under_args_is_warned_of(caplog) -> None:
    """The model saw no description of `glasses`, and a number out of its range was "the number"."""

    def drink(glasses: Annotated[int, Range(1, 20)], note: str = "") -> str:
        """Count glasses of water.

        Args:
            glases: how many glasses were drunk
            note: anything to remember, for
                example: after a run
        """
        return "Counted."

    with caplog.at_level("WARNING"):
        built = build_skill(spec_of(skill(drink)), source="water.py:3")
    assert "description" not in built.parameters["properties"]["glasses"]
    assert [r.getMessage() for r in caplog.records] == [
        "water.py:3: skill drink: its docstring describes 'glases' under Args:, which is no parameter "
        "(did you mean glasses? the model is told nothing of that one)"
    ]


def test_a_default_is_told_to_the_model_as_a_copy() -> None:
    @skill
    def tag(tags: list[str] = []) -> str:  # noqa: B006 (the mistake under test)
        """Tag something."""
        tags.append("seen")
        return " ".join(tags)

    registry = Registry()
    registry.add_function(tag, "test")
    assert registry.call("tag", {}).text == "seen"
    assert registry.call("tag", {}).text == "seen"  # not Python's shared default: each call's own, as the model is told
    assert registry.call("tag", {"tags": ["new"]}).text == "new seen"
    assert registry.skills["tag"].parameters["properties"]["tags"]["default"] == []


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_broken_modules_are_reported_and_the_rest_load(tmp_path: Path) -> None:
    write(
        tmp_path,
        "good.py",
        '''
        from assistant import skill

        @skill
        def ping() -> str:
            """Answer pong."""
            return "pong"
    ''',
    )
    write(tmp_path, "syntax.py", "from assistant import skill\n\ndef broken(:\n    pass\n")
    write(tmp_path, "explodes.py", "import os\n\nraise RuntimeError('no hardware')\n")
    write(
        tmp_path,
        "badsig.py",
        '''
        from assistant import skill

        @skill
        def bad(x: set) -> str:
            """Bad."""
    ''',
    )
    write(tmp_path, "_private.py", "raise RuntimeError('never imported')\n")
    registry = Registry()
    registry.load_folder(tmp_path)
    assert list(registry.skills) == ["ping"]
    problems = "\n".join(registry.problems)
    assert f"{tmp_path / 'syntax.py'}:3: syntax error" in problems
    assert f"{tmp_path / 'explodes.py'}:3: cannot be imported: RuntimeError: no hardware" in problems
    assert f"{tmp_path / 'badsig.py'}:4: skill bad: parameter 'x': type 'set' is not supported" in problems
    assert len(registry.problems) == 3


def test_a_bad_sentence_template_skips_only_its_skill(tmp_path: Path) -> None:
    """hassil parses templates only when it first matches: without a check at load time, one bad
    template would stop every skill's sentences (and the daemon's start) instead of its own skill."""
    write(
        tmp_path,
        "weather.py",
        """
        from assistant import skill

        @skill(sentences={"en": ["what's the weather [like today"]})
        def weather() -> str:
            \"\"\"Tell the weather.\"\"\"
            return "Sunny."

        @skill(sentences={"en": ["weather in {city}"]})
        def weather_in() -> str:
            \"\"\"Tell the weather somewhere.\"\"\"
            return "Rainy."

        @skill(sentences={"en": ["is it <when> warm"]})
        def warm() -> str:
            \"\"\"Tell whether it is warm.\"\"\"
            return "Yes."

        @skill(sentences={"en": ["how cold is it on {day:weekday}"]}, lists={"days": {"monday": 0}})
        def cold(weekday: int) -> str:
            \"\"\"Tell how cold it is.\"\"\"
            return "Cold."

        @skill(sentences={"en": ["ping at {w:hour}"]}, lists={"w": {"seven (pm": 19}})
        def ping(hour: int) -> str:
            \"\"\"Ping.\"\"\"
            return "Pong."

        @skill(sentences={"en": ["pong at {w:hour}"]}, lists={"w": ["seven", "eight"]})
        def pong(hour: int) -> str:
            \"\"\"Pong.\"\"\"
            return "Ping."

        @skill(sentences={"en": ["boop at {hour}"]}, lists={"hour": {"noon": 12}})
        def boop(hour: int) -> str:
            \"\"\"Boop.\"\"\"
            return "Boop."

        @skill(sentences={"en": ["beep at {hour:hour}"]})
        def beep(hour: int) -> str:
            \"\"\"Beep.\"\"\"
            return "Beep."

        @skill(answers={"en": ["the [one"]})
        def boing() -> str:
            \"\"\"Boing.\"\"\"
            return "Which one?"

        @skill(answers={"en": "the {name} one"})
        def boings(name: str = "") -> str:
            \"\"\"Boings.\"\"\"
            return "Which one?"

        @skill(answers={"en": [("both", True)]})
        def zing(every: bool = False) -> str:
            \"\"\"Zing.\"\"\"
            return "Which one?"

        @skill(answers={"en": [("both", {"every": "yes"})]})
        def zong(every: bool = False) -> str:
            \"\"\"Zong.\"\"\"
            return "Which one?"
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(tmp_path)
    refused = {"weather", "weather_in", "warm", "cold", "ping", "pong", "boop", "beep"} | {
        "boing",
        "boings",
        "zing",
        "zong",
    }
    assert not refused & set(registry.skills)
    problems = "\n".join(registry.problems)
    assert 'skill weather: sentence "what\'s the weather [like today" (en) cannot be parsed' in problems
    assert "skill weather_in: sentence 'weather in {city}' (en): {city} is not a parameter of the skill" in problems
    assert "<when> rules are not available" in problems
    assert "skill cold: sentence 'how cold is it on {day:weekday}' (en): {day:...} is not one of the skill's lists" in (
        problems
    )
    assert "skill ping: list 'w': 'seven (pm' is not plain words" in problems
    assert "skill pong: list 'w': a list is a dict of the words said" in problems
    assert "skill boop: list 'hour': a list needs a name of letters, digits and _ that no parameter has" in problems
    assert "skill beep: sentence 'beep at {hour:hour}' (en): {hour:...} is not one of the skill's lists" in problems
    assert "skill boing: sentence 'the [one' (en) cannot be parsed" in problems  # answers are checked too
    assert "skill boings: answers (en) is a list of templates, not 'the {name} one'" in problems
    assert "skill zing: ('both', True) (en) is neither a template nor a (template, {slot: value}) pair" in problems
    assert "skill zong: sentence 'both' (en): every='yes' does not fit the parameter: 'yes' is not of type" in problems
    matcher = IntentMatcher(registry.skills)  # the other skills' sentences still answer
    assert matcher.match("what time is it").skill == "current_time"


def test_a_skill_hears_words_through_a_list_of_its_own(tmp_path: Path) -> None:
    write(
        tmp_path,
        "mood.py",
        """
        from typing import Annotated

        from assistant import Range, skill

        @skill(sentences={"en": ["play something {mood:level}"]}, lists={"mood": {"calm": 1, "wild": 10}})
        def play(level: Annotated[int, Range(1, 10)]) -> str:
            \"\"\"Play music of a level of energy.\"\"\"
            return f"Level {level}."
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(tmp_path)
    assert not registry.problems
    match = IntentMatcher(registry.skills).match("play something wild")
    assert (match.skill, match.arguments) == ("play", {"level": 10})
    assert IntentMatcher(registry.skills).match("play something loud") is None


def test_a_list_parameter_hears_one_value_in_a_sentence(tmp_path: Path) -> None:
    write(
        tmp_path,
        "packing.py",
        """
        from typing import Annotated

        from assistant import Range, skill

        @skill(sentences={"en": ["pack [the] {things}", "pack {sizes} sized boxes"]})
        def pack(things: list[str] | None = None, sizes: list[Annotated[int, Range(1, 5)]] | None = None) -> str:
            \"\"\"Pack things or boxes.

            Args:
                sizes: box size
            \"\"\"
            return f"Packing {things or sizes}."
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(tmp_path)
    matcher = IntentMatcher(registry.skills)
    match = matcher.match("pack the umbrella")
    assert (match.skill, match.arguments) == ("pack", {"things": ["umbrella"]})
    assert registry.call(match.skill, match.arguments).text == "Packing ['umbrella']."
    assert matcher.match("pack 3 sized boxes").arguments == {"sizes": [3]}
    assert matcher.match("pack 9 sized boxes").reply == "Sorry, box size can be from 1 to 5."


def test_a_skill_hears_the_answer_to_its_question(tmp_path: Path) -> None:
    write(
        tmp_path,
        "music.py",
        """
        from assistant import skill

        @skill(sentences={"en": ["play [some] music"]}, answers={"en": ["[the] {playlist} [one|playlist]"]})
        def music(playlist: str = "", shuffle: bool = False) -> str:
            \"\"\"Play a playlist.\"\"\"
            return f"Playing {playlist}, shuffled." if playlist else "Which playlist: jazz or rock?"
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(tmp_path)
    assert not registry.problems
    matcher = IntentMatcher(registry.skills)
    call = {"name": "music", "arguments": {"shuffle": True}}
    question = registry.call("music", call["arguments"]).text
    answer = matcher.match_answer("the jazz one", question, call)
    assert (answer.skill, answer.arguments) == ("music", {"playlist": "jazz", "shuffle": True})  # the call's, updated
    assert matcher.match_answer("ROCK!", question, call).arguments["playlist"] == "ROCK"  # as said
    assert matcher.match_answer("the blues one", question, call) is None  # not offered: a new request, for the model
    assert matcher.match_answer("the playlist", question, call) is None  # the answers' own words name nothing
    assert matcher.match_answer("which", question, call) is None  # the question's words, not one of its choices
    assert matcher.match_answer("jazz", question, {"name": "current_time", "arguments": {}}) is None
    assert matcher.match("jazz") is None  # only as an answer

    timers = {"name": "control_timer", "arguments": {"action": "cancel"}}
    which = "You have 2 timers: the 5 minute tea timer, the 10 minute pasta timer. Which one?"
    for length in ("10", "the 10 one", "10。"):  # said, but as a length: not the name of a timer
        assert matcher.match_answer(length, which, timers) is None
    assert matcher.match_answer("the 10 minute one", which, timers).arguments == {
        "action": "cancel",
        "start_minutes": 10,
    }

    alarms = {"name": "cancel_alarms", "arguments": {}}
    asked_in_chinese = "你有2个闹钟：早上7点、晚上9点30分。要取消哪一个？"
    assert matcher.match_answer("7", asked_in_chinese, alarms).arguments == {"hour": 7}
    # Digits are in no language: the reply is in the question's.
    assert matcher.match_answer("25", asked_in_chinese, alarms).reply == "抱歉，这个数要在0到23之间。"
    assert matcher.match_answer("25", "You have 2 alarms: at 7:00 and 21:30. Which one?", alarms).reply.startswith(
        "Sorry, "
    )


def skill_with_a_helper(folder: Path, file_name: str, greeting: str) -> None:
    """A skill `greet` in `file_name` that says what its private helper `_words.py` holds."""
    write(folder, "_words.py", f"GREETING = {greeting!r}\n")
    write(
        folder,
        file_name,
        """
        from assistant import skill

        from ._words import GREETING

        @skill
        def greet() -> str:
            \"\"\"Say hello.\"\"\"
            return GREETING
    """,
    )


def test_skill_folders_have_private_helpers_reloaded_with_them(tmp_path: Path) -> None:
    skill_with_a_helper(tmp_path, "greet.py", "hello")
    other = tmp_path / "other"
    other.mkdir()
    write(other, "_words.py", "GREETING = 'not mine'\n")
    registry = Registry()
    registry.load_folder(other)
    registry.load_folder(tmp_path)
    assert registry.problems == []
    assert registry.call("greet", {}).text == "hello"
    write(tmp_path, "_words.py", "GREETING = 'hi again'\n")  # edited, then the skills are reloaded
    reloaded = Registry()
    reloaded.load_folder(tmp_path)
    assert reloaded.call("greet", {}).text == "hi again"


def test_a_skill_in_a_helper_is_reported_not_lost(tmp_path: Path) -> None:
    write(
        tmp_path,
        "_shared.py",
        """
        from assistant import skill

        @skill
        def shared() -> str:
            \"\"\"Say hello.\"\"\"
            return "hello"
    """,
    )
    write(tmp_path, "greet.py", "from ._shared import shared\n")
    write(tmp_path, "wave.py", "from ._shared import shared as wave\n")
    registry = Registry()
    registry.load_folder(tmp_path)
    assert "shared" not in registry.skills
    assert registry.problems == [
        f"{tmp_path / '_shared.py'}:4: skill shared is in a helper (a file named _*.py), whose skills are not "
        "loaded: move it to a file whose name does not start with _; skipped"
    ]  # once, though two modules import it


def test_calls_get_the_declared_types_and_only_json_data() -> None:
    import datetime

    @skill
    def repeat(times: int, counts: list[int]) -> str:
        """Repeat."""
        return f"{type(times).__name__} {times} {[type(c).__name__ for c in counts]}"

    @skill
    def when() -> dict:
        """Return something JSON cannot carry."""
        return {"at": datetime.datetime(2026, 1, 1)}

    @skill
    def leave() -> str:
        """Exit."""
        raise SystemExit(3)

    registry = Registry()
    for func in (repeat, when, leave):
        registry.add_function(func, "test")
    assert registry.call("repeat", {"times": 7.0, "counts": [1.0, 2]}).text == "int 7 ['int', 'int']"
    assert registry.call("when", {}).error == "when returned something other than text or JSON data"
    assert registry.call("leave", {}).error == "leave failed: it called sys.exit()"  # not its status, "3"


def test_calls_validate_time_out_and_survive_errors() -> None:
    @skill(timeout=0.3)
    def slow(seconds: Annotated[float, Range(0, 10)]) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "done"

    @skill
    def fails(x: int) -> str:
        """Fail."""
        raise ValueError(f"bad value {x}")

    @skill
    def data(n: int) -> dict:
        """Return data for the model."""
        return {"square": n * n}

    registry = Registry()
    for func in (slow, fails, data):
        registry.add_function(func, "test")
    assert registry.call("slow", {"seconds": 0.0}).text == "done"
    start = time.monotonic()
    assert registry.call("slow", {"seconds": 3.0}).error == "slow took longer than 0.3 seconds"
    assert time.monotonic() - start < 1.5
    assert registry.call("fails", {"x": 2}).error == "fails failed: bad value 2"
    assert registry.call("slow", {"seconds": 99}).text == "Sorry, the number can be from 0 to 10."  # not run
    assert "invalid arguments for slow" in registry.call("slow", {"seconds": "long"}).error
    assert "invalid arguments" in registry.call("data", {"n": 1, "extra": 2}).error
    assert registry.call("missing", {}).error == "there is no skill called missing"
    assert registry.call("data", {"n": 4}).data == {"square": 16}  # and the registry still works


def test_built_in_skills_load_from_the_shipped_folder(tmp_path: Path) -> None:
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    assert {"current_time", "current_date"} <= set(registry.skills)
    assert not registry.problems
    assert registry.call("current_time", {}).text.startswith("It is ")


def test_third_party_package_is_found_through_its_entry_point(tmp_path: Path) -> None:
    package = tmp_path / "src"
    (package / "weather_skill").mkdir(parents=True)
    (package / "weather_skill" / "__init__.py").write_text(
        textwrap.dedent('''
        from assistant import skill

        @skill
        def weather() -> str:
            """Tell the weather."""
            return "sunny"
    ''')
    )
    (package / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "weather-skill"
        version = "1.0"

        [project.entry-points."assistant.skills"]
        weather = "weather_skill"
    """)
    )
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
         str(package)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}"}
    result = subprocess.run(
        [sys.executable, "-m", "assistant", "skills", "call", "weather"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sunny"


def test_local_intents_in_english_and_chinese(tmp_path: Path) -> None:
    from assistant.skills.intents import IntentMatcher

    @skill(sentences={"en": ["set a timer for {minutes} minute[s]"], "zh": ["设置一个{minutes}分钟的计时器"]})
    def set_timer(minutes: Annotated[int, Range(1, 720)]) -> str:
        """Start a timer."""
        return f"timer {minutes}"

    @skill(
        sentences={
            "en": [("turn on the {room} light", {"on": True}), "turn the {room} light {on}"],
            "zh": [("打开{room}的灯", {"on": True}), ("关闭{room}的灯", {"on": False})],
        }
    )
    def light(room: Literal["kitchen", "living room", "厨房"], on: bool) -> str:
        """Switch a light."""
        return "ok"

    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.add_function(set_timer, "test")
    registry.add_function(light, "test")
    registry.load_folder(BUILTIN_SKILLS)  # the built-in set_timer is skipped: the name is taken
    assert any("skill set_timer is already defined in test" in p for p in registry.problems)
    matcher = IntentMatcher(registry.skills)

    def match(text: str) -> tuple | None:
        found = matcher.match(text)
        return found and (found.skill, found.arguments, found.language)

    assert match("set a timer for 10 minutes") == ("set_timer", {"minutes": 10}, "en")
    assert match("设置一个5分钟的计时器") == ("set_timer", {"minutes": 5}, "zh")
    assert match("turn on the living room light") == ("light", {"room": "living room", "on": True}, "en")
    assert match("turn the kitchen light off") == ("light", {"room": "kitchen", "on": False}, "en")
    assert match("关闭厨房的灯") == ("light", {"room": "厨房", "on": False}, "zh")
    assert match("what time is it") == ("current_time", {}, "en")
    assert match("现在几点了") == ("current_time", {}, "zh")
    assert match("tell me a joke") is None
    assert match("set a timer for 9999 minutes") is None  # outside the schema's range: the LLM decides
    assert registry.call(*match("set a timer for 10 minutes")[:2]).text == "timer 10"


def test_the_readme_example_works_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme[readme.index("\n## Skills") :], re.S).group(1)
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "water.py").write_text(example)
    registry = Registry(context=SkillContext(state_dir=tmp_path / "state"))
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(tmp_path / "skills")
    assert registry.problems == []
    matcher = IntentMatcher(registry.skills)
    for said, total in (("I drank 2 glasses of water", 2), ("我喝了三杯水", 5)):
        found = matcher.match(said)
        assert registry.call(found.skill, found.arguments).text == f"That makes {total} today."


def test_a_second_skill_of_the_same_name_is_told_how_to_fix_it(tmp_path: Path) -> None:
    for name in ("mine.py", "theirs.py"):
        write(
            tmp_path,
            name,
            '''
            from assistant import skill

            @skill
            def set_timer(minutes: int) -> str:
                """Start a timer."""
                return "set"
        ''',
        )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    registry.load_folder(tmp_path)
    builtin = f"{BUILTIN_SKILLS / 'timers.py'}:"
    rename = 'rename this one with @skill(name="...")'
    mine, theirs = registry.problems
    assert mine.startswith(f"{tmp_path / 'mine.py'}:4: skill set_timer is already defined in {builtin}")
    assert mine.endswith(f"({rename} or turn the built-in one off with skills.disabled: [set_timer]); skipped")
    assert theirs.startswith(f"{tmp_path / 'theirs.py'}:4: skill set_timer is already defined in {builtin}")
    assert theirs.endswith(f"({rename} or turn the built-in one off with skills.disabled: [set_timer]); skipped")


def test_a_built_in_skill_turned_off_is_replaced_by_one_of_its_name(tmp_path: Path) -> None:
    """What the message above advises: the built-in one in skills.disabled, and the skill file's takes its place."""
    (tmp_path / "skills").mkdir()
    write(
        tmp_path / "skills",
        "clock.py",
        '''
        from assistant import skill

        @skill(sentences={"en": ["what time is it"]})
        def current_time() -> str:
            """Tell the time, my way."""
            return "Time for tea."
    ''',
    )
    settings = Settings()
    settings.skills.disabled = ["current_time"]
    registry = load_registry(settings, [tmp_path / "skills"], SkillContext(settings=settings, state_dir=tmp_path))
    assert registry.problems == []
    assert registry.skills["current_time"].source == f"{tmp_path / 'skills' / 'clock.py'}:4"
    assert registry.call("current_time", {}).text == "Time for tea."
    assert IntentMatcher(registry.skills).match("what time is it").skill == "current_time"


def test_a_folder_named_twice_is_loaded_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        "ping.py",
        '''
        from assistant import skill

        @skill
        def ping() -> str:
            """Answer pong."""
            return "pong"
    ''',
    )
    registry = load_registry(None, [tmp_path, tmp_path / ".." / tmp_path.name], SkillContext(state_dir=tmp_path))
    assert registry.problems == []
    assert registry.call("ping", {}).text == "pong"


def test_the_prompt_shows_values_each_tool_accepts() -> None:
    @skill(sentences={"en": ["snooze for {minutes} minutes"]})
    def snooze(minutes: Annotated[int, Range(10)], list: Literal["notes", "shopping"] = "notes") -> str:
        """Snooze the alarm."""
        return "ok"

    @skill
    def read(list: Literal["notes", "shopping"]) -> str:
        """Read a list."""
        return "ok"

    @skill
    def rename(list: str) -> str:
        """Rename a list."""
        return "ok"

    registry = Registry()
    for func in (snooze, read, rename):
        registry.add_function(func, "test")
    tools = registry.tools()
    request, call = example_exchange(tools, {"snooze": ["snooze for {minutes} minutes"]})
    assert (request, call["arguments"]) == ("snooze for 10 minutes", {"minutes": 10})  # 5 is under its minimum
    assert registry.call("snooze", call["arguments"]).text == "ok"
    shared = shared_values(tools)
    assert shared == {"list": ["notes", "shopping"]}
    assert tool_line(tools[1], shared) == "read(list): Read a list."  # its values are listed once, for all
    assert tool_line(tools[2], shared) == "rename(list: str): Rename a list."  # any text, not those values


def test_choices_of_their_own_under_a_shared_name_stay_in_their_tools_line(tmp_path: Path) -> None:
    @skill
    def tick(list: Literal["todo", "done"], item: str) -> str:
        """Tick an item off a list."""
        return "ok"

    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)  # add_item, read_items, remove_item: list: notes|shopping
    registry.add_function(tick, "test")
    messages = prompt_messages("", registry.tools())
    lines = messages[0]["content"].splitlines()
    # Not "list: notes|shopping|todo|done" for all four: add_item cannot take "todo", nor tick "notes".
    assert "list: notes|shopping" in lines and not any("todo" in line for line in lines if line.startswith("list:"))
    assert "tick(list: todo|done, item: str): Tick an item off a list." in lines
    assert "read_items(list?): Read the shopping list or the notes aloud." in lines


def test_a_file_with_a_dot_in_its_name_imports_its_helpers(tmp_path: Path) -> None:
    skill_with_a_helper(tmp_path, "greet.v2.py", "sunny")
    registry = Registry()
    registry.load_folder(tmp_path)
    assert registry.problems == []
    assert registry.call("greet", {}).text == "sunny"


def test_a_name_in_skills_disabled_that_no_skill_has_is_warned(tmp_path: Path, caplog) -> None:
    settings = Settings()
    settings.skills.disabled = ["set_timr", "current_time"]
    with caplog.at_level("WARNING"):
        registry = load_registry(settings, [], SkillContext(settings=settings, state_dir=tmp_path))
    assert "current_time" not in registry.skills and "set_timer" in registry.skills
    warned = [r.getMessage() for r in caplog.records if "skills.disabled" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("skills.disabled names set_timr, which no skill has (the skills: ")
    assert "set_timer" in warned[0] and "current_time" in warned[0]


def test_a_number_out_of_a_skills_range_is_said_as_the_range(tmp_path: Path) -> None:
    """The grammar does not bound numbers: the model may call for a timer of 10000 hours."""
    settings = Settings()
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    result = registry.call("set_timer", {"hours": 10000})
    assert (result.text, result.error) == ("Sorry, hours to count down can be from 0 to 24.", None)
    registry.context.language = "zh"
    assert registry.call("set_timer", {"minutes": -5}).text == "抱歉，这个数要在0到1440之间。"
    assert registry.call("list_timers", {}).text == "没有设置计时器或闹钟。"  # none was set
    assert registry.call("set_timer", {"hours": "two"}).error.startswith("invalid arguments for set_timer")


def test_loading_the_skills_again_keeps_no_copy_of_the_modules_loaded_before() -> None:
    """A reload loads every skill file afresh; the copy before must go (the smart home skills' Choices
    lived on in typing's caches, and each held its whole module)."""

    def copies() -> int:
        gc.collect()
        return sum(type(o) is types.FunctionType and o.__name__ == "switch_device" for o in gc.get_objects())

    load_registry(Settings(), [])
    before = copies()
    for _ in range(10):
        load_registry(Settings(), [])
    assert copies() == before == 1


def test_sentences_under_a_key_that_is_not_a_language_code_are_refused(tmp_path: Path) -> None:
    """Under "cn" a Chinese sentence was never tried, and under "english" numbers were heard only as digits."""
    write(
        tmp_path,
        "bakery.py",
        """
        from typing import Annotated

        from assistant import Range, skill

        @skill(sentences={"cn": ["烤{count}个蛋糕"]})
        def cakes(count: Annotated[int, Range(1, 10)]) -> str:
            \"\"\"Bake cakes.\"\"\"
            return f"{count} cakes."

        @skill(sentences={"english": ["bake {count} pies"]})
        def pies(count: Annotated[int, Range(1, 10)]) -> str:
            \"\"\"Bake pies.\"\"\"
            return f"{count} pies."

        @skill(sentences={"zh_CN": ["烤{count}个面包"]})
        def bread(count: Annotated[int, Range(1, 10)]) -> str:
            \"\"\"Bake bread.\"\"\"
            return f"{count} loaves."

        @skill(answers={"EN": ["the {kind} one"]})
        def buns(kind: str = "") -> str:
            \"\"\"Bake buns.\"\"\"
            return "Which kind: plain or raisin?"

        @skill(sentences={"zh-CN": ["烤{count}个饼干"], "en": ["bake {count} cookies"]})
        def cookies(count: Annotated[int, Range(1, 10)]) -> str:
            \"\"\"Bake cookies.\"\"\"
            return f"{count} cookies."
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(tmp_path)
    bakery = tmp_path / "bakery.py"
    use = 'not a language code (use one such as "en" or "zh"); skipped'
    assert registry.problems == [
        f"{bakery}:6: skill cakes: sentences under 'cn': {use}",
        f"{bakery}:11: skill pies: sentences under 'english': {use}",
        f"{bakery}:16: skill bread: sentences under 'zh_CN': {use}",
        f"{bakery}:21: skill buns: answers under 'EN': {use}",
    ]
    matcher = IntentMatcher(registry.skills)
    assert matcher.match("烤三个饼干").arguments == {"count": 3}
    assert matcher.match("bake three cookies").arguments == {"count": 3}


def test_an_intent_the_sentence_library_does_not_have_is_refused(tmp_path: Path) -> None:
    """A misspelt intent was never matched, without a word."""
    write(
        tmp_path,
        "radio.py",
        """
        from assistant import skill

        @skill(intents={"HassTurnOnn": {"on": True}})
        def radio_on(on: bool) -> str:
            \"\"\"Switch the radio.\"\"\"
            return "Radio on."

        @skill(intents={"HassTurnOn": "on"})
        def radio_off(on: bool) -> str:
            \"\"\"Switch the radio off.\"\"\"
            return "Radio off."

        @skill(intents={"HassGetCurrentDate": {}})
        def radio_date() -> str:
            \"\"\"Say the date as the radio does.\"\"\"
            return "Radio date."
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(tmp_path)
    radio = tmp_path / "radio.py"
    assert registry.problems == [
        f"{radio}:4: skill radio_on: intent 'HassTurnOnn' is not in Home Assistant's sentence library "
        "(did you mean HassTurnOn?); skipped",
        f"{radio}:9: skill radio_off: intent 'HassTurnOn' takes a dict of the skill's arguments ({{}} for none), "
        "not 'on'; skipped",
    ]
    assert IntentMatcher(registry.skills).match("what's the date").skill == "radio_date"


def test_a_sentence_without_a_parameter_the_skill_needs_is_refused(tmp_path: Path) -> None:
    """ "play some radio" matched, failed the schema for want of a station and went to the model, every time."""
    write(
        tmp_path,
        "radio.py",
        """
        from typing import Literal

        from assistant import skill

        @skill(sentences={"en": ["play {station} radio", "play some radio"]})
        def play_radio(station: Literal["jazz", "news"]) -> str:
            \"\"\"Play the radio.\"\"\"
            return f"Playing {station}."

        @skill(
            sentences={"en": ["play {station} louder", ("play the news loud", {"station": "news"})]},
            answers={"en": ["the loud one"]},
        )
        def play_loud(station: Literal["jazz", "news"], loud: bool = True) -> str:
            \"\"\"Play the radio loud.\"\"\"
            return f"Playing {station} loud."
    """,
    )
    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.load_folder(tmp_path)
    assert registry.problems == [
        f"{tmp_path / 'radio.py'}:6: skill play_radio: sentence 'play some radio' (en) never runs the skill: it "
        "has no {station}, which the skill needs (give station a default to take the sentence without it); skipped"
    ]
    assert IntentMatcher(registry.skills).match("play the news loud").arguments == {"station": "news"}
