"""Finding skills (folders, installed packages) and calling them safely.

A module that fails to import, or a skill with a signature the SDK cannot describe, is reported
with its file, line and reason and skipped: the other skills load. A call validates its arguments
against the skill's schema and runs with a timeout; any failure comes back as a SkillResult with
an error, never as an exception into the turn.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema

from assistant.config import state_dir
from assistant.skills.intents import check_sentences
from assistant.skills.sdk import (
    BACKGROUND_ATTRIBUTE,
    SKILL_ATTRIBUTE,
    BackgroundSpec,
    Skill,
    SkillContext,
    SkillError,
    SkillUnavailable,
    as_declared,
    build_skill,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "assistant.skills"
DEFAULT_TIMEOUT = 10.0
# The built-in skills ship inside the package, so they load wherever config.yaml lives.
BUILTIN_SKILLS = Path(__file__).resolve().parent / "builtin"
BACKOFF_SECONDS = (1.0, 60.0)  # a background task that fails is restarted after 1 s, doubling up to 60 s


@dataclass
class SkillResult:
    name: str
    text: str | None = None  # to be spoken as it is
    data: Any = None  # to go back to the model
    error: str | None = None


@dataclass
class Registry:
    settings: Any = None
    context: SkillContext = field(default_factory=SkillContext)
    timeout: float = DEFAULT_TIMEOUT
    skills: dict[str, Skill] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    background: list[BackgroundSpec] = field(default_factory=list)

    # -- loading ------------------------------------------------------------------------------------

    def load_folder(self, folder: Path, disabled: tuple[str, ...] = ()) -> None:
        """Every module of the folder not named _*; those are its helpers (`from ._helpers import x`)."""
        package = _folder_package(Path(folder))
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = self._import_file(path, package)
            if module is not None:
                self.add_module(module, str(path), disabled)

    def load_entry_points(self, disabled: tuple[str, ...] = ()) -> None:
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            source = f"{entry.value} (package entry point {entry.name!r})"
            try:
                loaded = entry.load()
            except Exception as e:
                self._problem(source, f"cannot be imported: {type(e).__name__}: {e}")
                continue
            if isinstance(loaded, ModuleType):
                self.add_module(loaded, source, disabled)
            else:
                self.add_function(loaded, source, disabled)

    def add_module(self, module: ModuleType, source: str, disabled: tuple[str, ...] = ()) -> None:
        for value in list(vars(module).values()):
            if getattr(value, "__module__", None) != module.__name__:
                continue
            if hasattr(value, SKILL_ATTRIBUTE):
                self.add_function(value, source, disabled)
            elif hasattr(value, BACKGROUND_ATTRIBUTE):
                self.background.append(getattr(value, BACKGROUND_ATTRIBUTE))

    def start_background(self, stop: threading.Event) -> list[threading.Thread]:
        """Run every @background function in its own daemon thread until `stop` is set.

        A task that raises is logged and restarted with backoff: one fault never stops a timer's clock.
        """
        threads = []
        for spec in self.background:
            thread = threading.Thread(target=self._keep_running, args=(spec, stop), name=f"skill-{spec.name}",
                                      daemon=True)  # fmt: skip
            thread.start()
            threads.append(thread)
        return threads

    def _keep_running(self, spec: BackgroundSpec, stop: threading.Event) -> None:
        delay = BACKOFF_SECONDS[0]
        while not stop.is_set():
            started = time.monotonic()
            try:
                spec.func(self.context, stop)
            except Exception as e:
                log.error("background task %s failed (%s); restarting in %g s", spec.name, _reason(e), delay)
            if time.monotonic() - started > BACKOFF_SECONDS[1]:
                delay = BACKOFF_SECONDS[0]  # it ran well for a while: start the backoff again
            if stop.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_SECONDS[1])

    def add_function(self, func: Any, source: str, disabled: tuple[str, ...] = ()) -> None:
        spec = getattr(func, SKILL_ATTRIBUTE, None)
        if spec is None:
            self._problem(source, f"{func!r} is not marked with @skill")
            return
        if spec.name in disabled:
            return
        where = f"{source}:{func.__code__.co_firstlineno}" if hasattr(func, "__code__") else source
        try:
            built = build_skill(spec, self.settings, where)
            check_sentences(built)
        except SkillUnavailable as e:
            log.debug("skill %s not loaded: %s", spec.name, e)
            return
        except SkillError as e:
            self._problem(where, str(e))
            return
        except Exception as e:  # e.g. a Choices function that trips over the configuration
            self._problem(where, f"{spec.name} cannot be described: {_reason(e)}")
            return
        if built.name in self.skills:
            self._problem(where, f"skill {built.name} is already defined in {self.skills[built.name].source}")
            return
        self.skills[built.name] = built

    def _import_file(self, path: Path, package: str) -> ModuleType | None:
        name = f"{package}.{path.stem}"  # a user's timers.py is not the built-in one
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        except SyntaxError as e:
            self._problem(f"{path}:{e.lineno}", f"syntax error: {e.msg}")
        except Exception as e:
            line = next(
                (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__)) if f.filename == str(path)), 0
            )
            self._problem(f"{path}:{line}", f"cannot be imported: {type(e).__name__}: {e}")
        sys.modules.pop(name, None)
        return None

    def _problem(self, where: str, reason: str) -> None:
        message = f"{where}: {reason}; skipped"
        log.error("skill %s", message)
        self.problems.append(message)

    # -- calling ------------------------------------------------------------------------------------

    def tools(self) -> list[dict]:
        return [s.tool() for s in self.skills.values()]

    def call(self, name: str, arguments: Any) -> SkillResult:
        """Validate and run one skill; every failure is a SkillResult with an error for the person."""
        found = self.skills.get(name)
        if found is None:
            return SkillResult(name, error=f"there is no skill called {name}")
        if not _finite(arguments):
            return SkillResult(name, error=f"invalid arguments for {name}: numbers must be finite")
        try:
            jsonschema.validate(arguments, found.parameters)
        except jsonschema.ValidationError as e:
            return SkillResult(name, error=f"invalid arguments for {name}: {e.message}")
        properties = found.parameters["properties"]
        kwargs = {key: as_declared(value, properties[key]) for key, value in arguments.items()}
        if found.wants_context:
            kwargs[found.wants_context] = self.context
        timeout = found.timeout or self.timeout
        # A skill that hangs cannot be killed from Python: its thread is abandoned and the turn goes
        # on. A daemon thread, so that it never holds the process at exit either.
        outcome: list = []
        thread = threading.Thread(target=_run_into, args=(found.func, kwargs, outcome), name=f"skill-{name}",
                                  daemon=True)  # fmt: skip
        thread.start()
        thread.join(timeout)
        if not outcome:
            log.error("skill %s timed out after %.1f s", name, timeout)
            return SkillResult(name, error=f"{name} took longer than {timeout:g} seconds")
        value, error = outcome[0]
        if error is not None:
            log.error("skill %s failed: %s", name, _reason(error))
            return SkillResult(name, error=f"{name} failed: {error}")
        if isinstance(value, str):
            return SkillResult(name, text=value)
        try:
            json.dumps(value, allow_nan=False)  # data goes back to the model (and to clients) as JSON
        except (TypeError, ValueError) as e:
            log.error("skill %s returned data that JSON cannot carry: %s", name, e)
            return SkillResult(name, error=f"{name} returned something other than text or JSON data")
        return SkillResult(name, data=value)


def _run_into(func: Any, kwargs: dict, outcome: list) -> None:
    try:
        outcome.append((func(**kwargs), None))
    except (Exception, SystemExit) as e:  # sys.exit() in a skill ends its call, not the assistant
        outcome.append((None, e))


def _folder_package(folder: Path) -> str:
    """A fresh package for a skill folder, so that its modules can import its helpers relatively.

    Named after the folder's path, so that two folders' modules never meet; made anew on each
    load, so that a reload reads changed helpers too.
    """
    folder = folder.resolve()
    if folder == BUILTIN_SKILLS:
        name = "assistant_builtin_skills"
    else:
        name = "assistant_user_skills_" + hashlib.sha256(str(folder).encode()).hexdigest()[:12]
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]
    package = ModuleType(name)
    package.__path__ = [str(folder)]
    sys.modules[name] = package
    return name


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere: JSON Schema bounds let NaN through, and JSON cannot carry either."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _reason(error: BaseException) -> str:
    if isinstance(error, SkillError):  # already in words
        return str(error)
    return "".join(traceback.format_exception_only(error)).strip()


def skill_folders(settings: Any) -> list[Path]:
    """A configuration's own skill folders: skills/ beside its file, then skills.paths."""
    return [Path(settings.source).parent / "skills", *settings.skills.paths]


def load_registry(settings: Any, skill_dirs: list[Path], context: SkillContext | None = None) -> Registry:
    """All skills: the built-in ones, each folder in order, then installed packages' entry points."""
    disabled = tuple(getattr(getattr(settings, "skills", None), "disabled", ()) or ())
    timeout = getattr(getattr(settings, "skills", None), "timeout_seconds", DEFAULT_TIMEOUT)
    if context is None:
        context = SkillContext(settings=settings)
        if settings is not None:
            context.state_dir = state_dir(settings)
    registry = Registry(settings=settings, context=context, timeout=timeout)
    context.skills = lambda: list(registry.skills.values())
    for folder in [BUILTIN_SKILLS, *skill_dirs]:
        if folder.is_dir():
            registry.load_folder(folder, disabled)
    registry.load_entry_points(disabled)
    return registry
