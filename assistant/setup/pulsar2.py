"""The board build: Pulsar2's `llm_build`, run locally or in its docker image, and its outputs collected."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from assistant.llm.checkpoint import ModelShape, read_shape
from assistant.llm.manifest import LayerFiles
from assistant.setup.download import SetupError, write_problem

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h

CHIPS = {"ax630c": "AX620E", "ax650n": "AX650"}  # Pulsar2 names the AX630C's family AX620E
GET_PULSAR2 = (
    "install Pulsar2 from AXERA's documentation (`pulsar2` on PATH, or its docker image: "
    "`docker load -i ax_pulsar2_<version>.tar.gz`, then pass --pulsar2-image NAME:TAG)"
)


# ax-llm-build's model types (config/qwen2-0.5B.json says "qwen" for Qwen2, tinyllama.json "llama").
MODEL_TYPES = {"qwen2": "qwen", "llama": "llama"}


def pulsar2_model_config(shape: ModelShape, name: str) -> dict:
    """The --model_config JSON of `pulsar2 llm_build`, in ax-llm-build's format (config/qwen2-0.5B.json).

    Its key names are its own, not Hugging Face's: rope_theta_base, norm_eps and the misspelt
    max_position_embedings. Its values are the checkpoint's as the host export reads them (the same
    rope base whichever way config.json gives it).
    """
    return {
        "model_name": name,
        "model_type": MODEL_TYPES[shape.model_type],
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "num_key_value_heads": shape.num_kv_heads,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "vocab_size": shape.vocab_size,
        "rope_theta_base": shape.rope_theta,
        "max_position_embedings": shape.max_position_embeddings,
        "rope_partial_factor": 1.0,
        "norm_eps": shape.rms_norm_eps,
        "norm_type": "rms_norm",
        "hidden_act": "silu",  # read_shape refuses any other
    }


def default_kv_history(kv_cache_len: int, prefill_len: int) -> list[int]:
    """History groups every prefill_len rows, up to the last chunk that still fits in kv_cache_len.

    With them, a prefill at any position (the cached system prompt plus a new turn, a long
    conversation) runs in P-token chunks on the NPU instead of token by token.
    """
    if not prefill_len:
        return []
    return list(range(prefill_len, kv_cache_len + 2 - prefill_len, prefill_len))


def llm_build_args(
    input_dir: str,
    output_dir: str,
    model_config: str,
    chip: str,
    kv_cache_len: int,
    prefill_len: int,
    weight_type: str,
    kv_history: list[int],
) -> list[str]:
    args = [
        "llm_build",
        "--input_path", input_dir,
        "--output_path", output_dir,
        "--kv_cache_len", str(kv_cache_len),
        "--model_config", model_config,
        "--hidden_state_type", "bf16",
        "--weight_type", weight_type,
        "--chip", chip,
    ]  # fmt: skip
    if prefill_len:
        args += ["--prefill_len", str(prefill_len)]
        for rows in kv_history:
            args += ["--last_kv_cache_len", str(rows)]
    return args


def pulsar2_command(
    hf_dir: Path,
    work_dir: Path,
    *,
    target: str,
    kv_cache_len: int,
    prefill_len: int,
    weight_type: str,
    kv_history: list[int],
    pulsar2: str | None = None,
    image: str | None = None,
) -> list[str]:
    """The full command line: a local pulsar2, or `docker run` of the Pulsar2 image with both folders mounted."""
    chip = CHIPS[target]
    if image:
        args = llm_build_args("/data/input", "/data/work/axmodel_build", "/data/work/pulsar2_config.json",
                              chip, kv_cache_len, prefill_len, weight_type, kv_history)  # fmt: skip
        mounts = [(hf_dir, "/data/input:ro"), (work_dir, "/data/work")]
    else:
        args = llm_build_args(str(hf_dir), str(work_dir / "axmodel_build"), str(work_dir / "pulsar2_config.json"),
                              chip, kv_cache_len, prefill_len, weight_type, kv_history)  # fmt: skip
        mounts = []
    return [*pulsar2_prefix(target, pulsar2, image, mounts), *args]


def pulsar2_prefix(target: str, pulsar2: str | None, image: str | None, mounts: list[tuple[Path, str]]) -> list[str]:
    """How a pulsar2 command line starts: the local executable, or `docker run` of the image with
    `mounts` (a folder here, and where the container sees it, with `:ro` for read-only)."""
    executable = find_builder(target, pulsar2, image)
    if not image:
        return [executable]
    volumes = [arg for folder, inside in mounts for arg in ("-v", f"{folder.resolve()}:{inside}")]
    # As the calling user: files the container writes as root could not be moved into place after.
    user = ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
    return ["docker", "run", "--rm", *user, *volumes, image, "pulsar2"]


def find_builder(target: str, pulsar2: str | None = None, image: str | None = None) -> str:
    """The pulsar2 (or, with an image, docker) executable; looked up before setup does any work."""
    if image:
        if not shutil.which("docker"):
            raise SetupError(f"--pulsar2-image needs docker, which is not installed; {GET_PULSAR2}")
        _check_image(image)
        return "docker"
    executable = shutil.which(pulsar2) if pulsar2 else shutil.which("pulsar2")
    if not executable:
        where = f"--pulsar2 {pulsar2} is not an executable" if pulsar2 else "no pulsar2 found on PATH"
        raise SetupError(f"{where} for the {target} build; {GET_PULSAR2}; or build for a PC with --target host")
    return executable


def _check_image(image: str) -> None:
    """The image is loaded and the docker daemon answers: a daemon not running, a user outside the
    docker group or an image never loaded show before the build, not after the export."""
    try:
        inspected = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", image], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise SetupError(f"--pulsar2-image {image}: docker did not answer in a minute; check `docker info`") from None
    if inspected.returncode != 0:
        lines = [line.strip() for line in inspected.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {inspected.returncode}"
        raise SetupError(
            f"--pulsar2-image {image}: docker cannot use it ({why}); start docker, or load the image "
            "(`docker load -i ax_pulsar2_<version>.tar.gz`)"
        )


def run_pulsar2(command: list[str], work: Path) -> None:
    """Run the build (writing in `work`), streaming its output to the log; a failure reports its last lines."""
    log.info("running: %s", " ".join(command))
    tail: collections.deque[str] = collections.deque(maxlen=20)
    try:
        # Its own process group: pulsar2's workers (--parallel) can then be ended with it.
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
            preexec_fn=_end_with(os.getpid()),
        )
    except OSError as e:
        raise SetupError(f"cannot run {command[0]}: {e.strerror}; {GET_PULSAR2}") from None
    assert process.stdout is not None
    try:
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            log.info("pulsar2: %s", line)
        process.wait()
    except BaseException:  # Ctrl-C, or any failure here: the build must not go on writing into the partial folder
        _stop(process)
        raise
    if process.returncode != 0:
        last = "\n  ".join(tail)
        step = "build" if "build" in command else "llm_build"
        if any(os.strerror(errno.ENOSPC) in line for line in tail):  # a full disk, in its traceback's words
            raise SetupError(f"pulsar2 {step} stopped: {write_problem(OSError(errno.ENOSPC, 'full'), work)}")
        # docker's own words are Go's, in lower case: the disk that filled is the one docker keeps its containers on
        if command[0] == "docker" and (full := [line for line in tail if os.strerror(errno.ENOSPC).lower() in line]):
            raise SetupError(
                f"pulsar2 {step} stopped: the disk where docker keeps its images and containers is full ({full[-1]}); "
                "free space there (`docker system df` shows what docker holds) and run the same command again"
            )
        if killed := _killed_by(process.returncode, docker=command[0] == "docker"):
            raise SetupError(f"pulsar2 {step} was {killed}; its last lines:\n  {last}")
        raise SetupError(f"pulsar2 {step} failed with exit status {process.returncode}; its last lines:\n  {last}")


def _killed_by(status: int, docker: bool) -> str | None:
    """What ended a build that a signal ended, from its exit status (docker run reports 128 + the signal)."""
    number = -status if status < 0 else status - 128 if docker and 128 < status < 128 + signal.NSIG else 0
    if number == signal.SIGKILL:  # setup never sends it: the kernel does, when the machine runs out of memory
        return (
            "killed (SIGKILL), most likely by the kernel for want of memory (`journalctl -k | grep -i oom` says "
            "so): close other programs or give the machine more memory or swap, then run the same command again "
            "(finished steps are kept)"
        )
    if number > 0:
        try:
            return f"ended by {signal.Signals(number).name}"
        except ValueError:  # a real-time signal, which has no name of its own
            return f"ended by signal {number}"
    return None


def _end_with(parent: int):
    """For the child: SIGTERM when `parent` dies, even by kill -9 (which leaves it no time to end the
    build), so that no build goes on writing where the next run builds (docker passes it on)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def in_child() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # it died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def _stop(process: subprocess.Popen) -> None:
    """End a build this process started, with every process it started (docker run passes the
    signal on to its container)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def collect_axmodels(
    build_dir: Path, model_dir: Path, num_layers: int, prefill_len: int, kv_history: list[int], weights: str
) -> LayerFiles:
    """Move the build's axmodels into model_dir/axmodel/ as qwen_l{i}.axmodel and qwen_post.axmodel.

    Pulsar2 versions name their files differently (qwen_l0.axmodel, <model>_p128_l0_together.axmodel),
    so the layer index is read from each name rather than assumed.
    """
    found = sorted(build_dir.rglob("*.axmodel"))
    layers: dict[int, Path] = {}
    post = None
    for path in found:
        if "post" in path.stem:
            post = path
        elif match := re.search(r"_l(\d+)(?:_|$)", path.stem):
            layers[int(match.group(1))] = path
    missing = [i for i in range(num_layers) if i not in layers]
    if post is None or missing:
        what = f"layers {missing}" if missing else "the post model"
        raise SetupError(f"pulsar2 finished but {build_dir} lacks {what} (found: {[p.name for p in found]})")
    (model_dir / "axmodel").mkdir(exist_ok=True)
    names = []
    for i in range(num_layers):
        names.append(f"axmodel/qwen_l{i}.axmodel")
        shutil.move(layers[i], model_dir / names[-1])
    shutil.move(post, model_dir / "axmodel/qwen_post.axmodel")
    return LayerFiles(
        layers=names, post="axmodel/qwen_post.axmodel", prefill_len=prefill_len, weights=weights, kv_history=kv_history
    )


def write_model_config(hf_dir: Path, work_dir: Path, name: str) -> Path:
    path = work_dir / "pulsar2_config.json"
    path.write_text(json.dumps(pulsar2_model_config(read_shape(hf_dir), name), indent=2))
    return path
