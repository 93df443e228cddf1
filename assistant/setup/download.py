"""Downloads that survive interruptions: HTTP with resume and checksums, and Hugging Face models;
files written whole or not at all, and write errors worded for a person."""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import pwd
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from assistant.config import nearest_existing

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class SetupError(Exception):
    """A setup step that cannot go on, worded for the person running it."""


# What to do when the internet (or Hugging Face) cannot be reached; re-running would not help.
OFFLINE_HELP = (
    "without the internet: build from a checkpoint folder copied here with --model DIR; point "
    "asr.model_url / tts.voice_url in config.yaml at local files (file:///path/to/model.zip); "
    "or skip the speech models with --no-speech and talk to it with `assistant run --text-only`"
)
RESUME_HINT = "run the same command again to resume"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: a full disk or a crash leaves no empty or cut file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_problem(error: OSError, path: Path) -> str:
    """A failed write (to `path`, unless the error names its own file) as one line a person can act on."""
    path = Path(error.filename) if error.filename else path
    folder = path if path.is_dir() else path.parent
    if error.errno in DISK_FULL:
        existing = nearest_existing(folder)
        free = shutil.disk_usage(existing).free
        return f"the disk is full ({free / 1e6:.0f} MB free on {existing}); free space and run the same command again"
    if error.errno == errno.ENOENT and not folder.is_dir():
        return f"no such folder: {folder}; create it first, or choose another place"
    if error.errno == errno.EROFS:
        return f"cannot write in {folder}: a read-only file system; choose a folder you can write to"
    existing = nearest_existing(folder)
    # A folder it may not write in (not a file it may not read): whose it is.
    if error.errno in (errno.EACCES, errno.EPERM) and existing and not os.access(existing, os.W_OK):
        owner, user = _user_name(existing.stat().st_uid), _user_name(os.geteuid())
        return (
            f"cannot write in {existing}: it belongs to {owner}, and user {user} may not write there; "
            f"choose a folder you can write to, or run as {owner}"
        )
    return f"{path}: {error.strerror or error}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no account here (a folder from another machine)
        return f"uid {uid}"


