"""`assistant doctor`: every missing or wrong thing between this machine and `assistant run`, at once.

Each check looks at one thing and says what is wrong and the command or setting that fixes it;
none stops the others, so a newcomer sees the whole list in one go.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from assistant.config import (
    TEXT_ONLY,
    ConfigError,
    Settings,
    configured_path_problems,
    load_settings,
    nearest_existing,
    state_dir,
    state_dir_problem,
)

MICROPHONE_FIX = f"connect one and choose it with audio.input_device (`assistant audio list`); {TEXT_ONLY}"
SETUP = "`assistant setup --target host` (offline: --model DIR with a checkpoint folder, file:// URLs in config.yaml)"
NOT_THIS_USER = "run doctor as the service's user (sudo -u USER assistant doctor --config ...), or as root"
# What another user could replace in a state_dir that is not private: `assistant run` refuses one.
STATE_FILES = "its files (notes, lists, timers)"
BOARD_SETUP = "`assistant setup --target ax630c` (or ax650n) on a PC with Pulsar2, then copy its models/ folder here"


@dataclass
class Finding:
    """One line of the report."""

    what: str
    """The setting or component checked (`llm.model_dir`, `microphone`)."""
    detail: str
    """What was found: the path, the device, the version."""
    fix: str | None = None
    """How to fix it; None when all is well."""


# What --text-only leaves out, said in the report so that its "all good" is not read as the whole assistant's.
SPEECH_NOT_CHECKED = Finding("speech models, microphone, speaker", "not checked (--text-only)")


def diagnose(config: Path, text_only: bool = False) -> list[Finding]:
    """Run every check; the findings with a `fix` are the problems."""
    findings: list[Finding] = []
    settings = Settings()  # without a config, the defaults (relative to here) still say something useful
    settings.source = config
    if _missing(config):
        findings.append(Finding("config", f"{config}: not found", f"`assistant config init {config}` writes one"))
    else:
        try:
            settings = load_settings(config)
            findings.append(Finding("config", f"{config}: settings load"))
            # Doubtful, not wrong, for `assistant run`, which starts with them; each is still a thing to fix.
            findings += [Finding("config", warning, f"edit {config}") for warning in settings.warnings]
        except ConfigError as e:
            # The rest would be checked against the defaults, not what the config says: a model or a
            # folder it does not use would be reported missing, with a setup that is not needed.
            fix = f"edit {config}" if os.access(config, os.R_OK) else NOT_THIS_USER
            *problems, last = e.problems
            problems.append(f"{last}; nothing else was checked")
            return [Finding("config", problem, _config_fix(problem, fix)) for problem in problems]
    findings += _as_this_user("llm.model_dir", _llm, settings)
    findings += _as_this_user("skills.paths, mqtt.ca_file", _configured_paths, settings)
    if all(f.fix is None for f in findings if f.what in ("config", "llm.model_dir")):
        findings += _budget(settings)
    if text_only:
        findings.append(SPEECH_NOT_CHECKED)
    else:
        findings += _as_this_user("speech models", _speech, settings)
        findings += _audio(settings)
    findings += _as_this_user("control.socket, state_dir", _runtime, settings)
    return findings


def _config_fix(problem: str, fix: str) -> str:
    """`fix` for a problem in the file; for one from the environment, the variable to change."""
    if variable := re.match(r"environment (\w+): ", problem):
        return f"change or unset {variable[1]}: the environment overrides the file"
    return fix


def _missing(path: Path) -> bool:
    """Whether `path` is not there; False when this user cannot tell (a folder it may not enter)."""
    try:
        path.stat()
    except FileNotFoundError:
        return True
    except OSError:  # reading it says why
        return False
    return False


def _as_this_user(what: str, check, settings: Settings) -> list[Finding]:
    """The findings of `check`; a path this user may not look at is one of them, not a traceback.

    The service's folders are its own (/var/lib/assistant is 0700): whoever else runs doctor on its
    config cannot look inside them.
    """
    try:
        return check(settings)
    except PermissionError as e:
        return [Finding(what, f"{e.filename}: this user may not look at it ({e.strerror})", NOT_THIS_USER)]


def report(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"{'ok' if f.fix is None else 'PROBLEM':8} {f.what}: {f.detail}")
        if f.fix is not None:
            lines.append(f"{'':8}   fix: {f.fix}")
    problems = sum(f.fix is not None for f in findings)
    run = "`assistant run --text-only`" if SPEECH_NOT_CHECKED in findings else "`assistant run`"
    lines.append(f"{problems} problem{'s' if problems != 1 else ''} found" if problems else f"all good: {run}")
    return "\n".join(lines)


def _llm(settings: Settings) -> list[Finding]:
    from assistant.llm.manifest import ModelError, load_checked

    model_dir = settings.llm.model_dir
    try:
        manifest = load_checked(model_dir)
    except ModelError as e:
        on_board = settings.llm.backend == "axengine" or importlib.util.find_spec("axengine") is not None
        return [Finding("llm.model_dir", str(e), BOARD_SETUP if on_board else SETUP)]
    found = [Finding("llm.model_dir", f"{model_dir}: {manifest.name}, backends {', '.join(manifest.backends)}")]
    board, host, backend = "axengine" in manifest.backends, "onnxruntime" in manifest.backends, settings.llm.backend
    if backend == "axengine" and not board:
        fix = "build them with `assistant setup --target ax630c` on a PC with Pulsar2, or set llm.backend: auto"
        found.append(Finding("llm.backend", "axengine, but the model has no axmodels", fix))
    if backend == "onnxruntime" or not board:
        if not host:
            found.append(
                Finding("llm.backend", "the model has no ONNX layers for this CPU", "rebuild without --no-host")
            )
        return found
    if importlib.util.find_spec("axengine") is None:
        if backend == "auto" and host:
            found.append(Finding("NPU", "pyaxengine is not installed: the ONNX layers run on the CPU"))
        else:
            found.append(Finding("NPU", "pyaxengine is not installed", "install AXERA's wheel (README: pyaxengine)"))
        return found
    found.append(Finding("NPU", "pyaxengine installed"))
    # As pyaxengine decides which providers exist (axengine/_providers.py): by their runtime library.
    card = settings.llm.axengine_provider == "AXCLRTExecutionProvider"
    library = "axcl_rt" if card else "ax_engine"
    if ctypes.util.find_library(library) is None:
        where = "the M.2 card's AXCL driver package" if card else "the board's BSP (/soc/lib)"
        found.append(Finding("NPU", f"lib{library}.so is not found", f"install {where}, or fix ldconfig"))
    node = "/dev/axcl_host"  # the card's device node on the host; the board's own nodes are its BSP's concern
    if card and not Path(node).exists():
        found.append(Finding("NPU", f"{node} does not exist", "load the M.2 card's AXCL driver"))
    elif card and not os.access(node, os.R_OK | os.W_OK):
        found.append(Finding("NPU", f"{node}: no read/write access", "run as a user allowed to use the card"))
    return found


def _speech(settings: Settings) -> list[Finding]:
    found = []
    for key, path in [("asr.model", settings.asr.model), ("tts.voice", settings.tts.voice)]:
        if path.exists():
            found.append(Finding(key, str(path)))
        else:
            found.append(Finding(key, f"{path} does not exist", f"`assistant setup` downloads it; {TEXT_ONLY}"))
    voice_config = Path(f"{settings.tts.voice}.json")
    if settings.tts.voice.is_dir():  # a folder of voices, say: its .json is not the question
        fix = "set tts.voice to the voice's .onnx file, with its .onnx.json beside it"
        found[-1] = Finding("tts.voice", f"{settings.tts.voice} is a folder, not a piper voice file", fix)
    elif settings.tts.voice.exists() and not voice_config.exists():
        fix = "put the .onnx.json that came with the voice beside it"
        found.append(Finding("tts.voice", f"{voice_config} (the voice's settings) does not exist", fix))
    if settings.wake.model is not None and not settings.wake.model.exists():
        found.append(Finding("wake.model", f"{settings.wake.model} does not exist", "fix the path, or leave it empty"))
    elif (wake_model := settings.wake.model or settings.asr.model).exists() and importlib.util.find_spec("vosk"):
        from assistant.voice.asr import NOT_A_MODEL, SETUP_FIX, load_model
        from assistant.voice.wake import UNHEARD_FIX, unheard_phrase

        key = "wake.model" if settings.wake.model else "asr.model"
        try:
            model = load_model(wake_model, key)
        except ConfigError:
            found.append(Finding(key, f"{wake_model} {NOT_A_MODEL}", SETUP_FIX))
        else:
            problem = unheard_phrase(model, settings.wake.phrases)
            found.append(Finding("wake.phrases", problem or "every word is one the speech model knows",
                                 UNHEARD_FIX if problem else None))  # fmt: skip
    for module, package in [("vosk", "vosk"), ("piper", "piper-tts"), ("sounddevice", "sounddevice"), ("soxr", "soxr")]:
        if importlib.util.find_spec(module) is None:
            found.append(Finding("python", f"{package} is not installed", f"pip install '.[voice]'; {TEXT_ONLY}"))
    return found


def _configured_paths(settings: Settings) -> list[Finding]:
    """The skill folders and the CA file: `assistant run` refuses to start without them."""
    fixes = {
        "skills": "create the folder, or remove it from skills.paths",
        "mqtt": "fix the path, or set mqtt.tls: false",
    }
    return [Finding(key, problem, fixes[key.split(".")[0]]) for key, problem in configured_path_problems(settings)]


def _budget(settings: Settings) -> list[Finding]:
    """Every skill file must load, and the system prompt and the tools must leave room for a
    conversation in kv_cache_len."""
    from assistant.budget import plan_for_settings
    from assistant.skills.registry import load_registry, skill_folders

    registry = load_registry(settings, skill_folders(settings))
    fix = "fix it, or move it out of the skills folder; `systemctl reload assistant` reads the skills again"
    found = [Finding("skills", problem, fix) for problem in registry.problems]
    found += [] if found else [Finding("skills", f"{len(registry.skills)} loaded")]
    try:
        plan = plan_for_settings(settings, list(registry.skills.values()))
    except ConfigError as e:
        return [*found, Finding("prompt budget", "the system prompt and the tools do not fit", str(e))]
    budget = plan.budget
    detail = f"system prompt {budget.system} tokens, {budget.room} left of {budget.kv_cache_len}"
    return [*found, Finding("prompt budget", detail)]


def microphone_problem(settings: Settings) -> str | None:
    """Why no microphone can be opened, or None when one can."""
    try:
        import sounddevice

        sounddevice.query_devices(settings.audio.input_device, "input")
    except ImportError:
        return "sounddevice is not installed"
    except OSError as e:  # no PortAudio library
        return f"no sound system ({e})"
    except Exception as e:  # sounddevice's PortAudioError and ValueError: no such device
        wanted = settings.audio.input_device
        return f"no microphone {wanted!r}" if wanted is not None else f"no microphone found ({e})"
    return None


def _audio(settings: Settings) -> list[Finding]:
    problem = microphone_problem(settings)
    if problem is not None:
        return [Finding("microphone", problem, MICROPHONE_FIX)]
    import sounddevice

    found = [Finding("microphone", str(sounddevice.query_devices(settings.audio.input_device, "input")["name"]))]
    try:
        speaker = sounddevice.query_devices(settings.audio.output_device, "output")["name"]
        found.append(Finding("speaker", str(speaker)))
    except Exception as e:  # as above
        found.append(Finding("speaker", f"no speaker ({e})", "connect one and choose it with audio.output_device"))
    return found


def _runtime(settings: Settings) -> list[Finding]:
    """The control socket's place and the state directory: where `assistant run` writes."""
    from assistant.daemon.control import answers, default_socket_path, folder_not_private

    found = []
    socket = settings.control.socket or default_socket_path()
    if answers(socket):
        fix = "stop it before starting another, or give this one its own control.socket"
        found.append(Finding("control.socket", f"{socket}: an assistant is already running there", fix))
    elif socket.exists() and not socket.is_socket():
        found.append(Finding("control.socket", f"{socket} exists and is not a socket", "remove it or choose another"))
    elif not writable(socket.parent):
        found.append(Finding("control.socket", f"{socket.parent} is not writable", "choose another control.socket"))
    elif socket.parent.exists() and (shared := folder_not_private(socket.parent)):  # `assistant run` refuses it
        found.append(Finding("control.socket", f"{socket.parent} is {shared[0]}", shared[1]))
    else:
        found.append(Finding("control.socket", str(socket)))
    state = state_dir(settings)
    if problem := state_dir_problem(state):
        found.append(Finding("state_dir", problem, "set state_dir to a folder, or move the file out of the way"))
    elif not writable(state):
        fix = "set state_dir to a folder you can write, or fix its owner"
        found.append(Finding("state_dir", f"{state} is not writable (timers, notes)", fix))
    elif state.is_dir() and (shared := folder_not_private(state, "state_dir", STATE_FILES)):  # run refuses it
        found.append(Finding("state_dir", f"{state} is {shared[0]}", shared[1]))
    else:
        found.append(Finding("state_dir", str(state)))
    return found


def writable(folder: Path) -> bool:
    """Whether `folder` can be written, or created in its nearest existing parent."""
    existing = nearest_existing(folder)
    return existing is not None and existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
