"""A check run as another local user, `nobody`: the service's user, or an operator's own account.

Root may read every file, so the tests become that user in a forked child (CI runs as root).
"""

from __future__ import annotations

import os
from collections.abc import Callable

NOBODY = 65534


def as_nobody(check: Callable[[], str]) -> str:
    """What `check` returns when run as nobody, or the exception it raises as "Type: message"."""
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        message = "the child failed"
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            message = check()
        except BaseException as e:
            message = f"{type(e).__name__}: {e}"
        finally:
            os.write(writer, message.encode())
            os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader, "rb") as pipe:
        return pipe.read().decode()
