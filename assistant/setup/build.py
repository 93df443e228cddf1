"""`assistant setup`: a Hugging Face model → a complete model directory for the board and the host.

Order: what cannot work is refused first (a board target without pulsar2 or docker), the small
speech models come next, then the model. Everything is built in `.NAME.partial/` beside the
destination; each finished step leaves a marker there, so an interrupted run resumes where it
stopped, and the destination is replaced only by a rename once the manifest is written. A failed
run leaves the previous model in place. The options a model was built with are kept beside it
(`.setup.json`), so running the same command again finds it up to date at once.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from assistant.config import ConfigError, Settings, check_model_paths
from assistant.llm.checkpoint import Checkpoint, read_shape
from assistant.llm.embeddings import write_embeddings
from assistant.llm.export import copy_tokenizer, export_onnx, new_manifest
from assistant.llm.manifest import LayerFiles, ModelError, load_manifest, record_files, verify_files
from assistant.setup.download import Progress, SetupError, download, download_and_unzip, fetch_hf_model
from assistant.setup.pulsar2 import (
    collect_axmodels,
    default_kv_history,
    find_builder,
    pulsar2_command,
    run_pulsar2,
    write_model_config,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Qwen/Qwen2-0.5B-Instruct"
TARGETS = ("ax630c", "ax650n", "host")
RECORD = ".setup.json"  # the options a finished model was built with, beside its manifest
# Options whose flag is not the field name spelled with dashes.
FLAGS = {"host": "--no-host", "kv_history": "--last-kv-cache-len"}


@dataclass
class SetupOptions:
    model: str = DEFAULT_MODEL
    target: str = "ax630c"
    kv_cache_len: int = 1023
    prefill_len: int = 128
    kv_history: list[int] | None = None  # --last_kv_cache_len values; None: every prefill_len rows (pulsar2.py)
    weight_type: str = "s8"
    out: Path | None = None
    pulsar2: str | None = None
    pulsar2_image: str | None = None
    host: bool = True  # also export the ONNX layers for a PC
    keep_intermediate: bool = False


@dataclass
class StepResult:
    name: str
    seconds: float
    layers: dict | None = None  # LayerFiles of a backend, when the step built one


def check_builder(opts: SetupOptions) -> list[int]:
    """Refuse a target that cannot be built here before anything is downloaded or exported.

    Returns the board's prefill history groups (none for the host).
    """
    if opts.target not in TARGETS:
        raise SetupError(f"--target must be one of {', '.join(TARGETS)}, not {opts.target!r}")
    if opts.target == "host":
        return []
    kv_history = _kv_history(opts)
    find_builder(opts.target, opts.pulsar2, opts.pulsar2_image)
    return kv_history


def model_name(model: str) -> str:
    """The model directory's name: a repo id's last part, or a folder's name (a hub cache's `org--name` too)."""
    local = Path(model).expanduser()
    name = local.resolve().name if local.is_dir() else model.rstrip("/").split("/")[-1]
    return name.split("--")[-1].lower()


def build_model(opts: SetupOptions, models_dir: Path, force: bool = False) -> tuple[Path, list[StepResult]]:
    """Build (or resume building) the model directory; return it and what each step took.

    A model already built with the same options (and, for a local folder, the same checkpoint
    files) is left as it is and no step runs, unless `force`.
    """
    kv_history = check_builder(opts)
    local = Path(opts.model).expanduser()
    name = model_name(opts.model)
    dest = opts.out or models_dir / name
    record = _record(opts, local if local.is_dir() else None)
    if not force and _up_to_date(dest, record):
        log.info("%s is up to date (built with the same options); --force rebuilds it", dest)
        return dest, []
    hf_dir = local if local.is_dir() else fetch_hf_model(opts.model, models_dir / ".cache")
    shape = read_shape(hf_dir)  # unsupported model types fail here, before any work
    checkpoint = Checkpoint(hf_dir)
    work = dest.with_name(f".{dest.name}.partial")
    _start_or_resume(work, record)
    _check_disk(work.parent, sum(p.stat().st_size for p in hf_dir.glob("*.safetensors")))

    steps: list[tuple[str, object]] = [
        ("tokenizer", lambda: copy_tokenizer(hf_dir, work)),
        ("embeddings", lambda: write_embeddings(checkpoint, work, opts.keep_intermediate)),
    ]
    if opts.host or opts.target == "host":
        host_weights = "s4" if opts.weight_type == "s4" else "int8"
        steps.append(("onnxruntime", lambda: _host_export(hf_dir, work, shape.num_layers, host_weights)))
    if opts.target != "host":
        steps.append(("axengine", lambda: _board_build(hf_dir, work, shape.num_layers, name, opts, kv_history)))
    results = [_run_step(work, step, fn) for step, fn in steps]

    backends = {r.name: LayerFiles(**r.layers) for r in results if r.layers}
    manifest = new_manifest(hf_dir, name, opts.kv_cache_len, backends)
    record_files(work, manifest)
    manifest.save(work)
    _replace(dest, work)
    (dest / RECORD).write_text(json.dumps(record, sort_keys=True))
    return dest, results


def _host_export(hf_dir: Path, work: Path, num_layers: int, weights: str) -> LayerFiles:
    """The host's ONNX layers; `weights` "s4" is the host's counterpart of the board's s4."""
    progress = Progress("host layers", num_layers + 1, unit="graph")
    try:

        def step(message: str) -> None:
            log.debug("host %s", message)
            progress.update(1)

        return export_onnx(hf_dir, work, weights, step)
    finally:
        progress.close()


