"""The control socket and its clients against a real daemon: crowds, idle connections, hostile requests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.daemon.control import IDLE_SECONDS, MAX_CLIENTS
from tests import test_daemon
from tests.test_daemon import (
    Daemon,
    Notifications,
    chatty_config,
    connect,
    events,
    run_assistant,
    send,
    until,
    write_config,
)

chatty = test_daemon.chatty  # the model that never stops on its own, as a fixture here too


@pytest.fixture(scope="module")
def daemon(tiny_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("control")
    config = write_config(tmp, tiny_int8)
    notify = Notifications(tmp / "notify.sock")
    running = Daemon(tmp, config, notify)
    yield running
    assert running.stop() == 0
    notify.close()


def config_of(daemon: Daemon) -> Path:
    return daemon.tmp / "config.yaml"


def socket_of(daemon: Daemon) -> Path:
    return daemon.tmp / "run" / "control.sock"


def test_connections_left_idle_cannot_lock_others_out(daemon: Daemon) -> None:
    control = socket_of(daemon)
    asking = connect(control)  # asks now and then: never the idle one
    left = [connect(control) for _ in range(MAX_CLIENTS - 1)]  # a script that forgets to close them
    try:
        # Every place taken by connections that only just came: a newcomer is told to come back.
        refused = run_assistant("status", "--config", str(config_of(daemon)))
        expected = f"error: {MAX_CLIENTS} clients are connected, none idle for {IDLE_SECONDS:g} s; try again later\n"
        assert (refused.returncode, refused.stderr) == (1, expected)
        deadline = time.monotonic() + IDLE_SECONDS + 1
        while time.monotonic() < deadline:
            send(asking, {"type": "status"})
            until(asking, "status")
            time.sleep(1)
        # Once they have been idle for a while, the newcomer takes the place of the one idle longest,
        # which hears why in one line before its connection ends.
        status = run_assistant("status", "--config", str(config_of(daemon)))
        assert (status.returncode, status.stdout.splitlines()[0]) == (0, "state: ready"), status.stderr
        (event,) = events(left[0])
        assert event["type"] == "error"
        assert event["message"].startswith(
            f"closed to make room for another client: {MAX_CLIENTS} clients were connected and this one "
            "had been idle for "
        )
        left[1].settimeout(0.5)
        with pytest.raises(TimeoutError):  # the others are left as they were
            left[1].recv(1)
        send(asking, {"type": "status", "id": "still"})
        assert until(asking, "status")[-1]["request"] == "still"
        daemon.wait_for_log("closed to make room for a new one")
    finally:
        for client in [asking, *left]:
            client.close()


def resident_mb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) // 1024


def test_a_client_that_never_reads_costs_the_daemon_a_bounded_amount_of_memory(daemon: Daemon) -> None:
    # Each status request is answered with the whole status: more answered than asked.
    requests = (json.dumps({"type": "status"}) + "\n").encode() * 1000
    before = resident_mb(daemon.process.pid)
    for _ in range(3):
        with connect(socket_of(daemon)) as client, contextlib.suppress(OSError):  # hung up on as it sends
            for _ in range(20):
                client.sendall(requests)
    daemon.wait_for_log("stopped reading: disconnected")
    assert resident_mb(daemon.process.pid) - before < 20  # not 3 × 20,000 answers kept for it
    status = run_assistant("status", "--config", str(config_of(daemon)))
    assert status.returncode == 0, status.stderr


def test_a_chat_waiting_at_its_prompt_is_kept_however_much_the_assistant_says_meanwhile(
    tmp_path: Path, tiny_int8: Path
) -> None:
    from assistant.config import load_settings
    from assistant.daemon.run import Daemon as Assistant
    from assistant.daemon.run import State

    config = write_config(tmp_path, tiny_int8)
    assistant = Assistant(config, load_settings(config), text_only=True)  # the microphone's side is driven by hand
    command = [sys.executable, "-m", "assistant", "chat", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    chat = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assistant.worker.start()
        assistant.enter(State.READY)
        deadline = time.monotonic() + 30
        while len(assistant.control.clients) < 1:  # the chat has connected, and waits for a line
            assert time.monotonic() < deadline and chat.poll() is None, chat.stderr.read()
            time.sleep(0.05)
        for _ in range(2000):  # what the microphone hears in a busy household: partial transcripts
            assistant._voice_event({"type": "partial", "text": "turn on the kitchen light " * 20})
        time.sleep(1)
        out, err = chat.communicate(b"what day is it\n", timeout=60)
    finally:
        chat.kill()
        assistant.pending.put(None)
        assistant.control.close()
    assert (chat.returncode, err) == (0, b"\n")
    assert b"Today is " in out


def test_a_request_not_in_utf8_is_refused_as_such_whatever_encoding_it_looks_like(daemon: Daemon) -> None:
    """JSON read from bytes guesses UTF-16 or UTF-32 from where the zero bytes are: such a request was run, and
    other bytes were refused in the words of a codec the client never used."""
    requests = {
        b"\x00\xff garbage\n": "malformed request: not UTF-8 (byte 0xff at 1)",
        b"\xff\xfe{}\n": "malformed request: not UTF-8 (byte 0xff at 0)",
        # UTF-16 of ASCII is UTF-8 with zero bytes between: JSON that does not parse.
        '{"type": "status", "id": "s16"}'.encode("utf-16-le") + b"\n": "malformed request: Expecting property name",
    }
    for request, said in requests.items():
        with connect(socket_of(daemon)) as client:
            send(client, request)
            replies = list(events(client))  # the daemon closes the connection after its answer
        assert [r["type"] for r in replies] == ["error"], (request, replies)
        assert replies[0]["message"].startswith(said), replies
    with connect(socket_of(daemon)) as client:  # a byte-order mark ahead of UTF-8 is still UTF-8
        send(client, b'\xef\xbb\xbf{"type": "status", "id": "bom"}\n')
        assert until(client, "status")[-1]["request"] == "bom"


def test_an_id_the_daemon_picks_never_clashes_with_one_a_client_chose(tmp_path: Path, chatty: Path) -> None:
    config = chatty_config(tmp_path, chatty, max_new_tokens=4000)  # a turn that runs until cancelled
    notify = Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify)
    control = tmp_path / "run" / "control.sock"
    try:
        with connect(control) as picked, connect(control) as chooser:
            send(picked, {"type": "status"})  # no id: the daemon picks one, numbered by connection and request
            number = until(picked, "status")[-1]["request"].removeprefix("auto-").split(".")[0]
            # Another connection chooses, as its own, what the first one's next request used to be called.
            send(chooser, {"type": "say", "text": "tell me a long story", "id": f"{number}.2"})
            assert until(chooser, "turn_start")[-1]["request"] == f"{number}.2"
            send(picked, {"type": "say", "text": "tell me another"})  # queued behind it, not refused
            send(chooser, {"type": "cancel", "turn": f"{number}.2", "id": "stop"})
            assert until(chooser, "turn_done")[-1]["cancelled"]
            started = next(events(picked))
            assert (started["type"], started["request"]) == ("turn_start", f"auto-{number}.2"), started
        with connect(control) as client:  # and a client's turn may not take the daemon's form
            send(client, {"type": "say", "text": "what time is it", "id": f"auto-{number}.3"})
            refused = next(events(client))
            assert refused == {
                "type": "error",
                "request": f"auto-{number}.3",
                "message": "ids auto-N.M are the ones the assistant picks; give the request another id",
            }
            send(client, {"type": "status", "id": "after"})  # refused, not hung up on
            assert until(client, "status")[-1]["request"] == "after"
    finally:
        assert daemon.stop() == 0
        notify.close()


def test_the_socket_is_kept_from_cleaners_of_old_files_and_made_again_if_removed(
    tmp_path: Path, tiny_int8: Path
) -> None:
    """Outside systemd the socket may be in /tmp, where systemd-tmpfiles or tmpreaper remove what nobody
    touched for days: a daemon running for weeks would be left deaf to every client."""
    config = write_config(tmp_path, tiny_int8)
    notify = Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify)  # its main loop beats every half second
    control = tmp_path / "run" / "control.sock"
    kept = [control, Path(f"{control}.lock"), control.parent]
    try:
        weeks_ago = time.time() - 20 * 86400
        for path in kept:
            os.utime(path, (weeks_ago, weeks_ago))
        deadline = time.monotonic() + 30
        while any(path.stat().st_mtime < weeks_ago + 86400 for path in kept):
            assert time.monotonic() < deadline, [path.stat().st_mtime for path in kept]
            time.sleep(0.1)
        removed = f"the control socket {control} was removed"
        with connect(control) as before:  # a client connected before the removal keeps its connection
            # The socket alone (someone's `rm`), then the socket and its lock (a cleaner, files first).
            for times, gone in enumerate(([control], kept[:2]), start=1):
                for path in gone:
                    path.unlink()
                deadline = time.monotonic() + 30
                while daemon.log_text().count(removed) < times:
                    assert time.monotonic() < deadline, daemon.log_text()
                    time.sleep(0.1)
                status = run_assistant("status", "--config", str(config))
                assert (status.returncode, status.stdout.splitlines()[0]) == (0, "state: ready"), status.stderr
                assert Path(f"{control}.lock").exists()
                second = run_assistant("run", "--config", str(config), "--text-only")  # finds it taken
                assert second.returncode == 78 and "another assistant is already running there" in second.stderr
            send(before, {"type": "status", "id": "before"})
            assert until(before, "status")[-1]["request"] == "before"
        assert "cannot be made again" not in daemon.log_text()
    finally:
        assert daemon.stop() == 0
        notify.close()
    assert not control.exists()
