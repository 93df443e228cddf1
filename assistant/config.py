"""Typed settings loaded from config.yaml, with environment overrides.

Every problem is reported as one ConfigError line that names the file, the line and the key,
so `assistant config check` and systemd logs say exactly what to fix.

Environment overrides: ASSISTANT_<SECTION>__<KEY>=value, nested with double underscores
(ASSISTANT_LLM__SAMPLING__TEMPERATURE=0.2). The value is read as YAML, so numbers, booleans
and lists work as they do in the file; a path is taken as written (~ is the home folder).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import re
import reprlib
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "ASSISTANT_"
CONFIG_ENV = "ASSISTANT_CONFIG"  # names the file itself; not a setting
SECRETS = {"mqtt.password"}  # never repeated in an error: errors end up in the journal and in bug reports

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """Configuration problems, worded for the person who edits the file: one line each."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass
class AudioSettings:
    input_device: str | int | None = None
    output_device: str | int | None = None
    input_rate: int | None = None
    output_rate: int | None = None
    reopen_max_seconds: float = 30.0


@dataclass
class WakeSettings:
    phrases: list[str] = field(default_factory=lambda: ["hey computer"])
    model: Path | None = None
    min_confidence: float = 0.6
    refractory_seconds: float = 2.0
    earcon: bool = True


@dataclass
class AsrSettings:
    model: Path = Path("models/vosk-model-small-en-us-0.15")
    model_url: str = "https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip"
    model_sha256: str | None = None
    silence_timeout: float = 1.2
    max_utterance_seconds: float = 12.0
    follow_up_seconds: float = 4.0


@dataclass
class SamplingSettings:
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.9
    repetition_penalty: float = 1.05
    seed: int | None = None


@dataclass
class LlmSettings:
    model_dir: Path = Path("models/qwen2-0.5b-instruct")
    backend: Literal["auto", "axengine", "onnxruntime"] = "auto"
    axengine_provider: Literal["AxEngineExecutionProvider", "AXCLRTExecutionProvider"] = "AxEngineExecutionProvider"
    threads: int = 2
    kv_cache_len: int | None = None
    max_new_tokens: int = 256
    # The same as the shipped config.yaml's: a config that leaves it out gets the persona measured there.
    system_prompt: str = (
        "You are a helpful voice assistant running offline in the user's home. Answer in one or two short sentences."
    )
    sampling: SamplingSettings = field(default_factory=SamplingSettings)


@dataclass
class TtsSettings:
    voice: Path = Path("models/piper/en_US-lessac-medium.onnx")
    voice_url: str = (
        "https://huggingface.co/rhasspy/piper-voices/resolve/v1.0.0/en/en_US/lessac/medium/en_US-lessac-medium.onnx"
    )
    voice_sha256: str | None = None
    speaker: int | None = None
    length_scale: float = 1.0
    sentence_silence: float = 0.2


@dataclass
class SkillsSettings:
    paths: list[Path] = field(default_factory=list)
    timeout_seconds: float = 10.0
    disabled: list[str] = field(default_factory=list)


@dataclass
class MqttSettings:
    host: str = "localhost"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: Path | None = None
    devices: list[dict] = field(default_factory=list)


@dataclass
class ControlSettings:
    socket: Path | None = None


