"""Downloads that survive interruptions: HTTP with resume and checksums, and Hugging Face models."""

from __future__ import annotations

import hashlib
import http.client
import logging
import shutil
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class SetupError(Exception):
    """A setup step that cannot go on, worded for the person running it."""


class Progress:
    """A progress line on a terminal; a log line every 10% when stderr is a file or journald."""

    def __init__(self, label: str, total: int | None):
        self.label, self.total, self.done = label, total, 0
        self.tty = sys.stderr.isatty()
        self.next_log = 0.1
        self.start = time.monotonic()

    def update(self, count: int) -> None:
        self.done += count
        if not self.total:
            return
        fraction = self.done / self.total
        if self.tty:
            print(
                f"\r  {self.label}: {fraction:4.0%} ({self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB)",
                end="",
                file=sys.stderr,
                flush=True,
            )
        elif fraction >= self.next_log:
            log.info("%s: %d%%", self.label, int(fraction * 100))
            self.next_log = int(fraction * 10 + 1) / 10

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url` to `dest`, resuming a previous partial download (`dest.part`) with a Range request.

    The file appears at `dest` only once it is complete and, when `sha256` is given, verified.
    """
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = response.status == 206
            if not resumed:
                have = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            progress = Progress(dest.name, have + int(length) if length else None)
            progress.update(have)
            with open(part, "ab" if resumed else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    progress.update(len(block))
            progress.close()
            if progress.total and progress.done < progress.total:
                raise ConnectionError(f"connection closed after {progress.done} of {progress.total} bytes")
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the part file is already whole
            pass
        else:
            raise SetupError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise SetupError(f"download of {url} interrupted ({reason}); run the same command again to resume") from None
    if sha256:
        actual = file_sha256(part)
        if actual != sha256.lower():
            part.unlink()
            raise SetupError(
                f"{url}: checksum mismatch (sha256 {actual}, expected {sha256}); the download was discarded"
            )
    part.rename(dest)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download_and_unzip(url: str, dest_dir: Path, sha256: str | None = None) -> Path:
    """A zipped model folder (vosk's format) unpacked to `dest_dir`, replacing nothing until complete."""
    if dest_dir.is_dir():
        return dest_dir
    archive = download(url, dest_dir.with_name(dest_dir.name + ".zip"), sha256)
    unpacked = dest_dir.with_name(dest_dir.name + ".unpacking")
    shutil.rmtree(unpacked, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(unpacked)
    except zipfile.BadZipFile:
        archive.unlink()
        raise SetupError(f"{url}: not a zip archive; the download was discarded") from None
    # vosk archives hold one top-level folder named like the model
    entries = list(unpacked.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
    root.rename(dest_dir)
    shutil.rmtree(unpacked, ignore_errors=True)
    archive.unlink()
    return dest_dir


def fetch_hf_model(repo_id: str, cache_dir: Path) -> Path:
    """Download (or resume) the files of a Hugging Face model that setup needs into cache_dir/repo."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SetupError("downloading from Hugging Face needs the build extra: pip install '.[build]'") from None
    local = cache_dir / repo_id.replace("/", "--")
    patterns = ["*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer*"]
    try:
        snapshot_download(repo_id, local_dir=local, allow_patterns=patterns)
    except Exception as e:  # the hub client raises many types; all mean the same to the user
        raise SetupError(f"download of {repo_id} failed ({e}); run the same command again to resume") from None
    return local
