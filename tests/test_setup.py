"""`assistant setup`: builds from a local folder, downloads from a real local HTTP server, pulsar2 runs."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import yaml

from assistant.llm.checkpoint import Checkpoint
from assistant.llm.embeddings import EMBEDDINGS_FILE, write_embeddings
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.setup.download import SetupError, download, download_and_unzip
from tests.small_disk import fill, small_disk
from tests.tiny_model import make_tiny_qwen2


def assistant(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=300
    )


def test_host_build_from_a_local_folder_runs_and_verifies(tiny_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "tiny"
    result = assistant("setup", "--model", str(tiny_hf), "--target", "host", "--no-speech", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "onnx/" in result.stdout and "step embeddings" in result.stdout  # the summary table
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    assert set(manifest["backends"]) == {"onnxruntime"}
    for name, info in manifest["files"].items():
        assert (out / name).stat().st_size == info["size"]
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == info["sha256"]
    assert not list(out.parent.glob(".*"))  # no partial or old build left behind

    engine = Engine(out)
    assert len(list(engine.generate(engine.tokenizer.encode("turn on the light").ids, Sampler(), 5))) > 0

    verified = assistant("setup", "--verify", str(out))
    assert verified.returncode == 0 and "one prefill and one decode step ran" in verified.stdout
    (out / "onnx/layer_0.onnx").write_bytes(b"corrupt" + (out / "onnx/layer_0.onnx").read_bytes()[7:])
    corrupt = assistant("setup", "--verify", str(out))
    assert corrupt.returncode == 78 and "layer_0.onnx: sha256 differs" in corrupt.stderr


def test_a_chat_template_file_is_checked_and_verify_names_files_it_does_not_know(tiny_hf: Path, tmp_path: Path) -> None:
    """Current checkpoints keep the template in chat_template.jinja, which the engine prefers."""
    ck, out = tmp_path / "ck", tmp_path / "m"
    shutil.copytree(tiny_hf, ck)
    tokenizer_config = json.loads((ck / "tokenizer_config.json").read_text())
    (ck / "chat_template.jinja").write_text(tokenizer_config.pop("chat_template"))
    (ck / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert host_setup(str(ck), "--out", str(out)).returncode == 0
    assert "chat_template.jinja" in yaml.safe_load((out / "manifest.yaml").read_text())["files"]

    (out / "notes.txt").write_text("mine")
    verified = assistant("setup", "--verify", str(out))
    assert verified.returncode == 0 and verified.stdout.strip().endswith(
        "not in the manifest, so never read: notes.txt"
    )

    template = (out / "chat_template.jinja").read_text()
    (out / "chat_template.jinja").write_text(template[:100])
    for command in (["setup", "--verify", str(out)], ["chat", "--model", str(out)]):
        cut = assistant(*command)
        assert cut.returncode == 78 and f"{out / 'chat_template.jinja'}: 100 bytes" in one_error_line(cut)

    (out / "chat_template.jinja").write_text(template)
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    del manifest["files"]["chat_template.jinja"]  # as a build made before the template was listed
    (out / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    old = assistant("setup", "--verify", str(out))
    assert old.returncode == 78 and "chat_template.jinja: not listed in manifest.yaml" in one_error_line(old)
    assert "--force" in one_error_line(old)


def test_weight_type_s4_builds_4bit_host_layers(tiny_hf: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "tiny-s4"
    args = ["--target", "host", "--weight-type", "s4", "--no-speech", "--out", str(out)]
    result = assistant("setup", "--model", str(tiny_hf), *args)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load((out / "manifest.yaml").read_text())["backends"]["onnxruntime"]["weights"] == "s4"

    def bits(graph: str) -> set[int]:
        nodes = onnx.load(out / "onnx" / graph).graph.node
        return {a.i for n in nodes if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "bits"}

    assert bits("layer_0.onnx") == {4} and bits("post.onnx") == {8}  # the lm_head stays 8-bit
    engine = Engine(out)
    assert len(list(engine.generate(engine.tokenizer.encode("turn on the light").ids, Sampler(), 5))) > 0


def test_embedding_pipeline_is_bit_exact_from_float32(tmp_path: Path) -> None:
    hf = make_tiny_qwen2(tmp_path / "hf")  # saved in float32: the bf16 rounding happens here
    checkpoint = Checkpoint(hf)
    path = write_embeddings(checkpoint, tmp_path, keep_intermediate=True)
    values = checkpoint.f32("model.embed_tokens.weight")
    expected = values.astype(ml_dtypes.bfloat16).view(np.uint16)
    assert np.array_equal(np.fromfile(path, "<u2").reshape(values.shape), expected)
    assert path.name == EMBEDDINGS_FILE
    assert np.array_equal(np.load(tmp_path / "model.embed_tokens.weight.npy"), values)
    assert (tmp_path / "model.embed_tokens.weight.float32.bin").stat().st_size == values.nbytes


def test_board_build_runs_pulsar2_with_the_exact_command(tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path) -> None:
    out, argv = tmp_path / "models" / "tiny", tmp_path / "argv.json"
    env = {"PULSAR2_ARGV": str(argv), "PATH": f"{pulsar2_bin}:{os.environ['PATH']}"}
    history = ["--last-kv-cache-len", "512", "--last-kv-cache-len", "256"]
    result = assistant(
        "setup", "--model", str(tiny_hf), "--target", "ax630c", "--no-speech", "--out", str(out), *history, env=env
    )
    assert result.returncode == 0, result.stderr
    work = tmp_path / "models" / ".tiny.partial"
    assert json.loads(argv.read_text()) == [
        "llm_build",
        "--input_path", str(tiny_hf),
        "--output_path", str(work / "axmodel_build"),
        "--kv_cache_len", "1023",
        "--model_config", str(work / "pulsar2_config.json"),
        "--hidden_state_type", "bf16",
        "--weight_type", "s8",
        "--chip", "AX620E",
        "--prefill_len", "128",
        "--last_kv_cache_len", "256",
        "--last_kv_cache_len", "512",
    ]  # fmt: skip
    manifest = yaml.safe_load((out / "manifest.yaml").read_text())
    board = manifest["backends"]["axengine"]
    assert board["layers"] == ["axmodel/qwen_l0.axmodel", "axmodel/qwen_l1.axmodel"]
    assert board["prefill_len"] == 128 and board["kv_history"] == [256, 512] and "onnxruntime" in manifest["backends"]
    # The build's qwen2_p128_l{i}_together.axmodel files, matched by the index in their names.
    with zipfile.ZipFile(out / "axmodel/qwen_l1.axmodel") as archive:
        assert b'"name": "layer_1"' in archive.read("model.onnx") or b"layer_1" in archive.read("model.onnx")
    config = json.loads((out / "pulsar2_config.json").read_text())
    assert config["num_key_value_heads"] == 2 and config["rope_theta_base"] == 1e6 and config["model_type"] == "qwen"


def test_history_groups_that_cannot_fit_are_refused_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "tiny"
    args = ["setup", "--model", str(tiny_hf), "--no-speech", "--out", str(out), "--last-kv-cache-len", "960"]
    result = assistant(*args)
    assert (
        result.returncode == 1 and "--last-kv-cache-len 960" in result.stderr and "between 1 and 896" in result.stderr
    )
    assert not (tmp_path / "models").exists()  # nothing was built
    host = assistant("setup", "--model", "Qwen/Qwen2-0.5B-Instruct", "--target", "host", "--last-kv-cache-len", "-3")
    assert host.returncode == 1 and "--last-kv-cache-len -3" in host.stderr  # refused before the download too


def test_failed_pulsar2_leaves_the_old_model_and_resumes(tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path) -> None:
    out, argv = tmp_path / "models" / "tiny", tmp_path / "argv.json"
    env = {"PULSAR2_ARGV": str(argv), "PATH": f"{pulsar2_bin}:{os.environ['PATH']}"}
    first = assistant("setup", "--model", str(tiny_hf), "--target", "host", "--no-speech", "--out", str(out), env=env)
    assert first.returncode == 0
    old_manifest = (out / "manifest.yaml").read_text()

    args = ["setup", "--model", str(tiny_hf), "--target", "ax650n", "--no-speech", "--out", str(out)]
    failed = assistant(*args, env={**env, "PULSAR2_FAIL": "1"})
    assert failed.returncode == 1
    error = failed.stderr[failed.stderr.index("error: ") :]
    assert "exit status 3" in error and "ERROR: out of memory" in error
    assert "compiling layer 29" in error and "compiling layer 5\n" not in error  # only the last lines
    assert (out / "manifest.yaml").read_text() == old_manifest  # the previous model is untouched
    Engine(out)  # and still loads

    resumed = assistant(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "onnxruntime: already done" in resumed.stderr and "embeddings: already done" in resumed.stderr
    assert json.loads(argv.read_text())[14:19] == ["AX650", "--prefill_len", "128", "--last_kv_cache_len", "128"]
    assert "axengine" in yaml.safe_load((out / "manifest.yaml").read_text())["backends"]


def test_a_pulsar2_build_the_kernel_killed_names_memory(tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path) -> None:
    """The kernel ends a build that outgrows the machine's memory with SIGKILL; its output says nothing."""
    out = tmp_path / "m"
    env = {"PATH": f"{pulsar2_bin}:{os.environ['PATH']}"}
    args = ["setup", "--model", str(tiny_hf), "--target", "ax630c", "--no-speech", "--out", str(out)]
    killed = assistant(*args, env={**env, "PULSAR2_KILLED": "1"})
    assert killed.returncode == 1 and not out.exists()
    error = killed.stderr[killed.stderr.index("error: ") :]
    assert error.startswith(
        "error: pulsar2 llm_build was killed (SIGKILL), most likely by the kernel for want of memory "
        "(`journalctl -k | grep -i oom` says so): close other programs or give the machine more memory or swap, "
        "then run the same command again (finished steps are kept); its last lines:\n  building llm decode layers"
    ), error
    resumed = assistant(*args, env=env)
    assert resumed.returncode == 0 and "onnxruntime: already done" in resumed.stderr, resumed.stderr