@dataclass
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass
class Settings:
    audio: AudioSettings = field(default_factory=AudioSettings)
    wake: WakeSettings = field(default_factory=WakeSettings)
    asr: AsrSettings = field(default_factory=AsrSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)
    skills: SkillsSettings = field(default_factory=SkillsSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    state_dir: Path | None = None
    source: Path | None = field(default=None, metadata={"internal": True})
    warnings: list[str] = field(default_factory=list, metadata={"internal": True})
    """Doubtful settings the config loads with (a key given twice, a device without its topic)."""


# The longest context a Qwen2 model was trained for (max_position_embeddings), which `assistant setup`
# also refuses to exceed; a larger kv_cache_len only allocates memory the model cannot use.
MAX_CONTEXT = 32768
# daemon/run.py's TURN_LIMIT_SECONDS: a turn running longer counts as hung and systemd restarts the
# service, so a skill allowed more time than that would take the whole assistant down.
SKILL_TIMEOUT_LIMIT = 300.0
URL_SCHEMES = ("http://", "https://", "file://")  # what `assistant setup` downloads from
MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, with the final NUL
MAX_CONFIG_BYTES = 1024 * 1024  # the commented default is 5 kB


def _optional(ok: typing.Callable[[Any], bool]) -> typing.Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


# Bounds checked after types: (key, predicate, what it must be). A key may have several; the first
# it fails is the one reported.
_BOUNDS: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("audio.input_device", _optional(lambda v: not isinstance(v, int) or v >= 0), "a name or an index 0 or more"),
    ("audio.output_device", _optional(lambda v: not isinstance(v, int) or v >= 0), "a name or an index 0 or more"),
    ("audio.input_rate", _optional(lambda v: 8000 <= v <= 384000), "a sample rate from 8000 to 384000 (Hz)"),
    ("audio.output_rate", _optional(lambda v: 8000 <= v <= 384000), "a sample rate from 8000 to 384000 (Hz)"),
    ("audio.reopen_max_seconds", lambda v: 0 < v <= 3600, "greater than 0 and at most 3600"),
    ("wake.phrases", lambda v: len(v) > 0, "a list with at least one phrase"),
    ("wake.min_confidence", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("wake.refractory_seconds", lambda v: v >= 0, "0 or more"),
    # Upper bounds for the listening times: a typo of a few zeros made the assistant deaf after its
    # first wake (refractory), or left it transcribing the room for hours after a question (follow-up).
    ("wake.refractory_seconds", lambda v: v <= 60, "at most 60 (seconds in which a second wake is ignored)"),
    ("asr.model_url", lambda v: v.lower().startswith(URL_SCHEMES), "an http://, https:// or file:// URL"),
    ("asr.model_sha256", _optional(lambda v: re.fullmatch(r"[0-9a-fA-F]{64}", v)), "64 hexadecimal digits"),
    ("asr.silence_timeout", lambda v: v > 0, "greater than 0"),
    ("asr.silence_timeout", lambda v: v <= 60, "at most 60 (seconds)"),
    ("asr.max_utterance_seconds", lambda v: v > 0, "greater than 0"),
    ("asr.max_utterance_seconds", lambda v: v <= 300, "at most 300 (seconds of one command)"),
    ("asr.follow_up_seconds", lambda v: v >= 0, "0 or more (0 turns listening after a question off)"),
    ("asr.follow_up_seconds", lambda v: v <= 60, "at most 60 (seconds of listening without the wake phrase)"),
    ("llm.threads", lambda v: v >= 1, "at least 1"),
    ("llm.threads", lambda v: v <= 256, "at most 256"),
    ("llm.kv_cache_len", _optional(lambda v: v >= 16), "at least 16"),
    ("llm.kv_cache_len", _optional(lambda v: v <= MAX_CONTEXT), f"at most {MAX_CONTEXT}"),
    ("llm.max_new_tokens", lambda v: v >= 1, "at least 1"),
    ("llm.max_new_tokens", lambda v: v <= MAX_CONTEXT, f"at most {MAX_CONTEXT}"),
    ("llm.sampling.temperature", lambda v: v >= 0, "0 or more (0 is greedy)"),
    ("llm.sampling.top_k", lambda v: v >= 0, "0 or more (0 disables it)"),
    ("llm.sampling.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("llm.sampling.repetition_penalty", lambda v: v > 0, "greater than 0"),
    ("llm.sampling.seed", _optional(lambda v: v >= 0), "0 or more, or empty for a random one"),
    ("tts.voice_url", lambda v: v.lower().startswith(URL_SCHEMES), "an http://, https:// or file:// URL"),
    ("tts.voice_sha256", _optional(lambda v: re.fullmatch(r"[0-9a-fA-F]{64}", v)), "64 hexadecimal digits"),
    ("tts.speaker", _optional(lambda v: v >= 0), "a speaker id, 0 or more"),
    ("tts.length_scale", lambda v: 0 < v <= 10, "greater than 0 and at most 10 (1 is the voice's own pace)"),
    ("tts.sentence_silence", lambda v: 0 <= v <= 10, "from 0 to 10 (seconds)"),
    ("skills.timeout_seconds", lambda v: v > 0, "greater than 0"),
    (
        "skills.timeout_seconds",
        lambda v: v <= SKILL_TIMEOUT_LIMIT,
        f"at most {SKILL_TIMEOUT_LIMIT:g} (a turn running longer counts as hung)",
    ),
    ("mqtt.port", lambda v: 0 < v < 65536, "a port number"),
    (
        "control.socket",
        _optional(lambda v: len(os.fsencode(v)) <= MAX_SOCKET_PATH),
        f"a path of at most {MAX_SOCKET_PATH} bytes (the most a Unix socket's address holds)",
    ),
]


def bound_problem(key: str, value: Any) -> str | None:
    """What `value` must be to be a valid `key` (a key of _BOUNDS), or None when it is valid."""
    for bounded, ok, what in _BOUNDS:
        if bounded == key and not ok(value):
            return f"must be {what}, got {_kind(value, key)}"
    if isinstance(value, float) and not math.isfinite(value):  # a command-line option's: the file's are checked
        return f"must be a finite number, got {value}"
    return None


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, "config.yaml"))


