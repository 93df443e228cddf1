"""The skill SDK: a decorated, type-hinted function becomes a tool the model can call.

    from typing import Annotated, Literal
    from assistant import Range, skill

    @skill(sentences={"en": ["set a timer for {minutes} minutes"]})
    def set_timer(minutes: Annotated[int, Range(1, 720)], label: str = "") -> str:
        \"\"\"Start a countdown timer.

        Args:
            minutes: how long the timer runs
            label: what the timer is for
        \"\"\"
        ...

The JSON Schema of the arguments comes from the hints (Literal → enum, bool, int/float with
bounds from Range, str, lists, defaults), the description from the docstring.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import inspect
import json
import logging
import math
import re
import shutil
import sqlite3
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from assistant.config import SKILL_TIMEOUT_LIMIT

SKILL_ATTRIBUTE = "__assistant_skill__"
BACKGROUND_ATTRIBUTE = "__assistant_background__"
MAX_STRING = 100  # characters of a free-text argument

log = logging.getLogger(__name__)


class SkillError(Exception):
    """A skill that cannot be registered, or a call that cannot be made."""


class StorageError(SkillError):
    """A skill's stored data could not be read or written; the message says why in words."""


class SkillUnavailable(SkillError):
    """A skill with nothing to act on in this configuration (no devices of its kind): not loaded, not an error."""


@dataclass(frozen=True)
class Range:
    """Bounds of a number, Annotated[int, Range(1, 120)], or of a text's length, Annotated[str, Range(1, 500)]."""

    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Choices:
    """Allowed strings known only from the configuration: Annotated[str, Choices(lambda s: [...])].

    The function gets the loaded Settings when the skills are loaded.
    """

    from_settings: Callable[[Any], list[str]]


def _nothing() -> None:
    return None


@dataclass
class SkillContext:
    """What a skill may ask for by declaring a parameter of this type (not shown to the model).

    The daemon fills these in; the defaults let a skill run from `assistant skills call`.
    """

    settings: Any = None
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local/state/assistant")
    say: Callable[[str], None] = print  # speak now, outside a turn (a timer ringing)
    stop: Callable[[], None] = _nothing  # stop what is being spoken
    last_reply: Callable[[], str | None] = _nothing
    skills: Callable[[], list[Any]] = list  # the loaded skills, for "what can you do"
    language: str = "en"  # of the request being answered: "zh" for one in Chinese, else "en"
    voice_language: str | None = None  # what the speaker's voice speaks; None without one
    stopped_at: float = 0.0  # when "stop" was last said (time.time()): what rings on stops then too
    # The asker's words in this turn and the one before, newest last; () outside a turn. The model
    # picks a name from a list even when the person named something else: this is what they said.
    heard: tuple[str, ...] = ()

    def localized(self, en: str, **others: str) -> str:
        """The reply in the request's language where one is given, else `en`:
        `context.localized("Done.", zh="好了。")`."""
        return others.get(self.language, en)

    def announced_in(self, language: str) -> str:
        """The language to `say` something in that a request in `language` asked for (a timer
        ringing): that one, unless the voice on the speaker cannot speak it."""
        return language if self.voice_language in (None, language) else self.voice_language

    @contextlib.contextmanager
    def database(self, name: str, schema: str = "") -> Iterator[sqlite3.Connection]:
        """One transaction on `<state_dir>/<name>.sqlite3` (WAL, synchronous=FULL), committed on exit.

        A committed write is on disk before the user hears it confirmed, so kill -9 loses nothing.
        `schema` (CREATE TABLE IF NOT EXISTS ...) is run first.
        """
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.state_dir / f"{name}.sqlite3", timeout=10)
            try:
                _to_wal(connection)
                connection.execute("PRAGMA synchronous=FULL")
                with connection:
                    if schema:
                        connection.executescript(schema)
                    yield connection
            finally:
                connection.close()
        except (sqlite3.Error, OSError) as e:
            raise StorageError(storage_problem(e, self.state_dir / f"{name}.sqlite3")) from e


