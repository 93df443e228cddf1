"""Finding skills (folders, installed packages) and calling them safely.

A module that fails to import (or does not finish importing), or a skill with a signature the SDK
cannot describe, is reported with its file, line and reason and skipped: the other skills load. A
call validates its arguments against the skill's schema and runs with a timeout; any failure comes
back as a SkillResult with an error, never as an exception into the turn.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import math
import os
import stat
import sys
import threading
import time
import traceback
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import llguidance

from assistant.config import state_dir
from assistant.skills.constraint import call_schema
from assistant.skills.intents import check_sentences, out_of_range
from assistant.skills.sdk import (
    BACKGROUND_ATTRIBUTE,
    SKILL_ATTRIBUTE,
    BackgroundSpec,
    Skill,
    SkillContext,
    SkillError,
    SkillSpec,
    SkillUnavailable,
    StorageError,
    as_declared,
    build_skill,
    not_plain,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "assistant.skills"
DEFAULT_TIMEOUT = 10.0
# The built-in skills ship inside the package, so they load wherever config.yaml lives.
BUILTIN_SKILLS = Path(__file__).resolve().parent / "builtin"
BACKOFF_SECONDS = (1.0, 60.0)  # a background task that fails is restarted after 1 s, doubling up to 60 s
IMPORT_SECONDS = 30.0  # a skill module still importing after this long is skipped (it waits for something)
# All of one load's waits for imports and Choices together: past this, each gets SHORT_WAIT_SECONDS,
# so that ten files waiting for one server that is down do not hold the start past systemd's
# TimeoutStartSec (300 s in the unit), which would have it killed and started again, and again.
LOAD_WAIT_SECONDS = 120.0
SHORT_WAIT_SECONDS = 1.0
# Characters of a skill's text (ten minutes of speech; more is a skill reading out a page) or of its
# data as JSON (several times what the model's context holds): more ends the call before the turn
# tokenizes it, or a client is sent it, which for megabytes took minutes and a gigabyte of memory.
MAX_RESULT = 10_000
KEPT = "keeping the version loaded before"
# What every skill's calls and the background tasks get from the one SkillContext: a skill that sets
# one of them (its own state_dir) is undone after its call, or the timers' alarms would be looked for
# in its folder. (`stopped_at` is set by "stop" for the others; `language` and `heard` by each turn.)
SHARED_CONTEXT = ("settings", "state_dir", "say", "stop", "last_reply", "skills")
STOP_WAIT_SECONDS = 10.0  # a background task still running this long after its stop was set is logged

# The last module (or function) each skill file or entry point gave without a problem in this
# process, by the file's path or the entry point's source. A reload that finds it broken (an edit
# with a typo) keeps that version's skills rather than losing them until it is fixed: the running
# configuration stays, as for a broken config.yaml.
_loaded_before: dict[Path | str, Any] = {}
# The newest thread of each @background task, by module, name and state folder. A reload starts
# the new copy of a task once the old one has ended: a task that ignores its stop event would
# otherwise run on beside each new copy (a sensor polled twice, then three times).
_tasks: dict[str, threading.Thread] = {}
# The import of each skill file or entry point that was still waiting when it was given up on.
_importing: dict[Path | str, threading.Thread] = {}


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
    turned_off: set[str] = field(default_factory=set)  # skills found but listed in skills.disabled
    left_running: dict[str, threading.Thread] = field(default_factory=dict)  # calls past their timeout
    waited: float = 0.0  # seconds this load has spent waiting for imports and Choices

    # -- loading ------------------------------------------------------------------------------------

    def load_folder(self, folder: Path, disabled: tuple[str, ...] = ()) -> None:
        """Every module of the folder not named _*; those are its helpers (`from ._helpers import x`)."""
        if problem := open_to_all(Path(folder)):
            self._problem(str(folder), problem)
            return
        package = _folder_package(Path(folder))
        paths = sorted(p for p in Path(folder).glob("*.py") if not p.name.startswith("_"))
        for gone in [p for p in _loaded_before if isinstance(p, Path) and p.parent == Path(folder) and p not in paths]:
            del _loaded_before[gone]  # a file put back later is new: nothing of its old self runs
        for path in paths:
            if problem := open_to_all(path):
                self._problem(str(path), problem)
                continue
            before = _loaded_before.get(path)
            problems = len(self.problems)
            module = self._import_file(path, package, kept=before is not None)
            if module is None:
                if before is not None:
                    self.add_module(before, str(path), disabled)
                continue
            self.add_module(module, str(path), disabled, before)
            if len(self.problems) == problems:
                _loaded_before[path] = module
        for sub in sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            # A skill cloned into a folder of its own here would otherwise never load, without a word.
            if any(sub.glob("*.py")) and f"{package}.{sub.name}" not in sys.modules:  # not a helper package
                loaded = f"skills are loaded only from the .py files of {folder}"
                log.warning(
                    "%s holds Python files, but %s: move them there, or add %s to skills.paths", sub, loaded, sub
                )

    def load_entry_points(self, disabled: tuple[str, ...] = ()) -> None:
        importlib.invalidate_caches()  # files a package gained since the last load
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            source = f"{entry.value} (package entry point {entry.name!r})"
            # Imported afresh, so that a reload reads a package changed since (pip install -e, a new version).
            for name in [m for m in sys.modules if m == entry.module or m.startswith(entry.module + ".")]:
                del sys.modules[name]
            before = _loaded_before.get(source)
            thread, outcome, wait = self._in_thread(source, f"import-{entry.name}", entry.load)
            loaded, problem = None, None
            if not outcome:
                problem = f"still importing after {wait} ({WAITS_AT_IMPORT})"
            elif (error := outcome[0][1]) is not None:
                problem = f"cannot be imported: {type(error).__name__}: {error}"
            else:
                loaded = outcome[0][0]
            if problem:
                self._problem(source, problem, kept=before is not None)
                loaded = before
            if loaded is None:
                continue
            problems = len(self.problems)
            if isinstance(loaded, ModuleType):
                self.add_module(loaded, source, disabled, before if isinstance(before, ModuleType) else None)
            else:
                self.add_function(loaded, source, disabled, before if hasattr(before, SKILL_ATTRIBUTE) else None)
            if problem is None and len(self.problems) == problems:
                _loaded_before[source] = loaded

    def add_module(
        self, module: ModuleType, source: str, disabled: tuple[str, ...] = (), before: ModuleType | None = None
    ) -> None:
        """The skills and background tasks of `module`; a skill that cannot be built takes its
        namesake from `before` (the file's last good version) instead, when it has one."""
        seen = set()  # a function bound to two names (`louder = volume_up`) is one skill
        for value in list(vars(module).values()):
            if (hasattr(value, SKILL_ATTRIBUTE) or hasattr(value, BACKGROUND_ATTRIBUTE)) and _from_helper(
                value, module
            ):
                self._helper_skill(value, source)
                continue
            if getattr(value, "__module__", None) != module.__name__ or id(value) in seen:
                continue
            seen.add(id(value))
            if hasattr(value, SKILL_ATTRIBUTE):
                self.add_function(value, source, disabled, _namesake(before, value))
            elif hasattr(value, BACKGROUND_ATTRIBUTE):
                problem = not_plain(value) or _not_callable_as_task(value)
                if problem:
                    self._problem(_where(value, source), f"background task {value.__name__} {problem}")
                else:
                    self.background.append(getattr(value, BACKGROUND_ATTRIBUTE))
            elif isinstance(value, type):
                self._check_class(value, source)

    def _helper_skill(self, func: Any, source: str) -> None:
        """Report a skill or background task that a module imported from a helper, which is never loaded itself."""
        code = getattr(func, "__code__", None)
        where = f"{code.co_filename}:{code.co_firstlineno}" if code else source
        if not any(p.startswith(f"{where}: ") for p in self.problems):  # imported by several modules: said once
            kind = "skill" if hasattr(func, SKILL_ATTRIBUTE) else "background task"
            what = f"{kind} {func.__name__} is in a helper (a file named _*.py), whose skills are not loaded"
            self._problem(where, f"{what}: move it to a file whose name does not start with _")

    def _check_class(self, cls: type, source: str) -> None:
        """Skills are found among a module's functions: one marked inside a class would be lost silently."""
        for member in vars(cls).values():
            func = getattr(member, "__func__", member)  # a staticmethod or classmethod holds its function
            if hasattr(func, SKILL_ATTRIBUTE) or hasattr(func, BACKGROUND_ATTRIBUTE):
                kind = "skill" if hasattr(func, SKILL_ATTRIBUTE) else "background task"
                what = f"{kind} {func.__name__} is a method of class {cls.__name__}"
                self._problem(_where(func, source), f"{what}: move it out of the class (skills are module functions)")

    def start_background(self, stop: threading.Event) -> list[threading.Thread]:
        """Run every @background function in its own daemon thread until `stop` is set.

        A task that raises is logged and restarted with backoff: one fault never stops a timer's clock.
        """
        threads = []
        for spec in self.background:
            key = f"{spec.func.__module__}.{spec.func.__qualname__} on {self.context.state_dir}"
            previous = _tasks.get(key)
            thread = threading.Thread(
                target=self._keep_running, args=(spec, stop, previous), name=f"skill-{spec.name}", daemon=True
            )
            _tasks[key] = thread
            thread.start()
            threads.append(thread)
        return threads

    def _keep_running(self, spec: BackgroundSpec, stop: threading.Event, previous: threading.Thread | None) -> None:
        if previous is not None:
            previous.join(STOP_WAIT_SECONDS)
            if previous.is_alive():
                late = (
                    f"has not stopped {STOP_WAIT_SECONDS:g} s after it was asked to; the new copy starts when it does"
                )
                fix = "return when stop is set (stop.wait(seconds) in place of time.sleep)"
                log.error("background task %s %s: %s", spec.name, late, fix)
                previous.join()
        delay = BACKOFF_SECONDS[0]
        # A task that fails for hours (a sensor unplugged) is logged when it fails, and when it has run
        # well again for a while; each restart in between only at debug level: not a line a minute.
        failing, failures = None, 0  # why it last failed, and how often since it last ran well
        while not stop.is_set():
            started = time.monotonic()
            recovered = None
            if failing is not None:
                running = f"background task {spec.name} is running again, after {failures} failures"
                recovered = threading.Timer(BACKOFF_SECONDS[1], log.info, ("%s", running))
                recovered.daemon = True
                recovered.start()
            try:
                spec.func(self.context, stop)
            except BaseException as e:  # sys.exit() in a task would end its thread silently
                error = e
            else:
                error = None
            if recovered is not None:
                recovered.cancel()
            if time.monotonic() - started > BACKOFF_SECONDS[1]:
                delay = BACKOFF_SECONDS[0]  # it ran well for a while: start the backoff again
                failing, failures = None, 0
            if error is not None:
                reason, failures = _reason(error), failures + 1
                if reason != failing:  # the first failure, or another one than before
                    log.error("background task %s failed (%s); restarting it with backoff, up to every %g s",
                              spec.name, reason, BACKOFF_SECONDS[1],
                              exc_info=None if isinstance(error, SkillError) else error)  # fmt: skip
                else:
                    log.debug("background task %s failed again (%s); restarting in %g s", spec.name, reason, delay)
                failing = reason
            if stop.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_SECONDS[1])

    def add_function(
        self, func: Any, source: str, disabled: tuple[str, ...] = (), before: Callable | None = None
    ) -> None:
        spec = getattr(func, SKILL_ATTRIBUTE, None)
        if spec is None:
            self._problem(source, f"{func!r} is not marked with @skill")
            return
        if spec.name in disabled and spec.name not in self.turned_off:
            # The first of its name (the built-in one): a skill of that name loaded after it takes its place.
            self.turned_off.add(spec.name)
            return
        where = _where(func, source)
        try:
            built = self._build(spec, where)
        except SkillUnavailable as e:
            log.debug("skill %s not loaded: %s", spec.name, e)
            return
        except SkillError as e:
            try:
                built = self._build(getattr(before, SKILL_ATTRIBUTE), _where(before, source)) if before else None
            except SkillError:  # the configuration changed under it too
                built = None
            self._problem(where, str(e), kept=built is not None)
            if built is None:
                return
        if built.name in self.skills:
            first = self.skills[built.name].source
            fix = 'rename this one with @skill(name="...")'
            if first.startswith(str(BUILTIN_SKILLS)):
                fix += f" or turn the built-in one off with skills.disabled: [{built.name}]"
            self._problem(where, f"skill {built.name} is already defined in {first} ({fix})")
            return
        self.skills[built.name] = built

    def _build(self, spec: SkillSpec, where: str) -> Skill:
        # In a thread, as an import: a Choices function runs here, and one that asks a server for its
        # names (a home server that is down) would otherwise hold up the start, or end it with sys.exit().
        build = functools.partial(build_skill, spec, self.settings, where)
        _, outcome, wait = self._in_thread(f"{where}: skill {spec.name}", f"build-{spec.name}", build)
        if not outcome:
            what = f"skill {spec.name} is still being described after {wait}"
            raise SkillError(f"{what} (does a Choices function wait for a device or the network?)")
        built, error = outcome[0]
        try:
            if error is not None:
                raise error
            check_sentences(built)
            check_satisfiable(built)
        except SkillError:
            raise
        except Exception as e:  # e.g. a Choices function that trips over the configuration
            raise SkillError(f"{spec.name} cannot be described: {_reason(e)}") from e
        except BaseException as e:
            if e is not error:  # Ctrl-C while the skills load ends the load
                raise
            raise SkillError(f"{spec.name} cannot be described: {_reason(e)}") from e
        return built

    def _import_file(self, path: Path, package: str, kept: bool = False) -> ModuleType | None:
        """The module of a skill file, or None after reporting why it has none (`kept`: the last good
        version of the file stays)."""
        # A user's timers.py is not the built-in one; a dot in a file's name (weather.v2.py) would
        # make a parent package of its stem, and its relative imports would look there.
        name = f"{package}.{path.stem.replace('.', '_')}"
        spec = importlib.util.spec_from_file_location(name, path, loader=FreshSourceLoader(name, str(path)))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # In a thread: a module that waits at import (a device, the network) or calls sys.exit()
        # must not hold up or end the assistant's start.
        thread, outcome, wait = self._in_thread(path, f"import-{path.stem}", lambda: spec.loader.exec_module(module))
        if not outcome:
            frame = sys._current_frames().get(thread.ident)
            line = _line_in(path, traceback.extract_stack(frame) if frame else [])
            where = f"{path}:{line}" if line else str(path)  # no line: still reading the file (a FIFO)
            self._problem(where, f"still importing after {wait} ({WAITS_AT_IMPORT})", kept)
        elif (error := outcome[0][1]) is not None:
            own_syntax = isinstance(error, SyntaxError) and error.filename == str(path)
            line = error.lineno if own_syntax else _line_in(path, traceback.extract_tb(error.__traceback__))
            where = f"{path}:{line}" if line else str(path)  # no line: the file itself could not be read
            self._problem(where, _import_problem(error, path), kept)
        else:
            return module
        sys.modules.pop(name, None)
        return None

    def _in_thread(self, key: Path | str, name: str, load: Callable[[], Any]) -> tuple[threading.Thread, list, str]:
        """`_import_in_thread` with what is left of this load's time for waiting; the wait in words."""
        short = self.waited >= LOAD_WAIT_SECONDS
        seconds = SHORT_WAIT_SECONDS if short else IMPORT_SECONDS
        started = time.monotonic()
        thread, outcome = _import_in_thread(key, name, load, seconds)
        self.waited += time.monotonic() - started
        spent = f" (the load had spent its {LOAD_WAIT_SECONDS:g} s of waiting on others)" if short else ""
        return thread, outcome, f"{seconds:g} s{spent}"

    def _problem(self, where: str, reason: str, kept: bool = False) -> None:
        message = f"{where}: {reason}; {KEPT if kept else 'skipped'}"
        log.error("skill %s", message)
        self.problems.append(message)

    # -- calling ------------------------------------------------------------------------------------

    def tools(self) -> list[dict]:
        return [s.tool() for s in self.skills.values()]

    def call(self, name: str, arguments: Any, within: float | None = None) -> SkillResult:
        """Validate and run one skill; every failure is a SkillResult with an error for the person.

        `within`: the seconds the caller can still wait (what is left of a turn), when fewer than the skill's timeout.
        """
        found = self.skills.get(name)
        problem = logged = None
        if found is None:
            problem = f"there is no skill called {name}"
        elif not _finite(arguments):
            problem = f"invalid arguments for {name}: numbers must be finite"
        else:
            try:
                jsonschema.validate(arguments, found.parameters)
            except jsonschema.ValidationError as e:
                problem = f"invalid arguments for {name}: {e.message}"
                # The message quotes the value (a note, a door code): the journal names only the rule it broke.
                at = "/".join(map(str, e.absolute_path)) or "the arguments"
                logged = f"invalid arguments for {name}: {at} breaks its {e.validator} rule"
                if e.validator in ("minimum", "maximum") and e.absolute_path:
                    # A number outside a skill's range (the model's "timer for 10000 hours"): said as
                    # the range, as when a sentence asks for it, not as a validation error.
                    log.warning("call not run: %s", logged)
                    log.debug("call not run: %s", problem)
                    schema = found.parameters["properties"][e.absolute_path[0]]
                    return SkillResult(name, text=out_of_range(schema, self.context.language))
        earlier = self.left_running.get(name)
        if not problem and earlier is not None and earlier.is_alive():
            # Run again on top of a call that never answered, a door would get two commands, and
            # a device that hangs one more waiting thread each time it is asked.
            problem = f"{name} is still busy with the last request"
        if found is None or problem:
            log.warning("call not run: %s", logged or problem)
            log.debug("call not run: %s", problem)
            return SkillResult(name, error=problem)
        log.debug("calling %s with %s", name, arguments)  # what the person said: kept from the journal
        properties = found.parameters["properties"]
        kwargs = {key: as_declared(value, properties[key]) for key, value in arguments.items()}
        for param in inspect.signature(found.func).parameters.values():
            if param.name not in kwargs and isinstance(param.default, list | dict):
                # `items: list[str] = []` that the skill appends to: each call's own, as the model was told it.
                kwargs[param.name] = copy.deepcopy(param.default)
        if found.wants_context:
            kwargs[found.wants_context] = self.context
        shared = {key: getattr(self.context, key) for key in SHARED_CONTEXT}
        timeout = min(found.timeout or self.timeout, threading.TIMEOUT_MAX)
        cut = within is not None and within < timeout  # the caller's time ends first
        if cut and within <= 0:
            log.warning("call not run: no time is left for %s", name)
            return SkillResult(name, error=f"{name} took too long")
        timeout = within if cut else timeout
        # A skill that hangs cannot be killed from Python: its thread is abandoned and the turn goes on.
        started = time.monotonic()
        thread, outcome = _start(f"skill-{name}", lambda: found.func(**kwargs))
        thread.join(timeout)
        where = f"{found.source}: skill {name}"
        for key, value in shared.items():
            if getattr(self.context, key) is not value:
                setattr(self.context, key, value)
                log.warning(
                    "%s set context.%s, which every skill shares: changed back (keep what is the skill's own in its "
                    "module)", where, key,
                )  # fmt: skip
        if not outcome:
            self.left_running[name] = thread
            if cut:
                log.error("%s did not return within the %.3g s left of its turn and is left running", where, timeout)
                return SkillResult(name, error=f"{name} took too long")
            fix = "make it return sooner, or give it @skill(timeout=...)"
            log.error("%s did not return within %g s and is left running: %s", where, timeout, fix)
            return SkillResult(name, error=f"{name} took longer than {timeout:g} seconds")
        value, error = outcome[0]
        if isinstance(value, str):
            value = str.__str__(value)  # a plain str: a subclass's own methods are the skill's code, unguarded here
        log.info("skill %s %s in %.2f s", name, "failed" if error else "returned", time.monotonic() - started)
        if error is not None:
            # The traceback shows the line; a StorageError already says in words what to do.
            traceback_shown = None if isinstance(error, StorageError) else error
            log.error("%s failed: %s", where, _reason(error), exc_info=traceback_shown)
            return SkillResult(name, error=f"{name} failed: {_cause(error)}")
        if value is None:  # nothing said and nothing for the model: the turn would end in silence
            fix = 'return the text to speak ("" to say nothing) or data for the model'
            log.error("%s returned None (does it end without a return?): %s", where, fix)
            return SkillResult(name, error=f"{name} gave no answer")
        if isinstance(value, str) and len(value) > MAX_RESULT:
            too_long = f"{len(value)} characters of text, more than the {MAX_RESULT} a reply may speak"
            log.error("%s returned %s: return a short answer", where, too_long)
            return SkillResult(name, error=f"{name} returned more text than I can read out")
        if isinstance(value, str):
            return SkillResult(name, text=value)
        if inspect.iscoroutine(value):
            value.close()  # never to be awaited: closed now, not warned of later from another file
        try:
            sent = json.dumps(value, allow_nan=False, ensure_ascii=False)  # to the model and to clients as JSON
        except Exception as e:  # not JSON (TypeError), nested too deep (RecursionError), or a subclass that raises
            fix = "return a str to speak, or dicts, lists, strings and numbers for the model"
            log.error(
                "%s returned %s, which is neither text nor JSON data (%s): %s", where, type(value).__name__, e, fix
            )
            return SkillResult(name, error=f"{name} returned something other than text or JSON data")
        if len(sent) > MAX_RESULT:
            too_long = f"{len(sent)} characters of data as JSON, more than the {MAX_RESULT} the model can be given"
            log.error("%s returned %s: return only what the answer needs", where, too_long)
            return SkillResult(name, error=f"{name} returned more data than I can read")
        return SkillResult(name, data=json.loads(sent))  # plain data: the model and clients see the same


class FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles a skill file from its source on every load, neither reading nor writing a .pyc.

    A cached .pyc counts as current while the file's size and modification second are unchanged,
    so an edit of the same length within a second of the last load would come back after a
    reload as the old code.
    """

    def path_stats(self, path: str) -> dict:
        raise OSError("skill files are compiled from their source")  # the loader then skips the cache

    def get_data(self, path: str) -> bytes:
        # Here, not when a folder is listed: a helper or a linked file is read through this as well.
        if problem := open_to_all(Path(path)):
            raise SkillError(f"{path}: {problem}")
        return super().get_data(path)


def open_to_all(path: Path) -> str | None:
    """Why every user of the machine may change the code at `path` (a skill file or folder), or None.

    That code runs as the assistant's user, with its files and devices: a file or folder that
    anyone may write (made so to get past a permission error), or one in a folder anyone may
    rename it in, would let anyone run code as it.
    """
    real = path.resolve()
    if real.is_relative_to(BUILTIN_SKILLS.parents[1]):  # the package's own code, as safe as the rest of it
        return None
    chain = [real, *real.parents]
    for inner, entry in zip([None, *chain], chain, strict=False):
        try:
            mode = entry.stat().st_mode
        except OSError:  # not there (a dangling link) or not ours to look at: reading it will say so
            return None
        if not mode & stat.S_IWOTH:
            continue
        if inner is None:
            return f"every user may change it, and so run code as this user: chmod o-w {entry}"
        if not mode & stat.S_ISVTX:
            return f"every user may replace it through {entry}: chmod o-w {entry}"
        # Sticky, as /tmp: each may replace only what they own there.
        if (owner := inner.stat().st_uid) not in (0, os.geteuid()):
            return (
                f"{inner} belongs to uid {owner}, in {entry} where every user may put files: use a folder of your own"
            )
    return None


WAITS_AT_IMPORT = "does it wait for a device or the network? do that when the skill runs, not at import"


def _start(name: str, func: Callable[[], Any]) -> tuple[threading.Thread, list]:
    """Run `func` in a daemon thread (it never holds the process at exit); its outcome list gets
    one (value, error) pair when it returns or raises."""
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((func(), None))
        except BaseException as e:  # sys.exit() or KeyboardInterrupt in a skill ends the call, not the assistant
            outcome.append((None, e))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread, outcome


def _import_in_thread(
    key: Path | str, name: str, load: Callable[[], Any], seconds: float
) -> tuple[threading.Thread, list]:
    """`_start(name, load)` waited for up to `seconds`; an empty outcome if it is still importing.

    An import still waiting since an earlier load (a device that never answers) is not started
    again: each reload would leave one more thread stuck in it.
    """
    earlier = _importing.get(key)
    if earlier is not None and earlier.is_alive():
        return earlier, []
    thread, outcome = _start(name, load)
    thread.join(seconds)
    if outcome:
        _importing.pop(key, None)
    else:
        _importing[key] = thread
    return thread, outcome


def check_satisfiable(found: Skill) -> None:
    """Raise SkillError when no arguments satisfy the skill's schema (an int Range(1.2, 1.8), Choices
    that give numbers): the constraint compiles all tools into one grammar, which such a schema
    would fail for every skill and the assistant's start."""
    grammar = llguidance.LLMatcher.grammar_from_json_schema(call_schema([found.tool()]))
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise SkillError(f"skill {found.name}: no arguments can satisfy its schema ({'; '.join(messages)})")


