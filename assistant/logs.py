"""Logging for a person reading a terminal or `journalctl`."""

from __future__ import annotations

import logging
import os
import sys

# journald reads a "<N>" prefix as the syslog priority, so levels show in colour in journalctl.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # journald makes one entry of every line it reads, and takes the priority from that line's own
        # prefix: a traceback's lines without it would be entries at "info", hidden from `journalctl -p err`.
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines() or [""])


def to_journal(stream=None) -> bool:
    """Whether `stream` (stderr) is the journal: $JOURNAL_STREAM names its device and inode.

    The variable is inherited, so a shell or a program started from a service (a desktop terminal
    is one) has it too while its stderr is a terminal; systemd.exec(5) says to compare them.
    """
    device_inode = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):  # no file descriptor behind it (a test's capture)
        return False
    return device_inode == f"{stat.st_dev}:{stat.st_ino}"


def setup_logging(level: str = "info") -> None:
    """Configure the root logger once: journald adds its own timestamps, a terminal gets ours."""
    handler = logging.StreamHandler(sys.stderr)
    if to_journal(sys.stderr):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
