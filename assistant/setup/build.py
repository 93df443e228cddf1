"""`assistant setup`: a Hugging Face model → a complete model directory for the board and the host.

Order: what cannot work is refused first (a board target without pulsar2 or docker, a destination
that holds something other than a model built here), the small speech models come next, then the
model. Everything is built in `.NAME.partial/` beside the destination; each finished step leaves a
marker there (written whole or not at all), so an interrupted run resumes where it stopped, and the
destination is replaced only by a rename once the manifest is written. A failed run leaves the
previous model in place. The options a model was built with are kept in it (`.setup.json`), so
running the same command again finds it up to date at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from assistant.config import ConfigError, Settings, check_model_paths
from assistant.llm.checkpoint import Checkpoint, read_shape
from assistant.llm.embeddings import write_embeddings
from assistant.llm.manifest import (
    CHAT_TEMPLATE_FILE,
    FIX,
    MANIFEST_FILE,
    LayerFiles,
    Manifest,
    ModelError,
    load_checked,
    load_manifest,
    model_files,
    record_files,
    verify_files,
)
from assistant.setup.download import (
    OFFLINE_HELP,
    Progress,
    SetupError,
    download,
    download_and_unzip,
    fetch_hf_model,
    unfinished_download,
    write_atomic,
)
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
MIN_KV_CACHE_LEN = 16  # as llm.kv_cache_len in config.yaml
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
    if opts.kv_cache_len < MIN_KV_CACHE_LEN:
        raise SetupError(f"--kv-cache-len must be at least {MIN_KV_CACHE_LEN}, not {opts.kv_cache_len}")
    if not 0 <= opts.prefill_len <= opts.kv_cache_len:
        raise SetupError(
            f"--prefill-len must be between 0 and --kv-cache-len ({opts.kv_cache_len}), not {opts.prefill_len}"
        )
    kv_history = _kv_history(opts)  # a mistyped value is an error on any target, before the download
    if opts.target == "host":
        if not opts.host:
            raise SetupError(
                "--no-host leaves --target host nothing to build: its layers are the ONNX layers for a PC; "
                "drop --no-host, or build for a board with --target ax630c or ax650n"
            )
        return []
    find_builder(opts.target, opts.pulsar2, opts.pulsar2_image)
    return kv_history


def checkpoint_folder(model: str) -> Path | None:
    """The local checkpoint folder `--model` names (resolved), or None for a Hugging Face repo id.

    What can only be a path (`./x`, `/x`, `~/x`, `a/b/c`, a file, a name in an existing folder) but
    is no folder is refused, instead of being asked of Hugging Face as a repo id.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        return _hub_snapshot(local) or local.resolve()
    in_a_folder = len(local.parts) > 1 and local.parent.is_dir()
    if local.exists() or in_a_folder or model.startswith((".", "/", "~")) or model.strip("/").count("/") > 1:
        what = "not a folder" if local.exists() else "no such folder"
        raise SetupError(
            f"{what}: {model}; --model takes a checkpoint folder (config.json, *.safetensors, tokenizer.json) "
            f"or a Hugging Face repo id such as {DEFAULT_MODEL}"
        )
    return None


def _hub_snapshot(folder: Path) -> Path | None:
    """For a model's folder in huggingface-hub's cache (`models--org--name`, holding blobs/, refs/ and
    snapshots/), the snapshot its refs/main names: the checkpoint folder."""
    ref = folder / "refs" / "main"
    if not ((folder / "snapshots").is_dir() and ref.is_file()):
        return None
    return (folder / "snapshots" / ref.read_text().strip()).resolve()


def model_name(model: str) -> str:
    """The model directory's name: a repo id's last part, or a folder's name (a hub cache's `org--name` too,
    for one of its snapshots: not the commit that names the snapshot)."""
    local = checkpoint_folder(model)
    if local and local.parent.name == "snapshots":
        local = local.parent.parent
    name = local.name if local else model.rstrip("/").split("/")[-1]
    return name.split("--")[-1].lower()


