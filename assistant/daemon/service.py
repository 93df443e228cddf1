"""`assistant service install`: the systemd unit with this installation's paths."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[2] / "systemd" / "assistant.service"


def unit_text(config: Path, user: str, executable: str) -> str:
    text = TEMPLATE.read_text()
    text = text.replace("/usr/local/bin/assistant run --config /etc/assistant/config.yaml",
                        f"{executable} run --config {config}")  # fmt: skip
    text = text.replace("WorkingDirectory=/etc/assistant", f"WorkingDirectory={config.parent}")
    return text.replace("User=assistant", f"User={user}").replace("Group=assistant", f"Group={user}")


def install(config: Path, unit_dir: Path, user: str) -> str:
    """Write assistant.service; return the commands that create the user and start the service."""
    if not TEMPLATE.is_file():
        raise FileNotFoundError(f"{TEMPLATE}: the unit template ships with the source tree; install with pip -e")
    executable = shutil.which("assistant") or f"{sys.executable} -m assistant"
    unit_dir.mkdir(parents=True, exist_ok=True)
    path = unit_dir / "assistant.service"
    path.write_text(unit_text(config, user, executable))
    return "\n".join([
        f"wrote {path}",
        "now run:",
        f"  sudo useradd --system --groups audio --home-dir /var/lib/assistant --shell /usr/sbin/nologin {user}",
        "  sudo systemctl daemon-reload",
        "  sudo systemctl enable --now assistant",
        "  journalctl -u assistant -f",
    ])  # fmt: skip