def _to_wal(connection: sqlite3.Connection) -> None:
    """Put the database in WAL mode. Switching a new database needs it to itself, and SQLite answers
    "busy" at once, without waiting, to a connection that asks while another one switches it (two
    clients adding to a list that was never used before); it is switched by then, so asking again does."""
    for attempt in range(50):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if (getattr(e, "sqlite_errorcode", 0) or 0) & 0xFF != sqlite3.SQLITE_BUSY or attempt == 49:
                raise
            time.sleep(0.01)


FULL_BELOW = 256 * 1024  # free bytes under which a write error is taken for a full disk


def storage_problem(error: Exception, database: Path) -> str:
    """What went wrong with a database in the state folder, in words a person can act on."""
    folder = database.parent
    os_code = error.errno if isinstance(error, OSError) else None
    sqlite_code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF  # the primary code of an extended one
    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        free = None
    # SQLite reports a full disk as SQLITE_FULL, or in WAL mode as a plain disk I/O error.
    nearly_full = free is not None and free < FULL_BELOW
    if os_code in (errno.ENOSPC, errno.EDQUOT) or sqlite_code == sqlite3.SQLITE_FULL or nearly_full:
        return "the disk is full"
    read_only = os_code in (errno.EROFS, errno.EACCES, errno.EPERM)
    if read_only or sqlite_code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
        return f"{folder} cannot be written"
    if sqlite_code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return "the stored data is busy"
    if sqlite_code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        # Left as it is, for whoever wants to rescue it: the skill starts afresh once it is moved.
        return f"{database} is damaged; move it aside and a new one is started"
    return f"the stored data in {folder} could not be read or written ({error})"


@dataclass
class BackgroundSpec:
    name: str
    func: Callable


def background(func: Callable) -> Callable:
    """Mark `func(context, stop_event)` to run in its own thread while the assistant runs (a timer's clock)."""
    setattr(func, BACKGROUND_ATTRIBUTE, BackgroundSpec(func.__name__, func))
    return func


@dataclass
class SkillSpec:
    """Options given to @skill; the schema is built when the skill is loaded."""

    name: str
    func: Callable
    confirm: bool = False
    timeout: float | None = None
    sentences: dict[str, list] = field(default_factory=dict)  # language → templates or (template, slots)
    intents: dict[str, dict] = field(default_factory=dict)  # Home Assistant intent → arguments
    optional_tool: bool = False
    lists: dict[str, dict] = field(default_factory=dict)  # slot lists of its own: name → {words: value}
    answers: dict[str, list] = field(default_factory=dict)  # language → templates of answers to its questions


