"""`assistant service install`: the systemd unit, the service's config, and the checks that it can start.

The unit hides /home, /root and /run/user (`ProtectHome=yes`) and gives the service its own /tmp
(`PrivateTmp=yes`), and `ProtectSystem=strict` leaves it only /var/lib/assistant (its
`StateDirectory`) and /run/assistant (its `RuntimeDirectory`) to write. A program, config or model
in one of the hidden places is refused here, naming the path and the option, instead of failing
later in the journal.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from pathlib import Path

from assistant.config import Settings, load_settings, nearest_existing, settings_from_text
from assistant.daemon.control import answers
from assistant.doctor import writable
from assistant.setup.download import write_atomic, write_problem

PACKAGE = Path(__file__).resolve().parents[1]
UNIT_TEMPLATE = PACKAGE / "data" / "assistant.service"
DEFAULT_CONFIG = PACKAGE / "data" / "config.yaml"
README = PACKAGE.parent / "README.md"  # present in a source checkout only

SYSTEM_CONFIG = Path("/etc/assistant/config.yaml")
STATE_DIR = Path("/var/lib/assistant")  # StateDirectory=assistant
RUNTIME_DIR = Path("/run/assistant")  # RuntimeDirectory=assistant
SERVICE_SOCKET = RUNTIME_DIR / "assistant.sock"
# Clients in a user shell read the service's socket path here when their own config names none.
SOCKET_RECORD = Path("/etc/assistant/socket")

HIDDEN = [
    (Path("/home"), "ProtectHome=yes"),
    (Path("/root"), "ProtectHome=yes"),
    (Path("/run/user"), "ProtectHome=yes"),
    (Path("/tmp"), "PrivateTmp=yes"),
    (Path("/var/tmp"), "PrivateTmp=yes"),
]


class InstallError(Exception):
    """The service could not start as configured; worded for the person installing it."""


def unit_text(config: Path, user: str, executable: str, allow_home: bool = False, group: str | None = None) -> str:
    text = UNIT_TEMPLATE.read_text()
    text = text.replace("/usr/local/bin/assistant run --config /etc/assistant/config.yaml",
                        f"{executable} run --config {config}")  # fmt: skip
    text = text.replace("WorkingDirectory=/etc/assistant", f"WorkingDirectory={config.parent}")
    if allow_home:
        text = text.replace("ProtectHome=yes", "ProtectHome=read-only")
    if README.is_file():
        text = text.replace("Description=Offline voice assistant\n",
                            f"Description=Offline voice assistant\nDocumentation=file://{README}\n")  # fmt: skip
    return text.replace("User=assistant", f"User={user}").replace("Group=assistant", f"Group={group or user}")


def _primary_group(user: str, root: Path = Path("/")) -> str | None:
    """The group of `user` as `root`'s /etc/passwd and /etc/group name it, or None when it has no such user."""

    def entries(name: str) -> list[list[str]]:
        try:
            return [line.split(":") for line in (root / "etc" / name).read_text().splitlines()]
        except OSError:
            return []

    gid = next((fields[3] for fields in entries("passwd") if len(fields) > 3 and fields[0] == user), None)
    if gid is None:
        return None
    return next((fields[0] for fields in entries("group") if len(fields) > 2 and fields[2] == gid), gid)


def default_config_text() -> str:
    """The packaged config with its model paths moved under the state directory, which the service reads."""
    return re.sub(r"^(\s+\w+): models/", rf"\1: {STATE_DIR}/models/", DEFAULT_CONFIG.read_text(), flags=re.M)


def service_socket(record: Path = SOCKET_RECORD) -> Path | None:
    """The installed service's control socket, as `service install` recorded it."""
    try:
        return Path(record.read_text().strip())
    except OSError:
        return None


def hidden_by(path: Path, allow_home: bool) -> str | None:
    """The unit option that keeps the service from seeing `path`, if any."""
    for top, option in HIDDEN:
        if path.is_relative_to(top) and not (allow_home and option.startswith("ProtectHome")):
            return option
    return None


