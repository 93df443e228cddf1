"""sd_notify: READY, WATCHDOG, STATUS and STOPPING to systemd over $NOTIFY_SOCKET (a datagram socket)."""

from __future__ import annotations

import os
import re
import socket


def notify(*fields: str) -> bool:
    """Send "READY=1", "STATUS=..." etc.; False when not run by systemd (or the socket is gone)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            # Never block: a receiver that is not reading must not stall the main loop (and with it
            # the stop on SIGTERM); a lost WATCHDOG=1 is resent on the next tick.
            s.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, address)
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half the watchdog timeout systemd set (WatchdogSec=), or None without one."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    # Whole numbers from systemd (a 64-bit count of microseconds, in ASCII digits); anything else (an
    # Environment= line's) is no watchdog, not a crash.
    if not re.fullmatch(r"[0-9]{1,20}", usec) or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2