@dataclass
class Skill:
    name: str
    func: Callable
    description: str
    parameters: dict  # JSON Schema of the arguments object
    confirm: bool = False
    timeout: float | None = None
    sentences: dict[str, list] = field(default_factory=dict)  # language → templates or (template, slots)
    intents: dict[str, dict] = field(default_factory=dict)  # Home Assistant intent → arguments, "{slot}" a slot
    source: str = ""
    wants_context: str | None = None  # the parameter that receives the SkillContext
    optional_tool: bool = False  # left out of the model's tool list when kv_cache_len is tight
    lists: dict[str, dict] = field(default_factory=dict)  # slot lists of its own: name → {words: value}
    answers: dict[str, list] = field(default_factory=dict)  # language → templates of answers to its questions

    def tool(self) -> dict:
        """The tool signature as Qwen's prompt format lists it."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}  # fmt: skip


# What each @skill option that takes a dict looks like, for a mistake's message.
OPTION_EXAMPLES = {
    "sentences": '{"en": ["what is the weather"]}',
    "intents": '{"HassTurnOn": {"on": True}}',
    "lists": '{"pm": {"7": 19}}',
    "answers": '{"en": ["[the] {city} one"]}',
}


def skill(
    func: Callable | None = None,
    *,
    name: str | None = None,
    confirm: bool = False,
    timeout: float | None = None,
    sentences: dict[str, list] | None = None,
    intents: dict[str, dict] | None = None,
    optional_tool: bool = False,
    lists: dict[str, dict] | None = None,
    answers: dict[str, list] | None = None,
    **misspelt: Any,
) -> Any:
    """Mark a function as a skill. Use as @skill or @skill(confirm=True, sentences={...}, intents={...}).

    `sentences` are the skill's own hassil templates per language; `intents` names Home Assistant
    intents the skill answers, each with the arguments it gets: a constant, or "{slot}" for the value
    of that slot (a slot named like a parameter needs no entry). See assistant/skills/intents.py.
    `optional_tool`: when the system prompt does not fit kv_cache_len, the model's tool list may
    leave this skill out; its sentences and intents still run it by voice, without the model.
    `lists` are slot lists for `sentences`, each words → value: with `lists={"pm": {"7": 19}}`,
    "{pm:hour}" in a template hears "7" and passes hour=19.
    `answers` are templates like `sentences`, heard only as the reply to a question the skill has
    just asked (its text ends with "?"): "You have 2 alarms ... Which one?" → "the 7 pm one". The
    skill is called again with its arguments updated by the answer's. A free-text slot in an answer
    must be words the question offered (its choices after a colon, if it lists them: "Which
    playlist: jazz or rock?"), so that "set another timer" or "which one" is not heard as a timer's
    name, and not a number alone (the "10" of "the 10 minute timer"): a number to pick is an int
    parameter.
    """

    if misspelt:  # @skill(sentence=...): Python's own "unexpected keyword argument" names no fix
        option = next(iter(misspelt))
        options = [p for p in inspect.signature(skill).parameters if p not in ("func", "misspelt")]
        close = difflib.get_close_matches(option, options, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SkillError(f"@skill has no option {option!r}{hint}; its options are {', '.join(options)}")
    if func is not None and not callable(func):  # @skill("weather"), as a web framework's routes are named
        raise SkillError(f"@skill takes its options by name, as in @skill(name={func!r}), not {func!r}")
    given = {"sentences": sentences, "intents": intents, "lists": lists, "answers": answers}
    for option, value in given.items():
        if value is not None and not isinstance(value, dict):  # sentences=["..."]: dict() of it is a riddle
            what = type(value).__name__
            raise SkillError(
                f"@skill({option}=...) takes a dict, as in {option}={OPTION_EXAMPLES[option]}, not a {what}"
            )

    def mark(f: Callable) -> Callable:
        spec = SkillSpec(
            name or f.__name__, f, confirm, timeout, dict(sentences or {}), dict(intents or {}), optional_tool,
            dict(lists or {}), dict(answers or {}),
        )  # fmt: skip
        setattr(f, SKILL_ATTRIBUTE, spec)
        return f

    return mark(func) if func is not None else mark


def build_skill(spec: SkillSpec, settings: Any = None, source: str = "") -> Skill:
    """Turn a marked function into a Skill with its JSON Schema; SkillError says what is unsupported."""
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", spec.name):
        raise SkillError(
            f"skill name {spec.name!r} must be ASCII letters, digits and underscores: "
            'name it with @skill(name="...") (its parameters and sentences may be in any language)'
        )
    if problem := not_plain(spec.func):
        raise SkillError(f"skill {spec.name} {problem}")
    for option in ("confirm", "optional_tool"):  # confirm="no" is true, and would ask all the same
        if not isinstance(value := getattr(spec, option), bool):
            raise SkillError(f"skill {spec.name}: {option} is True or False, not {value!r}")
    timeout = spec.timeout
    # A thread's join() refuses a string and overflows on infinity: the call would raise, not time out.
    # Longer than a turn may run, a call would have the whole assistant restarted as hung, as for
    # skills.timeout_seconds.
    if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout <= SKILL_TIMEOUT_LIMIT):
        raise SkillError(
            f"skill {spec.name}: timeout must be a number of seconds above 0 and at most {SKILL_TIMEOUT_LIMIT:g} "
            f"(a turn running longer counts as hung), not {timeout!r}"
        )
    wrapped = ""  # a decorator's inner function (without functools.wraps) hides the skill's docstring and signature
    if "<locals>" in spec.func.__qualname__:
        made = f"{spec.func.__name__} is a function made inside another, as a decorator's"
        wrapped = f" ({made}: give that decorator @functools.wraps(func))"
    description, arg_docs = _parse_docstring(inspect.getdoc(spec.func) or "")
    if not description:
        raise SkillError(f"skill {spec.name} needs a docstring: it is the description the model sees{wrapped}")
    try:
        hints = typing.get_type_hints(spec.func, include_extras=True)
    except Exception as e:  # a hint that does not resolve is a bad signature
        raise SkillError(f"skill {spec.name}: cannot read its type hints ({e})") from None
    properties, required, wants_context = {}, [], None
    for param in inspect.signature(spec.func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise SkillError(f"skill {spec.name}: *args and **kwargs cannot be described to the model{wrapped}")
        if param.kind is param.POSITIONAL_ONLY:
            raise SkillError(f"skill {spec.name}: parameter '{param.name}' is positional-only; skills take keywords")
        hint = hints.get(param.name)
        if hint is SkillContext or SkillContext in typing.get_args(hint):
            wants_context = param.name
            continue
        if hint is None:
            raise SkillError(
                f"skill {spec.name}: parameter '{param.name}' has no type hint "
                "(give it one: str, int, float, bool, Literal[...], list[...] or SkillContext)"
            )
        try:
            schema = _schema(hint, settings)
        except SkillError as e:
            raise type(e)(f"skill {spec.name}: parameter '{param.name}': {e}") from None
        if param.name in arg_docs:
            schema["description"] = arg_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        elif param.default is not None:
            if isinstance(param.default, float) and not math.isfinite(param.default):
                raise SkillError(f"skill {spec.name}: parameter '{param.name}': the default must be a finite number")
            try:
                # The prompt and the constraint carry the default as JSON. A copy, too: a skill that
                # appends to its default list must not change what the model is told.
                default = json.loads(json.dumps(param.default, allow_nan=False))
            except (TypeError, ValueError):
                raise SkillError(
                    f"skill {spec.name}: parameter '{param.name}': the default {param.default!r} is not "
                    "JSON data (use a str, number, bool, list or None)"
                ) from None
            import jsonschema  # here: a process that only imports `assistant` (the engine's) is 4 MB smaller

            try:  # a mistake ("celsius" for Literal["c", "f"]), or a "not given" of the skill's own ("")
                jsonschema.validate(default, schema)
            except jsonschema.ValidationError as e:
                what = f"skill {spec.name}: parameter '{param.name}': the default {param.default!r}"
                gets = "yet the skill gets it when the model leaves the parameter out"
                log.warning(
                    "%s: %s is not a value the model can give (%s), %s", source or spec.name, what, e.message, gets
                )
            schema["default"] = default
        properties[param.name] = schema
    undescribed = [name for name, schema in properties.items() if "description" not in schema]
    for named in sorted(arg_docs.keys() - inspect.signature(spec.func).parameters.keys()):
        # Only a near miss: an indented "example: ..." line under an argument's text is no misspelling.
        if close := difflib.get_close_matches(named, undescribed, n=1):
            log.warning(
                "%s: skill %s: its docstring describes %r under Args:, which is no parameter (did you mean %s? the "
                "model is told nothing of that one)", source or spec.name, spec.name, named, close[0],
            )  # fmt: skip
    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return Skill(spec.name, spec.func, description, parameters, spec.confirm, spec.timeout, spec.sentences,
                 spec.intents, source, wants_context, spec.optional_tool, spec.lists, spec.answers)  # fmt: skip


def not_plain(func: Callable) -> str | None:
    """Why `func` cannot be a skill or a background task (called in a thread, the value used as it is), or None."""
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        return "is async: write it as a plain def (it runs in a thread of its own, so it may wait)"
    if inspect.isgeneratorfunction(func):
        return "yields: return its text or data instead"
    return None


def as_declared(value: Any, schema: dict) -> Any:
    """JSON Schema counts 7.0 as an integer; a skill that declared int gets 7, as its hint says."""
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if schema.get("type") == "array" and isinstance(value, list):
        return [as_declared(v, schema.get("items", {})) for v in value]
    return value


def _schema(hint: Any, settings: Any) -> dict:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        schema = _schema(args[0], settings)
        for extra in args[1:]:
            if isinstance(extra, Range):
                kind = schema.get("type")
                if kind not in ("integer", "number", "string"):
                    raise SkillError("Range applies to int, float or str (its length)")
                bounds = [b for b in (extra.minimum, extra.maximum) if b is not None]
                if not all(math.isfinite(b) for b in bounds):
                    raise SkillError("Range bounds must be finite numbers (None for no bound)")
                if len(bounds) == 2 and extra.minimum > extra.maximum:
                    raise SkillError(f"Range({extra.minimum}, {extra.maximum}): the minimum is above the maximum")
                low, high = "minimum", "maximum"
                if kind == "string":  # its length in characters, in place of MAX_STRING (a note may be longer)
                    if not all(float(b).is_integer() and b >= 0 for b in bounds):
                        raise SkillError("the Range of a str counts characters: whole numbers, not negative")
                    low, high = "minLength", "maxLength"
                    extra = Range(*(None if b is None else int(b) for b in (extra.minimum, extra.maximum)))
                if extra.minimum is not None:
                    schema[low] = extra.minimum
                if extra.maximum is not None:
                    schema[high] = extra.maximum
            elif isinstance(extra, Choices):
                if schema.get("type") != "string":
                    raise SkillError("Choices applies to str")
                choices = list(extra.from_settings(settings)) if settings is not None else []
                if not choices:
                    raise SkillUnavailable("nothing in the configuration to choose from")
                schema["enum"] = choices
                schema.pop("maxLength", None)
        return schema
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1 or not kinds <= {str, int, bool}:
            raise SkillError("Literal values must all be str, or all int")
        return {"type": _JSON_TYPES[kinds.pop()], "enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise SkillError("only Optional[X] unions are supported")
        return _schema(options[0], settings)
    if origin is list:
        return {"type": "array", "items": _schema(args[0], settings) if args else {}}
    if hint is str:
        # Spoken arguments are short; the bound also keeps a small model from rambling in a string.
        return {"type": "string", "maxLength": MAX_STRING}
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    if isinstance(hint, Range):  # `minutes: Range(1, 60)`, as a bound reads aloud
        bounds = f"Range({hint.minimum!r}, {hint.maximum!r})"
        kind = "float" if any(isinstance(b, float) for b in (hint.minimum, hint.maximum)) else "int"
        raise SkillError(f"{bounds} goes inside Annotated: Annotated[{kind}, {bounds}]")
    if isinstance(hint, Choices):
        raise SkillError("Choices goes inside Annotated: Annotated[str, Choices(...)]")
    raise SkillError(f"type {getattr(hint, '__name__', hint)!r} is not supported (use str, int, float, bool, "
                     "Literal, list or Optional)")  # fmt: skip


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph as the description, and `name: text` lines under Args:."""
    description = doc.split("\n\n")[0].replace("\n", " ").strip()
    args: dict[str, str] = {}
    if "Args:" in doc:
        for line in doc.split("Args:", 1)[1].splitlines():
            if match := re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line):
                args[match.group(1)] = match.group(2).strip()
            elif line.strip() and not line.startswith(" "):
                break
    return description, args