def load_settings(path: Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, type-check and bound-check a config file."""
    path = Path(path) if path else default_config_path()
    try:
        # Non-blocking: opening a FIFO with no writer would otherwise wait forever, as `cat` does.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if kind := _not_a_file(os.fstat(descriptor).st_mode):
            os.close(descriptor)
            raise ConfigError(f"{path}: {kind}, not a file; a config is a regular file (--config FILE)")
        with open(descriptor, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)  # a wrong file (a log, an image) is not parsed for minutes
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MB, too large for a config; is it the right file?"
            )
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found; `assistant config init {path}` writes the default one, "
            "or pass --config FILE"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None
    except UnicodeDecodeError as e:  # saved by an editor in Latin-1 or another legacy encoding
        line = e.object[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x}); save the file as UTF-8"
        ) from None
    return settings_from_text(text, path, environ)


def _not_a_file(mode: int) -> str | None:
    """What a path that is not a regular file is ("a FIFO"), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a device", stat.S_ISBLK: "a device"}
    return next((name for test, name in kinds.items() if test(mode)), "a socket")


def settings_from_text(text: str, path: Path, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """The settings of a config file's text, as if read from `path` (its folder anchors relative paths)."""
    environ = os.environ if environ is None else environ
    data, lines, warnings = _parse_yaml(text, path)
    where = _Where(path, lines)
    _apply_env(data, environ, where)
    # Every problem at once: a setting that is wrong is left at its default while the rest are checked,
    # so that one edit fixes them all rather than one edit and one run per problem.
    problems: list[str] = []
    settings = _convert(Settings, data, "", where, path.parent.resolve(), problems)
    settings.source = path
    for key in dict.fromkeys(key for key, _, _ in _BOUNDS):  # a key with two bounds is reported once
        if problem := bound_problem(key, setting(settings, key)):  # a wrong type is at its default: no problem
            problems.append(f"{where(key)}{key}: {problem}")
    try:
        warnings += _mqtt_problems(settings.mqtt, where)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(*sorted(problems, key=lambda problem: _line_of(problem, path)))
    for warning in warnings:  # only for a config that loads: a broken one is its errors alone
        _warn_once(warning)
    settings.warnings = warnings
    return settings


def _line_of(problem: str, path: Path) -> float:
    """The line of the file a problem names; after every line for one from the environment."""
    line = re.match(rf"{re.escape(str(path))}:(\d+): ", problem)
    return int(line[1]) if line else math.inf


_warned: set[str] = set()


def _warn_once(text: str) -> None:
    """Log a warning about the config once a process: a reload of the same file need not repeat it."""
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


DEVICE_TYPES = ("light", "switch", "fan", "cover", "climate")
CONVENTIONS = ("zigbee2mqtt", "homeassistant")
TOPIC_KEYS = (
    "topic",
    "command_topic",
    "state_topic",
    "brightness_command_topic",
    "set_position_topic",
    "temperature_command_topic",
)
DEVICE_KEYS = ("name", "type", "area", "aliases", "convention", *TOPIC_KEYS)
DEVICE_SHAPE = "must be mappings with a name, an optional area (text) and optional aliases (a list of names)"


def _mqtt_problems(mqtt: MqttSettings, where: _Where) -> list[str]:
    """Refuse MQTT settings the smart-home skills cannot use (each wrong device named); return
    warnings for doubtful ones."""
    errors, warnings = [], []
    if mqtt.password is not None and mqtt.username is None:
        errors.append(
            f"{where('mqtt.password')}mqtt.password is set without mqtt.username: the broker would "
            "get neither; set mqtt.username too"
        )
    if mqtt.ca_file is not None and not mqtt.tls:
        warnings.append(f"{where('mqtt.ca_file')}mqtt.ca_file is set but mqtt.tls is false: it is not used")
    spoken: dict[str, str] = {}  # a name or alias as heard → the device that has it
    for i, device in enumerate(mqtt.devices):
        try:
            warnings += _device_warnings(device, f"mqtt.devices[{i}]", where, spoken)
        except ConfigError as e:
            errors += e.problems
    if errors:
        raise ConfigError(*errors)
    return warnings


def _device_warnings(device: Any, item: str, where: _Where, spoken: dict[str, str]) -> list[str]:
    """Refuse a device the smart-home skills cannot use; return warnings for a doubtful one."""
    warnings = []
    _check_device_shape(device, item, where)
    label = f"{item} ({device['name']})"
    for key in device:
        if key not in DEVICE_KEYS:
            close = difflib.get_close_matches(str(key), DEVICE_KEYS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"a device takes {', '.join(DEVICE_KEYS)}"
            raise ConfigError(f"{where(f'{item}.{key}')}{label}: unknown key '{key}' ({hint})")
    for key, allowed in (("type", DEVICE_TYPES), ("convention", CONVENTIONS)):
        value = device.get(key, "zigbee2mqtt" if key == "convention" else None)
        if value not in allowed:
            listed = ", ".join(repr(a) for a in allowed)
            raise ConfigError(f"{where(f'{item}.{key}')}{label}: {key}: expected one of {listed}, got {_kind(value)}")
    for key in TOPIC_KEYS:
        topic = device.get(key)
        if key in device and (not isinstance(topic, str) or not topic.strip()):
            raise ConfigError(f"{where(f'{item}.{key}')}{label}: {key}: expected an MQTT topic, got {_kind(topic)}")
        if topic and ("+" in topic or "#" in topic):
            warnings.append(
                f"{where(f'{item}.{key}')}{label}: {key} {topic!r} has a wildcard; nothing is sent "
                "to it, a device needs its own topic"
            )
    if missing := _missing_topic(device):
        warnings.append(f"{where(item)}{label}: {missing}")
    for name in [device["name"], *device.get("aliases", [])]:
        heard = " ".join(re.sub(r"[^\w\s]", " ", name.casefold()).split())  # as sentences are matched
        other = spoken.setdefault(heard, label)
        if other != label:
            # A command by that name then switches neither device (a shared name) or maybe the wrong one.
            warnings.append(
                f"{where(item)}{label}: '{name}' is also a name of {other}; a command by it cannot tell "
                "the two apart, give each device its own names"
            )
    return warnings


def _check_device_shape(device: Any, item: str, where: _Where) -> None:
    """A device is a mapping with a name, and an area and aliases of the right types when given."""
    if not isinstance(device, dict):
        problem = f"{item} is {_kind(device)}"
    elif not isinstance(device.get("name"), str) or not device["name"].strip():
        problem = f"{item} has no name" if "name" not in device else f"{item} has name {_kind(device['name'])}"
    elif "area" in device and (not isinstance(device["area"], str) or not device["area"].strip()):
        problem = f"{item} ({device['name']}) has area {_kind(device['area'])}"
    elif not isinstance(device.get("aliases", []), list) or not all(
        isinstance(alias, str) and alias.strip() for alias in device.get("aliases", [])
    ):
        problem = f"{item} ({device['name']}) has aliases {_kind(device['aliases'])}"
    else:
        return
    raise ConfigError(f"{where('mqtt.devices')}mqtt.devices: {DEVICE_SHAPE}; {problem}")


def _missing_topic(device: dict) -> str | None:
    """What a device lacks to be controlled in its convention, and how to give it; None when nothing."""
    if device.get("convention", "zigbee2mqtt") == "zigbee2mqtt":
        if device.get("topic"):
            return None
        other = (
            " (command_topic is Home Assistant's: add convention: homeassistant)" if "command_topic" in device else ""
        )
        return f"no topic, so it cannot be controlled; give it its Zigbee2MQTT topic (zigbee2mqtt/NAME){other}"
    needed = {"cover": ("command_topic", "set_position_topic"), "climate": ("temperature_command_topic",)}
    keys = needed.get(device["type"], ("command_topic",))
    if any(device.get(key) for key in keys):
        return None
    other = " (topic is Zigbee2MQTT's: remove convention: homeassistant)" if "topic" in device else ""
    return f"no {' or '.join(keys)}, so it cannot be controlled{other}"


TEXT_ONLY = "or run without microphone and speech models: `assistant run --text-only`"


def check_config_file(path: Path) -> None:
    """Refuse a config every user may change (ConfigError): it names the skill folders, whose code runs
    as this user, as a skill file anyone may change would."""
    from assistant.skills.registry import open_to_all

    try:
        regular = path.is_file()
    except OSError:  # in a folder this user may not enter: reading it says so
        return
    if regular and (problem := open_to_all(path)):  # anything else is refused as it is read
        raise ConfigError(f"{path}: {problem}")


def check_model_paths(settings: Settings, voice: bool = True) -> None:
    """Fail when configured models are not installed, naming every missing one and the ways forward.

    Other configured paths come first: a misspelt skills folder or CA file would otherwise only
    show as skills that are not there, or as a broker that cannot be reached. First of all, paths
    this user may not even look for (a model in another user's home folder, for the service's user).
    """
    required = [("llm.model_dir", settings.llm.model_dir / "manifest.yaml")]
    if voice:
        required += [
            ("asr.model", settings.asr.model),
            ("tts.voice", settings.tts.voice),
            ("wake.model", settings.wake.model),
        ]
    configured = [(f"skills.paths[{i}]", folder) for i, folder in enumerate(settings.skills.paths)]
    configured += [("mqtt.ca_file", settings.mqtt.ca_file), ("state_dir", settings.state_dir), *required]
    blocked = [f"{key}: {path} {why}" for key, path in configured if path and (why := _unreachable(path))]
    if blocked:
        fix = "let this user enter the folders on the way (chmod o+x, or a group of its own), or move the files"
        raise ConfigError(f"{settings.source}: {'; '.join(blocked)}; {fix}")
    wrong = [f"{key}: {problem}" for key, problem in configured_path_problems(settings)]
    if settings.state_dir is not None and (problem := state_dir_problem(settings.state_dir)):
        wrong.append(f"state_dir: {problem}")
    if wrong:
        raise ConfigError(f"{settings.source}: {'; '.join(wrong)}")
    missing = [(key, path) for key, path in required if path is not None and not path.exists()]
    if not missing:
        return
    named = "; ".join(f"{key}: {path} does not exist" for key, path in missing)
    fix = "install the models with `assistant setup` (`assistant doctor` lists everything missing)"
    if voice and any(key != "llm.model_dir" for key, _ in missing):
        fix += f", {TEXT_ONLY}"
    raise ConfigError(f"{settings.source}: {named}; {fix}")


def configured_path_problems(settings: Settings) -> list[tuple[str, str]]:
    """The skill folders and the CA file the config names that are not there as what they must be,
    as (key, what is wrong)."""
    wrong = []
    for i, folder in enumerate(settings.skills.paths):
        if not folder.is_dir():
            wrong.append((f"skills.paths[{i}]", f"{folder} is not a folder"))
        elif not os.access(folder, os.R_OK | os.X_OK):  # its skills would be left out without a word
            wrong.append((f"skills.paths[{i}]", f"{folder} cannot be read by this user; chmod it, or run as its owner"))
    if settings.mqtt.tls and settings.mqtt.ca_file is not None and not settings.mqtt.ca_file.is_file():
        wrong.append(("mqtt.ca_file", f"{settings.mqtt.ca_file} is not a file"))
    return wrong


def state_dir_problem(folder: Path) -> str | None:
    """Why the state folder cannot be used as a folder, or None.

    It is made when first written: a file in its place, or on the way to it, fails every timer and note.
    """
    existing = nearest_existing(folder)
    if existing == folder and not existing.is_dir():
        return f"{folder} is not a folder"
    if existing is not None and not existing.is_dir():
        return f"{folder} cannot be made: {existing} is not a folder"
    return None


def nearest_existing(path: Path) -> Path | None:
    """`path` if it exists, else its nearest parent that does: where making it would start."""
    return next((p for p in [path, *path.parents] if p.exists()), None)


def _unreachable(path: Path) -> str | None:
    """Why this user cannot even look for `path` (a folder on the way it may not enter), or None."""
    try:
        path.exists()  # False for what is not there; an error for what cannot be looked at
    except OSError as e:
        return f"cannot be reached by this user ({e.strerror})"
    return None


def state_dir(settings: Settings) -> Path:
    """Where timers, alarms and notes live: the config's state_dir, systemd's StateDirectory, or ~/.local/state."""
    if settings.state_dir is not None:
        return settings.state_dir
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local/state/assistant"


def settings_as_dict(settings: Settings) -> dict:
    """The effective settings as plain YAML-able data (paths as strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    out = {}
    for f in dataclasses.fields(settings):
        if f.metadata.get("internal"):
            continue
        value = getattr(settings, f.name)
        out[f.name] = settings_as_dict(value) if dataclasses.is_dataclass(value) else plain(value)
    return out


class _Where:
    """Formats 'file:line: ' for a dotted key, falling back to the nearest known parent."""

    def __init__(self, path: Path, lines: dict[str, int | str]):
        self.path, self.lines = path, lines

    def __call__(self, key: str) -> str:
        while key:
            if key in self.lines:
                line = self.lines[key]
                return f"{line}: " if isinstance(line, str) else f"{self.path}:{line}: "
            key = key.rpartition(".")[0]
        return f"{self.path}: "


def _parse_yaml(text: str, path: Path) -> tuple[dict, dict[str, int | str], list[str]]:
    """The file's data, the line of every key (and list item), and warnings about keys given twice."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError:  # PyYAML builds nested lists and mappings recursively
        raise ConfigError(f"{path}: nested too deeply to be read; a config needs only a few levels") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        if "'\\t'" in problem:  # an editor's tab: YAML's own words do not say what to do
            problem = "a tab character; YAML indents with spaces only, replace the tabs with spaces"
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}, []
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1: the top level must be a mapping of sections (`llm:`, then `  threads: 2` indented "
            f"below it), not {_kind(data)}; `assistant config init NEW.yaml` writes the default one to start from"
        )
    lines: dict[str, int | str] = {}
    warnings: list[str] = []
    _record_lines(node, "", lines, lambda line, text: warnings.append(f"{path}:{line}: {text}"))
    return data, lines, warnings


def _record_lines(node: yaml.Node, key: str, lines: dict[str, int | str], warn, walked: set[int] | None = None) -> None:
    """Note the line of `key`'s mapping keys and list items, below it too.

    A node is walked once: an alias repeats its anchor's node, and aliases of aliases nested a few
    levels deep would repeat it a billion times.
    """
    walked = set() if walked is None else walked
    if id(node) in walked:
        return
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            full = f"{key}.{key_node.value}" if key else str(key_node.value)
            line = key_node.start_mark.line + 1
            if full in seen:
                # YAML keeps the last one silently: a section added at the bottom of the file would
                # drop every setting of the one above it.
                warn(line, f"{full} is given twice (also at line {seen[full]}); only this one counts, merge them")
            seen[full] = lines[full] = line
            _record_lines(value_node, full, lines, warn, walked)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[f"{key}[{i}]"] = item.start_mark.line + 1
            _record_lines(item, f"{key}[{i}]", lines, warn, walked)


def _field_type(parts: list[str]) -> Any:
    """The annotation of the setting named by `parts` (['llm', 'sampling']), or None for no such setting."""
    tp: Any = Settings
    for part in parts:
        if not dataclasses.is_dataclass(tp):
            return None
        fields = {f.name for f in dataclasses.fields(tp) if not f.metadata.get("internal")}
        if part not in fields:
            return None
        tp = typing.get_type_hints(tp)[part]
    return tp


def _apply_env(data: dict, environ: typing.Mapping[str, str], where: _Where) -> None:
    lines = where.lines
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):  # ASSISTANT_LLM____THREADS: a doubled separator names no key
            raise ConfigError(f"environment {name}: not a setting (sections and keys are joined by one __)")
        key = ".".join(parts)
        if dataclasses.is_dataclass(tp := _field_type(parts)):
            # A whole section from the environment would silently drop every key of the file's one.
            raise ConfigError(f"environment {name}: {key} is a section; set its keys one at a time, as {name}__KEY")
        try:
            if not raw.strip():
                value = None
            elif tp in (Path, Path | None, str, str | None):
                # A path as written: YAML would read ~ (the home folder) as null, "a #2" as "a", "a: b" as a
                # mapping. Text too: a password 123456 or a prompt with a colon is not a number or a mapping.
                value = raw
            else:
                value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise ConfigError(f"environment {name}: nested too deeply to be read") from None
        target = data
        for i, part in enumerate(parts[:-1]):
            section = ".".join(parts[: i + 1])
            existing = target.get(part)
            if existing is None:
                existing = target[part] = {}
                lines.setdefault(section, f"environment {name}")  # blame a misspelt section on its variable
            if not isinstance(existing, dict):
                if dataclasses.is_dataclass(_field_type(parts[: i + 1])):  # the file's section is broken
                    raise ConfigError(
                        f"{where(section)}{section}: expected a mapping of settings, got {_kind(existing)}"
                    )
                raise ConfigError(f"environment {name}: {section} is not a section")
            target = existing
        if value is None and tp is not None:
            # Empty means the default, for a setting that cannot be empty too (ASSISTANT_LLM__THREADS=).
            target.pop(parts[-1], None)
        else:
            target[parts[-1]] = value
        lines[key] = f"environment {name}"


def _convert(tp: Any, value: Any, key: str, where: _Where, base: Path, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp` and build it; raise ConfigError naming `key`.

    In a section, a wrong setting is added to `problems` and left at its default, and the rest are
    still checked.
    """
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where(key)}{key}: expected a mapping of settings, got {_kind(value, key)}")
        fields = {f.name: f for f in dataclasses.fields(tp) if not f.metadata.get("internal")}
        hints = typing.get_type_hints(tp)
        for name in value:
            if name not in fields:
                full = f"{key}.{name}" if key else str(name)
                close = difflib.get_close_matches(str(name), list(fields), n=1)
                known = f"{key or 'the top level'} takes {', '.join(fields)}"
                hint = f"did you mean '{close[0]}'?" if close else known
                problems.append(f"{where(full)}unknown key '{full}' ({hint})")
        kwargs = {}
        for name in fields:
            if name in value:
                full = f"{key}.{name}" if key else name
                try:
                    kwargs[name] = _convert(hints[name], value[name], full, where, base, problems)
                except ConfigError as e:
                    problems += e.problems
        return tp(**kwargs)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            raise ConfigError(f"{where(key)}{key}: expected one of {listed}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        if type(None) in options and isinstance(value, str) and not value.strip():
            raise ConfigError(f"{where(key)}{key}: got {_kind(value, key)}; for none, write nothing after the colon")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, key, where, base, problems)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{where(key)}{key}: expected {names}, got {_kind(value, key)}")
    if origin is list:
        if not isinstance(value, list):
            # One item given as itself, the likeliest slip: show it as a list.
            shown = f" (a list of one is written [{value}])" if isinstance(value, str) else ""
            raise ConfigError(f"{where(key)}{key}: expected a list, got {_kind(value, key)}{shown}")
        (item_tp,) = typing.get_args(tp)
        items, wrong = [], []
        for i, item in enumerate(value):  # every wrong item named, not only the first
            try:
                items.append(_convert(item_tp, item, f"{key}[{i}]", where, base, problems))
            except ConfigError as e:
                wrong += e.problems
        if wrong:
            raise ConfigError(*wrong)
        return items
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where(key)}{key}: expected a mapping, got {_kind(value, key)}")
        return value
    if isinstance(value, str) and (unusable := _unusable_character(value)):
        raise ConfigError(f"{where(key)}{key}: contains {unusable}, which cannot be used; remove it")
    if tp is Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where(key)}{key}: expected a path, got {_kind(value, key)}")
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ~name of a user this system does not have
            raise ConfigError(f"{where(key)}{key}: {value}: no such user's home folder; write the path out") from None
        return path if path.is_absolute() else base / path
    if tp is bool:
        if not isinstance(value, bool):
            quoted = _QUOTED if str(value).lower() in ("true", "false") else ""
            raise ConfigError(f"{where(key)}{key}: expected true or false, got {_kind(value, key)}{quoted}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            quoted = _QUOTED if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value) else ""
            raise ConfigError(f"{where(key)}{key}: expected a whole number, got {_kind(value, key)}{quoted}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value):
            value = float(value)  # 1e-3: YAML 1.1 (PyYAML) reads it as text, YAML 1.2 and JSON as a number
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            quoted = _QUOTED if isinstance(value, str) and _is_number(value) else ""
            raise ConfigError(f"{where(key)}{key}: expected a number, got {_kind(value, key)}{quoted}")
        if not math.isfinite(value):  # .nan slips past every comparison, .inf past every upper bound
            raise ConfigError(f"{where(key)}{key}: expected a finite number, got {_kind(value, key)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where(key)}{key}: expected text, got {_kind(value, key)}")
        if not value.strip():
            raise ConfigError(f"{where(key)}{key}: must not be empty")
        return value
    raise TypeError(f"unsupported settings annotation {tp!r} for {key}")


def _unusable_character(text: str) -> str | None:
    """A character of `text` that fails every use of it, named; None when there is none.

    YAML's "\\0" and "\\ud800" escapes make them: a NUL ends a file name at the system call (a
    ValueError), and a lone surrogate cannot be written out as UTF-8 (the tokenizer's TypeError).
    """
    if "\0" in text:
        return "a NUL character (\\0)"
    surrogate = re.search("[\ud800-\udfff]", text)
    return f"a lone surrogate ({surrogate[0].encode('unicode_escape').decode()})" if surrogate else None


# A number or true/false in quotes is text to YAML: the quotes are what to remove.
_QUOTED = " (in quotes, which make it text: remove them)"


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def setting(settings: Settings, key: str) -> Any:
    """The value of a dotted key ("llm.sampling.seed"), or of a whole section ("tts")."""
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _kind(value: Any, key: str = "") -> str:
    """A value as an error message shows it: short, and never a secret."""
    if value is None:
        return "nothing"
    if key in SECRETS:
        return f"{_type_name(type(value))} (not shown)"
    if isinstance(value, Path):  # a setting's value once read, as it was written
        value = str(value)
    # reprlib: bounded, even for a list that aliases in the YAML repeat a billion times.
    shown = reprlib.repr(value) if isinstance(value, (dict, list)) else repr(value)
    if isinstance(value, (dict, list)) and len(shown) > 60:
        return f"a {type(value).__name__} of {len(value)} items"
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


def _type_name(tp: Any) -> str:
    names = {str: "text", int: "a whole number", float: "a number", bool: "true/false", Path: "a path"}
    return names.get(tp, "nothing" if tp is type(None) else getattr(tp, "__name__", str(tp)))
