"""manifest.yaml: what a model directory holds, checked against the files before any inference."""

from __future__ import annotations

import hashlib
import os
import pwd
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

MANIFEST_FILE = "manifest.yaml"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # current checkpoints' template, which wins over tokenizer_config.json's
FORMAT_VERSION = 2  # 2: the post graph's output is named `output`; board layers list their history groups
FIX = "re-run `assistant setup`"


class ModelError(Exception):
    """A model directory that cannot be used, worded to name the file and the fix."""


@dataclass
class LayerFiles:
    """One backend's graphs: a session per decoder layer and the post (norm + lm_head) session."""

    layers: list[str]
    post: str
    prefill_len: int = 0  # 0: the graphs take any T (ONNX) or have no prefill shape group (axmodel)
    weights: str = ""  # e.g. "int8" or "float", for people reading the manifest
    kv_history: list[int] = field(default_factory=list)
    """Board only: the history rows of the prefill groups after the first (`--last_kv_cache_len`)."""
    chip: str = ""
    """Board only: the chip Pulsar2 built the axmodels for ("AX630C" or "AX650N"; "" before it was recorded)."""


@dataclass
class Manifest:
    name: str
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    kv_cache_len: int
    eos_token_ids: list[int]
    embeddings: str
    tokenizer: str = "tokenizer.json"
    chat_template: str = "tokenizer_config.json"
    tool_call_format: str = "qwen"
    backends: dict[str, LayerFiles] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)
    source: str = ""
    format: int = FORMAT_VERSION

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def save(self, model_dir: Path) -> None:
        (model_dir / MANIFEST_FILE).write_text(yaml.safe_dump(asdict(self), sort_keys=False))


def load_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelError(f"{path}: not found; {model_dir} is not a model directory (create one with `assistant setup`)")
    if not os.access(path, os.R_OK):
        raise ModelError(unreadable(path, model_dir))
    try:
        data = yaml.safe_load(path.read_text())
        data["backends"] = {name: LayerFiles(**files) for name, files in data.get("backends", {}).items()}
        manifest = Manifest(**data)
    except (yaml.YAMLError, TypeError, AttributeError, KeyError) as e:
        raise ModelError(f"{path}: unreadable manifest ({e}); {FIX}") from None
    if manifest.format != FORMAT_VERSION:
        raise ModelError(f"{path}: manifest format {manifest.format} is not {FORMAT_VERSION}; {FIX}")
    if problem := _wrong_value(manifest):
        raise ModelError(f"{path}: {problem}; {FIX}")
    return manifest


def unreadable(path: Path, model_dir: Path) -> str:
    """A model file this process may not read (copied as root, run by the service's user), in words."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        user = f"uid {os.geteuid()}"
    return (
        f"{path}: the user {user} cannot read it; make the model readable by the user that runs the "
        f"assistant (chmod -R a+rX {model_dir})"
    )


def _wrong_value(m: Manifest) -> str | None:
    """The first number a hand-edited manifest got wrong, in words (the engine would fail deep inside)."""
    for name in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size",
                 "vocab_size", "kv_cache_len"):  # fmt: skip
        value = getattr(m, name)
        if type(value) is not int or value <= 0:
            return f"{name} is {value!r}, not a positive whole number"
    ids = m.eos_token_ids
    if not isinstance(ids, list) or not ids or any(type(i) is not int or not 0 <= i < m.vocab_size for i in ids):
        return f"eos_token_ids is {ids!r}, not a list of token ids below vocab_size {m.vocab_size}"
    for name in ("embeddings", "tokenizer", "chat_template"):
        if not isinstance(getattr(m, name), str):
            return f"{name} is {getattr(m, name)!r}, not a file name"
    for backend, files in m.backends.items():
        if not isinstance(files.layers, list) or not all(isinstance(f, str) for f in [*files.layers, files.post]):
            return f"backends.{backend} names its layers {files.layers!r} and post {files.post!r}, not file names"
        numbers = [files.prefill_len, *files.kv_history] if isinstance(files.kv_history, list) else [None]
        if any(type(n) is not int for n in numbers):
            return f"backends.{backend}: prefill_len {files.prefill_len!r} or kv_history {files.kv_history!r} is wrong"
        if files.chip not in ("", "AX630C", "AX650N"):
            return f"backends.{backend}: chip is {files.chip!r}, not AX630C or AX650N"
    if not isinstance(m.files, dict):
        return f"files is {m.files!r}, not each file with its size and sha256"
    for name, entry in m.files.items():
        if not isinstance(entry, dict) or type(entry.get("size")) is not int or type(entry.get("sha256")) is not str:
            return f"files: {name} is listed as {entry!r}, not with its size and sha256"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def model_files(manifest: Manifest) -> list[str]:
    """Every file the manifest points to (each backend's graphs, the tokenizer, the table...) and lists."""
    names = [manifest.tokenizer, manifest.chat_template, manifest.embeddings]
    for files in manifest.backends.values():
        names += [*files.layers, files.post]
    return list(dict.fromkeys([*names, *manifest.files]))


def record_files(model_dir: Path, manifest: Manifest) -> None:
    """Fill manifest.files with the size and sha256 of every file the manifest points to."""
    names = model_files(manifest)
    if (model_dir / CHAT_TEMPLATE_FILE).is_file():  # the engine reads it: checked like the others
        names.append(CHAT_TEMPLATE_FILE)
    for name in names:
        path = model_dir / name
        manifest.files[name] = {"size": path.stat().st_size, "sha256": sha256_of(path)}


def load_checked(model_dir: Path) -> Manifest:
    """The manifest of `model_dir`, with every file it names there at its recorded size (no checksums: quick)."""
    manifest = load_manifest(model_dir)
    verify_files(model_dir, manifest, model_files(manifest))  # a manifest cut short lists fewer than it names
    return manifest


def verify_files(model_dir: Path, manifest: Manifest, names: list[str], checksums: bool = False) -> None:
    """Existence and size of each named file (and sha256 when asked), against the manifest."""
    for name in names:
        path = model_dir / name
        expected = manifest.files.get(name)
        if not path.is_file():
            raise ModelError(f"{path}: missing model file; {FIX}")
        if not os.access(path, os.R_OK):
            raise ModelError(unreadable(path, model_dir))
        if expected is None:
            raise ModelError(f"{path}: not listed in {MANIFEST_FILE}; {FIX}")
        size = path.stat().st_size
        if size != expected["size"]:
            cause = "truncated?" if size < expected["size"] else "a file of another build?"
            raise ModelError(f"{path}: {size} bytes, the manifest says {expected['size']} ({cause}); {FIX}")
        if checksums and sha256_of(path) != expected["sha256"]:
            raise ModelError(f"{path}: sha256 differs from the manifest (corrupt file); {FIX}")
    embeddings = model_dir / manifest.embeddings
    if manifest.embeddings in names and embeddings.stat().st_size != manifest.vocab_size * manifest.hidden_size * 2:
        raise ModelError(
            f"{embeddings}: {embeddings.stat().st_size} bytes do not hold a {manifest.vocab_size} x "
            f"{manifest.hidden_size} bf16 table as {MANIFEST_FILE} says; {FIX}"
        )