def _board_build(
    hf_dir: Path, work: Path, num_layers: int, name: str, opts: SetupOptions, kv_history: list[int]
) -> LayerFiles:
    write_model_config(hf_dir, work, name)
    build_dir = work / "axmodel_build"
    shutil.rmtree(build_dir, ignore_errors=True)
    command = pulsar2_command(
        hf_dir,
        work,
        target=opts.target,
        kv_cache_len=opts.kv_cache_len,
        prefill_len=opts.prefill_len,
        weight_type=opts.weight_type,
        kv_history=kv_history,
        pulsar2=opts.pulsar2,
        image=opts.pulsar2_image,
    )
    run_pulsar2(command)
    weights = f"{opts.weight_type}, bf16 activations"
    layers = collect_axmodels(build_dir, work, num_layers, opts.prefill_len, kv_history, weights)
    shutil.rmtree(build_dir, ignore_errors=True)
    return layers


def _kv_history(opts: SetupOptions) -> list[int]:
    """The prefill history groups to build, checked before pulsar2 spends half an hour on them."""
    if opts.kv_history is None:
        return default_kv_history(opts.kv_cache_len, opts.prefill_len)
    history = sorted(set(opts.kv_history))
    if history and not opts.prefill_len:
        raise SetupError("--last-kv-cache-len needs --prefill-len: history groups are prefill groups")
    too_long = [h for h in history if h <= 0 or h + opts.prefill_len > opts.kv_cache_len + 1]
    if too_long:
        raise SetupError(
            f"--last-kv-cache-len {too_long[0]}: a history group of H rows prefills {opts.prefill_len} tokens after "
            f"them, so H must be between 1 and {opts.kv_cache_len + 1 - opts.prefill_len} for --kv-cache-len "
            f"{opts.kv_cache_len}"
        )
    return history


def _record(opts: SetupOptions, local: Path | None) -> dict:
    """The options as JSON values, and for a local checkpoint its files' sizes and times."""
    record = {k: v if isinstance(v, (int, bool, list, type(None))) else str(v) for k, v in asdict(opts).items()}
    if local is not None:
        record["checkpoint"] = {
            p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(local.iterdir()) if p.is_file()
        }
    return record


def _up_to_date(dest: Path, record: dict) -> bool:
    try:
        if json.loads((dest / RECORD).read_text()) != record:
            return False
        manifest = load_manifest(dest)
        verify_files(dest, manifest, list(manifest.files))  # sizes only: quick
    except (OSError, ValueError, ModelError):
        return False
    return True


def _changes(old: dict, new: dict) -> str:
    """The options that differ, as the person typed them: `--target ax630c → host`."""
    changed = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            if key == "checkpoint":
                changed.append("the checkpoint's files")
            else:
                flag = FLAGS.get(key, "--" + key.replace("_", "-"))
                changed.append(f"{flag} {old.get(key)} → {new.get(key)}")
    return ", ".join(changed)


def _start_or_resume(work: Path, record: dict) -> None:
    """Keep finished steps of an earlier run with the same options; otherwise start clean, saying why."""
    recorded = work / ".options.json"
    if work.is_dir():
        try:
            old = json.loads(recorded.read_text())
        except (OSError, ValueError):
            old = None
        if old == record:
            done = sorted(p.name[len(".done-") :] for p in work.glob(".done-*"))
            if done:
                log.info("resuming the build in %s (done: %s)", work, ", ".join(done))
            return
        why = f"options changed: {_changes(old, record)}" if old else "it records no options"
        log.warning("discarding the unfinished build in %s (%s)", work, why)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    recorded.write_text(json.dumps(record, sort_keys=True))


