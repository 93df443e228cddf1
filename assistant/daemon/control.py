"""The control socket: JSON lines in (a text turn, cancel, status), events out.

A Unix stream socket with mode 0600 in the runtime directory. Requests:
    {"type": "say", "text": "..."}   a text turn; its events stream back, ending with "turn_done"
    {"type": "cancel"}                stop the current turn
    {"type": "status"}                one "status" event
Every connection also receives the assistant's other events (wake, transcripts, timers ringing).
A malformed or oversized line gets an "error" event and the connection is closed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024


def default_socket_path() -> Path:
    runtime = (
        os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/assistant-{os.getuid()}"
    )
    return Path(runtime.split(":")[0]) / "assistant.sock"


class Hub:
    """Fan-out of events to every connected client."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clients: set[queue.Queue] = set()

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=10_000)
        with self.lock:
            self.clients.add(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self.lock:
            self.clients.discard(q)

    def publish(self, event: dict) -> None:
        with self.lock:
            clients = list(self.clients)
        for q in clients:
            with contextlib.suppress(queue.Full):  # a client that stopped reading loses events, not the daemon
                q.put_nowait(event)


class ControlServer:
    def __init__(self, path: Path, hub: Hub, handle: Callable[[dict, Callable[[dict], None]], None]):
        self.path, self.hub, self.handle = path, hub, handle
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink()
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # created 0600: only the service's user may talk to it
        try:
            self.socket.bind(str(path))
        finally:
            os.umask(old_umask)
        self.socket.listen(8)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, name="control", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), name="control-client", daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        events = self.hub.subscribe()
        done = threading.Event()
        sender = threading.Thread(target=self._send, args=(connection, events, done), daemon=True)
        sender.start()
        try:
            reader = connection.makefile("rb")
            while True:
                line = reader.readline(MAX_LINE + 1)
                if not line:
                    break
                if len(line) > MAX_LINE:
                    events.put({"type": "error", "message": f"request longer than {MAX_LINE} bytes"})
                    break
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict) or not isinstance(request.get("type"), str):
                        raise ValueError("a request is a JSON object with a type")
                except ValueError as e:
                    events.put({"type": "error", "message": f"malformed request: {e}"})
                    break
                self.handle(request, events.put)
        except OSError:
            pass
        finally:
            events.put(None)
            done.wait(5)
            self.hub.unsubscribe(events)
            connection.close()

    def _send(self, connection: socket.socket, events: queue.Queue, done: threading.Event) -> None:
        try:
            while (event := events.get()) is not None:
                connection.sendall((json.dumps(event, ensure_ascii=False) + "\n").encode())
        except OSError:
            pass
        finally:
            done.set()

    def close(self) -> None:
        self.stopped.set()
        self.socket.close()
        self.path.unlink(missing_ok=True)


def request(path: Path, message: dict, until: Callable[[dict], bool], timeout: float = 120.0) -> Iterator[dict]:
    """Send one request and yield events until `until(event)` is true."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError as e:
            raise ConnectionError(
                f"no assistant is listening on {path} ({e.strerror}); is `assistant run` running?"
            ) from None
        s.sendall((json.dumps(message, ensure_ascii=False) + "\n").encode())
        for line in s.makefile("rb"):
            event = json.loads(line)
            yield event
            if until(event) or event.get("type") == "error":
                return