def _not_callable_as_task(func: Callable) -> str | None:
    """Why `func` cannot be called as a background task, func(context, stop), or None: found at load, it
    is named with its file, not failing at each restart with a traceback through this module."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # no signature to read (a builtin): the call will say
        return None
    try:
        signature.bind(None, None)
    except TypeError:
        return f"takes {signature}: it cannot be called as {func.__name__}(context, stop)"
    return None


def _from_helper(value: Any, module: ModuleType) -> bool:
    """Whether `value` comes from a helper of `module`'s folder (`from ._shared import x`): helpers are
    not loaded as skill modules, so a skill there would be lost without a word."""
    package, _, name = (getattr(value, "__module__", None) or "").rpartition(".")
    return bool(package) and package == module.__package__ and name.startswith("_")


def _import_problem(error: BaseException, path: Path) -> str:
    """Why the skill file `path` did not import; a fault in a helper of its folder is named there."""
    if isinstance(error, SkillError):
        return str(error)
    if isinstance(error, SyntaxError):
        # A file of bytes, not text (NUL in it), comes with no file name at all.
        at = "" if error.filename in (str(path), None) else f"{error.filename}:{error.lineno}: "
        return f"{at}syntax error: {error.msg}"
    frames = traceback.extract_tb(error.__traceback__)
    helpers = [f for f in frames if Path(f.filename).parent == path.parent and f.filename != str(path)]
    at = f" (at {helpers[-1].filename}:{helpers[-1].lineno})" if helpers else ""
    top = (getattr(error, "name", None) or "").partition(".")[0]
    if isinstance(error, ModuleNotFoundError) and top and (path.parent / f"{top}.py").is_file():
        # `from _api import fetch`, as a script would: the folder is a package, not on sys.path.
        at += f" ({top}.py beside it is imported relatively: from .{top} import ...)"
    return f"cannot be imported: {type(error).__name__}: {error}{at}"


def _namesake(module: ModuleType | None, func: Callable) -> Callable | None:
    """The skill of `module` with the name of the skill `func`, or None."""
    if module is None:
        return None
    name = getattr(func, SKILL_ATTRIBUTE).name
    return next(
        (
            v
            for v in vars(module).values()
            if getattr(v, SKILL_ATTRIBUTE, None) and getattr(v, SKILL_ATTRIBUTE).name == name
        ),
        None,
    )


def _where(func: Any, source: str) -> str:
    return f"{source}:{func.__code__.co_firstlineno}" if hasattr(func, "__code__") else source


def _line_in(path: Path, frames: list[traceback.FrameSummary]) -> int:
    """The last line of `path` among the frames (0 when it has none)."""
    return next((f.lineno for f in reversed(frames) if f.filename == str(path)), 0)


def _cause(error: BaseException) -> str:
    """An exception as the person hears it: its message (or its type, when it has none), not too long."""
    if isinstance(error, SystemExit):  # its message is an exit status ("0"), which says nothing here
        return "it called sys.exit()"
    try:
        text = str(error) or type(error).__name__
    except Exception:  # the skill's own exception class, whose __str__ fails in turn
        text = type(error).__name__
    return text if len(text) <= 200 else text[:200] + "…"


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
    # The helpers, found through the package's path, are compiled from their source as well.
    sys.path_importer_cache[str(folder)] = importlib.machinery.FileFinder(str(folder), (FreshSourceLoader, [".py"]))
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


def _forget_type_hints() -> None:
    """Empty typing's caches of subscripted types (Annotated[...], X | None, Literal[...]).

    Each keeps its last 128 types with their arguments, and an argument such as Choices(lambda ...)
    holds a function of its skill module, and through it the whole module: every reload's copy of
    smart_home stayed alive for a hundred reloads more (tens of MB). The skills are built: nothing
    needs those types again. typing has no public way to empty them; its own tests do the same.
    """
    for clear in getattr(typing, "_cleanups", ()):
        clear()


def _log_thread_error(args: threading.ExceptHookArgs) -> None:
    """A thread that ends with an exception (one a skill started): one log record with its traceback.

    Python's default writes it to stderr in pieces, and a log line written meanwhile from another
    thread landed in the middle of them.
    """
    if args.exc_type is SystemExit:  # as the default: sys.exit() in a thread ends only that thread
        return
    name = args.thread.name if args.thread is not None else "?"
    error = (args.exc_type, args.exc_value, args.exc_traceback)
    reason = "".join(traceback.format_exception_only(args.exc_type, args.exc_value)).strip()
    log.error("thread %s ended with an error: %s", name, reason, exc_info=error)


def load_registry(settings: Any, skill_dirs: list[Path], context: SkillContext | None = None) -> Registry:
    """All skills: the built-in ones, each folder in order, then installed packages' entry points."""
    threading.excepthook = _log_thread_error  # before a skill module may start a thread
    disabled = tuple(getattr(getattr(settings, "skills", None), "disabled", ()) or ())
    timeout = getattr(getattr(settings, "skills", None), "timeout_seconds", DEFAULT_TIMEOUT)
    if context is None:
        context = SkillContext(settings=settings)
        if settings is not None:
            context.state_dir = state_dir(settings)
    registry = Registry(settings=settings, context=context, timeout=timeout)
    context.skills = lambda: list(registry.skills.values())
    # A folder named twice (skills/ beside the config also in skills.paths) is loaded once: a second
    # load would report every one of its skills as already defined.
    for folder in dict.fromkeys(Path(f).resolve() for f in [BUILTIN_SKILLS, *skill_dirs]):
        if folder.is_dir():
            registry.load_folder(folder, disabled)
    registry.load_entry_points(disabled)
    _forget_type_hints()
    if unknown := [name for name in disabled if name not in registry.turned_off]:
        # A typo there would leave on the skill it was meant to turn off, without a word.
        known = ", ".join(sorted([*registry.skills, *registry.turned_off]))
        log.warning("skills.disabled names %s, which no skill has (the skills: %s)", ", ".join(unknown), known)
    return registry
