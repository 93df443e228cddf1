"""`assistant config check` on the shipped config and on broken ones, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from assistant.config import ConfigError, load_settings

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


def broken(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(SHIPPED.read_text() + text)
    return path


@pytest.mark.parametrize(
    ("appended", "expected"),
    [
        ("audio: [unclosed\n", "invalid YAML"),
        ("colour: blue\n", "unknown key 'colour'"),
        ("mqtt:\n  port: eighteen\n", "mqtt.port: expected a whole number, got 'eighteen'"),
        ("llm:\n  model_dir: /nonexistent/qwen\n", "llm.model_dir: /nonexistent/qwen/manifest.yaml does not exist"),
        ("llm:\n  backend: gpu\n", "llm.backend: expected one of 'auto', 'axengine', 'onnxruntime', got 'gpu'"),
    ],
    ids=["bad-yaml", "unknown-key", "wrong-type", "missing-model-dir", "bad-enum"],
)
def test_broken_config_is_one_clear_line(
    tmp_path: Path, installed_models: dict[str, str], appended: str, expected: str
) -> None:
    # Later duplicate sections replace the shipped ones (YAML's last key wins), which is what
    # a user editing the bottom of the file would see too.
    config = broken(tmp_path, appended)
    env = dict(installed_models)
    if "model_dir" in appended:  # the file's own broken value must be the one in force
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
    ],
    ids=["latin-1", "nested"],
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