class Progress:
    """A tqdm bar (size, rate, ETA) on a terminal; a log line every 10% for journald, CI or a file."""

    def __init__(self, label: str, total: int | None, unit: str = "B"):
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self.next_log = 0.1
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
            # tqdm hides every bar on a terminal that reports no size (a serial console, a fresh pty).
            size = os.get_terminal_size(sys.stderr.fileno())
            shape = {"ncols": size.columns or 80, "nrows": size.lines or 24}
            self.bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, **shape, **scale)

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            return
        if not self.total:
            return
        fraction = self.done / self.total
        if fraction >= self.next_log:
            what = (
                f"{self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB"
                if self.unit == "B"
                else f"{self.done} of {self.total}"
            )
            log.info("%s: %d%% (%s)", self.label, int(fraction * 100), what)
            self.next_log = int(fraction * 10 + 1) / 10

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 30.0) -> Path:
    """Fetch `url` (http, https or file) to `dest`, resuming a partial download (`dest.part`) with a Range request.

    The file appears at `dest` only once it is complete and, when `sha256` is given, verified.
    A server that cannot be reached is told apart from a transfer that broke off: only the
    second is worth retrying.
    """
    if dest.exists():
        if sha256 and (actual := file_sha256(dest)) != sha256.lower():
            raise SetupError(
                f"{dest}: sha256 {actual}, not the {sha256} given for {url}; delete the file (or correct the "
                "checksum) and run the same command again"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    source = _url_file(part)
    have = part.stat().st_size if part.exists() else 0
    saved_url, _, version = (_read(source) or "").partition("\n")
    if have and saved_url != url:  # the start of another file: resuming would splice the two
        log.warning("%s: a partial download of %s; starting %s over", part, saved_url or "another URL", url)
        have = 0
        part.unlink()
    headers = {"Range": f"bytes={have}-"} if have else {}
    if have and version:  # a file replaced on the server since is then sent whole, not spliced onto the old start
        headers["If-Range"] = version
    try:
        request = urllib.request.Request(url.replace(" ", "%20"), headers=headers)  # as a browser sends it
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if not (e.code == 416 and have):  # 416 with a part file: nothing left to fetch, it is whole
            reason = " ".join(str(e.reason).split())  # urllib's redirect-loop reason spans lines
            raise SetupError(
                f"download of {url} failed: HTTP {e.code} {reason}; check the URL, or {OFFLINE_HELP}"
            ) from None
    except ValueError as e:  # not a URL at all: a bare path or a typo
        raise SetupError(f"cannot download {url} ({e}); give an http(s):// or file:///path URL") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        raise SetupError(f"cannot download {url} ({reason}); {OFFLINE_HELP}") from None
    else:
        with response:
            _receive(response, part, have, dest.name, url)
    if part.stat().st_size == 0:  # an error page's empty body, never a model file
        part.unlink()
        source.unlink(missing_ok=True)
        raise SetupError(f"{url}: an empty file, not a model; check the URL")
    if sha256:
        actual = file_sha256(part)
        if actual != sha256.lower():
            part.unlink()
            source.unlink(missing_ok=True)
            raise SetupError(
                f"{url}: checksum mismatch (sha256 {actual}, expected {sha256}); the download was discarded"
            )
    part.rename(dest)
    source.unlink(missing_ok=True)
    return dest


def _url_file(part: Path) -> Path:
    """Beside a partial download, the URL it holds the start of and the server's version of the file
    (its ETag or Last-Modified): only that URL may resume it, and only while the file is that version."""
    return part.with_name(part.name + ".url")


def _version(headers) -> str:
    """What If-Range may name: a strong ETag, else Last-Modified (a weak ETag may not be used)."""
    etag = headers.get("ETag") or ""
    return etag if etag and not etag.startswith("W/") else headers.get("Last-Modified") or ""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


def _receive(response, part: Path, have: int, label: str, url: str) -> None:
    resumed = response.status == 206
    if not resumed:
        have = 0  # the server ignored the range (or a file:// URL): start over
        write_atomic(_url_file(part), f"{url}\n{_version(response.headers)}")
    length = response.headers.get("Content-Length")
    progress = Progress(label, have + int(length) if length else None)
    progress.update(have)
    try:
        with open(part, "ab" if resumed else "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                progress.update(len(block))
        if progress.total and progress.done < progress.total:
            raise ConnectionError(f"connection closed after {progress.done} of {progress.total} bytes")
    except (OSError, http.client.HTTPException) as e:
        if getattr(e, "errno", None) in DISK_FULL:
            raise SetupError(write_problem(e, part)) from None
        kept = f"{progress.done / 1e6:.1f} MB kept in {part}"
        raise SetupError(f"download of {url} interrupted ({e}; {kept}); {RESUME_HINT}") from None
    finally:
        progress.close()


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
            expanded, free = sum(i.file_size for i in z.infolist()), shutil.disk_usage(dest_dir.parent).free
            if expanded > free:  # an archive that would fill the disk is refused before it does
                raise SetupError(
                    f"{url}: unpacks to {expanded / 1e6:.0f} MB, {free / 1e6:.0f} MB free on {dest_dir.parent}; "
                    "free space and run the same command again"
                )
            z.extractall(unpacked)
    except zipfile.BadZipFile:
        archive.unlink()
        raise SetupError(f"{url}: not a zip archive; the download was discarded") from None
    except BaseException:
        shutil.rmtree(unpacked, ignore_errors=True)  # a full disk or Ctrl-C: no half-unpacked model left behind
        raise
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
    from huggingface_hub import errors
    from huggingface_hub.utils import disable_progress_bars

    if not sys.stderr.isatty():
        disable_progress_bars()  # its bars are for a terminal; the log says what is fetched
    local = cache_dir / repo_id.replace("/", "--")
    patterns = ["*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer*"]
    log.info("downloading %s from Hugging Face into %s", repo_id, local)
    try:
        snapshot_download(repo_id, local_dir=local, allow_patterns=patterns)
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as e:
        cause = e.__cause__ or e.__context__ or e
        if cached := _hub_cache_snapshot(repo_id, patterns):  # downloaded before, by transformers or the hub's CLI
            log.warning("cannot reach Hugging Face (%s); building %s from its cache: %s", cause, repo_id, cached)
            return cached
        raise SetupError(f"cannot reach Hugging Face to download {repo_id} ({cause}); {OFFLINE_HELP}") from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError) as e:
        first = str(e).splitlines()[0]
        raise SetupError(
            f"Hugging Face has no model {repo_id!r} that this machine may download ({first}); check --model, "
            "or pass --model DIR with a checkpoint folder (config.json, *.safetensors, tokenizer.json)"
        ) from None
    except errors.HFValidationError as e:
        raise SetupError(
            f"--model {repo_id} is neither a folder here nor a Hugging Face repo id ({e}); check --model"
        ) from None
    except (OSError, errors.HTTPError, errors.XetDownloadError) as e:  # a transfer that broke off: what arrived is kept
        if getattr(e, "errno", None) in DISK_FULL:
            raise SetupError(write_problem(e, local)) from None
        raise SetupError(f"download of {repo_id} interrupted ({e}); {RESUME_HINT}") from None
    except Exception as e:  # anything else: repeating the command would not help
        raise SetupError(f"download of {repo_id} failed ({type(e).__name__}: {e})") from None
    return local


def _hub_cache_snapshot(repo_id: str, patterns: list[str]) -> Path | None:
    """The model as huggingface-hub's own cache holds it ($HF_HUB_CACHE, ~/.cache/huggingface/hub), if it does."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not there, or incomplete: the download was the only way
        return None


def unfinished_download(local: Path) -> bool:
    """Whether a Hugging Face download into `local` has files still arriving: its library keeps them
    beside the folder's own download records until whole, and without the internet it hands the
    folder over as it is."""
    return any((local / ".cache" / "huggingface" / "download").rglob("*.incomplete"))