def destination(opts: SetupOptions, models_dir: Path) -> Path:
    """Where the model goes, refused when replacing it would delete something else.

    The finished build replaces the destination whole, so it must be missing, empty or a model
    built here, and must neither hold nor lie inside the checkpoint (or download cache) it reads.
    """
    source = checkpoint_folder(opts.model) or (models_dir / ".cache").resolve()
    given = (opts.out or models_dir / model_name(opts.model)).expanduser()
    try:
        dest = given.resolve()
    except (RuntimeError, OSError):  # a loop of links (RuntimeError before Python 3.13)
        raise SetupError(
            f"cannot build into {given}: a symbolic link that leads back to itself; "
            "fix the link, or choose another folder with --out DIR"
        ) from None
    why = None
    if dest == source:
        why = "it is the checkpoint folder the model is built from"
    elif source.is_relative_to(dest):
        why = f"it holds {source}, which the build reads"
    elif dest.is_relative_to(source):
        why = f"it lies inside {source}, which the build reads"
    elif Path.cwd().is_relative_to(dest):
        why = "it holds the current folder"
    elif dest.exists() and not dest.is_dir():
        why = "it is a file"
    elif dest.is_mount():  # the build is swapped in by renaming, which a mount point refuses
        why = f"a disk is mounted there (build into a folder on it, such as --out {dest / model_name(opts.model)})"
    elif dest.is_dir() and any(dest.iterdir()) and not _built_here(dest):
        why = "it holds files that are not a model built by `assistant setup`"
    if why:
        raise SetupError(
            f"cannot build into {dest}: {why}, and a finished build replaces its folder; "
            "choose a new or empty folder with --out DIR"
        )
    if given.is_symlink():  # the build goes where the link points (another disk, often), the link stays
        return dest
    return given if given.name not in ("", "..") else dest  # as the person wrote it, for the log