def install(
    config: Path = SYSTEM_CONFIG,
    unit_dir: Path = Path("/etc/systemd/system"),
    user: str = "assistant",
    *,
    root: Path = Path("/"),
    models: Path | None = None,
    allow_home: bool = False,
) -> str:
    """Check reachability, then write the config (when missing), copy models and write the unit; return a report.

    Paths are as the service sees them; `root` is prefixed to everything written (an image being built).
    Nothing is written when a check fails: a missing config is checked as the default it would become.
    """
    if not UNIT_TEMPLATE.is_file():
        raise InstallError(f"{UNIT_TEMPLATE}: the unit template is missing from the installed package")
    if models is not None and not models.is_dir():
        raise InstallError(f"--models {models}: not a folder")
    config = config.absolute()
    on_disk = _under(root, config)
    new_config = None if on_disk.exists() else default_config_text()
    settings = load_settings(on_disk) if new_config is None else settings_from_text(new_config, on_disk)

    script = Path(sys.executable).parent / "assistant"  # this installation's, not whichever is first on PATH
    executable = str(script) if script.is_file() else f"{sys.executable} -m assistant"
    needed = [
        ("the assistant command", Path(executable.split()[0]).resolve()),
        ("the Python running assistant", Path(sys.executable).resolve()),
        ("the assistant package", PACKAGE),
        ("the config", config),
        *_configured_paths(settings, root),
    ]
    problems = [
        f"{path} ({what}): hidden from the service by {option} in the unit; {_move_hint(option, what)}"
        for what, path in needed
        if (option := hidden_by(path, allow_home))
    ]
    problems += _writable_problems(settings, root)
    written = [_under(root, unit_dir), _under(root, SOCKET_RECORD).parent]
    written += [on_disk.parent] if new_config is not None else []
    written += [_under(root, STATE_DIR / "models")] if models is not None else []
    problems += [_unwritable(folder) for folder in dict.fromkeys(written) if not writable(folder)]
    socket_path = _service_view(root, settings.control.socket) if settings.control.socket else SERVICE_SOCKET
    if answers(_under(root, socket_path)):
        problems.append(
            f"{socket_path}: an assistant already answers there; stop it first (`systemctl stop assistant`, or "
            "Ctrl-C the `assistant run`): two instances cannot share one control socket"
        )
    problems = list(dict.fromkeys(problems))  # two folders on one read-only file system: said once
    if len(problems) == 1:
        raise InstallError(problems[0])
    if problems:
        raise InstallError("the service could not run as configured:\n  " + "\n  ".join(problems))

    report = []
    if new_config is not None:
        on_disk.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(on_disk, new_config)
        report.append(f"created {config} from the packaged default (models under {STATE_DIR}/models)")
    if models is not None:
        report += _copy_models(models, _under(root, STATE_DIR / "models"))
    missing = [f"{what}: {path}" for what, path in _configured_paths(settings, root) if not _under(root, path).exists()]
    unit = _under(root, unit_dir) / "assistant.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    # An existing user's own group need not bear its name (nobody's is nogroup on Debian): systemd
    # would not start the service with a group that does not exist.
    group = _primary_group(user, root)
    unit.write_text(unit_text(config, user, executable, allow_home, group))
    record = _under(root, SOCKET_RECORD)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(f"{socket_path}\n")
    report.append(f"wrote {unit}")
    report.append(f"wrote {record}: clients find the service's socket ({socket_path}) there")
    if missing:
        report.append(
            "not installed yet (copy them with --models DIR, e.g. the models/ folder `assistant setup` made):"
        )
        report += [f"  {line}" for line in missing]
    create_user = f"  sudo useradd --system --groups audio --home-dir {STATE_DIR} --shell /usr/sbin/nologin {user}"
    report += [
        "now run:",
        *([create_user] if group is None else []),  # a second install, or a user of the system's own
        "  sudo systemctl daemon-reload",
        "  sudo systemctl enable --now assistant",
        "  journalctl -u assistant -f",
    ]
    return "\n".join(report)


def _under(root: Path, path: Path) -> Path:
    return root / path.relative_to("/") if path.is_absolute() else root / path


def _service_view(root: Path, path: Path) -> Path:
    """A path read from a config inside `root` (resolved by the loader to root/...) as the service sees it."""
    try:
        return Path("/") / path.resolve().relative_to(root.resolve())
    except ValueError:
        return path


MODEL_KEYS = ("llm.model_dir", "asr.model", "tts.voice", "wake.model")


def _configured_paths(settings: Settings, root: Path) -> list[tuple[str, Path]]:
    found = [
        ("llm.model_dir", settings.llm.model_dir),
        ("asr.model", settings.asr.model),
        ("tts.voice", settings.tts.voice),
        ("wake.model", settings.wake.model),
        ("mqtt.ca_file", settings.mqtt.ca_file),
        *((f"skills.paths[{i}]", p) for i, p in enumerate(settings.skills.paths)),
    ]
    return [(key, _service_view(root, path)) for key, path in found if path is not None]


def _unwritable(folder: Path) -> str:
    """Why `folder` cannot be written: a read-only file system in the words `assistant setup` uses."""
    existing = nearest_existing(folder)
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return write_problem(OSError(errno.EROFS, os.strerror(errno.EROFS), str(existing)), existing)
    return f"{folder}: cannot be written (a file in the way, or another user's: sudo?)"


def _writable_problems(settings: Settings, root: Path) -> list[str]:
    """state_dir and control.socket must lie where ProtectSystem=strict lets the service write."""
    problems = []
    for key, value, allowed in [
        ("state_dir", settings.state_dir, STATE_DIR),
        ("control.socket", settings.control.socket, RUNTIME_DIR),
    ]:
        if value is not None and not _service_view(root, value).is_relative_to(allowed):
            problems.append(
                f"{key}: {_service_view(root, value)} is read-only for the service (ProtectSystem=strict in the "
                f"unit); leave {key} empty in the config, and the service uses {allowed}"
            )
    return problems


def _move_hint(option: str, what: str) -> str:
    if what.startswith(("the Python", "the assistant")):  # the program itself
        fix = "install the package outside /home and /tmp (python3 -m venv /opt/assistant, then its pip install …)"
    elif what in MODEL_KEYS:
        fix = f"move it (models belong under {STATE_DIR}/models: --models DIR copies them there)"
    elif what.startswith("skills.paths"):
        fix = f"move its skills into {SYSTEM_CONFIG.parent}/skills: a skills folder beside the config needs no naming"
    else:  # the config, a CA file
        fix = f"move it into {SYSTEM_CONFIG.parent} (where --config looks by default)"
    if option.startswith("ProtectHome"):
        fix += ", or pass --allow-home (ProtectHome=read-only)"
    return fix


def _copy_models(source: Path, dest: Path) -> list[str]:
    """Each model folder or file of `source` (not hidden build folders) copied into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for entry in sorted(source.iterdir()):
        if entry.name.startswith("."):  # .cache (downloads), .NAME.partial (unfinished builds)
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, dirs_exist_ok=True)
        else:
            shutil.copy2(entry, dest / entry.name)
        copied.append(f"copied {entry} to {dest / entry.name}")
    return copied