def test_a_signal_that_ended_pulsar2_is_read_from_docker_runs_exit_status_too() -> None:
    """docker run exits 128 + the signal that ended its container (137: the kernel's SIGKILL)."""
    from assistant.setup.pulsar2 import _killed_by

    assert _killed_by(137, docker=True).startswith("killed (SIGKILL), most likely by the kernel for want of memory")
    assert _killed_by(-9, docker=False) == _killed_by(137, docker=True)
    assert _killed_by(143, docker=True) == _killed_by(-15, docker=False) == "ended by SIGTERM"
    assert _killed_by(137, docker=False) is None and _killed_by(3, docker=True) is None  # pulsar2's own status


def running(pid: int) -> bool:
    """The process is there and not a zombie (which init has yet to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_interrupting_setup_ends_the_pulsar2_build_it_started(stop: str, tiny_hf: Path, tmp_path: Path) -> None:
    """SIGINT, SIGTERM or SIGHUP to setup alone (`kill`, a supervisor, the ssh connection dropping): the build
    and its workers end with it, rather than going on writing into the folder the re-run builds in."""
    import signal
    import time

    folder = tmp_path / "bin"
    folder.mkdir()
    leader, worker = tmp_path / "pulsar2.pid", tmp_path / "worker.pid"
    (folder / "pulsar2").write_text(f"#!/bin/sh\necho $$ > {leader}\nsleep 60 &\necho $! > {worker}\nwait\n")
    (folder / "pulsar2").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env["PATH"] = f"{folder}:{env['PATH']}"
    args = ["setup", "--model", str(tiny_hf), "--target", "ax630c", "--no-speech", "--out", str(tmp_path / "m")]
    process = subprocess.Popen([sys.executable, "-m", "assistant", *args], env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (worker.exists() and worker.read_text().strip()):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(getattr(signal, stop))
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        pids = [int(leader.read_text()), int(worker.read_text())]
        # The build's workers were sent SIGTERM with it and end on their own time (a busy machine: seconds).
        deadline = time.monotonic() + 10
        while any(running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in pids if running(pid)] == []
    finally:
        for path in (leader, worker):
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(path.read_text()), signal.SIGKILL)  # only if the test failed: what it started


def test_a_setup_killed_outright_takes_its_pulsar2_build_with_it(tiny_hf: Path, tmp_path: Path) -> None:
    """kill -9 leaves setup no time to end the build: pulsar2 must not outlive it and race the next run."""
    import signal
    import time

    folder = tmp_path / "bin"
    folder.mkdir()
    pid = tmp_path / "pulsar2.pid"
    (folder / "pulsar2").write_text(f"#!/bin/sh\necho $$ > {pid}\nexec sleep 60\n")
    (folder / "pulsar2").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    env["PATH"] = f"{folder}:{env['PATH']}"
    args = ["setup", "--model", str(tiny_hf), "--target", "ax630c", "--no-speech", "--out", str(tmp_path / "m")]
    process = subprocess.Popen([sys.executable, "-m", "assistant", *args], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (pid.exists() and pid.read_text().strip()):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.kill()
        process.wait()
        deadline = time.monotonic() + 5
        while running(int(pid.read_text())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(int(pid.read_text()))
    finally:
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid.read_text()), signal.SIGKILL)  # only if the test failed: what it started


def test_clear_errors_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    llama_like = tmp_path / "gpt2"
    llama_like.mkdir()
    (llama_like / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    result = assistant(
        "setup", "--model", str(llama_like), "--target", "host", "--no-speech", "--out", str(tmp_path / "m")
    )
    assert result.returncode == 78 and "model_type 'gpt2' is not supported" in result.stderr

    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_hf / "config.json").read_text())
    result = assistant(
        "setup", "--model", str(no_weights), "--target", "host", "--no-speech", "--out", str(tmp_path / "m")
    )
    assert result.returncode == 78 and "no *.safetensors files" in result.stderr

    # A board target with neither pulsar2 nor docker on PATH says how to get them.
    env = {"PATH": str(Path(sys.executable).parent)}
    result = assistant("setup", "--model", str(tiny_hf), "--no-speech", "--out", str(tmp_path / "m"), env=env)
    assert result.returncode == 1 and "no pulsar2 found" in result.stderr and "docker" in result.stderr


# -- downloads from a real HTTP server on 127.0.0.1 ----------------------------------------------


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from `self.server.files` and redirects from `self.server.redirects`, honours Range and
    If-Range (each file's ETag is its sha256), and can cut the first transfer short."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if target := self.server.redirects.get(self.path):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        etag = f'"{hashlib.sha256(data).hexdigest()}"'
        start = 0
        if (header := self.headers.get("Range")) and self.headers.get("If-Range", etag) == etag:
            start = int(header.removeprefix("bytes=").split("-")[0])
            self.server.ranges.append(start)
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.end_headers()
        if gate := self.server.gates.pop(self.path, None):  # the first transfer stalls half-way until it opens
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            gate.wait(60)
            body = body[len(body) // 2 :]
        if self.server.cut_after and not start:
            self.wfile.write(body[: self.server.cut_after])
            self.server.cut_after = 0
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-transfer
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.ranges, httpd.cut_after, httpd.redirects, httpd.gates = {}, [], 0, {}, {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def url(server: http.server.ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    server.files["/voice.onnx"] = data
    server.cut_after = 1_000_000
    dest = tmp_path / "voice.onnx"
    with pytest.raises(SetupError, match="interrupted .*run the same command again to resume"):
        download(url(server, "/voice.onnx"), dest)
    assert not dest.exists()
    assert (tmp_path / "voice.onnx.part").stat().st_size == 1_000_000
    download(url(server, "/voice.onnx"), dest, sha256=hashlib.sha256(data).hexdigest())
    assert server.ranges == [1_000_000]  # only the rest was fetched
    assert dest.read_bytes() == data and not (tmp_path / "voice.onnx.part").exists()


def test_a_partial_download_of_another_url_is_not_resumed(server, tmp_path: Path) -> None:
    """The URL corrected in the config after an interrupted download: the part holds another file's start."""
    wrong, right = os.urandom(300_000), os.urandom(300_000)
    server.files.update({"/wrong.onnx": wrong, "/right.onnx": right})
    server.cut_after = 100_000
    dest = tmp_path / "voice.onnx"
    with pytest.raises(SetupError, match="interrupted"):
        download(url(server, "/wrong.onnx"), dest)
    download(url(server, "/right.onnx"), dest)
    assert server.ranges == [] and dest.read_bytes() == right  # fetched whole, not spliced onto the other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voice.onnx"]