def _run_step(work: Path, name: str, fn) -> StepResult:
    marker = work / f".done-{name}"
    if marker.is_file():
        log.info("%s: already done", name)
        return StepResult(**json.loads(marker.read_text()))
    log.info("%s ...", name)
    start = time.perf_counter()
    output = fn()
    result = StepResult(name, time.perf_counter() - start, asdict(output) if isinstance(output, LayerFiles) else None)
    marker.write_text(json.dumps(asdict(result)))
    return result


def _check_disk(folder: Path, checkpoint_bytes: int) -> None:
    # int8 ONNX (~0.5x), bf16 table (~0.3x) and axmodels (~1x) of a bf16 checkpoint, with margin
    needed = 2 * checkpoint_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SetupError(
            f"not enough disk space in {folder}: {free / 1e9:.1f} GB free, about {needed / 1e9:.1f} GB needed"
        )


def _replace(dest: Path, work: Path) -> None:
    """Swap the finished build into place; the old model is removed only after the swap."""
    for marker in [*work.glob(".done-*"), work / ".options.json"]:
        marker.unlink()
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    work.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def fetch_speech_models(settings: Settings, options: SetupOptions | None = None) -> list[Path]:
    """The vosk model and the piper voice named in the config, downloaded where the config expects them,
    then made ready to stream (assistant/setup/voice.py)."""
    from assistant.setup.voice import prepare_speech

    asr = download_and_unzip(settings.asr.model_url, settings.asr.model, settings.asr.model_sha256)
    voice = download(settings.tts.voice_url, settings.tts.voice, settings.tts.voice_sha256)
    voice_config = download(settings.tts.voice_url + ".json", Path(f"{settings.tts.voice}.json"))
    opts = options or SetupOptions(target="host")
    return [asr, voice, voice_config, *prepare_speech(asr, voice, opts.target, opts.pulsar2, opts.pulsar2_image)]


def next_command(model_dir: Path, opts: SetupOptions, settings: Settings | None, speech: bool) -> str:
    """The last line of setup: what to run now."""
    if opts.target != "host":
        return (
            f"next: copy {model_dir} to the board with its config.yaml and speech models, install pyaxengine "
            "there (README), then run `assistant service install` on the board"
        )
    if settings is None:
        return (
            f"next: `assistant config init` (writes ./config.yaml), set llm.model_dir: {model_dir.resolve()} "
            "there, then `assistant setup` again for the speech models, or `assistant run --text-only`"
        )
    config = "" if settings.source == Path("config.yaml") else f" --config {settings.source}"
    run = f"assistant run{config}" if speech else f"assistant run --text-only{config}"
    if settings.llm.model_dir.resolve() != model_dir.resolve():
        return f"next: set llm.model_dir: {model_dir.resolve()} in {settings.source}, then `{run}`"
    try:
        check_model_paths(settings, voice=speech)
    except ConfigError as e:
        return f"next: {e}"
    return f"next: `{run}`"


def verify_model(model_dir: Path) -> str:
    """Re-check every file's size and sha256, then run one prefill and one decode step on the host."""
    from assistant.llm.engine import Engine
    from assistant.llm.sampling import Sampler

    manifest = load_manifest(model_dir)
    verify_files(model_dir, manifest, list(manifest.files), checksums=True)
    if "onnxruntime" not in manifest.backends:
        return f"{model_dir}: {len(manifest.files)} files match the manifest (no host layers to run)"
    engine = Engine(model_dir, backend="onnxruntime")
    prompt = engine.tokenizer.encode("Hello", add_special_tokens=False).ids or [0]
    tokens = list(engine.generate(prompt, Sampler(), max_new_tokens=2))
    if engine.pos != len(prompt) + max(len(tokens) - 1, 0):
        raise ModelError(f"{model_dir}: the host layers did not run as expected")
    return f"{model_dir}: {len(manifest.files)} files match the manifest; one prefill and one decode step ran"


def summary(model_dir: Path, results: list[StepResult]) -> str:
    """A table of what was built: files by folder with their sizes, and the time of each step."""
    groups: dict[str, list[int]] = {}
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            rel = path.relative_to(model_dir)
            key = f"{rel.parts[0]}/" if len(rel.parts) > 1 else rel.name
            groups.setdefault(key, []).append(path.stat().st_size)
    lines = [f"{'file':48} {'count':>5} {'size':>10}"]
    groups.pop(RECORD, None)
    for key, sizes in groups.items():
        lines.append(f"{key:48} {len(sizes):>5} {sum(sizes) / 1e6:>8.1f} MB")
    lines.append("")
    lines += [f"step {r.name:43} {r.seconds:>14.1f} s" for r in results]
    return "\n".join(lines)
