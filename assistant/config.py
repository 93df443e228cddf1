"""Typed settings loaded from config.yaml, with environment overrides.

Every problem is reported as one ConfigError line that names the file, the line and the key,
so `assistant config check` and systemd logs say exactly what to fix.

Environment overrides: ASSISTANT_<SECTION>__<KEY>=value, nested with double underscores
(ASSISTANT_LLM__SAMPLING__TEMPERATURE=0.2). The value is read as YAML, so numbers, booleans
and lists work as they do in the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ENV_PREFIX = "ASSISTANT_"
CONFIG_ENV = "ASSISTANT_CONFIG"  # names the file itself; not a setting


class ConfigError(Exception):
    """A configuration problem, worded for the person who edits the file."""


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
    system_prompt: str = "You are a helpful voice assistant. Answer briefly."
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
    password: str | None = None
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


# Bounds checked after types: (key, predicate, what it must be).
_BOUNDS: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("llm.threads", lambda v: v >= 1, "at least 1"),
    ("llm.kv_cache_len", lambda v: v is None or v >= 16, "at least 16"),
    ("llm.max_new_tokens", lambda v: v >= 1, "at least 1"),
    ("llm.sampling.temperature", lambda v: v >= 0, "0 or more (0 is greedy)"),
    ("llm.sampling.top_k", lambda v: v >= 0, "0 or more (0 disables it)"),
    ("llm.sampling.top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("llm.sampling.repetition_penalty", lambda v: v > 0, "greater than 0"),
    ("wake.min_confidence", lambda v: 0 <= v <= 1, "between 0 and 1"),
    ("wake.phrases", lambda v: len(v) > 0, "a list with at least one phrase"),
    ("mqtt.port", lambda v: 0 < v < 65536, "a port number"),
    (
        "mqtt.devices",
        lambda v: all(_device_ok(d) for d in v),
        "mappings with a name, an optional area (text) and optional aliases (a list of names)",
    ),
    ("skills.timeout_seconds", lambda v: v > 0, "greater than 0"),
]


def bound_problem(key: str, value: Any) -> str | None:
    """What `value` must be to be a valid `key` (a key of _BOUNDS), or None when it is valid."""
    for bounded, ok, what in _BOUNDS:
        if bounded == key and not ok(value):
            return f"must be {what}, got {value!r}"
    return None


def _device_ok(device: Any) -> bool:
    return (
        isinstance(device, dict)
        and isinstance(device.get("name"), str)
        and isinstance(device.get("area", ""), str)
        and isinstance(device.get("aliases", []), list)
        and all(isinstance(alias, str) for alias in device.get("aliases", []))
    )


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, "config.yaml"))


def load_settings(path: Path | None = None, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """Read, override from the environment, type-check and bound-check a config file."""
    path = Path(path) if path else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
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


def settings_from_text(text: str, path: Path, environ: typing.Mapping[str, str] | None = None) -> Settings:
    """The settings of a config file's text, as if read from `path` (its folder anchors relative paths)."""
    environ = os.environ if environ is None else environ
    data, lines = _parse_yaml(text, path)
    _apply_env(data, environ, lines)
    where = _Where(path, lines)
    settings = _convert(Settings, data, "", where, path.parent.resolve())
    settings.source = path
    for key, _, _ in _BOUNDS:
        if problem := bound_problem(key, _lookup(settings, key)):
            raise ConfigError(f"{where(key)}{key}: {problem}")
    return settings


TEXT_ONLY = "or run without microphone and speech models: `assistant run --text-only`"


def check_model_paths(settings: Settings, voice: bool = True) -> None:
    """Fail when configured models are not installed, naming every missing one and the ways forward."""
    required = [("llm.model_dir", settings.llm.model_dir / "manifest.yaml")]
    if voice:
        required += [
            ("asr.model", settings.asr.model),
            ("tts.voice", settings.tts.voice),
            ("wake.model", settings.wake.model),
        ]
    missing = [(key, path) for key, path in required if path is not None and not path.exists()]
    if not missing:
        return
    named = "; ".join(f"{key}: {path} does not exist" for key, path in missing)
    fix = "install the models with `assistant setup` (`assistant doctor` lists everything missing)"
    if voice and any(key != "llm.model_dir" for key, _ in missing):
        fix += f", {TEXT_ONLY}"
    raise ConfigError(f"{settings.source}: {named}; {fix}")


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


def _parse_yaml(text: str, path: Path) -> tuple[dict, dict[str, int | str]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except RecursionError:  # PyYAML builds nested lists and mappings recursively
        raise ConfigError(f"{path}: nested too deeply to be read; a config needs only a few levels") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of sections, not {type(data).__name__}")
    lines: dict[str, int | str] = {}
    _record_lines(node, "", lines)
    return data, lines


def _record_lines(node: yaml.Node, prefix: str, lines: dict[str, int | str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            _record_lines(value_node, key + ".", lines)


def _apply_env(data: dict, environ: typing.Mapping[str, str], lines: dict[str, int | str]) -> None:
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):  # ASSISTANT_LLM____THREADS: a doubled separator names no key
            raise ConfigError(f"environment {name}: not a setting (sections and keys are joined by one __)")
        key = ".".join(parts)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise ConfigError(f"environment {name}: nested too deeply to be read") from None
        target = data
        for part in parts[:-1]:
            existing = target.get(part)
            if existing is None:
                existing = target[part] = {}
            if not isinstance(existing, dict):
                raise ConfigError(f"environment {name}: {part} is not a section")
            target = existing
        target[parts[-1]] = value
        lines[key] = f"environment {name}"


def _convert(tp: Any, value: Any, key: str, where: _Where, base: Path) -> Any:
    """Check `value` against the annotation `tp` and build it; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{where(key)}{key}: expected a mapping of settings, got {_kind(value)}")
        fields = {f.name: f for f in dataclasses.fields(tp) if not f.metadata.get("internal")}
        hints = typing.get_type_hints(tp)
        for name in value:
            if name not in fields:
                full = f"{key}.{name}" if key else str(name)
                close = difflib.get_close_matches(str(name), list(fields), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"{where(full)}unknown key '{full}'{hint}")
        kwargs = {}
        for name in fields:
            if name in value:
                full = f"{key}.{name}" if key else name
                kwargs[name] = _convert(hints[name], value[name], full, where, base)
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
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _convert(option, value, key, where, base)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        names = " or ".join(_type_name(o) for o in options)
        raise ConfigError(f"{where(key)}{key}: expected {names}, got {_kind(value)}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where(key)}{key}: expected a list, got {_kind(value)}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, v, f"{key}[{i}]", where, base) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where(key)}{key}: expected a mapping, got {_kind(value)}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where(key)}{key}: expected a path, got {_kind(value)}")
        try:
            path = Path(value).expanduser()
        except RuntimeError:  # ~name of a user this system does not have
            raise ConfigError(f"{where(key)}{key}: {value}: no such user's home folder; write the path out") from None
        return path if path.is_absolute() else base / path
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where(key)}{key}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where(key)}{key}: expected a whole number, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where(key)}{key}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where(key)}{key}: expected text, got {_kind(value)}")
        return value
    raise TypeError(f"unsupported settings annotation {tp!r} for {key}")


def _lookup(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (dict, list)):
        return f"a {type(value).__name__}"
    return f"{value!r}"


def _type_name(tp: Any) -> str:
    names = {str: "text", int: "a whole number", float: "a number", bool: "true/false", Path: "a path"}
    return names.get(tp, "nothing" if tp is type(None) else getattr(tp, "__name__", str(tp)))
