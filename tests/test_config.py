"""`assistant config check` on the shipped config and on broken ones, through the real CLI."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from assistant.config import DEVICE_SHAPE, ConfigError, bound_problem, check_model_paths, load_settings
from assistant.logs import setup_logging
from tests.other_user import as_nobody

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"


def run_check(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "assistant", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_shipped_config_passes_with_installed_models(installed_models: dict[str, str]) -> None:
    result = run_check(SHIPPED, installed_models)
    assert result.returncode == 0, result.stderr
    effective = yaml.safe_load(result.stdout)
    # The printout is the effective settings: file values plus the environment's model paths.
    assert effective["llm"]["backend"] == "auto"
    assert effective["llm"]["model_dir"] == installed_models["ASSISTANT_LLM__MODEL_DIR"]
    assert effective["wake"]["phrases"] == ["hey computer"]
    assert effective["llm"]["sampling"]["top_p"] == 0.9


def test_shipped_config_without_models_names_the_setup_command() -> None:
    result = run_check(SHIPPED, {"ASSISTANT_LLM__MODEL_DIR": "/nonexistent/qwen"})
    assert result.returncode == 78
    assert "llm.model_dir" in result.stderr and "assistant setup" in result.stderr


def test_a_config_for_text_only_is_checked_without_the_speech_models(tiny_int8: Path) -> None:
    """After `setup --no-speech`, as `run --text-only` and `doctor --text-only` see it."""
    env = {"ASSISTANT_LLM__MODEL_DIR": str(tiny_int8), "ASSISTANT_LLM__KV_CACHE_LEN": "1023"}
    env |= {"ASSISTANT_ASR__MODEL": "/nonexistent/vosk", "ASSISTANT_TTS__VOICE": "/nonexistent/voice.onnx"}
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | env
    command = [sys.executable, "-m", "assistant", "config", "check", "--config", str(SHIPPED)]
    speech = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=60)
    assert speech.returncode == 78 and "asr.model: /nonexistent/vosk does not exist" in speech.stderr
    text_only = subprocess.run([*command, "--text-only"], capture_output=True, text=True, env=full_env, timeout=60)
    assert text_only.returncode == 0, text_only.stderr
    assert text_only.stderr.strip().endswith(f"{SHIPPED}: OK")


def broken(tmp_path: Path, old: str, new: str) -> Path:
    """The shipped config with `old` replaced by `new`, or `new` added at the end when `old` is empty."""
    shipped = SHIPPED.read_text()
    assert old in shipped
    path = tmp_path / "config.yaml"
    path.write_text(shipped.replace(old, new, 1) if old else shipped + new)
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("", "audio: [unclosed\n", "invalid YAML"),
        ("", "colour: blue\n", "unknown key 'colour'"),
        ("  port: 1883\n", "  port: eighteen\n", "mqtt.port: expected a whole number, got 'eighteen'"),
        (
            "  model_dir: models/qwen2-0.5b-instruct\n",
            "  model_dir: /nonexistent/qwen\n",
            "llm.model_dir: /nonexistent/qwen/manifest.yaml does not exist",
        ),
        (
            "  backend: auto\n",
            "  backend: gpu\n",
            "llm.backend: expected one of 'auto', 'axengine', 'onnxruntime', got 'gpu'",
        ),
        (
            "  timeout_seconds: 10.0\n",
            "  timeout_seconds: .inf\n",
            "skills.timeout_seconds: expected a finite number, got inf",
        ),
        ("  paths: []\n", "  paths: [/nonexistent/skills]\n", "skills.paths[0]: /nonexistent/skills is not a folder"),
    ],
    ids=[
        "bad-yaml",
        "unknown-key",
        "wrong-type",
        "missing-model-dir",
        "bad-enum",
        "infinite-timeout",
        "no-skill-folder",
    ],
)
def test_broken_config_is_one_clear_line(
    tmp_path: Path, installed_models: dict[str, str], old: str, new: str, expected: str
) -> None:
    config = broken(tmp_path, old, new)
    env = dict(installed_models)
    if "model_dir" in new:  # the file's own broken value must be the one in force
        del env["ASSISTANT_LLM__MODEL_DIR"]
    result = run_check(config, env)
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert str(config) in lines[0]
    assert "Traceback" not in result.stderr


def test_error_names_the_line_of_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("llm:\n  threads: 2\n  sampling:\n    top_k: many\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:4: llm\.sampling\.top_k: expected a whole number"):
        load_settings(path, environ={})


def test_environment_overrides_file_and_is_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("llm:\n  threads: 2\n")
    settings = load_settings(path, environ={"ASSISTANT_LLM__THREADS": "4", "ASSISTANT_WAKE__PHRASES": "[a, b]"})
    assert settings.llm.threads == 4
    assert settings.wake.phrases == ["a", "b"]
    with pytest.raises(ConfigError, match="environment ASSISTANT_LLM__SAMPLING__TOP_P: .*top_p: must be in"):
        load_settings(path, environ={"ASSISTANT_LLM__SAMPLING__TOP_P": "1.5"})
    with pytest.raises(ConfigError, match=r"^environment ASSISTANT_LLM____THREADS: not a setting"):
        load_settings(path, environ={"ASSISTANT_LLM____THREADS": "1"})  # not blamed on the file


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.yaml"
    path.parent.mkdir()
    path.write_text("llm:\n  model_dir: models/x\nskills:\n  paths: [more_skills]\n")
    settings = load_settings(path, environ={})
    assert settings.llm.model_dir == path.parent / "models" / "x"
    assert settings.skills.paths == [path.parent / "more_skills"]
    assert settings.llm.sampling.temperature == 0.7  # untouched defaults stay


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(path, environ={})
    path.write_text("llm threads 2\n")  # a scalar: "not str", as the message said, is Python's word
    with pytest.raises(ConfigError) as refused:
        load_settings(path, environ={})
    assert str(refused.value) == (
        f"{path}:1: the top level must be a mapping of sections (`llm:`, then `  threads: 2` indented below it), "
        "not 'llm threads 2'; `assistant config init NEW.yaml` writes the default one to start from"
    )


def assistant_with(config: Path, *command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "assistant", *command, "--config", str(config)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b'llm:\n  system_prompt: "Tu es un assistant caf\xe9"\n',
            ":2: not UTF-8 text (byte 0xe9); save the file as UTF-8",
        ),
        (
            b"llm: " + b"[" * 5000 + b"]" * 5000 + b"\n",
            ": nested too deeply to be read; a config needs only a few levels",
        ),
        (  # aliases of aliases: a billion strings, were each alias walked on its own
            b"llm:\n  system_prompt: [&a0 ["
            + b"x, " * 9
            + b"x]"
            + b"".join(b", &a%d [" % i + b", ".join([b"*a%d" % (i - 1)] * 10) + b"]" for i in range(1, 9))
            + b"]\n",
            ":2: llm.system_prompt: expected text, got a list of 9 items",
        ),
        (b"# " + b"x" * 2**20 + b"\n", ": larger than 1 MB, too large for a config; is it the right file?"),
    ],
    ids=["latin-1", "nested", "aliases", "huge"],
)
def test_an_unreadable_config_is_one_line_and_exit_78_for_every_command(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    # 78 for `run`: the unit's RestartPreventExitStatus, so that systemd does not restart it in a loop.
    for command in (["config", "check"], ["run", "--text-only"], ["skills", "list"], ["setup", "--no-speech"]):
        result = assistant_with(config, *command)
        assert result.returncode == 78, (command, result.stderr)
        assert result.stderr.strip() == f"error: {config}{expected}", command


def test_a_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # nobody writes to it: reading it would wait forever
    expected = {
        fifo: "a FIFO",
        tmp_path: "a folder",
        Path("/dev/zero"): "a device",
    }
    for config, kind in expected.items():
        for command in (["config", "check"], ["status"], ["run", "--text-only"]):
            result = assistant_with(config, *command)  # its 60 s timeout fails a command that blocks
            assert result.returncode == 78, (command, result.stderr)
            assert result.stderr == f"error: {config}: {kind}, not a file; a config is a regular file (--config FILE)\n"


def test_an_environment_value_nested_too_deeply_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  threads: 2\n")
    result = assistant_with(config, "config", "check", env={"ASSISTANT_LLM__THREADS": "[" * 5000})
    assert result.returncode == 78
    assert result.stderr.strip() == "error: environment ASSISTANT_LLM__THREADS: nested too deeply to be read"


def test_a_home_folder_of_no_such_user_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match=r"environment ASSISTANT_STATE_DIR: state_dir: ~nosuchuser/x: no such user"):
        load_settings(path, environ={"ASSISTANT_STATE_DIR": "~nosuchuser/x"})


@pytest.mark.parametrize(
    ("variable", "value", "setting", "expected"),
    [
        ("ASSISTANT_STATE_DIR", "~", "state_dir", Path.home()),  # YAML would read it as null: the default
        ("ASSISTANT_STATE_DIR", "~/assistant", "state_dir", Path.home() / "assistant"),
        ("ASSISTANT_STATE_DIR", "/srv/notes #2", "state_dir", Path("/srv/notes #2")),  # YAML: a comment
        ("ASSISTANT_STATE_DIR", "/srv/a: b", "state_dir", Path("/srv/a: b")),  # YAML: a mapping
        ("ASSISTANT_STATE_DIR", "", "state_dir", None),  # empty: the default, as for every setting
        ("ASSISTANT_WAKE__MODEL", "~", "wake.model", Path.home()),
        ("ASSISTANT_ASR__MODEL", "~/models/vosk", "asr.model", Path.home() / "models/vosk"),
        (
            "ASSISTANT_SKILLS__PATHS",
            "[~/skills, /srv/skills]",
            "skills.paths",
            [Path.home() / "skills", Path("/srv/skills")],
        ),
    ],
)
def test_a_path_from_the_environment_is_taken_as_written(tmp_path: Path, variable: str, value: str, setting: str,
                                                         expected: Path | list[Path] | None) -> None:  # fmt: skip
    settings = load_text(tmp_path, "", {variable: value})
    section, _, key = setting.rpartition(".")
    assert getattr(getattr(settings, section) if section else settings, key) == expected


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_settings(path, environ=environ or {})


# Each of these loaded before and failed later: a crash at start-up, a turn that always failed, a
# skill that could hang the assistant, or a device that was never opened.
REFUSED = [
    ("skills:\n  timeout_seconds: .inf\n", "c.yaml:2: skills.timeout_seconds: expected a finite number, got inf"),
    (
        "skills:\n  timeout_seconds: 1000\n",
        "c.yaml:2: skills.timeout_seconds: must be at most 300 (a turn running longer counts as hung), got 1000.0",
    ),
    ("llm:\n  sampling:\n    temperature: .inf\n", "c.yaml:3: llm.sampling.temperature: expected a finite number"),
    ("llm:\n  sampling:\n    repetition_penalty: .inf\n", "llm.sampling.repetition_penalty: expected a finite"),
    (
        "llm:\n  sampling:\n    seed: -1\n",
        "c.yaml:3: llm.sampling.seed: must be 0 or more, or empty for a random one",
    ),
    ("llm:\n  kv_cache_len: 100000000\n", "c.yaml:2: llm.kv_cache_len: must be at most 32768, got 100000000"),
    ("llm:\n  threads: 1000000\n", "c.yaml:2: llm.threads: must be at most 256, got 1000000"),
    ("llm:\n  max_new_tokens: 1000000000\n", "llm.max_new_tokens: must be at most 32768, got 1000000000"),
    ("llm:\n  system_prompt: ' '\n", "c.yaml:2: llm.system_prompt: must not be empty"),
    (
        "audio:\n  input_rate: 0\n",
        "c.yaml:2: audio.input_rate: must be a sample rate from 8000 to 384000 (Hz), got 0",
    ),
    (
        "audio:\n  input_device: ''\n",
        "c.yaml:2: audio.input_device: got ''; for none, write nothing after the colon",
    ),
    ("audio:\n  output_device: -1\n", "audio.output_device: must be a name or an index 0 or more, got -1"),
    ("audio:\n  reopen_max_seconds: .inf\n", "audio.reopen_max_seconds: expected a finite number, got inf"),
    ("wake:\n  phrases: ['']\n", "c.yaml:2: wake.phrases[0]: must not be empty"),
    ("wake:\n  refractory_seconds: .nan\n", "wake.refractory_seconds: expected a finite number, got nan"),
    (  # the quotes, not the number, are what to change
        "mqtt:\n  port: '1883'\n",
        "c.yaml:2: mqtt.port: expected a whole number, got '1883' (in quotes, which make it text: remove them)",
    ),
    (
        'llm:\n  sampling:\n    top_p: "0.5"\n',
        "top_p: expected a number, got '0.5' (in quotes, which make it text: remove",
    ),
    (
        "wake:\n  phrases: hey jarvis\n",
        "c.yaml:2: wake.phrases: expected a list, got 'hey jarvis' (a list of one is written [hey jarvis])",
    ),
    ("wake:\n  earcon: 'false'\n", "c.yaml:2: wake.earcon: expected true or false, got 'false' (in quotes, which"),
    ("asr:\n  silence_timeout: 0\n", "asr.silence_timeout: must be greater than 0, got 0.0"),
    ("asr:\n  model_url: models/vosk.zip\n", "asr.model_url: must be an http://, https:// or file:// URL"),
    ("asr:\n  model_sha256: abc\n", "asr.model_sha256: must be 64 hexadecimal digits, got 'abc'"),
    ("tts:\n  speaker: -1\n", "tts.speaker: must be a speaker id, 0 or more, got -1"),
    ("tts:\n  length_scale: 0\n", "tts.length_scale: must be greater than 0 and at most 10"),
    ("tts:\n  sentence_silence: 1000000\n", "tts.sentence_silence: must be from 0 to 10 (seconds), got 1000000.0"),
    ("mqtt:\n  host: ''\n", "c.yaml:2: mqtt.host: must not be empty"),
    ("mqtt:\n  password: pw\n", "c.yaml:2: mqtt.password is set without mqtt.username"),
    (  # bind() refuses it: the assistant would not start, and doctor said all was well
        f"control:\n  socket: /run/{'x' * 103}\n",
        "c.yaml:2: control.socket: must be a path of at most 107 bytes (the most a Unix socket's address holds)",
    ),
    ('state_dir: "/srv/notes\\0"\n', "c.yaml:1: state_dir: contains a NUL character (\\0), which cannot be used"),
    (  # the tokenizer's TypeError at start-up, before
        'llm:\n  system_prompt: "Hi \\ud83d"\n',
        "c.yaml:2: llm.system_prompt: contains a lone surrogate (\\ud83d), which cannot be used; remove it",
    ),
    ("llm:\n\tthreads: 2\n", "c.yaml:2: invalid YAML: a tab character; YAML indents with spaces only, replace"),
    (  # deaf after the first wake for a day
        "wake:\n  refractory_seconds: 86400\n",
        "c.yaml:2: wake.refractory_seconds: must be at most 60 (seconds in which a second wake is ignored)",
    ),
    ("asr:\n  silence_timeout: 1e6\n", "c.yaml:2: asr.silence_timeout: must be at most 60 (seconds), got 1000000.0"),
    ("asr:\n  max_utterance_seconds: 36000\n", "asr.max_utterance_seconds: must be at most 300 (seconds of one"),
    (  # listening to the room for hours after each question
        "asr:\n  follow_up_seconds: 7200\n",
        "c.yaml:2: asr.follow_up_seconds: must be at most 60 (seconds of listening without the wake phrase), got",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), REFUSED, ids=[re.sub(r"^c\.yaml:\d+: ", "", e).split(":")[0].split()[0] for _, e in REFUSED]
)
def test_a_value_that_would_fail_later_is_refused_naming_key_value_and_what_is_allowed(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_text(tmp_path, text)
    assert expected in str(refused.value)


def test_every_problem_of_a_config_is_named_at_once_in_the_order_of_the_file(tmp_path: Path) -> None:
    text = (
        "llm:\n"
        "  threads: two\n"  # 2: a wrong type
        "  backend: gpu\n"  # 3: not a choice
        "  max_new_tokens: 0\n"  # 4: out of bounds
        "wake:\n  phrases: [hey, 5, '']\n"  # 6: two wrong items of a list
        "mqtt:\n  port: 0\n  devices:\n"
        "    - {name: porch, type: lamp, topic: z2m/porch}\n"  # 10
        "    - {name: hall, type: light, topic: z2m/hall}\n"
        "    - {type: light, topic: z2m/nameless}\n"  # 12
        "colour: blue\n"  # 13: a typo
    )
    with pytest.raises(ConfigError) as refused:
        load_text(tmp_path, text, {"ASSISTANT_SKILLS__TIMEOUT_SECONDS": "0"})
    path = tmp_path / "c.yaml"
    assert refused.value.problems == [
        f"{path}:2: llm.threads: expected a whole number, got 'two'",
        f"{path}:3: llm.backend: expected one of 'auto', 'axengine', 'onnxruntime', got 'gpu'",
        f"{path}:4: llm.max_new_tokens: must be at least 1, got 0",
        f"{path}:6: wake.phrases[1]: expected text, got 5",
        f"{path}:6: wake.phrases[2]: must not be empty",
        f"{path}:8: mqtt.port: must be a port number, got 0",
        f"{path}:9: mqtt.devices: {DEVICE_SHAPE}; mqtt.devices[2] has no name",
        f"{path}:10: mqtt.devices[0] (porch): type: expected one of 'light', 'switch', 'fan', 'cover', 'climate', "
        "got 'lamp'",
        f"{path}:13: unknown key 'colour' (the top level takes audio, wake, asr, llm, tts, skills, mqtt, control, "
        "logging, state_dir)",
        "environment ASSISTANT_SKILLS__TIMEOUT_SECONDS: skills.timeout_seconds: must be greater than 0, got 0.0",
    ]
    # A line each on the command line, every one naming its file and line.
    result = assistant_with(path, "config", "check")
    assert result.returncode == 78 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 9 and lines[0] == f"error: {path}:2: llm.threads: expected a whole number, got 'two'"
    assert all(f"{path}:" in line for line in lines), lines


def test_an_empty_environment_value_means_the_default(tmp_path: Path) -> None:
    settings = load_text(tmp_path, "llm:\n  threads: 3\n  sampling:\n    top_p: 0.5\n", {
        "ASSISTANT_LLM__THREADS": "", "ASSISTANT_LLM__SAMPLING__TOP_P": " ", "ASSISTANT_STATE_DIR": ""})  # fmt: skip
    assert (settings.llm.threads, settings.llm.sampling.top_p, settings.state_dir) == (2, 0.9, None)
    with pytest.raises(ConfigError, match=r"^environment ASSISTANT_LLM__THREDS: unknown key 'llm.threds' \(did"):
        load_text(tmp_path, "", {"ASSISTANT_LLM__THREDS": ""})  # a typo is still one, empty or not


def test_text_from_the_environment_is_taken_as_written(tmp_path: Path) -> None:
    # Read as YAML, 123456 was a number ("expected text"), and "Be brief: one line" a mapping.
    settings = load_text(tmp_path, "", {
        "ASSISTANT_MQTT__USERNAME": "yes", "ASSISTANT_MQTT__PASSWORD": "123456",
        "ASSISTANT_LLM__SYSTEM_PROMPT": "Be brief: one line #1", "ASSISTANT_LLM__THREADS": "4"})  # fmt: skip
    assert (settings.mqtt.username, settings.mqtt.password) == ("yes", "123456")
    assert settings.llm.system_prompt == "Be brief: one line #1"
    assert settings.llm.threads == 4  # numbers are still numbers


def test_a_byte_order_mark_and_windows_line_endings_are_read_as_any_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfllm:\r\n  threads: 3\r\n  system_prompt: Be brief.\r\n")
    settings = load_settings(path, environ={})
    assert (settings.llm.threads, settings.llm.system_prompt) == (3, "Be brief.")


def test_the_skill_timeout_may_reach_the_daemons_turn_limit_and_no_further(tmp_path: Path) -> None:
    from assistant.daemon.run import TURN_LIMIT_SECONDS

    limit = f"skills:\n  timeout_seconds: {TURN_LIMIT_SECONDS}\n"
    assert load_text(tmp_path, limit).skills.timeout_seconds == TURN_LIMIT_SECONDS
    with pytest.raises(ConfigError, match="skills.timeout_seconds: must be at most 300 "):
        load_text(tmp_path, f"skills:\n  timeout_seconds: {TURN_LIMIT_SECONDS + 1}\n")


def test_a_command_line_option_standing_for_a_setting_must_be_finite_too() -> None:
    # `assistant chat --temperature inf` is checked by the config's bounds, not by the file's loader.
    assert bound_problem("llm.sampling.temperature", math.inf) == "must be a finite number, got inf"
    assert bound_problem("llm.max_new_tokens", 10**9) == "must be at most 32768, got 1000000000"
    assert bound_problem("llm.sampling.temperature", 0.7) is None


def test_a_number_with_an_exponent_is_a_number(tmp_path: Path) -> None:
    # PyYAML follows YAML 1.1, which reads 1e-3 as text; YAML 1.2 and JSON read a number.
    settings = load_text(tmp_path, "llm:\n  sampling:\n    temperature: 1e-3\n")
    assert settings.llm.sampling.temperature == 0.001
    settings = load_text(tmp_path, "", {"ASSISTANT_SKILLS__TIMEOUT_SECONDS": "2.5E+1"})
    assert settings.skills.timeout_seconds == 25.0


def test_the_mqtt_password_is_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_text(tmp_path, "mqtt:\n  username: me\n  password: 918273645\n")
    assert "mqtt.password" in str(refused.value) and "918273645" not in str(refused.value)
    settings = load_text(tmp_path, "mqtt:\n  username: me\n  password: '918273645'\n")
    assert settings.mqtt.password == "918273645" and "918273645" not in repr(settings)


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("{name: porch light, type: lamp, topic: z2m/porch}", "type: expected one of 'light', 'switch', 'fan',"),
        (
            "{name: porch light, type: light, convention: home-assistant, command_topic: ha/porch/set}",
            "convention: expected one of 'zigbee2mqtt', 'homeassistant', got 'home-assistant'",
        ),
        (
            "{name: porch light, type: light, convention: homeassistant, comand_topic: ha/porch/set}",
            "unknown key 'comand_topic' (did you mean 'command_topic'?)",
        ),
        ("{name: porch light, type: light, topic: 5}", "topic: expected an MQTT topic, got 5"),
        ("{name: porch light, topic: z2m/porch}", "type: expected one of 'light'"),
    ],
    ids=["type", "convention", "misspelt-key", "topic-not-text", "no-type"],
)
def test_a_device_the_skills_cannot_use_is_refused_by_its_name_and_line(
    tmp_path: Path, device: str, expected: str
) -> None:
    text = f"mqtt:\n  devices:\n    - {{name: hall light, type: light, topic: z2m/hall}}\n    - {device}\n"
    with pytest.raises(ConfigError) as refused:
        load_text(tmp_path, text)
    assert str(refused.value).startswith(f"{tmp_path / 'c.yaml'}:4: mqtt.devices[1] (porch light): ")
    assert expected in str(refused.value)


def test_a_device_that_is_not_a_mapping_is_named_without_the_whole_list(tmp_path: Path) -> None:
    devices = "".join(f"    - {{name: light {i}, type: light, topic: z2m/{i}}}\n" for i in range(20))
    with pytest.raises(ConfigError) as refused:
        load_text(tmp_path, f"mqtt:\n  devices:\n{devices}    - {{type: light, topic: z2m/nameless}}\n")
    message = str(refused.value)
    assert message.endswith("mqtt.devices[20] has no name") and "light 3" not in message


def test_doubtful_devices_and_keys_given_twice_are_warned_once(tmp_path: Path, caplog) -> None:
    text = (
        "llm:\n  threads: 3\n"
        "mqtt:\n  devices:\n"
        "    - {name: Light, type: light, topic: z2m/kitchen, area: kitchen}\n"  # line 5
        "    - {name: light, type: light, topic: z2m/bedroom, area: bedroom}\n"
        "    - {name: hall lamp, type: light, command_topic: ha/hall/set}\n"
        "    - {name: porch, type: cover, convention: homeassistant, state_topic: ha/porch}\n"
        "    - {name: plug, type: switch, topic: 'z2m/+/plug', aliases: [Hall-Lamp]}\n"
        "llm:\n  max_new_tokens: 64\n"  # line 10: replaces the llm section above
    )
    for _ in range(2):  # a reload of the same file
        settings = load_text(tmp_path, text)
    assert settings.llm.max_new_tokens == 64
    path = tmp_path / "c.yaml"
    assert [r.getMessage() for r in caplog.records if r.name == "assistant.config"] == [
        f"{path}:10: llm is given twice (also at line 1); only this one counts, merge them",
        f"{path}:6: mqtt.devices[1] (light): 'light' is also a name of mqtt.devices[0] (Light); a command by it "
        "cannot tell the two apart, give each device its own names",
        f"{path}:7: mqtt.devices[2] (hall lamp): no topic, so it cannot be controlled; give it its Zigbee2MQTT "
        "topic (zigbee2mqtt/NAME) (command_topic is Home Assistant's: add convention: homeassistant)",
        f"{path}:8: mqtt.devices[3] (porch): no command_topic or set_position_topic, so it cannot be controlled",
        f"{path}:9: mqtt.devices[4] (plug): topic 'z2m/+/plug' has a wildcard; nothing is sent to it, a device "
        "needs its own topic",
        f"{path}:9: mqtt.devices[4] (plug): 'Hall-Lamp' is also a name of mqtt.devices[2] (hall lamp); a command "
        "by it cannot tell the two apart, give each device its own names",
    ]
    caplog.clear()
    with pytest.raises(ConfigError, match="llm.max_new_tokens"):  # a config that does not load: its error alone
        load_text(
            tmp_path, text.replace("max_new_tokens: 64", "max_new_tokens: 0").replace("name: plug", "name: socket")
        )
    assert not [r for r in caplog.records if r.name == "assistant.config"]


def test_environment_errors_name_the_variable_or_line_at_fault(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^environment ASSISTANT_SKILS__PATHS: unknown key 'skils' \(did you"):
        load_text(tmp_path, "", {"ASSISTANT_SKILS__PATHS": "[]"})
    # A whole section from the environment would replace the file's: every key not in it lost.
    with pytest.raises(ConfigError, match=r"^environment ASSISTANT_LLM__SAMPLING: llm.sampling is a section; set"):
        load_text(tmp_path, "llm:\n  sampling:\n    top_p: 0.5\n", {"ASSISTANT_LLM__SAMPLING": "{temperature: 0}"})
    with pytest.raises(ConfigError, match=r"^environment ASSISTANT_LLM: llm is a section"):
        load_text(tmp_path, "", {"ASSISTANT_LLM": "3", "ASSISTANT_LLM__THREADS": "2"})
    with pytest.raises(ConfigError, match=r"c\.yaml:1: llm: expected a mapping of settings, got 3$"):
        load_text(tmp_path, "llm: 3\n", {"ASSISTANT_LLM__THREADS": "2"})


def test_an_unknown_key_without_a_likely_meaning_lists_what_the_section_takes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:2: unknown key 'llm.colour' \(llm takes model_dir, backend, "):
        load_text(tmp_path, "llm:\n  colour: blue\n")


def test_configured_folders_and_files_are_checked_with_the_models(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    settings = load_text(
        tmp_path,
        f"skills:\n  paths: [skils]\nmqtt:\n  tls: true\n  ca_file: ca.pem\nstate_dir: {tmp_path / 'state'}\n",
    )
    with pytest.raises(ConfigError) as refused:
        check_model_paths(settings, voice=False)
    assert str(refused.value) == (
        f"{tmp_path / 'c.yaml'}: skills.paths[0]: {tmp_path / 'skils'} is not a folder; "
        f"mqtt.ca_file: {tmp_path / 'ca.pem'} is not a file; state_dir: {tmp_path / 'state'} is not a folder"
    )


def test_a_state_dir_behind_a_file_is_refused_with_the_models(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("")
    settings = load_text(tmp_path, f"state_dir: {tmp_path / 'state' / 'assistant'}\n")
    with pytest.raises(ConfigError) as refused:
        check_model_paths(settings, voice=False)
    assert str(refused.value) == (
        f"{tmp_path / 'c.yaml'}: state_dir: {tmp_path / 'state/assistant'} cannot be made: {tmp_path / 'state'} "
        "is not a folder"
    )


# -- logs ------------------------------------------------------------------------------------------


@pytest.fixture()
def stderr_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A function that makes stderr a file and returns it; the root logger is restored after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with open(tmp_path / "stderr", "w") as stream:
        # Set in the test itself: pytest puts its own capture back in sys.stderr after the fixtures.

        def redirect():
            monkeypatch.setattr(sys, "stderr", stream)
            return stream

        yield redirect
    root.handlers[:] = handlers
    root.setLevel(level)


def test_every_line_of_a_traceback_reaches_the_journal_with_its_priority(
    stderr_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    stderr = stderr_file()
    stat = os.fstat(stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    setup_logging("info")
    try:
        raise RuntimeError("the widget is broken")
    except RuntimeError:
        logging.getLogger("assistant.test").exception("skill boom failed")
    stderr.flush()
    lines = Path(stderr.name).read_text().splitlines()
    # journald makes an entry of each line: without its own prefix a traceback line is "info".
    assert lines[0] == "<3>assistant.test: skill boom failed"
    assert lines[-1] == "<3>RuntimeError: the widget is broken"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)


def test_a_config_that_stops_the_service_is_an_error_in_the_journal(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  threads: 0\n  kv_cache_len: -1\n")
    with open(tmp_path / "journal", "w") as journal:
        stat = os.fstat(journal.fileno())
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        command = [sys.executable, "-m", "assistant", "run", "--text-only", "--config", str(config)]
        env["JOURNAL_STREAM"] = f"{stat.st_dev}:{stat.st_ino}"
        result = subprocess.run(command, stderr=journal, env=env, timeout=60)
    assert result.returncode == 78
    lines = (tmp_path / "journal").read_text().splitlines()  # each line is a record of its own there
    assert lines[0] == f"<3>error: {config}:2: llm.threads: must be at least 1, got 0"
    assert len(lines) == 2 and lines[1].startswith(f"<3>error: {config}:3: llm.kv_cache_len: "), lines


def test_a_terminal_that_inherited_journal_stream_gets_plain_lines(stderr_file, monkeypatch) -> None:
    # A shell started from a service (a desktop terminal is one) inherits the variable, not the stream.
    stderr = stderr_file()
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    setup_logging("info")
    logging.getLogger("assistant.test").warning("hello")
    stderr.flush()
    (line,) = Path(stderr.name).read_text().splitlines()
    assert not line.startswith("<") and line.endswith(" WARNING assistant.test: hello")


@pytest.mark.parametrize(
    ("shut", "config", "named"),
    [
        ("skills", "skills:\n  paths: [skills]\n", "skills.paths[0]: {folder}/skills cannot be read"),
        (  # a home folder: the service's user may not enter it
            "home",
            "llm:\n  model_dir: home/models/qwen\n",
            "llm.model_dir: {folder}/home/models/qwen/manifest.yaml cannot be reached by this user (Permission denied)",
        ),
    ],
)
def test_a_path_the_service_user_cannot_reach_is_named(shut: str, config: str, named: str) -> None:
    """One line naming the key, not a PermissionError's traceback and a restart loop."""
    if os.geteuid() != 0:
        pytest.skip("becoming another user needs root (CI runs as root)")
    with tempfile.TemporaryDirectory() as made:  # in /tmp: reachable by the other user, unlike tmp_path
        folder = Path(made)
        folder.chmod(0o755)
        (folder / "home/models/qwen").mkdir(parents=True)
        (folder / "skills").mkdir()
        (folder / shut).chmod(0o700)  # only its own mode shuts the other user out
        settings = load_text(folder, config)
        message = as_nobody(lambda: check_model_paths(settings, voice=False) or "accepted")  # the service's user
    assert message.startswith(f"ConfigError: {folder / 'c.yaml'}: {named.format(folder=folder)}"), message
