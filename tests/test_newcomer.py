"""The first hour, through the real `assistant` command in a temporary HOME: help, setup offline and
interrupted, up-to-date rebuilds, progress on a terminal, `doctor`, `service install` into a temporary root."""

from __future__ import annotations

import http.server
import io
import json
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import assistant as assistant_package
from assistant.config import ConfigError, check_model_paths, load_settings
from tests.other_user import as_nobody

PYTHON_DIR = str(Path(sys.executable).parent)


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A newcomer's environment: a fresh HOME, no ASSISTANT_* settings, Hugging Face unreachable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "HF_", "XDG_"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env |= {"HOME": str(home), "HF_HOME": str(home / ".cache/huggingface"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    return env | extra


def assistant(tmp_path: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        capture_output=True,
        text=True,
        env=env or environment(tmp_path),
        cwd=tmp_path,
        timeout=timeout,
    )


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# -- a local HTTP server for the speech models ---------------------------------------------------


class SpeechServer(http.server.BaseHTTPRequestHandler):
    """Serves `server.files`; with `server.trickle`, sends the body slowly (an interrupt lands mid-transfer)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        data = self.server.files.get(self.path)
        self.server.requests.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        step = 64 * 1024
        for offset in range(start, len(data), step):
            try:
                self.wfile.write(data[offset : offset + step])
            except OSError:
                return
            if self.server.trickle:
                time.sleep(0.2)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SpeechServer)
    httpd.files, httpd.requests, httpd.trickle = {}, [], False
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def vosk_zip() -> bytes:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("vosk-model-test/am/final.mdl", os.urandom(3_000_000))  # incompressible: a real transfer
        z.writestr("vosk-model-test/conf/model.conf", b"--sample-frequency=16000")
    return archive.getvalue()


def speech_config(tmp_path: Path, asr_url: str, voice_url: str, **extra: str) -> Path:
    config = tmp_path / "config.yaml"
    text = (
        f"asr:\n  model: models/vosk-model-test\n  model_url: {asr_url}\n"
        f"tts:\n  voice: models/piper/test.onnx\n  voice_url: {voice_url}\n"
    )
    config.write_text(text + "".join(f"{key}: {value}\n" for key, value in extra.items()))
    return config


def piper_voice() -> tuple[bytes, bytes]:
    """A voice and its settings, as downloaded: setup refuses a file that no piper could load."""
    from tests.piper_voice import make_piper_voice

    with tempfile.TemporaryDirectory() as folder:
        voice = make_piper_voice(Path(folder))
        return voice.read_bytes(), Path(f"{voice}.json").read_bytes()


def serve_speech(server) -> tuple[str, str]:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    voice, settings = piper_voice()
    server.files |= {"/vosk.zip": vosk_zip(), "/voice.onnx": voice, "/voice.onnx.json": settings}
    return f"{base}/vosk.zip", f"{base}/voice.onnx"


# -- the command line ------------------------------------------------------------------------------


def test_bare_command_prints_help_and_options_work_after_the_subcommand(tmp_path: Path) -> None:
    bare = assistant(tmp_path)
    assert bare.returncode == 0 and "commands:" in bare.stdout and "doctor" in bare.stdout
    assert "assistant setup --target host" in bare.stdout  # where a newcomer starts
    for command in ("config", "setup", "run", "say", "chat", "status", "skills", "audio", "service", "doctor"):
        assert f"\n    {command} " in bare.stdout  # each with its one-line description
    version = assistant(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "assistant 0.1.0"
    group = assistant(tmp_path, "service")
    assert group.returncode == 0 and "install" in group.stdout

    setup_help = " ".join(assistant(tmp_path, "setup", "--help").stdout.split())  # unwrapped
    assert "(default: ax630c)" in setup_help and "(default: 1023)" in setup_help
    assert "host: ONNX layers for this PC only" in setup_help

    # A config to start from, outside any checkout: the packaged default.
    init = assistant(tmp_path, "config", "init")
    assert init.returncode == 0 and "next: `assistant setup --target host`" in init.stdout
    assert (tmp_path / "config.yaml").read_text() == (Path(__file__).parents[1] / "config.yaml").read_text()
    assert assistant(tmp_path, "config", "init").returncode == 1  # never overwrites

    # --log-level on either side of the subcommand.
    after = assistant(tmp_path, "config", "check", "--log-level", "error")
    before = assistant(tmp_path, "--log-level", "error", "config", "check")
    assert after.returncode == before.returncode == 78  # the model is missing: one clear line
    assert after.stderr == before.stderr


# -- setup: offline, interrupted, up to date, pulsar2 missing, progress -----------------------------


def test_offline_setup_says_what_to_do_instead_of_resume(tmp_path: Path, tiny_hf: Path, server) -> None:
    # Nothing listens on port 9: the machine is offline as far as these downloads go.
    speech_config(tmp_path, "http://127.0.0.1:9/vosk.zip", "http://127.0.0.1:9/voice.onnx")
    result = assistant(tmp_path, "setup", "--target", "host")
    assert result.returncode == 1
    error = last_line(result.stderr)
    assert error.startswith("error: cannot download http://127.0.0.1:9/vosk.zip")
    for way in ("--model DIR", "file:///", "asr.model_url", "--no-speech", "assistant run --text-only"):
        assert way in error
    assert "resume" not in error
    assert not (tmp_path / "models/.qwen2-0.5b-instruct.partial").exists()  # the model build never started

    result = assistant(tmp_path, "setup", "--target", "host", "--no-speech")  # the model from Hugging Face
    assert result.returncode == 1
    error = last_line(result.stderr)
    assert error.startswith("error: cannot reach Hugging Face to download Qwen/Qwen2-0.5B-Instruct")
    assert "--model DIR" in error and "resume" not in error

    # The way forward it names: a local checkpoint and file:// URLs.
    asr, voice = tmp_path / "vosk.zip", tmp_path / "voice.onnx"
    asr.write_bytes(vosk_zip())
    voice_bytes, settings = piper_voice()
    voice.write_bytes(voice_bytes)
    Path(f"{voice}.json").write_bytes(settings)
    speech_config(tmp_path, asr.as_uri(), voice.as_uri())
    result = assistant(tmp_path, "setup", "--target", "host", "--model", str(tiny_hf), "--out", "models/tiny")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models/vosk-model-test/conf/model.conf").is_file()
    assert (tmp_path / "models/piper/test.onnx.json").is_file()
    assert (tmp_path / "models/tiny/manifest.yaml").is_file()
    line = last_line(result.stdout)
    assert (
        line == "next: set llm.model_dir: models/tiny in config.yaml, then `assistant run`"
    )  # as config.yaml names paths


def test_interrupted_setup_says_how_to_resume_and_resumes(tmp_path: Path, tiny_hf: Path, server) -> None:
    asr_url, voice_url = serve_speech(server)
    speech_config(tmp_path, asr_url, voice_url)
    server.trickle = True
    args = [sys.executable, "-m", "assistant", "setup", "--target", "host", "--model", str(tiny_hf)]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=environment(tmp_path), cwd=tmp_path)
    part = tmp_path / "models/vosk-model-test.zip.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0):  # speech models come first, before the model build
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert last_line(stderr) == (
        "interrupted: finished steps and partial downloads are kept; run the same command again to resume"
    )
    assert "Traceback" not in stderr
    kept = part.stat().st_size
    assert kept > 0

    server.trickle = False
    result = assistant(tmp_path, *args[3:])
    assert result.returncode == 0, result.stderr
    assert ("/vosk.zip", f"bytes={kept}-") in server.requests  # only the rest was fetched
    assert (tmp_path / "models/vosk-model-test/am/final.mdl").stat().st_size == 3_000_000


def test_finished_build_is_up_to_date_at_once_and_changed_options_are_named(
    tmp_path: Path, tiny_hf: Path, pulsar2_bin: Path
) -> None:
    env = environment(tmp_path, PATH=f"{pulsar2_bin}:{PYTHON_DIR}")
    args = ["setup", "--model", str(tiny_hf), "--target", "host", "--no-speech", "--out", "models/tiny"]
    first = assistant(tmp_path, *args, "--log-level", "debug", env=env)
    assert first.returncode == 0, first.stderr
    assert "host layer 2/2" in first.stderr  # --log-level after the subcommand took effect
    assert "step embeddings" in first.stdout
    assert last_line(first.stdout).startswith("next: ")

    start = time.monotonic()
    again = assistant(tmp_path, *args, env=env)
    seconds = time.monotonic() - start
    assert again.returncode == 0, again.stderr
    assert seconds < 2.0, f"an up-to-date model took {seconds:.1f} s"
    assert "models/tiny is up to date (built with the same options); --force rebuilds it" in again.stderr
    assert "step embeddings" not in again.stdout  # nothing ran

    # A board build that fails leaves an unfinished build; other options discard it, named.
    failed = assistant(tmp_path, *args[:3], "--target", "ax650n", "--no-speech", "--out", "models/tiny",
                       env={**env, "PULSAR2_FAIL": "1"})  # fmt: skip
    assert failed.returncode == 1 and (tmp_path / "models/.tiny.partial").is_dir()
    changed = assistant(tmp_path, *args, "--kv-cache-len", "512", env=env)
    assert changed.returncode == 0, changed.stderr
    assert "discarding the unfinished build in models/.tiny.partial (options changed: " in changed.stderr
    assert "--kv-cache-len 1023 → 512, --target ax650n → host)" in changed.stderr
    assert yaml.safe_load((tmp_path / "models/tiny/manifest.yaml").read_text())["kv_cache_len"] == 512


def test_missing_pulsar2_is_refused_before_any_work(tmp_path: Path, tiny_hf: Path, server) -> None:
    asr_url, voice_url = serve_speech(server)
    speech_config(tmp_path, asr_url, voice_url)
    env = environment(tmp_path, PATH=PYTHON_DIR)  # neither pulsar2 nor docker
    result = assistant(tmp_path, "setup", "--model", str(tiny_hf), env=env)  # the default target: ax630c
    assert result.returncode == 1
    assert last_line(result.stderr).startswith("error: no pulsar2 found on PATH for the ax630c build;")
    assert "docker" in result.stderr and "--target host" in result.stderr
    assert not (tmp_path / "models").exists() and server.requests == []  # nothing fetched, nothing exported


def _run_on_a_terminal(args: list[str], env: dict, cwd: Path) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; return the exit status and what the terminal showed."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary,
                               env=env, cwd=cwd)  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        assert ready, "no output for 2 minutes"
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other end closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return process.wait(timeout=60), shown.decode(errors="replace")


def test_progress_bars_on_a_terminal_and_plain_lines_otherwise(tmp_path: Path, tiny_hf: Path, server) -> None:
    asr_url, voice_url = serve_speech(server)
    speech_config(tmp_path, asr_url, voice_url)
    args = ["setup", "--target", "host", "--model", str(tiny_hf), "--out", "models/tiny"]
    code, shown = _run_on_a_terminal([sys.executable, "-m", "assistant", *args], environment(tmp_path), tmp_path)
    assert code == 0, shown
    bar = [line for line in shown.replace("\r", "\n").splitlines() if line.startswith("vosk-model-test.zip:")]
    assert bar and "100%" in bar[-1] and "/s" in bar[-1], repr(shown)  # tqdm: percentage, sizes and rate
    assert re.search(r" (\d\.\d+)M/\1M ", bar[-1])
    assert any(
        line.startswith("host layers: 100%") and "3/3" in line for line in shown.replace("\r", "\n").splitlines()
    )

    for path in ("models/vosk-model-test", "models/piper", "models/tiny"):
        subprocess.run(["rm", "-rf", str(tmp_path / path)], check=True)
    plain = assistant(tmp_path, *args)
    assert plain.returncode == 0, plain.stderr
    assert "\r" not in plain.stderr and "|" not in plain.stderr
    assert "vosk-model-test.zip: 100% (3.0 of 3.0 MB)" in plain.stderr
    assert "host layers: 100% (3 of 3)" in plain.stderr


# -- the first run without speech hardware ----------------------------------------------------------


def test_doctor_lists_every_problem_at_once(tmp_path: Path, tiny_int8: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    (tmp_path / "stale").write_text("")
    speech_config(tmp_path, "http://127.0.0.1:9/vosk.zip", "http://127.0.0.1:9/voice.onnx",
                  llm=f"{{model_dir: {tmp_path / 'no-model'}}}", state_dir=str(tmp_path / "not-a-folder/state"),
                  control=f"{{socket: {tmp_path / 'stale'}}}")  # fmt: skip
    result = assistant(tmp_path, "doctor")
    assert result.returncode == 1
    problems = [line.split(":")[0].split()[1] for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert {"llm.model_dir", "asr.model", "tts.voice", "control.socket", "state_dir"} <= set(problems)
    assert "assistant setup --target host" in result.stdout and "assistant run --text-only" in result.stdout
    assert last_line(result.stdout) == f"{len(problems)} problems found"

    # The built-in skills' tools do not fit the tiny model's own 256-row context: the advice says what would.
    speech_config(tmp_path, "http://127.0.0.1:9/vosk.zip", "http://127.0.0.1:9/voice.onnx",
                  llm=f"{{model_dir: {tiny_int8}}}", state_dir=str(tmp_path / "state"),
                  control=f"{{socket: {tmp_path / 'control.sock'}}}")  # fmt: skip
    tight = assistant(tmp_path, "doctor", "--text-only")
    assert tight.returncode == 1 and "PROBLEM  prompt budget" in tight.stdout and "kv_cache_len" in tight.stdout
    # ONNX layers take any context: the fix is a setting, not another model.
    assert re.search(
        r"kv_cache_len (\d+) or more \(the host backend takes any: set llm\.kv_cache_len to \1\)", tight.stdout
    )
    assert last_line(tight.stdout) == "1 problem found"

    # The text-only path needs only the model (with room for its prompt), the socket and the state directory.
    speech_config(tmp_path, "http://127.0.0.1:9/vosk.zip", "http://127.0.0.1:9/voice.onnx",
                  llm=f"{{model_dir: {tiny_int8}, kv_cache_len: 8192}}", state_dir=str(tmp_path / "state"),
                  control=f"{{socket: {tmp_path / 'control.sock'}}}")  # fmt: skip
    text_only = assistant(tmp_path, "doctor", "--text-only")
    assert text_only.returncode == 0, text_only.stdout
    assert "ok       prompt budget: system prompt" in text_only.stdout
    assert "ok       speech models, microphone, speaker: not checked (--text-only)" in text_only.stdout
    assert last_line(text_only.stdout) == "all good: `assistant run --text-only`"  # not the voice's go-ahead

    # A skill file that does not load is a problem of the report, not only a line on stderr.
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills" / "coffee.py").write_text("from assistant import skill\n\n@skill\ndef coffee() -> str\n")
    broken = assistant(tmp_path, "doctor", "--text-only")
    assert broken.returncode == 1 and last_line(broken.stdout) == "1 problem found"
    assert f"PROBLEM  skills: {tmp_path / 'skills' / 'coffee.py'}:4: syntax error" in broken.stdout


def test_doctor_lists_every_config_problem_and_every_path_run_would_refuse(
    tmp_path: Path, tiny_int8: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assistant.doctor import diagnose

    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  threads: two\n  backend: gpu\nmqtt:\n  port: 0\ncolour: blue\n")
    problems = [(f.what, f.detail, f.fix) for f in diagnose(config, text_only=True) if f.fix]
    assert problems == [
        ("config", f"{config}:2: llm.threads: expected a whole number, got 'two'", f"edit {config}"),
        ("config", f"{config}:3: llm.backend: expected one of 'auto', 'axengine', 'onnxruntime', got 'gpu'",
         f"edit {config}"),
        ("config", f"{config}:5: mqtt.port: must be a port number, got 0", f"edit {config}"),
        ("config", f"{config}:6: unknown key 'colour' (the top level takes audio, wake, asr, llm, tts, skills, mqtt, "
         "control, logging, state_dir); nothing else was checked", f"edit {config}"),
    ]  # fmt: skip

    # What `assistant run` starts with but does not do as meant: only a warning in a log before.
    config.write_text(
        "llm:\n  threads: 3\nmqtt:\n  devices:\n    - {name: lamp, type: light}\nllm:\n  max_new_tokens: 9\n"
    )
    problems = [(f.detail, f.fix) for f in diagnose(config, text_only=True) if f.what == "config" and f.fix]
    assert problems == [
        (f"{config}:6: llm is given twice (also at line 1); only this one counts, merge them", f"edit {config}"),
        (f"{config}:5: mqtt.devices[0] (lamp): no topic, so it cannot be controlled; give it its Zigbee2MQTT topic "
         "(zigbee2mqtt/NAME)", f"edit {config}"),
    ]  # fmt: skip

    # A problem from the environment is fixed there, not in the file.
    config.write_text("llm:\n  threads: 2\n")
    monkeypatch.setenv("ASSISTANT_LLM__THREADS", "two")
    (problem,) = [f for f in diagnose(config, text_only=True) if f.fix]
    assert problem.fix == "change or unset ASSISTANT_LLM__THREADS: the environment overrides the file"
    monkeypatch.delenv("ASSISTANT_LLM__THREADS")

    # Paths that `assistant run` refuses at start-up were "all good" here before.
    (tmp_path / "a-file").write_text("")
    config.write_text(
        f"llm: {{model_dir: {tiny_int8}, kv_cache_len: 8192}}\ncontrol: {{socket: {tmp_path / 'control.sock'}}}\n"
        "skills: {paths: [a-file, no-such-folder]}\nmqtt: {tls: true, ca_file: no-ca.pem}\nstate_dir: a-file\n"
    )
    problems = [(f.what, f.detail) for f in diagnose(config, text_only=True) if f.fix]
    assert problems == [
        ("skills.paths[0]", f"{tmp_path / 'a-file'} is not a folder"),
        ("skills.paths[1]", f"{tmp_path / 'no-such-folder'} is not a folder"),
        ("mqtt.ca_file", f"{tmp_path / 'no-ca.pem'} is not a file"),
        ("state_dir", f"{tmp_path / 'a-file'} is not a folder"),  # not "is not writable"
    ]
    with pytest.raises(ConfigError) as refused:  # what `assistant run` says of the same config
        check_model_paths(load_settings(config), voice=False)
    assert all(f"{what}: {detail}" in str(refused.value) for what, detail in problems)


def test_doctor_names_a_voice_that_is_a_folder(tmp_path: Path) -> None:
    from assistant.doctor import diagnose

    (tmp_path / "models/piper").mkdir(parents=True)  # the folder of voices named, not the voice in it
    config = tmp_path / "config.yaml"
    config.write_text(f"tts:\n  voice: models/piper\ncontrol:\n  socket: {tmp_path / 'control.sock'}\n")
    (voice,) = [f for f in diagnose(config) if f.what == "tts.voice"]
    assert voice.detail == f"{tmp_path / 'models/piper'} is a folder, not a piper voice file"
    assert voice.fix == "set tts.voice to the voice's .onnx file, with its .onnx.json beside it"


def test_doctor_names_a_socket_folder_the_assistant_would_refuse(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # `assistant run` refuses it: another user could replace the socket
    (tmp_path / "config.yaml").write_text(f"control:\n  socket: {shared / 'control.sock'}\n")
    result = assistant(tmp_path, "doctor", "--text-only")
    assert result.returncode == 1
    line = f"PROBLEM  control.socket: {shared} is writable by other users, who could replace the control socket"
    assert line in result.stdout.splitlines()


def test_doctor_run_by_a_user_kept_out_of_the_service_folders_says_so(tiny_int8: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("becoming another user needs root (CI runs as root)")
    from assistant.doctor import diagnose, report

    with tempfile.TemporaryDirectory() as made:  # in /tmp: reachable by the other user, unlike tmp_path
        folder = Path(made)
        folder.chmod(0o755)
        shutil.copytree(tiny_int8, folder / "state/models/tiny")
        (folder / "state").chmod(0o700)  # as systemd makes the service's StateDirectory
        config = folder / "config.yaml"
        config.write_text(f"llm:\n  model_dir: {folder / 'state/models/tiny'}\nstate_dir: {folder / 'state'}\n")
        config.chmod(0o644)
        diagnose(config, text_only=True)  # as root: every module doctor imports is loaded before the fork
        lines = as_nobody(lambda: report(diagnose(config, text_only=True))).splitlines()  # an operator's account
    manifest = folder / "state/models/tiny/manifest.yaml"
    problem = f"PROBLEM  llm.model_dir: {manifest}: this user may not look at it (Permission denied)"
    assert problem in lines, lines
    assert lines[lines.index(problem) + 1].strip().startswith("fix: run doctor as the service's user")


def test_run_without_speech_models_names_them_all_and_the_text_only_way(tmp_path: Path, tiny_int8: Path) -> None:
    config = speech_config(tmp_path, "http://127.0.0.1:9/vosk.zip", "http://127.0.0.1:9/voice.onnx",
                           llm=f"{{model_dir: {tiny_int8}}}")  # fmt: skip
    result = assistant(tmp_path, "run", "--config", str(config))
    assert result.returncode == 78
    line = last_line(result.stderr)
    assert "asr.model: models/vosk-model-test does not exist" in line.replace(str(tmp_path) + "/", "")
    assert "tts.voice: " in line and "`assistant run --text-only`" in line and "assistant doctor" in line


def test_status_is_readable_and_json_on_request(tmp_path: Path, tiny_int8: Path) -> None:
    sock = tmp_path / "control.sock"
    config = tmp_path / "config.yaml"
    # Room for the built-in skills' tools in the tiny model's context.
    config.write_text(f"llm:\n  model_dir: {tiny_int8}\n  kv_cache_len: 8192\ncontrol:\n  socket: {sock}\n"
                      f"state_dir: {tmp_path / 's'}\n")  # fmt: skip
    env = environment(tmp_path)
    daemon = subprocess.Popen([sys.executable, "-m", "assistant", "run", "--text-only", "--config", str(config)],
                              env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "state: ready" not in (status := assistant(tmp_path, "status", "--config", str(config), env=env)).stdout:
            assert time.monotonic() < deadline and daemon.poll() is None, status.stderr
            time.sleep(0.5)
        lines = status.stdout.splitlines()
        assert f"model: {yaml.safe_load((tiny_int8 / 'manifest.yaml').read_text())['name']}" in lines
        assert "busy: no" in lines and not status.stdout.startswith("{")
        raw = json.loads(assistant(tmp_path, "status", "--json", "--config", str(config), env=env).stdout)
        assert raw["type"] == "status" and raw["busy"] is False
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)


# -- service install into a temporary root ----------------------------------------------------------


def test_service_install_creates_the_config_copies_models_and_records_the_socket(tmp_path: Path) -> None:
    root, models = tmp_path / "root", tmp_path / "built"
    (models / "qwen2-0.5b-instruct").mkdir(parents=True)
    (models / "qwen2-0.5b-instruct/manifest.yaml").write_text("name: qwen\n")
    (models / ".qwen2-0.5b-instruct.partial").mkdir()  # an unfinished build is not copied
    # This interpreter may live under /root or /home (pyenv, a venv): --allow-home lets the service read it.
    # The checkout may be anywhere, /tmp included, which PrivateTmp would hide: the command runs from a
    # copy of the package (and its README) in /srv, where a service can read it.
    installed = Path(tempfile.mkdtemp(prefix="assistant-test-", dir="/srv"))
    try:
        shutil.copytree(Path(assistant_package.__file__).parent, installed / "assistant",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        shutil.copy(Path(assistant_package.__file__).parent.parent / "README.md", installed)
        args = ["service", "install", "--root", str(root), "--models", str(models), "--user", "root", "--allow-home"]
        env = environment(tmp_path) | {"PYTHONPATH": str(installed)}
        result = assistant(tmp_path, *args, env=env)
    finally:
        shutil.rmtree(installed)
    assert result.returncode == 0, result.stderr

    config = root / "etc/assistant/config.yaml"
    settings = yaml.safe_load(config.read_text())
    assert settings["llm"]["model_dir"] == "/var/lib/assistant/models/qwen2-0.5b-instruct"
    assert settings["asr"]["model"].startswith("/var/lib/assistant/models/")
    assert (root / "var/lib/assistant/models/qwen2-0.5b-instruct/manifest.yaml").is_file()
    assert not (root / "var/lib/assistant/models/.qwen2-0.5b-instruct.partial").exists()
    assert (root / "etc/assistant/socket").read_text() == "/run/assistant/assistant.sock\n"

    unit = root / "etc/systemd/system/assistant.service"
    text = unit.read_text()
    assert "run --config /etc/assistant/config.yaml" in text and "ProtectHome=read-only" in text
    assert "Documentation=file://" in text and "/opt/assistant" not in text
    assert "not installed yet" in result.stdout and "/var/lib/assistant/models/vosk-model" in result.stdout
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr


def test_service_install_refuses_what_the_unit_hides_and_a_second_instance(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"  # under /tmp: the service's PrivateTmp hides it
    config.write_text("llm:\n  model_dir: /home/someone/models/qwen\nstate_dir: /srv/state\n")
    units = tmp_path / "units"
    result = assistant(tmp_path, "service", "install", "--config", str(config), "--unit-dir", str(units))
    assert result.returncode == 1
    error = result.stderr
    assert f"{config} (the config): hidden from the service by PrivateTmp=yes" in error
    assert "/home/someone/models/qwen (llm.model_dir): hidden from the service by ProtectHome=yes" in error
    assert "--allow-home" in error and "--models DIR" in error
    assert "state_dir: /srv/state is read-only for the service (ProtectSystem=strict" in error
    assert not units.exists()

    root = Path(f"/tmp/as-{os.getpid()}")  # short: a Unix socket path has at most 107 bytes
    try:
        run_dir = root / "run/assistant"
        run_dir.mkdir(parents=True)
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        live.bind(str(run_dir / "assistant.sock"))
        live.listen()
        result = assistant(tmp_path, "service", "install", "--root", str(root), "--allow-home")
        assert result.returncode == 1
        assert "/run/assistant/assistant.sock: an assistant already answers there; stop it first" in result.stderr
        live.close()
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=True)


def test_a_skill_author_follows_the_readme(tmp_path: Path) -> None:
    """The README's example skill saved where it says, and its commands run as written."""
    readme = (Path(assistant_package.__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("\n## Skills") : readme.index("* **Schema**")]
    assert assistant(tmp_path, "config", "init").returncode == 0
    (tmp_path / "skills").mkdir()
    (tmp_path / "skills/water.py").write_text(re.search(r"```python\n(.*?)```", section, re.S).group(1))
    commands = [" ".join(c.split()) for c in re.findall(r"`(assistant skills[^`]*)`", section)]
    assert len(commands) == 2, commands
    listed = assistant(tmp_path, *shlex.split(commands[0])[1:])
    assert listed.returncode == 0, listed.stderr
    assert "drink_water: Count the glasses of water drunk today.\n" in listed.stdout
    assert "say (zh): 我喝了{glasses}杯水" in listed.stdout
    called = assistant(tmp_path, *shlex.split(commands[1])[1:])
    said = re.search(r'runs it as the assistant would \("([^"]+)"\)', " ".join(section.split())).group(1)
    assert (called.returncode, called.stdout) == (0, said + "\n"), called.stderr