def _built_here(folder: Path) -> bool:
    """A model directory made by `assistant setup` (or the exporter): its options record, or its manifest."""
    if (folder / RECORD).is_file():
        return True
    try:  # read as plain YAML, so that a model in an older manifest format is still recognised
        manifest = yaml.safe_load((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(manifest, dict) and {"backends", "files"} <= manifest.keys()


def build_model(opts: SetupOptions, models_dir: Path, force: bool = False) -> tuple[Path, list[StepResult]]:
    """Build (or resume building) the model directory; return it and what each step took.

    A model already built with the same options (and, for a local folder, the same checkpoint
    files) is left as it is and no step runs, unless `force`.
    """
    kv_history = check_builder(opts)
    local = checkpoint_folder(opts.model)
    name = model_name(opts.model)
    dest = destination(opts, models_dir)
    with _building(dest):  # a second setup of the same model is refused, not raced
        _finish_swap(dest)
        record = _record(opts, local)
        if not force and _up_to_date(dest, record):
            log.info("%s is up to date (built with the same options); --force rebuilds it", dest)
            return dest, []
        # Here, not at the top: the exporter brings onnx, a third of a second that an up-to-date run need not wait.
        from assistant.llm.export import copy_tokenizer, eos_ids, new_manifest

        hf_dir = local or fetch_hf_model(opts.model, models_dir / ".cache")
        try:
            shape = read_shape(hf_dir)  # unsupported model types fail here, before any work
            checkpoint = Checkpoint(hf_dir)
            checkpoint.check(shape, hf_dir / "config.json")
            eos_ids(hf_dir, shape.vocab_size)  # the manifest's, written last: checked first
        except ModelError:
            if local is None and unfinished_download(hf_dir):  # what was missing is still to come
                raise SetupError(
                    f"the download of {opts.model} into {hf_dir} is unfinished and Hugging Face cannot be reached; "
                    f"run the same command again once online to finish it, or {OFFLINE_HELP}"
                ) from None
            raise
        if opts.kv_cache_len > shape.max_position_embeddings:
            raise SetupError(
                f"--kv-cache-len {opts.kv_cache_len} is longer than the {shape.max_position_embeddings} positions "
                f"the model was trained for (max_position_embeddings in {hf_dir / 'config.json'}); give at most that"
            )
        work = dest.with_name(f".{dest.name}.partial")
        _check_disk(work.parent, sum(p.stat().st_size for p in hf_dir.glob("*.safetensors")))
        # The files built from, for a download too: a new revision of it must not resume the old one's steps.
        _start_or_resume(work, {**record, "checkpoint": _checkpoint_files(hf_dir)})

        steps: list[tuple[str, object]] = [
            ("tokenizer", lambda: copy_tokenizer(hf_dir, work)),
            ("embeddings", lambda: write_embeddings(checkpoint, work, opts.keep_intermediate)),
        ]
        if opts.host:
            host_weights = "s4" if opts.weight_type == "s4" else "int8"
            steps.append(("onnxruntime", lambda: _host_export(hf_dir, work, shape.num_layers, host_weights)))
        if opts.target != "host":
            steps.append(("axengine", lambda: _board_build(hf_dir, work, shape.num_layers, name, opts, kv_history)))
        results = [_run_step(work, step, fn) for step, fn in steps]

        backends = {r.name: LayerFiles(**r.layers) for r in results if r.layers}
        manifest = new_manifest(hf_dir, name, opts.kv_cache_len, backends)
        record_files(work, manifest)
        manifest.save(work)
        write_atomic(work / RECORD, json.dumps(record, sort_keys=True))  # inside, so the swap brings it along
        _replace(dest, work)
        return dest, results


@contextlib.contextmanager
def _building(*paths: Path) -> Iterator[None]:
    """Hold the lock on building each of `paths` (a model, a speech model): their folders' own
    locks, so that nothing is left behind, released when the process ends however it ends."""
    with contextlib.ExitStack() as held:
        for parent in dict.fromkeys(path.parent.resolve() for path in paths):
            parent.mkdir(parents=True, exist_ok=True)
            folder = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            held.callback(os.close, folder)
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SetupError(f"another `assistant setup` is building in {parent}; wait for it to finish") from None
        yield


def _host_export(hf_dir: Path, work: Path, num_layers: int, weights: str) -> LayerFiles:
    """The host's ONNX layers; `weights` "s4" is the host's counterpart of the board's s4."""
    from assistant.llm.export import export_onnx

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
    run_pulsar2(command, work)
    weights = f"{opts.weight_type}, bf16 activations"
    layers = collect_axmodels(build_dir, work, num_layers, opts.prefill_len, kv_history, weights)
    layers.chip = opts.target.upper()  # named when a board cannot load them
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
    """The options as JSON values, and for a local checkpoint its resolved path and its files' sizes and times.

    The destination is left out (the record lives in it), and the checkpoint is recorded resolved, so
    `ck`, `ck/` and `/abs/ck` are the same build.
    """
    record = {k: v if isinstance(v, (int, bool, list, type(None))) else str(v) for k, v in asdict(opts).items()}
    del record["out"]
    if local is not None:
        record["model"] = str(local)
        record["checkpoint"] = _checkpoint_files(local)
    return record


def _checkpoint_files(folder: Path) -> dict[str, list[int]]:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()}


def _up_to_date(dest: Path, record: dict) -> bool:
    try:
        old = json.loads((dest / RECORD).read_text())
        # Records written before they left out --out and resolved the checkpoint's path.
        old.pop("out", None)
        if "checkpoint" in old and isinstance(old.get("model"), str):
            old["model"] = str(Path(old["model"]).expanduser().resolve())
        if old != record:
            return False
        manifest = load_checked(dest)
        # A file written since the build (the record is its last file) may differ at the same size:
        # those are checked in full, and all of them when the manifest itself was edited.
        built = (dest / RECORD).stat().st_mtime_ns
        names = model_files(manifest)
        if not _newer(dest / MANIFEST_FILE, built):
            names = [name for name in names if _newer(dest / name, built)]
        verify_files(dest, manifest, names, checksums=True)
    except (OSError, ValueError):
        return False
    except ModelError as e:
        log.warning("%s: not up to date, built again: %s", dest, str(e).removesuffix(f"; {FIX}"))
        return False
    return True


def _newer(path: Path, than_ns: int) -> bool:
    return path.stat().st_mtime_ns > than_ns


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
        except (OSError, ValueError):  # missing, or cut short by a full disk
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
    write_atomic(recorded, json.dumps(record, sort_keys=True))


def _run_step(work: Path, name: str, fn) -> StepResult:
    marker = work / f".done-{name}"
    try:
        done = StepResult(**json.loads(marker.read_text()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError):  # written by an older version, or damaged: do the step again
        log.warning("%s: its marker %s is unreadable; doing the step again", name, marker)
    else:
        log.info("%s: already done", name)
        return done
    log.info("%s ...", name)
    start = time.perf_counter()
    output = fn()
    result = StepResult(name, time.perf_counter() - start, asdict(output) if isinstance(output, LayerFiles) else None)
    write_atomic(marker, json.dumps(asdict(result)))
    return result


def _check_disk(folder: Path, checkpoint_bytes: int) -> None:
    # int8 ONNX (~0.5x), bf16 table (~0.3x) and axmodels (~1x) of a bf16 checkpoint, with margin
    needed = 2 * checkpoint_bytes
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SetupError(
            f"not enough disk space in {folder}: {_size(free)} free, about {_size(needed)} needed; free space "
            "or choose another --out, then run the same command again"
        )


def _size(count: int) -> str:
    return f"{count / 1e9:.1f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def _replace(dest: Path, work: Path) -> None:
    """Swap the finished build into place; the old model is removed only after the swap."""
    for marker in [*work.glob(".done-*"), work / ".options.json"]:
        marker.unlink()
    old = _moved_aside(dest)
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    work.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _moved_aside(dest: Path) -> Path:
    """Where the swap keeps the old model until the new one is in place."""
    return dest.with_name(f".{dest.name}.old")


def _finish_swap(dest: Path) -> None:
    """After a setup killed during the swap: the old model back in place if the new one never arrived,
    and removed if it did."""
    old = _moved_aside(dest)
    if not old.is_dir():
        return
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
    else:
        log.warning("%s: put back in place; an earlier setup was stopped while replacing it", dest)
        old.rename(dest)


def fetch_speech_models(settings: Settings, options: SetupOptions | None = None) -> list[Path]:
    """The vosk model and the piper voice named in the config, downloaded where the config expects them,
    then made ready to stream (assistant/setup/voice.py)."""
    from assistant.setup.voice import check_vosk_model, prepare_speech

    opts = options or SetupOptions(target="host")
    with _building(settings.asr.model, settings.tts.voice):  # two setups would write the same partial downloads
        asr = download_and_unzip(settings.asr.model_url, settings.asr.model, settings.asr.model_sha256)
        check_vosk_model(asr)
        voice = download(settings.tts.voice_url, settings.tts.voice, settings.tts.voice_sha256)
        voice_config = download(settings.tts.voice_url + ".json", Path(f"{settings.tts.voice}.json"))
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
        # As the config's other paths are: relative to its folder, so that the two can move together.
        named = model_dir.resolve()
        if named.is_relative_to(folder := Path(settings.source).resolve().parent):
            named = named.relative_to(folder)
        return f"next: set llm.model_dir: {named} in {settings.source}, then `{run}`"
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
    for backend, files in manifest.backends.items():
        if len(files.layers) != manifest.num_layers:
            count = f"{len(files.layers)} {backend} layers, not {manifest.num_layers}"
            raise ModelError(f"{model_dir / MANIFEST_FILE}: lists {count}; {FIX}")
    try:
        verify_files(model_dir, manifest, model_files(manifest), checksums=True)
    except ModelError as e:
        if "sha256" not in str(e):
            raise
        # Changed in place since the build, at the same size and time: setup would find it up to date.
        raise ModelError(f"{e} with --force, which rebuilds a model that looks up to date") from None
    extra = unlisted_files(model_dir, manifest)
    if CHAT_TEMPLATE_FILE in extra:  # the engine would use it unchecked (a build before templates were listed)
        raise ModelError(
            f"{model_dir / CHAT_TEMPLATE_FILE}: not listed in {MANIFEST_FILE}, though the engine reads it; "
            f"{FIX} with --force"
        )
    unused = f"; not in the manifest, so never read: {', '.join(extra)}" if extra else ""
    if "onnxruntime" not in manifest.backends:
        return f"{model_dir}: {len(manifest.files)} files match the manifest (no host layers to run){unused}"
    engine = Engine(model_dir, backend="onnxruntime")
    prompt = engine.tokenizer.encode("Hello", add_special_tokens=False).ids or [0]
    tokens = list(engine.generate(prompt, Sampler(), max_new_tokens=2))
    if engine.pos != len(prompt) + max(len(tokens) - 1, 0):
        raise ModelError(f"{model_dir}: the host layers did not run as expected")
    return f"{model_dir}: {len(manifest.files)} files match the manifest; one prefill and one decode step ran{unused}"


def unlisted_files(model_dir: Path, manifest: Manifest) -> list[str]:
    """Files in the model directory that its manifest does not list, setup's own records aside."""
    own = {MANIFEST_FILE, RECORD, "pulsar2_config.json"}
    found = (p.relative_to(model_dir).as_posix() for p in sorted(model_dir.rglob("*")) if p.is_file())
    return [name for name in found if name not in own and name not in manifest.files]


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
