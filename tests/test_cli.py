"""The `assistant` command as a user runs it: help, export, chat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from assistant.llm.chat_template import ChatTemplate


def assistant(*args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_help_lists_the_subcommands() -> None:
    result = assistant("--help")
    assert result.returncode == 0
    for command in ("config", "setup", "run", "say", "chat", "status", "skills", "audio", "service"):
        assert command in result.stdout


def test_setup_then_chat_streams_a_reply_with_its_speed(tiny_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = assistant("setup", "--model", str(tiny_hf), "--target", "host", "--no-speech", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "manifest.yaml").is_file() and (out / "onnx/layer_1.onnx").is_file()

    result = assistant("chat", "--model", str(out), "--max-new-tokens", "12", stdin="turn on the light\n/reset\nhi\n")
    assert result.returncode == 0, result.stderr
    stats = [line for line in result.stderr.splitlines() if "tok/s" in line]
    assert len(stats) == 2  # one per reply
    assert "first token" in stats[0]
    assert result.stdout.count("> ") >= 3  # a prompt for each line and for the end of input


def test_setup_of_a_folder_without_a_model_is_one_clear_line(tmp_path: Path) -> None:
    result = assistant(
        "setup", "--model", str(tmp_path), "--target", "host", "--no-speech", "--out", str(tmp_path / "o")
    )
    assert result.returncode == 78
    expected = f"error: {tmp_path / 'config.json'}: not found; is {tmp_path} a Hugging Face model folder?"
    assert result.stderr.strip() == expected


def test_chat_on_a_missing_model_names_the_fix(tmp_path: Path) -> None:
    result = assistant("chat", "--model", str(tmp_path / "nothing"))
    assert result.returncode == 78
    assert "assistant setup" in result.stderr and "Traceback" not in result.stderr


def test_chat_template_renders_like_transformers(tiny_hf: Path) -> None:
    from transformers import AutoTokenizer

    messages = [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "打开厨房的灯"},
        {"role": "assistant", "content": "好的 😀"},
        {"role": "user", "content": "thanks"},
    ]
    ours = ChatTemplate(tiny_hf).render(messages)
    theirs = AutoTokenizer.from_pretrained(tiny_hf).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert ours == theirs
    # Without a system message the template adds its default one.
    assert ChatTemplate(tiny_hf).render(messages[1:2]).startswith("<|im_start|>system\nYou are a helpful assistant.")