def test_a_file_replaced_on_the_server_between_attempts_is_fetched_whole(server, tmp_path: Path) -> None:
    """A new release uploaded under the same URL after an interrupted download: no splice of the two."""
    old, new = os.urandom(300_000), os.urandom(300_000)
    server.files["/voice.onnx"] = old
    server.cut_after = 100_000
    dest = tmp_path / "voice.onnx"
    with pytest.raises(SetupError, match="interrupted"):
        download(url(server, "/voice.onnx"), dest)
    server.files["/voice.onnx"] = new
    download(url(server, "/voice.onnx"), dest)
    assert server.ranges == [] and dest.read_bytes() == new


def test_a_file_already_there_with_another_checksum_is_one_line(server, tmp_path: Path) -> None:
    data = os.urandom(1000)
    server.files["/voice.onnx"] = data
    dest = tmp_path / "voice.onnx"
    dest.write_bytes(data[:500])  # an earlier voice, or a copy cut short
    with pytest.raises(SetupError, match=rf"{dest}: sha256 [0-9a-f]{{64}}, not the {hashlib.sha256(data).hexdigest()} "
                                         r"given for http://.*; delete the file"):  # fmt: skip
        download(url(server, "/voice.onnx"), dest, sha256=hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data[:500]  # nothing deleted for the person
    dest.unlink()
    assert download(url(server, "/voice.onnx"), dest, sha256=hashlib.sha256(data).hexdigest()).read_bytes() == data
    assert download(url(server, "/voice.onnx"), dest, sha256=hashlib.sha256(data).hexdigest()) == dest


def test_checksum_mismatch_is_rejected(server, tmp_path: Path) -> None:
    server.files["/voice.onnx"] = b"not the voice you expected"
    dest = tmp_path / "voice.onnx"
    with pytest.raises(SetupError, match="checksum mismatch .*discarded"):
        download(url(server, "/voice.onnx"), dest, sha256="0" * 64)
    assert not dest.exists() and not (tmp_path / "voice.onnx.part").exists()
    with pytest.raises(SetupError, match="HTTP 404"):
        download(url(server, "/missing.onnx"), dest)


def piper_voice(tmp_path: Path) -> tuple[bytes, bytes]:
    """A voice and its settings, as a server sends them."""
    from tests.piper_voice import make_piper_voice

    voice = make_piper_voice(tmp_path / "voice-source")
    return voice.read_bytes(), Path(f"{voice}.json").read_bytes()


def test_setup_fetches_the_configured_speech_models(server, tiny_hf: Path, tmp_path: Path) -> None:
    config = speech_config(server, tmp_path, Path("models/vosk-model-test"), checksum=True)
    args = ["setup", "--config", str(config), "--model", str(tiny_hf), "--target", "host"]
    result = assistant(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models/vosk-model-test/am/final.mdl").read_bytes() == b"acoustic model"
    assert (tmp_path / "models/piper/test.onnx.json").is_file()
    assert (tmp_path / f"models/{tiny_hf.name}/manifest.yaml").is_file()  # models/ beside the config


def test_an_empty_file_or_a_redirect_loop_is_one_line(server, tmp_path: Path) -> None:
    server.files["/voice.onnx"] = b""
    with pytest.raises(SetupError, match=r"/voice\.onnx: an empty file, not a model; check the URL"):
        download(url(server, "/voice.onnx"), tmp_path / "voice.onnx")
    assert not list(tmp_path.iterdir())
    server.redirects = {"/a": "/b", "/b": "/a"}
    with pytest.raises(SetupError, match="HTTP 302 .* infinite loop") as error:
        download(url(server, "/a"), tmp_path / "voice.onnx")
    assert "\n" not in str(error.value)


def test_a_url_with_spaces_is_fetched_as_a_browser_would(server, tmp_path: Path) -> None:
    server.files["/en%20voice.onnx"] = b"onnx voice"
    assert download(url(server, "/en voice.onnx"), tmp_path / "voice.onnx").read_bytes() == b"onnx voice"


def test_zip_that_is_not_a_zip_is_discarded(server, tmp_path: Path) -> None:
    server.files["/vosk.zip"] = b"<html>proxy error</html>"
    with pytest.raises(SetupError, match="not a zip archive"):
        download_and_unzip(url(server, "/vosk.zip"), tmp_path / "vosk")
    assert not list(tmp_path.iterdir())


def test_an_archive_bigger_than_the_free_disk_is_refused_and_leaves_nothing_unpacked(server, tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("vosk-model-test/am/final.mdl", b"\0" * 20_000_000)  # 20 MB in a 20 kB download
    server.files["/vosk.zip"] = archive.getvalue()
    with small_disk(tmp_path / "disk") as disk:
        with pytest.raises(SetupError, match=rf"unpacks to 20 MB, \d+ MB free on {disk}; free space and run"):
            download_and_unzip(url(server, "/vosk.zip"), disk / "vosk")
        assert sorted(p.name for p in disk.iterdir()) == ["vosk.zip"]  # kept for the next attempt


def test_docker_command_mounts_both_folders(tiny_hf: Path, tmp_path: Path, monkeypatch) -> None:
    from assistant.setup.pulsar2 import pulsar2_command

    docker = tmp_path / "docker"
    docker.write_text("#!/bin/sh\n")
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    command = pulsar2_command(
        tiny_hf,
        tmp_path,
        target="ax630c",
        kv_cache_len=1023,
        prefill_len=0,
        weight_type="s4",
        kv_history=[],
        image="pulsar2:3.2",
    )
    text = shlex.join(command)
    # As the calling user, so that the build can move what the container wrote.
    assert text.startswith(f"docker run --rm --user {os.getuid()}:{os.getgid()} -e HOME=/tmp -v ")
    assert f"{tiny_hf.resolve()}:/data/input:ro" in command and f"{tmp_path.resolve()}:/data/work" in command
    assert command[command.index("pulsar2:3.2") + 1 :][:2] == ["pulsar2", "llm_build"]
    assert "--prefill_len" not in command and command[command.index("--weight_type") + 1] == "s4"


# -- what setup refuses, and what it survives ------------------------------------------------------


def host_setup(model: str, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return assistant("setup", "--model", model, "--target", "host", "--no-speech", *args, cwd=cwd, env=env)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_setup_refuses_a_destination_that_is_not_a_model_it_built(tiny_hf: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"  # a config, the user's files, and a checkpoint copied into models/
    shutil.copytree(tiny_hf, project / "models" / "tiny-qwen2")
    (project / "config.yaml").write_text("llm:\n  model_dir: models/tiny-qwen2\n")
    (project / "notes.txt").write_text("my work")
    (project / "other").mkdir()
    (project / "other" / "manifest.yaml").write_text("x")  # a manifest, but not one of ours
    before = snapshot(project)

    cases = {
        "models/tiny-qwen2": ("models/tiny-qwen2", []),  # the default destination is the checkpoint itself
        "--out the checkpoint": (str(tiny_hf), ["--out", str(tiny_hf)]),
        "--out inside the checkpoint": (str(tiny_hf), ["--out", str(tiny_hf / "built")]),
        "--out holding the checkpoint": ("models/tiny-qwen2", ["--out", "models"]),
        "--out .": (str(tiny_hf), ["--out", "."]),
        "--out the current folder spelled out": (str(tiny_hf), ["--out", str(project)]),
        "--out another folder": (str(tiny_hf), ["--out", "other"]),
        "--out a file": (str(tiny_hf), ["--out", "notes.txt"]),
    }
    for case, (model, args) in cases.items():
        result = host_setup(model, *args, cwd=project)
        assert result.returncode == 1, (case, result.stderr)
        error = one_error_line(result)
        assert error.startswith("error: cannot build into ") and "--out DIR" in error, (case, error)
        assert snapshot(project) == before, case  # nothing touched, no partial build beside it
    assert snapshot(tiny_hf) == snapshot(project / "models" / "tiny-qwen2")

    # A folder that is empty, or a model built here, is the destination it should be.
    (project / "empty").mkdir()
    assert host_setup(str(tiny_hf), "--out", "empty", cwd=project).returncode == 0
    again = host_setup(str(tiny_hf), "--out", "empty", "--force", cwd=project)
    assert again.returncode == 0, again.stderr
    assert (project / "empty" / "manifest.yaml").is_file()


def test_a_mount_point_as_destination_is_refused_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    """A disk of its own mounted at --out: the finished build could not be renamed into its place."""
    with small_disk(tmp_path / "disk", "size=50m") as disk:
        result = host_setup(str(tiny_hf), "--out", str(disk))
        assert result.returncode == 1, result.stderr
        assert one_error_line(result).startswith(
            f"error: cannot build into {disk}: a disk is mounted there (build into a folder on it, such as "
            f"--out {disk / 'tiny-qwen2'})"
        )
        assert sorted(p.name for p in tmp_path.iterdir()) == ["disk"]  # no build left on the other disk
        assert host_setup(str(tiny_hf), "--out", str(disk / "tiny-qwen2")).returncode == 0


def test_a_destination_that_is_a_symlink_is_built_where_it_points(tiny_hf: Path, tmp_path: Path) -> None:
    """models/<name> linked to a folder on a bigger disk: the model goes there and the link stays."""
    (tmp_path / "big").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models/qwen").symlink_to(tmp_path / "big")
    assert host_setup(str(tiny_hf), "--out", str(tmp_path / "models/qwen")).returncode == 0
    assert (tmp_path / "models/qwen").is_symlink() and (tmp_path / "big/manifest.yaml").is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["qwen"]


def test_the_same_checkpoint_spelled_otherwise_is_up_to_date(tiny_hf: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_hf, tmp_path / "ck")
    out = str(tmp_path / "m")
    assert host_setup("ck", "--out", out, cwd=tmp_path).returncode == 0
    for spelling in ("ck/", str(tmp_path / "ck"), "./ck", "ck"):
        result = host_setup(spelling, "--out", out, cwd=tmp_path)
        assert result.returncode == 0 and "is up to date" in result.stderr, (spelling, result.stderr)
    record = tmp_path / "m" / ".setup.json"  # as earlier versions wrote it: --out, and the path as typed
    record.write_text(json.dumps({**json.loads(record.read_text()), "out": out, "model": "ck"}, sort_keys=True))
    result = host_setup("ck", "--out", out, cwd=tmp_path)
    assert result.returncode == 0 and "is up to date" in result.stderr, result.stderr


def test_a_file_changed_since_the_build_is_not_up_to_date(tiny_hf: Path, tmp_path: Path) -> None:
    """Bytes changed at the same size: setup builds again when the file is newer than the build, and
    `--verify`, which finds a change that kept the file's time too, names --force."""
    out = tmp_path / "m"
    assert host_setup(str(tiny_hf), "--out", str(out)).returncode == 0
    layer = out / "onnx/layer_1.onnx"
    good, stat = layer.read_bytes(), layer.stat()
    layer.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit, at the same size
    os.utime(layer, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same time: flash that decays
    verify = assistant("setup", "--verify", str(out))
    assert verify.returncode == 78 and one_error_line(verify) == (
        f"error: {layer}: sha256 differs from the manifest (corrupt file); re-run `assistant setup` with --force, "
        "which rebuilds a model that looks up to date"
    )
    assert "is up to date" in host_setup(str(tiny_hf), "--out", str(out)).stderr  # size and time say nothing

    layer.touch()  # written since the build: a copy over it, a hand edit
    again = host_setup(str(tiny_hf), "--out", str(out))
    assert again.returncode == 0 and "is up to date" not in again.stderr, again.stderr
    assert f"{out}: not up to date, built again: {layer}: sha256 differs from the manifest (corrupt file)\n" in (
        again.stderr
    )
    assert assistant("setup", "--verify", str(out)).returncode == 0
    # Up to date again, and found so without loading the exporter (onnx): a third of a second here.
    args = ["setup", "--model", str(tiny_hf), "--target", "host", "--no-speech", "--out", str(out)]
    again = subprocess.run([sys.executable, "-X", "importtime", "-m", "assistant", *args], capture_output=True,
                           text=True, timeout=300)  # fmt: skip
    assert "is up to date" in again.stderr, again.stderr
    imported = [line.split("|")[-1].strip() for line in again.stderr.splitlines() if line.startswith("import time:")]
    assert "assistant.setup.build" in imported and "onnx" not in imported and "assistant.llm.export" not in imported


def test_a_second_setup_of_the_same_model_waits_its_turn(tiny_hf: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "m"
    folder = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another setup is building there right now
    busy = host_setup(str(tiny_hf), "--out", str(out))
    os.close(folder)
    assert busy.returncode == 1
    expected = f"error: another `assistant setup` is building in {tmp_path}; wait for it to finish"
    assert busy.stderr.strip().splitlines()[-1] == expected
    assert not out.exists() and not (tmp_path / ".m.partial").exists()  # nothing of the other's touched
    assert host_setup(str(tiny_hf), "--out", str(out)).returncode == 0  # once it is done


def test_a_mistyped_local_folder_is_not_taken_for_a_repo_id(tiny_hf: Path, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1"}
    for model, expected in [
        ("./tiny-qwen", "no such folder: ./tiny-qwen;"),
        (str(tmp_path / "tiny-qwen"), f"no such folder: {tmp_path / 'tiny-qwen'};"),
        ("~/no/such/checkpoint", "no such folder: ~/no/such/checkpoint;"),
        (str(tiny_hf / "model.safetensors"), f"not a folder: {tiny_hf / 'model.safetensors'};"),
    ]:
        result = host_setup(model, "--out", str(tmp_path / "m"), cwd=tmp_path, env=env)
        assert result.returncode == 1, result.stderr
        error = one_error_line(result)
        assert expected in error and "interrupted" not in error and "resume" not in error, error


def test_context_and_prefill_lengths_are_checked_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert host_setup(str(tiny_hf), "--out", str(out)).returncode == 0
    built = snapshot(out)
    for args, expected in [
        (["--kv-cache-len", "-5"], "--kv-cache-len must be at least 16, not -5"),
        (["--kv-cache-len", "0"], "--kv-cache-len must be at least 16, not 0"),
        (["--prefill-len", "-1"], "--prefill-len must be between 0 and --kv-cache-len (1023), not -1"),
        (["--kv-cache-len", "64", "--prefill-len", "128"], "--prefill-len must be between 0 and --kv-cache-len (64)"),
        (["--kv-cache-len", "4096"], "--kv-cache-len 4096 is longer than the 2048 positions"),
    ]:
        result = host_setup(str(tiny_hf), "--out", str(out), *args)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in one_error_line(result)
        assert snapshot(out) == built and not (tmp_path / ".m.partial").exists()  # the working model stays


@pytest.mark.parametrize("damage", ["half", "last tenth", "header", "not json"])
def test_a_cut_or_corrupt_checkpoint_is_one_line_before_any_work(tiny_hf: Path, tmp_path: Path, damage: str) -> None:
    ck = tmp_path / "ck"
    shutil.copytree(tiny_hf, ck)
    weights = ck / "model.safetensors"
    size = weights.stat().st_size
    if damage == "not json":
        data = bytearray(weights.read_bytes())
        data[8:12] = b"\xff\xfe{["
        weights.write_bytes(bytes(data))
    else:
        os.truncate(weights, {"half": size // 2, "last tenth": size * 9 // 10, "header": 4}[damage])
    result = host_setup(str(ck), "--out", str(tmp_path / "m"))
    assert result.returncode == 78, result.stderr
    error = one_error_line(result)
    assert error.startswith(f"error: {weights}: ") and "copy or download the checkpoint again" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no partial build


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"rms_norm_eps": None}, "config.json: no rms_norm_eps; a qwen2 config.json gives it"),
        ({"intermediate_size": None}, "config.json: no intermediate_size; a qwen2 config.json gives it"),
        ({"hidden_size": "64"}, "config.json: hidden_size is '64', not a positive whole number"),
        ({"hidden_size": 128}, "config.json: makes tensor model.embed_tokens.weight [1005, 128], the checkpoint's is "
                               "[1005, 64]; config.json and the *.safetensors beside it must be of the same model"),
        ({"vocab_size": 2000}, "makes tensor model.embed_tokens.weight [2000, 64], the checkpoint's is [1005, 64]"),
        ({"num_key_value_heads": 4}, "makes tensor model.layers.0.self_attn.k_proj.weight [64, 64], the checkpoint's "
                                     "is [32, 64]"),
        ({"num_hidden_layers": 3}, "config.json: describes tensor model.layers.2.input_layernorm.weight, which the "
                                   "checkpoint lacks"),
    ],
    ids=["no rms_norm_eps", "no intermediate_size", "a string", "hidden_size", "vocab_size", "kv heads", "layers"],
)  # fmt: skip
def test_a_config_that_does_not_describe_its_checkpoint_is_one_line_before_any_work(
    tiny_hf: Path, tmp_path: Path, change: dict, expected: str
) -> None:
    """A key missing, or dimensions of another model (a config.json copied beside the wrong weights): the
    build would otherwise replace a working model with one that fails at its first use."""
    out = tmp_path / "m"
    assert host_setup(str(tiny_hf), "--out", str(out)).returncode == 0
    built = snapshot(out)
    ck = tmp_path / "ck"
    shutil.copytree(tiny_hf, ck)
    config = json.loads((ck / "config.json").read_text())
    config.update(change)
    (ck / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    result = host_setup(str(ck), "--out", str(out))
    assert result.returncode == 78, result.stderr
    error = one_error_line(result)
    assert error.startswith(f"error: {ck / 'config.json'}: ") and expected in error, error
    assert snapshot(out) == built and not (tmp_path / ".m.partial").exists()  # the working model stays


@pytest.mark.parametrize(
    ("generation_config", "expected"),
    [
        ('{"eos_token_id": [1000,', "generation_config.json: invalid JSON: Expecting value"),
        ('{"eos_token_id": 5000}', "generation_config.json: eos_token_id 5000 is not a token id below vocab_size 1005"),
        ("{}", "neither generation_config.json nor config.json gives an eos_token_id"),
    ],
    ids=["cut short", "outside the vocabulary", "none"],
)
def test_eos_ids_are_checked_before_any_work(
    tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path, generation_config: str, expected: str
) -> None:
    """The manifest is written last, after the board build: a model that cannot stop was refused only at its
    first load (or the build ended in a traceback), after replacing the working one."""
    out = tmp_path / "m"
    assert host_setup(str(tiny_hf), "--out", str(out)).returncode == 0
    built = snapshot(out)
    ck = tmp_path / "ck"
    shutil.copytree(tiny_hf, ck)
    (ck / "generation_config.json").write_text(generation_config)
    config = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "eos_token_id"}))
    env = {"PATH": f"{pulsar2_bin}:{os.environ['PATH']}"}
    result = assistant("setup", "--model", str(ck), "--target", "ax630c", "--no-speech", "--out", str(out), env=env)
    assert result.returncode == 78, result.stderr
    assert expected in one_error_line(result)
    assert snapshot(out) == built and not (tmp_path / ".m.partial").exists()


def test_a_cut_tokenizer_is_one_line_and_the_model_stays(tiny_hf: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert host_setup(str(tiny_hf), "--out", str(out)).returncode == 0
    built = snapshot(out)
    ck = tmp_path / "ck"
    shutil.copytree(tiny_hf, ck)
    os.truncate(ck / "tokenizer.json", (ck / "tokenizer.json").stat().st_size // 2)
    result = host_setup(str(ck), "--out", str(out))
    assert result.returncode == 78, result.stderr
    error = one_error_line(result)
    assert error.startswith(f"error: {ck / 'tokenizer.json'}: not a tokenizer (") and error.endswith(
        "download it again"
    )
    assert snapshot(out) == built  # the working model stays


def test_a_sharded_checkpoint_missing_a_shard_names_it_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ck = tmp_path / "ck"
    AutoModelForCausalLM.from_pretrained(tiny_hf, dtype=torch.bfloat16).save_pretrained(ck, max_shard_size="200KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        shutil.copy(tiny_hf / name, ck / name)
    shards = sorted(ck.glob("model-*.safetensors"))
    assert len(shards) > 1
    shards[1].unlink()  # a copy or download that stopped short of it
    result = host_setup(str(ck), "--out", str(tmp_path / "m"))
    assert result.returncode == 78, result.stderr
    error = one_error_line(result)
    assert error == (
        f"error: {shards[1]}: missing (model.safetensors.index.json lists it); copy or download the checkpoint again"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no partial build


def test_a_stale_checkpoint_file_beside_the_shards_is_not_built_from(tiny_hf: Path, tmp_path: Path) -> None:
    """A folder that held model.safetensors and then received the sharded release (index and shards)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    ck = tmp_path / "ck"
    AutoModelForCausalLM.from_pretrained(tiny_hf, dtype=torch.bfloat16).save_pretrained(ck, max_shard_size="200KB")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "config.json"):
        shutil.copy(tiny_hf / name, ck / name)
    stale = {name: torch.zeros_like(t) for name, t in load_file(tiny_hf / "model.safetensors").items()}
    save_file(stale, ck / "model.safetensors")
    assert host_setup(str(ck), "--out", str(tmp_path / "m")).returncode == 0
    table = "model.embed_tokens.weight.bfloat16.bin"
    assert host_setup(str(tiny_hf), "--out", str(tmp_path / "ref")).returncode == 0
    assert (tmp_path / "m" / table).read_bytes() == (tmp_path / "ref" / table).read_bytes()  # the shards, as indexed

    (ck / "model.safetensors.index.json").unlink()  # no index to say which: refused, not a silent pick
    result = host_setup(str(ck), "--out", str(tmp_path / "m2"))
    assert result.returncode == 78, result.stderr
    assert one_error_line(result) == (
        f"error: {ck / 'model.safetensors'}: holds tensor model.embed_tokens.weight as "
        "model-00001-of-00002.safetensors does: two checkpoints in one folder; keep one of them"
    )


def test_a_quantized_checkpoint_is_named_as_such(tiny_hf: Path, tmp_path: Path) -> None:
    """GPTQ / AWQ store a linear layer as qweight (and scales): not the float weights the build reads."""
    import struct

    ck = tmp_path / "ck"
    shutil.copytree(tiny_hf, ck)
    data = (ck / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    header["model.layers.0.self_attn.q_proj.qweight"] = header.pop("model.layers.0.self_attn.q_proj.weight")
    text = json.dumps(header).encode()  # offsets count from the end of the header: the data is unchanged
    (ck / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    result = host_setup(str(ck), "--out", str(tmp_path / "m"))
    assert result.returncode == 78, result.stderr
    assert one_error_line(result) == (
        f"error: {ck}: a quantized checkpoint (model.layers.0.self_attn.q_proj.qweight); setup reads float or bf16 "
        "weights: build from the model it was quantized from"
    )


def test_a_marker_cut_short_is_a_step_not_done(tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path) -> None:
    out = tmp_path / "m"
    env = {"PATH": f"{pulsar2_bin}:{os.environ['PATH']}", "PULSAR2_ARGV": str(tmp_path / "argv.json")}
    args = ["setup", "--model", str(tiny_hf), "--target", "ax650n", "--no-speech", "--out", str(out)]
    failed = assistant(*args, env={**env, "PULSAR2_FAIL": "1"})
    assert failed.returncode == 1
    marker = tmp_path / ".m.partial" / ".done-embeddings"
    marker.write_text("")  # as a full disk left it
    resumed = assistant(*args, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "embeddings: its marker" in resumed.stderr and "onnxruntime: already done" in resumed.stderr
    assert (out / "manifest.yaml").is_file()


def test_a_full_disk_is_one_line_and_the_same_command_then_finishes(tiny_hf: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        filler = fill(disk, leave=700 * 1024)  # the free-space check passes; the build does not fit
        args = ["--out", str(disk / "m"), "--keep-intermediate"]
        full = host_setup(str(tiny_hf), *args)
        assert full.returncode == 1
        error = one_error_line(full)
        assert error.startswith("error: the disk is full (") and f"MB free on {disk}" in error
        assert error.endswith("free space and run the same command again")
        for marker in (disk / ".m.partial").glob(".done-*"):
            json.loads(marker.read_text())  # whole, or not there at all

        filler.unlink()
        finished = host_setup(str(tiny_hf), *args)
        assert finished.returncode == 0, finished.stderr
        assert (disk / "m" / "manifest.yaml").is_file()

        fill(disk, leave=0)
        init = assistant("config", "init", str(disk / "config.yaml"))
        assert init.returncode == 1 and one_error_line(init).startswith("error: the disk is full (")
        assert not (disk / "config.yaml").exists()  # no empty file that would load as the defaults
        assert assistant("config", "init", str(disk / "config.yaml")).returncode == 1  # and again the same


def test_a_disk_that_fills_during_the_pulsar2_build_is_one_line(
    tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path
) -> None:
    env = {**os.environ, "PATH": f"{pulsar2_bin}:{os.environ['PATH']}"}
    with small_disk(tmp_path / "disk", "size=700k") as disk:  # room for the checkpoint twice, not for the axmodels
        args = ["--model", str(tiny_hf), "--target", "ax630c", "--no-speech", "--no-host", "--out", str(disk / "m")]
        result = assistant("setup", *args, env=env)
        assert result.returncode == 1, result.stderr
        assert re.fullmatch(
            rf"error: pulsar2 llm_build stopped: the disk is full \(\d+ MB free on {disk}/\.m\.partial\); free "
            r"space and run the same command again",
            result.stderr.splitlines()[-1],  # above it, pulsar2's own output as logged (its traceback)
        )


def test_too_little_disk_is_refused_before_any_work_and_the_model_stays(tiny_hf: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "size=2m") as disk:
        assert host_setup(str(tiny_hf), "--out", str(disk / "m")).returncode == 0
        built = snapshot(disk / "m")
        fill(disk, leave=300_000)
        needed = 2 * (tiny_hf / "model.safetensors").stat().st_size  # the estimate: twice the checkpoint
        result = host_setup(str(tiny_hf), "--out", str(disk / "m"), "--force")
        assert result.returncode == 1
        error = one_error_line(result)
        assert re.fullmatch(
            rf"error: not enough disk space in {disk}: 0\.\d MB free, about {needed / 1e6:.1f} MB needed; free "
            r"space or choose another --out, then run the same command again",
            error,
        ), error
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "m"] and snapshot(disk / "m") == built


def test_a_read_only_destination_is_one_line(tiny_hf: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "ro", "size=1m,ro") as ro:
        setup = host_setup(str(tiny_hf), "--out", str(ro / "m"))
        init = assistant("config", "init", str(ro / "config.yaml"))
        install = assistant("service", "install", "--root", str(ro), "--allow-home", "--user", "root")
        for result in (setup, init, install):
            assert result.returncode == 1
            assert one_error_line(result) == f"error: cannot write in {ro}: a read-only file system; " + (
                "choose a folder you can write to"
            )


def test_a_model_url_that_is_not_a_url_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match=r"cannot download models/vosk\.zip .*give an http\(s\):// or file:///"):
        download_and_unzip("models/vosk.zip", tmp_path / "vosk")
    assert not list(tmp_path.iterdir())


def test_the_board_build_gets_the_rope_base_the_host_export_uses(tiny_hf: Path, tmp_path: Path) -> None:
    """transformers 5 takes rope_parameters' rope_theta over a top-level one; so do both builds."""
    from assistant.llm.checkpoint import read_shape
    from assistant.setup.pulsar2 import write_model_config

    config = json.loads((tiny_hf / "config.json").read_text())
    config |= {"rope_theta": 10000.0, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    written = json.loads(write_model_config(tmp_path, tmp_path, "tiny").read_text())
    assert written["rope_theta_base"] == read_shape(tmp_path).rope_theta == 1e6


def speech_config(
    server, tmp_path: Path, vosk_model: Path, acoustic_model: bytes = b"acoustic model", checksum: bool = False
) -> Path:
    """A config naming a vosk model and a voice served by `server` (`checksum`: with the model's sha256)."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("vosk-model-test/am/final.mdl", acoustic_model)
        z.writestr("vosk-model-test/conf/model.conf", b"--sample-frequency=16000\n--frame-subsampling-factor=3\n")
    server.files["/vosk.zip"] = archive.getvalue()
    server.files["/voice.onnx"], server.files["/voice.onnx.json"] = piper_voice(tmp_path)
    config = tmp_path / "config.yaml"
    sha256 = f"  model_sha256: {hashlib.sha256(archive.getvalue()).hexdigest()}\n" if checksum else ""
    config.write_text(
        f"asr:\n  model: {vosk_model}\n  model_url: {url(server, '/vosk.zip')}\n{sha256}"
        f"tts:\n  voice: models/piper/test.onnx\n  voice_url: {url(server, '/voice.onnx')}\n"
    )
    return config


def test_a_second_setup_while_the_first_fetches_the_speech_models_is_refused(
    server, tiny_hf: Path, tmp_path: Path
) -> None:
    import time

    acoustic_model = os.urandom(200_000)  # incompressible: half the archive is half the transfer
    config = speech_config(server, tmp_path, tmp_path / "models/vosk-model-test", acoustic_model)
    server.gates["/vosk.zip"] = gate = threading.Event()
    args = ["-m", "assistant", "setup", "--config", str(config), "--model", str(tiny_hf), "--target", "host"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    first = subprocess.Popen([sys.executable, *args], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        part = tmp_path / "models/vosk-model-test.zip.part"
        deadline = time.monotonic() + 60
        while not part.exists():  # the transfer has begun
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()[1]
            time.sleep(0.05)
        second = assistant(*args[2:], cwd=tmp_path)
        assert second.returncode == 1
        expected = f"error: another `assistant setup` is building in {tmp_path / 'models'}; wait for it to finish"
        assert second.stderr.strip().splitlines()[-1] == expected
    finally:
        gate.set()
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert (tmp_path / "models/vosk-model-test/am/final.mdl").read_bytes() == acoustic_model


def test_an_unfinished_hugging_face_download_without_the_internet_says_so(tiny_hf: Path, tmp_path: Path) -> None:
    """An interrupted download (the big file still arriving) and then no internet: the cache holds
    the small files and a part of the checkpoint, and Hugging Face's library hands it over as it is."""
    from huggingface_hub._local_folder import get_local_download_paths

    cache = tmp_path / "models/.cache/Qwen--Qwen2-0.5B-Instruct"
    cache.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_hf / name, cache / name)
    incomplete = get_local_download_paths(cache, "model.safetensors").incomplete_path("0123abcd")
    incomplete.write_bytes((tiny_hf / "model.safetensors").read_bytes()[:100_000])
    offline = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens there
    result = assistant("setup", "--target", "host", "--no-speech", cwd=tmp_path, env=offline)  # the default model
    assert result.returncode == 1
    error = one_error_line(result)
    assert error.startswith(
        f"error: the download of Qwen/Qwen2-0.5B-Instruct into {cache} is unfinished and Hugging Face cannot "
        "be reached; run the same command again once online to finish it, or without the internet: "
    ), error
    assert incomplete.stat().st_size == 100_000  # kept, to be resumed


def test_a_setup_killed_while_swapping_the_model_in_leaves_the_old_one_in_use(tiny_hf: Path, tmp_path: Path) -> None:
    """kill -9 (a power cut, the OOM killer) between moving the old model aside and the new one in."""
    checkpoint, out = tmp_path / "ck", tmp_path / "m"
    shutil.copytree(tiny_hf, checkpoint)
    assert host_setup(str(checkpoint), "--out", str(out)).returncode == 0
    built = snapshot(out)
    killed_at_the_swap = (
        "import os, runpy, signal, sys\n"
        "rename = os.rename\n"
        "def dies_at_the_swap(src, dst, *args, **kwargs):\n"
        "    if str(src).endswith('.m.partial'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return rename(src, dst, *args, **kwargs)\n"
        "os.rename = dies_at_the_swap\n"
        "sys.argv[0] = 'assistant'\n"
        "runpy.run_module('assistant', run_name='__main__')\n"
    )
    args = ["setup", "--model", str(checkpoint), "--target", "host", "--no-speech", "--out", str(out), "--force"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    killed = subprocess.run([sys.executable, "-c", killed_at_the_swap, *args], env=env, capture_output=True)
    assert killed.returncode == -9, killed.stderr

    (checkpoint / "config.json").write_text("{")  # and the next setup fails
    assert assistant(*args).returncode != 0
    assert snapshot(out) == built  # the model in use is still there
    shutil.copy(tiny_hf / "config.json", checkpoint / "config.json")
    assert assistant(*args).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "m"]


def test_a_build_resumed_after_the_hugging_face_model_changed_starts_over(
    tiny_hf: Path, tmp_path: Path, pulsar2_bin: Path
) -> None:
    """A failed board build, then a new revision of the model arriving in the download cache (here put
    there by hand, Hugging Face being out of reach): no step of the old revision may go into the model."""
    cache = tmp_path / "models/.cache/Qwen--Qwen2-0.5B-Instruct"
    shutil.copytree(tiny_hf, cache)
    env = {"PATH": f"{pulsar2_bin}:{os.environ['PATH']}", "HF_ENDPOINT": "http://127.0.0.1:9"}
    args = ["setup", "--target", "ax630c", "--no-speech"]
    assert assistant(*args, cwd=tmp_path, env={**env, "PULSAR2_FAIL": "1"}).returncode == 1

    make_tiny_qwen2(tmp_path / "revision", seed=7)  # the same shapes, other weights
    for name in ("model.safetensors", "config.json"):
        shutil.copy(tmp_path / "revision" / name, cache / name)
    resumed = assistant(*args, cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "already done" not in resumed.stderr
    built = tmp_path / "models/qwen2-0.5b-instruct" / EMBEDDINGS_FILE
    expected = write_embeddings(Checkpoint(tmp_path / "revision"), tmp_path / "revision")
    assert built.read_bytes() == expected.read_bytes()


def test_a_destination_that_is_a_symlink_loop_is_one_line(tiny_hf: Path, tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    result = host_setup(str(tiny_hf), "--out", str(tmp_path / "a"))
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"error: cannot build into {tmp_path / 'a'}: a symbolic link that leads back to itself; "
        "fix the link, or choose another folder with --out DIR"
    )


def test_no_host_layers_for_the_host_target_is_refused_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    result = host_setup(str(tiny_hf), "--no-host", "--out", str(tmp_path / "m"))
    assert result.returncode == 1
    assert one_error_line(result) == (
        "error: --no-host leaves --target host nothing to build: its layers are the ONNX layers for a PC; "
        "drop --no-host, or build for a board with --target ax630c or ax650n"
    )
    assert sorted(tmp_path.iterdir()) == []


def test_a_disk_that_fills_while_the_voice_is_cut_is_one_line_naming_it(
    medium_voice: Path, tiny_hf: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "vosk.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("vosk-model-test/am/final.mdl", "acoustic model")
        z.writestr("vosk-model-test/conf/model.conf", "--sample-frequency=16000\n")
    with small_disk(tmp_path / "disk", "size=80m") as disk:  # the voice fits, its three parts do not
        config = tmp_path / "config.yaml"
        config.write_text(
            f"asr:\n  model: models/vosk-model-test\n  model_url: {archive.as_uri()}\n"
            f"tts:\n  voice: {disk / 'voice.onnx'}\n  voice_url: {medium_voice.as_uri()}\n"
        )
        args = ["setup", "--config", str(config), "--model", str(tiny_hf), "--target", "host"]
        result = assistant(*args)
        assert result.returncode == 1
        assert re.fullmatch(
            rf"error: the disk is full \(\d+ MB free on {disk}\); free space and run the same command again",
            one_error_line(result),
        )
        assert sorted(p.name for p in disk.iterdir()) == ["voice.onnx", "voice.onnx.json"]  # no part left


def test_a_destination_in_another_users_folder_is_one_line_naming_the_owner(tiny_hf: Path, tmp_path: Path) -> None:
    """Run as another user (nobody) with --out in root's folder: whose folder it is, and what to do."""
    from assistant.setup.build import SetupOptions, build_model
    from assistant.setup.download import write_problem
    from tests.other_user import as_nobody

    with tempfile.TemporaryDirectory() as made:  # in /tmp: reachable by the other user, unlike tmp_path
        folder = Path(made)
        folder.chmod(0o755)
        checkpoint = shutil.copytree(tiny_hf, folder / "ck")
        for file in checkpoint.iterdir():
            file.chmod(0o644)
        theirs = folder / "theirs"
        theirs.mkdir()
        out = theirs / "m"

        def build() -> str:
            try:
                build_model(SetupOptions(model=str(checkpoint), target="host", out=out), folder)
            except OSError as e:
                return write_problem(e, out)
            return "built"

        message = as_nobody(build)
    assert message == (
        f"cannot write in {theirs}: it belongs to root, and user nobody may not write there; "
        "choose a folder you can write to, or run as root"
    )


def test_a_pulsar2_image_docker_cannot_use_is_refused_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    """docker installed, but its daemon not running (as the docker client says it), or the image not loaded."""
    folder = tmp_path / "bin"
    folder.mkdir()
    no_daemon = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    (folder / "docker").write_text(f"#!/bin/sh\necho '{no_daemon}' >&2\nexit 1\n")
    (folder / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}
    args = ["--target", "ax630c", "--no-speech", "--pulsar2-image", "pulsar2:5.0", "--out", str(tmp_path / "m")]
    result = assistant("setup", "--model", str(tiny_hf), *args, env=env)
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"error: --pulsar2-image pulsar2:5.0: docker cannot use it ({no_daemon}); start docker, or load the image "
        "(`docker load -i ax_pulsar2_<version>.tar.gz`)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_docker_out_of_disk_for_the_build_names_dockers_disk(tiny_hf: Path, tmp_path: Path) -> None:
    """docker's own storage (its images and containers) full: its words are Go's, in lower case."""
    folder = tmp_path / "bin"
    folder.mkdir()
    full = (
        "docker: Error response from daemon: failed to create task for container: write "
        "/var/lib/docker/overlay2/0f3c/work/config.json: no space left on device: unknown."
    )
    (folder / "docker").write_text(
        f'#!/bin/sh\nif [ "$1" = image ]; then echo sha256:0f3c; exit 0; fi\necho "{full}" >&2\nexit 125\n'
    )
    (folder / "docker").chmod(0o755)
    env = {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}
    args = ["--target", "ax630c", "--no-speech", "--no-host", "--pulsar2-image", "pulsar2:5.0"]
    result = assistant("setup", "--model", str(tiny_hf), *args, "--out", str(tmp_path / "m"), env=env)
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"error: pulsar2 llm_build stopped: the disk where docker keeps its images and containers is full ({full}); "
        "free space there (`docker system df` shows what docker holds) and run the same command again"
    )


def test_a_vosk_folder_that_holds_no_model_is_one_line_naming_the_fix(server, tiny_hf: Path, tmp_path: Path) -> None:
    """A folder at asr.model that vosk cannot load (a copy cut short): `assistant doctor` sends the person to
    setup, which must not then report success and leave it as it is."""
    asr = tmp_path / "models/vosk-model-test"
    (asr / "conf").mkdir(parents=True)
    (asr / "conf/model.conf").write_text("--sample-frequency=16000\n")
    config = speech_config(server, tmp_path, asr)
    result = assistant("setup", "--config", str(config), "--model", str(tiny_hf), "--target", "host", cwd=tmp_path)
    assert result.returncode == 1
    assert one_error_line(result) == (
        f"error: {asr} is not a vosk model folder (it lacks am/final.mdl); delete it and run the same command "
        "again (check asr.model_url)"
    )


@pytest.mark.parametrize("broken", ["voice.onnx", "voice.onnx.json"])
def test_a_voice_download_that_is_no_voice_is_one_line_before_the_model(
    broken: str, tiny_hf: Path, tmp_path: Path
) -> None:
    """An error page, or another file, where the voice or its settings should be: `assistant run` could not
    load it, so setup says so, naming the file and the fix, rather than reporting success."""
    from tests.piper_voice import make_piper_voice

    served = tmp_path / "served"
    make_piper_voice(served, name="voice")
    (served / broken).write_text("<html><body>Service unavailable</body></html>")
    archive = served / "vosk.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("vosk-model-test/am/final.mdl", "acoustic model")
        z.writestr("vosk-model-test/conf/model.conf", "--sample-frequency=16000\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"asr:\n  model: models/vosk-model-test\n  model_url: {archive.as_uri()}\n"
        f"tts:\n  voice: models/piper/voice.onnx\n  voice_url: {(served / 'voice.onnx').as_uri()}\n"
    )
    result = assistant("setup", "--config", str(config), "--model", str(tiny_hf), "--target", "host", cwd=tmp_path)
    assert result.returncode == 1
    name = tmp_path / "models/piper" / broken
    what = "not an ONNX model" if broken == "voice.onnx" else "not a piper voice's settings"
    assert re.fullmatch(
        rf"error: {name}: {what} \(.*\); delete it and run the same command again \(check tts\.voice_url\)",
        one_error_line(result),
    ), result.stderr
    assert not (tmp_path / f"models/{tiny_hf.name}").exists()


def hub_cache(checkpoint: Path, cache: Path, repo: str = "Qwen/Qwen2-0.5B-Instruct") -> Path:
    """`checkpoint` as huggingface-hub keeps a download in its cache (~/.cache/huggingface/hub): the files
    under blobs/ by their hash, a snapshot of links to them named by the commit, refs/main naming it."""
    folder, commit = cache / f"models--{repo.replace('/', '--')}", "0123456789abcdef0123456789abcdef01234567"
    (folder / "blobs").mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs/main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    for file in sorted(checkpoint.iterdir()):
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, folder / "blobs" / blob)
        (folder / "snapshots" / commit / file.name).symlink_to(f"../../blobs/{blob}")
    return folder


def test_a_model_in_the_hugging_face_cache_builds_without_the_internet(tiny_hf: Path, tmp_path: Path) -> None:
    """Downloaded before (by transformers, `huggingface-cli download`): offline, the repo id or the cache's
    folder builds it, named after the model."""
    folder = hub_cache(tiny_hf, tmp_path / "hub")
    offline = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_CACHE": str(tmp_path / "hub")}
    by_id = assistant("setup", "--target", "host", "--no-speech", cwd=tmp_path, env=offline)  # the default model
    assert by_id.returncode == 0, by_id.stderr
    assert (tmp_path / "models/qwen2-0.5b-instruct/manifest.yaml").is_file()

    by_folder = host_setup(str(folder), "--out", str(tmp_path / "m"), cwd=tmp_path)
    assert by_folder.returncode == 0, by_folder.stderr
    snapshot_folder = host_setup(str(next((folder / "snapshots").iterdir())), cwd=tmp_path)
    assert snapshot_folder.returncode == 0, snapshot_folder.stderr
    assert [p.name for p in (tmp_path / "models").iterdir() if p.name != ".cache"] == ["qwen2-0.5b-instruct"]


def test_a_config_named_but_missing_is_one_line_before_any_work(tiny_hf: Path, tmp_path: Path) -> None:
    """A mistyped --config (or $ASSISTANT_CONFIG) must not build into another folder without the speech models."""
    missing = tmp_path / "project/config.yml"
    named = host_setup(str(tiny_hf), "--config", str(missing), cwd=tmp_path)
    environment = {**os.environ, "ASSISTANT_CONFIG": str(missing)}
    from_environment = host_setup(str(tiny_hf), cwd=tmp_path, env=environment)
    for result in (named, from_environment):
        assert result.returncode == 78
        assert one_error_line(result) == f"error: {missing}: config file not found"
    assert sorted(tmp_path.iterdir()) == []
