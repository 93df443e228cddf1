"""The control socket: JSON lines in (a text turn, cancel, status), typed events out.

A Unix stream socket with mode 0600 in a directory only the service's user can write. Requests:
    {"type": "say", "text": "...", "id": "..."}   a text turn; its events stream back, ending with "turn_done"
    {"type": "cancel", "turn": "..."}              stop that turn (any connection's), or the running one
    {"type": "status"}                             one "status" event
"id" is optional (the server picks one, starting "auto-", which a client's "say" may not); every event
answering a request carries it as "request", and a connection receives only the events of its own
requests, plus the assistant's own (wake, transcripts, voice turns, timers ringing), which go to
everyone. A connection that closes cancels its turns. Anything malformed gets an "error" event,
then the connection is closed.

One asyncio loop in one thread serves every connection, so a client costs no thread; each has
a queue of events bounded in bytes: a client that stops reading is disconnected when its answers
fill it, and misses the assistant's own events meanwhile. With MAX_CLIENTS connected, a new client
takes the place of the one idle longest, if any has been idle for IDLE_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.config import ConfigError

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024  # bytes in one request
# Bytes of events waiting for one client before it counts as not reading. In bytes, not events: an
# event may be 64 KiB (an error naming a request's type), and the board has 1 GB for everything.
MAX_QUEUED = 256 * 1024
MAX_CLIENTS = 256
# With every place taken, a new client takes the place of one that has been idle this long (nothing
# asked, nothing answered) and has no turn: connections left open by a script cannot lock everyone else out.
IDLE_SECONDS = 10.0
MAX_ID = 64  # characters of a request id
# Touched when older than this: cleaners of /tmp remove what was untouched for days (systemd-tmpfiles: 10).
FRESH_SECONDS = 3600.0
# The ids the server picks for requests that name none: a client's `say` may not use one, so that no
# connection's turn is refused for an id another connection was given ("already in use").
PICKED = "auto-"


def default_socket_path() -> Path:
    runtime = (
        os.environ.get("RUNTIME_DIRECTORY") or os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/assistant-{os.getuid()}"
    )
    return Path(runtime.split(":")[0]) / "assistant.sock"


@dataclass
class Event:
    """One event for the clients. `request` names the request it answers (None: the assistant's own);
    `client` is the connection that made it, the only one that receives it (None: everyone)."""

    type: str
    fields: dict[str, Any] = field(default_factory=dict)
    request: str | None = None
    client: int | None = None

    def encode(self) -> bytes:
        """The JSON line sent to a client (`request` included when there is one)."""
        head = {"type": self.type, **({"request": self.request} if self.request is not None else {})}
        try:
            line = json.dumps(head | self.fields, ensure_ascii=False, allow_nan=False, default=str)
        except (ValueError, TypeError) as e:  # NaN in a skill's data, a cycle: the client still hears of it
            line = json.dumps(head | {"unsendable": f"{type(e).__name__}: {e}"})
        # backslashreplace: a lone surrogate from somewhere becomes a JSON escape, never an exception.
        return (line + "\n").encode("utf-8", "backslashreplace")


@dataclass
class Request:
    type: str
    id: str
    client: int
    fields: dict[str, Any]
    picked: bool = False  # the id is the server's (PICKED...), not the client's


def parse_request(line: bytes, client: int, number: int) -> Request:
    """A request from one JSON line; ValueError says what is wrong with it."""
    try:
        # Decoded here: json.loads would take bytes with zeros in them for UTF-16 or UTF-32.
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"malformed request: not UTF-8 (byte 0x{line[e.start]:02x} at {e.start})") from None
    try:
        message = json.loads(text)
    except RecursionError:
        raise ValueError("malformed request: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"malformed request: {e}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("malformed request: a request is a JSON object with a type")
    request_id = message.pop("id", None)
    picked = request_id is None
    if picked:
        request_id = f"{PICKED}{client}.{number}"
    elif not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_ID or not request_id.isprintable():
        raise ValueError(f"malformed request: id must be a printable string of at most {MAX_ID} characters")
    for key, value in message.items():
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise ValueError(f"malformed request: {key} is not valid Unicode") from None
    return Request(message.pop("type"), request_id, client, message, picked)


@dataclass
class _Client:
    id: int
    writer: asyncio.StreamWriter
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)  # encoded events, then None to end
    queued: int = 0  # bytes in the queue
    dropped: bool = False
    active: float = field(default_factory=time.monotonic)  # when it connected, last asked or was last answered


def folder_not_private(
    folder: Path, key: str = "control.socket", what: str = "the control socket"
) -> tuple[str, str] | None:
    """Why another user could interfere with `what` in `folder` (an existing one), and the fix (the
    setting `key` names the folder)."""
    info = folder.stat()
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not by this user", f"{key} needs a directory of this user's own"
    if info.st_mode & 0o022:
        return (
            f"writable by other users, who could replace {what}",
            f"choose a private directory ({key}) or chmod go-w it",
        )
    if way := _replaceable(folder):
        return f"replaceable by another user: {way}", f"choose a private directory ({key})"
    return None


def _replaceable(folder: Path) -> str | None:
    """Why another user could put a folder of their own in place of `folder` (or of a folder on the way
    to it), and with it a socket that hears what clients say, or None. Both the path as written (a
    link in /tmp) and the path it leads to are checked."""
    ours = {0, os.geteuid()}
    for path in {folder.absolute(), folder.resolve()}:
        for entry in (path, *path.parents[:-1]):  # "/" has no folder to be renamed in
            info, parent = entry.lstat(), entry.parent.stat()
            if parent.st_uid not in ours:
                return f"{entry.parent} is owned by uid {parent.st_uid}"
            if parent.st_mode & 0o022 and not parent.st_mode & stat.S_ISVTX:
                return f"{entry.parent} is writable by other users"
            if parent.st_mode & 0o022 and info.st_uid not in ours:  # sticky, as /tmp: its owner may
                return f"{entry} belongs to uid {info.st_uid}, in {entry.parent} which others may write"
    return None


def check_socket_path(path: Path, held: int | None = None) -> int:
    """Refuse a path another user could interfere with, or that is not ours to take (ConfigError).

    Returns the descriptor of a lock beside the socket, held while it stays open: an instance starting
    at the same moment finds it taken. The socket alone would not answer yet, so it would look left
    by an instance that died, and be removed. `held`: the lock this process holds already, if any.
    """
    folder = path.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if shared := folder_not_private(folder):
        raise ConfigError(f"{folder}: {shared[0]}; {shared[1]}")
    running = ConfigError(f"{path}: another assistant is already running there")
    lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    if held is not None and os.path.sameopenfile(lock, held):
        # Still in place, and locked through `held` (which a lock of its own would find taken): shared.
        os.close(lock)
        lock = os.dup(held)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise running from None
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return lock
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{path}: exists and is not a socket; remove it or choose another control.socket")
        if answers(path, timeout=2.0):
            raise running
        path.unlink(missing_ok=True)  # stale: left by an instance that died
        return lock
    except BaseException:
        os.close(lock)
        raise


def answers(path: Path, timeout: float = 1.0) -> bool:
    """Whether a process accepts connections on the Unix socket at `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _listen(path: Path, held: int | None = None) -> tuple[socket.socket, int, int]:
    """A socket bound at `path`, mode 0600, the lock beside it (check_socket_path) and the socket's inode;
    ConfigError if not."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        lock = check_socket_path(path, held)
        old_umask = os.umask(0o177)  # created 0600: only the service's user may talk to it
        try:
            sock.bind(str(path))
            inode = path.stat().st_ino
        except BaseException:
            os.close(lock)
            raise
        finally:
            os.umask(old_umask)
    except OSError as e:  # a folder we may not create, a path too long for a Unix socket
        sock.close()
        raise ConfigError(f"{path}: cannot listen there ({e.strerror or e}); choose another control.socket") from None
    except BaseException:
        sock.close()
        raise
    return sock, lock, inode


class ControlServer:
    """Serves the socket from its own thread; `handle(request)` is called on that thread and must not block."""

    def __init__(
        self,
        path: Path,
        handle: Callable[[Request], None],
        disconnected: Callable[[int], None],
        busy: Callable[[int], bool] = lambda client: False,
    ):
        """`disconnected(client)` when a client has gone; `busy(client)`: whether it has turns queued or running."""
        self.path, self.handle, self.disconnected, self.busy = path, handle, disconnected, busy
        sock, self.lock, self.inode = _listen(path)
        self.clients: dict[int, _Client] = {}
        self.connections: set[asyncio.Task] = set()  # each connection's _serve, awaited by close()
        self.numbers = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="control", daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []  # more than one once the socket was made again
        self._serve_on(sock)
        self.lost: str | None = None  # why the socket, removed, could not be made again (said once)

    def _serve_on(self, sock: socket.socket) -> None:
        # A backlog that takes a burst of clients connecting at once.
        start = asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE, backlog=socket.SOMAXCONN)
        self.servers.append(asyncio.run_coroutine_threadsafe(start, self.loop).result())

    # -- the socket's path ---------------------------------------------------------------------------

    def keep_path(self) -> None:
        """Keep the socket where clients look for it, for as long as the daemon runs (months): touched
        now and then, so that no cleaner of old files (systemd-tmpfiles, tmpreaper: /tmp/assistant-<uid>
        outside systemd) takes it, and made again if it went all the same. Called at the main loop's beat."""
        try:
            info = self.path.lstat()
        except FileNotFoundError:
            self._listen_again()
            return
        except OSError:
            return
        if info.st_ino == self.inode and time.time() - info.st_mtime > FRESH_SECONDS:
            for path in (self.path, Path(f"{self.path}.lock"), self.path.parent):
                with contextlib.suppress(OSError):
                    os.utime(path)

    def _listen_again(self) -> None:
        try:
            sock, lock, inode = _listen(self.path, held=self.lock)  # its lock may have been left, or removed too
        except ConfigError as e:
            if str(e) != self.lost:  # tried again at every beat, said once
                log.error("the control socket %s was removed and cannot be made again: %s", self.path, e)
                self.lost = str(e)
            return
        log.warning("the control socket %s was removed (by a cleaner of old files?); listening there again", self.path)
        os.close(self.lock)
        self.lock, self.inode, self.lost = lock, inode, None
        self._serve_on(sock)

    # -- events out ---------------------------------------------------------------------------------

    def publish(self, event: Event) -> None:
        """Send to the client it belongs to, or to everyone; callable from any thread."""
        with contextlib.suppress(RuntimeError):  # the loop has stopped: nobody is listening any more
            self.loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: Event) -> None:
        targets = [self.clients.get(event.client)] if event.client is not None else list(self.clients.values())
        line = event.encode()
        for client in targets:
            if client is None or client.dropped:
                continue
            if client.queued + len(line) > MAX_QUEUED:
                if event.client is None:  # the assistant's own: missed by a client waiting at a prompt, not fatal
                    continue
                log.warning("control client %d stopped reading: disconnected", client.id)
                client.dropped = True
                client.writer.transport.abort()
                continue
            client.queue.put_nowait(line)
            client.queued += len(line)
            if event.client is not None:  # an answer: a turn that ran a minute ended only just now
                client.active = time.monotonic()

    # -- one connection -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(next(self.numbers), writer)
        task = asyncio.current_task()
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        if len(self.clients) >= MAX_CLIENTS and not self._make_room():
            full = f"{MAX_CLIENTS} clients are connected, none idle for {IDLE_SECONDS:g} s; try again later"
            writer.write(Event("error", {"message": full}).encode())
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()
            return
        self.clients[client.id] = client
        sender = asyncio.create_task(self._send(client))
        try:
            for number in itertools.count(1):
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    # The client closed (a partial last line is ignored), or only its sending side
                    # (`nc -N`): then it still hears its turns to the end.
                    await self._answer_half_closed(client, writer, sender)
                    break
                except asyncio.LimitOverrunError:
                    self._error(client, f"request longer than {MAX_LINE} bytes")
                    break
                client.active = time.monotonic()
                try:
                    request = parse_request(line, client.id, number)
                except ValueError as e:
                    self._error(client, str(e))
                    break
                try:
                    self.handle(request)
                except Exception:
                    log.exception("control request %s failed", request.type)
                    self._error(client, "internal error; see the log", request.id)
        except OSError:
            pass  # reset by the client, or aborted because it stopped reading
        finally:
            client.queue.put_nowait(None)  # the sender flushes what is queued, then closes
            if client.dropped:
                sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await asyncio.wait_for(sender, 5)
            self.clients.pop(client.id, None)  # already gone if it made room for another
            if client.dropped:
                writer.transport.abort()
            else:
                writer.close()
            self.disconnected(client.id)

    def _make_room(self) -> bool:
        """Close the connection idle longest (no turn, nothing asked or answered for IDLE_SECONDS), telling
        it why. False when there is none: every client is busy, or was active only just now.
        """
        now = time.monotonic()
        idle = [c for c in self.clients.values() if now - c.active >= IDLE_SECONDS and not self.busy(c.id)]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.active)
        why = f"{MAX_CLIENTS} clients were connected and this one had been idle for {now - oldest.active:.0f} s"
        log.warning("control client %d closed to make room for a new one: %s", oldest.id, why)
        del self.clients[oldest.id]  # it hears nothing more; its connection ends as a closed one does
        oldest.writer.write(Event("error", {"message": f"closed to make room for another client: {why}"}).encode())
        oldest.writer.close()  # after that line is sent; at once if it does not read it
        self.loop.call_later(5, oldest.writer.transport.abort)
        return True

    async def _answer_half_closed(self, client: _Client, writer: asyncio.StreamWriter, sender: asyncio.Task) -> None:
        if writer.is_closing():  # not half closed: aborted, by close() or for not reading
            return
        sock = writer.get_extra_info("socket")
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP)
        # POLLHUP: both directions are shut, so nobody is listening any more.
        while self.busy(client.id) and not sender.done() and not poller.poll(0):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0)  # its turn_done, scheduled before it stopped being busy, is queued first

    def _error(self, client: _Client, message: str, request: str | None = None) -> None:
        self._deliver(Event("error", {"message": message}, request, client.id))

    async def _send(self, client: _Client) -> None:
        with contextlib.suppress(OSError):
            while (line := await client.queue.get()) is not None:
                client.queued -= len(line)
                client.writer.write(line)
                await client.writer.drain()

    # -- stopping -----------------------------------------------------------------------------------

    def close(self) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            for client in list(self.clients.values()):
                client.writer.transport.abort()
            # Each connection then ends its own way (its sender, its turns cancelled); a loop stopped
            # before that would leave them pending, and asyncio logs each one as an error.
            if self.connections:
                await asyncio.wait(self.connections, timeout=1)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=2)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=2)
        # Remove the socket only if it is still the one we bound (never another instance's).
        with contextlib.suppress(OSError):
            if self.path.stat().st_ino == self.inode:
                self.path.unlink()
        os.close(self.lock)  # after the socket is gone: the next instance starts on a clean path


# -- the client side (assistant say / chat / status / cancel) -----------------------------------------


def _not_trusted(path: Path, connected: socket.socket) -> str | None:
    """Why the program listening on `path` may be another user's rather than the assistant, or None.

    Only its own user (or root) can reach a mode 0600 socket; another user who made the folder first,
    as /tmp/assistant-<uid> can be, could listen there to hear what is said. Root talks to the
    service's user as well, in a folder nobody else could have put there.
    """
    peer = struct.unpack("3i", connected.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]
    if peer in (0, os.geteuid()) or (os.geteuid() == 0 and not _replaceable(path.parent)):
        return None
    return (
        f"{path}: the program listening there runs as uid {peer}, not as this user; another user may have put "
        "it there, so nothing was sent (check the folder, or name your own control.socket)"
    )


def _event(line: bytes, path: Path) -> dict:
    """An event the assistant sent; ConnectionError for a line cut off (it stopped while writing) or not one."""
    if not line.endswith(b"\n"):
        raise ConnectionError("the assistant closed the connection in the middle of an answer (has it stopped?)")
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ConnectionError(f"{path}: the program listening there answered {line[:40]!r}, not as the assistant does")
    return event


class ControlClient:
    """One connection to the running assistant."""

    def __init__(self, path: Path, timeout: float | None = None):
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socket.settimeout(timeout)
        try:
            self.socket.connect(str(path))
        except OSError as e:
            self.socket.close()
            if isinstance(e, PermissionError):  # it may well be running: as another user, the service's
                fix = "run this as the service's user (sudo -u USER assistant ...), or pass the --config of your own"
                raise ConnectionError(f"{path}: not allowed to connect ({e.strerror}); {fix}") from None
            raise ConnectionError(
                f"no assistant is listening on {path} ({e.strerror or e}); is `assistant run` running?"
            ) from None
        if impostor := _not_trusted(path, self.socket):
            self.socket.close()
            raise ConnectionError(impostor)
        self.lines = self.socket.makefile("rb")
        self.numbers = itertools.count(1)

    def send(self, kind: str, **fields: Any) -> str:
        """Send one request; return its id."""
        request_id = f"{os.getpid()}-{next(self.numbers)}"
        line = json.dumps({"type": kind, "id": request_id, **fields}, ensure_ascii=False) + "\n"
        try:
            self.socket.sendall(line.encode("utf-8", "backslashreplace"))
        except OSError:
            raise ConnectionError(
                self._last_word() or "the assistant closed the connection (has it stopped?)"
            ) from None
        return request_id

    def _last_word(self) -> str | None:
        """The error the assistant sent before closing the connection (too many clients), if any."""
        self.socket.settimeout(1.0)
        try:
            event = json.loads(self.lines.readline())
        except (OSError, ValueError):
            return None
        return event.get("message") if isinstance(event, dict) and event.get("type") == "error" else None

    def events(self, request_id: str, until: Callable[[dict], bool]) -> Iterator[dict]:
        """The events answering `request_id` until `until(event)` is true or the request is refused.

        A refusal is an "error" with a "message"; a turn's spoken apology (an "error" with a "text")
        is followed by the rest of the turn as usual.
        """
        for line in self.lines:
            event = _event(line, self.path)
            if event.get("request") not in (request_id, None):
                continue
            if event.get("request") is None and event["type"] != "error":
                continue  # the assistant's own events (a timer ringing) are not this request's answer
            yield event
            if until(event) or (event["type"] == "error" and "message" in event):
                return
        raise ConnectionError("the assistant closed the connection (has it stopped?)")

    def close(self) -> None:
        self.lines.close()
        self.socket.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
