"""`assistant run` as systemd runs it: notify socket, control socket, signals, restarts, soak."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


class Notifications:
    """A NOTIFY_SOCKET like systemd's: a datagram socket the daemon writes READY=1 etc. to."""

    def __init__(self, path: Path):
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.received: list[str] = []

    def wait_for(self, field: str, timeout: float = 90, process: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while field not in self.received:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {field}; got {self.received}")
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the daemon exited with {process.returncode} before {field}")
            self.socket.settimeout(min(remaining, 1.0))
            try:
                self.received += self.socket.recv(4096).decode().split("\n")
            except TimeoutError:
                continue

    def close(self) -> None:
        self.socket.close()


class Daemon:
    def __init__(self, tmp: Path, config: Path, notify: Notifications):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env |= {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
        self.log = open(tmp / "daemon.log", "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"],
            env=env, stdout=self.log, stderr=self.log, cwd=tmp,
        )  # fmt: skip
        self.notify = notify
        self.tmp = tmp
        notify.wait_for("READY=1", process=self.process)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.log.close()
        return code

    def log_text(self) -> str:
        return (self.tmp / "daemon.log").read_text()


def connect(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(60)
    client.connect(str(path))
    return client


def send(client: socket.socket, message: dict | bytes) -> None:
    client.sendall(message if isinstance(message, bytes) else (json.dumps(message) + "\n").encode())


def events(client: socket.socket) -> Iterator[dict]:
    for line in client.makefile("rb"):
        yield json.loads(line)


def turn(path: Path, text: str) -> list[dict]:
    with connect(path) as client:
        send(client, {"type": "say", "text": text})
        seen = []
        for event in events(client):
            seen.append(event)
            if event["type"] == "turn_done":
                return seen
    raise AssertionError(f"the connection closed during the turn: {seen}")


@pytest.fixture()
def setup(tmp_path: Path, tiny_int8: Path) -> Iterator[tuple[Path, Path, Notifications]]:
    (tmp_path / "extra_skills").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(
        f"llm:\n  model_dir: {tiny_int8}\n  kv_cache_len: 8192\n  max_new_tokens: 12\n"
        f"skills:\n  paths: [{REPO / 'skills'}, {tmp_path / 'extra_skills'}]\n"
        f"control:\n  socket: {tmp_path / 'control.sock'}\nstate_dir: {tmp_path / 'state'}\n"
    )
    notify = Notifications(tmp_path / "notify.sock")
    yield config, tmp_path / "control.sock", notify
    notify.close()


def test_ready_watchdog_turn_events_and_clean_sigterm(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    try:
        notify.wait_for("WATCHDOG=1", timeout=10)
        assert oct(control.stat().st_mode & 0o777) == "0o600"
        seen = turn(control, "set a timer for 1 seconds")
        assert [e["type"] for e in seen] == ["turn_start", "tool_call", "skill_result", "text", "turn_done"]
        assert seen[1]["text"] == "set_timer" and seen[1]["data"] == {"seconds": 1}
        assert seen[3]["text"] == "Timer set for 1 second."
        llm = turn(control, "tell me a story")  # no intent: the model answers
        assert llm[-1]["generated_tokens"] > 0
        cli = [sys.executable, "-m", "assistant"]
        said = subprocess.run([*cli, "say", "--config", str(config), "what", "day", "is", "it"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert said.returncode == 0 and said.stdout.startswith("Today is ")
        status_command = [*cli, "status", "--json", "--config", str(config)]
        status = subprocess.run(status_command, capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["model"] == "tiny-qwen2" and not json.loads(status.stdout)["busy"]
        with connect(control) as client:  # the ring reaches connected clients
            send(client, {"type": "status"})
            kinds = []
            for event in events(client):
                kinds.append(event)
                if event["type"] == "say":
                    break
            assert kinds[0]["type"] == "status" and kinds[-1]["text"] == "Your timer is done."
    finally:
        start = time.monotonic()
        code = daemon.stop(signal.SIGTERM)
    assert code == 0 and time.monotonic() - start < 5
    assert "STOPPING=1" in notify.received or notify.wait_for("STOPPING=1", timeout=1) is None
    assert not control.exists()


def test_bad_requests_are_answered_and_the_daemon_goes_on(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    try:
        for bad in (b"this is not json\n", b'{"no": "type"}\n', b"x" * 70_000 + b"\n"):
            with connect(control) as client:
                send(client, bad)
                replies = list(events(client))  # the daemon closes the connection after its answer
                assert replies[-1]["type"] == "error"
        with connect(control) as client:
            send(client, {"type": "launch_rockets"})
            assert next(events(client)) == {"type": "error", "message": "unknown request type 'launch_rockets'"}
        assert turn(control, "what time is it")[-2]["text"].startswith("It is ")
    finally:
        assert daemon.stop() == 0


def test_sighup_loads_a_new_skill_without_reloading_the_model(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    try:
        assert turn(control, "say hello")[1]["type"] != "tool_call"  # unknown yet: the model answers
        (config.parent / "extra_skills" / "hello.py").write_text(
            "from assistant import skill\n\n\n"
            "@skill(sentences={'en': ['say hello']})\n"
            "def hello() -> str:\n    '''Greet.'''\n    return 'Hello from a new skill.'\n"
        )
        notify.received.clear()
        daemon.process.send_signal(signal.SIGHUP)
        notify.wait_for("READY=1", timeout=30)
        assert "RELOADING=1" in notify.received
        assert turn(control, "say hello")[-2]["text"] == "Hello from a new skill."
        assert daemon.log_text().count("opening 2 onnxruntime layer sessions") == 1  # the model stayed
    finally:
        assert daemon.stop() == 0


def test_a_timer_survives_kill_9(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    assert turn(control, "set a timer for 2 seconds")[-2]["text"] == "Timer set for 2 seconds."
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL  # confirmed to the user, then killed
    notify.received.clear()
    restarted = Daemon(config.parent, config, notify)
    try:
        deadline = time.monotonic() + 15
        while "saying: Your timer is done." not in restarted.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "saying: Your timer is done." in restarted.log_text()
    finally:
        assert restarted.stop() == 0


def test_200_turns_with_flat_memory_threads_and_files(setup, tiny_int8: Path) -> None:
    config, control, notify = setup
    # A context that fills during the warm-up, so that what is measured is the steady state.
    disabled = "[set_alarm, list_timers, cancel_timers, remove_item, clear_shopping_list, set_volume, change_volume]"
    text = config.read_text().replace("kv_cache_len: 8192", "kv_cache_len: 1024")
    config.write_text(text.replace("skills:\n", f"skills:\n  disabled: {disabled}\n"))
    daemon = Daemon(config.parent, config, notify)
    pid = daemon.process.pid

    def footprint() -> tuple[int, int, int]:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        rss_kb = int(status["VmRSS"].split()[0])
        return rss_kb, len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))

    try:
        phrases = ["what time is it", "add milk to the shopping list", "tell me about the weather", "what day is it"]
        for i in range(40):  # warm-up: the context fills, arenas and caches reach their working size
            turn(control, phrases[i % 4])
        assert "context full" in daemon.log_text()
        rss0, threads0, fds0 = footprint()
        for i in range(200):
            seen = turn(control, phrases[i % 4])
            assert seen[-1]["type"] == "turn_done"
        time.sleep(0.5)  # connection threads finish
        rss1, threads1, fds1 = footprint()
        assert rss1 < rss0 * 1.10, f"RSS grew from {rss0} kB to {rss1} kB"
        assert threads1 <= threads0 and fds1 <= fds0, (threads0, threads1, fds0, fds1)
    finally:
        assert daemon.stop() == 0


def test_broken_config_exits_with_the_no_restart_status(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  backend: gpu\n")
    result = subprocess.run([sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 78
    assert "llm.backend" in result.stderr
    unit = (REPO / "systemd/assistant.service").read_text()
    assert "RestartPreventExitStatus=78" in unit and "Restart=on-failure" in unit
