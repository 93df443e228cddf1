"""`assistant run` as systemd runs it: notify socket, control socket, signals, restarts, soak.

Everything here goes through the real daemon process and the real socket: signals in the middle
of a reply, several clients at once, hostile clients and socket paths, a full disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.config import Settings, load_settings
from assistant.skills.registry import load_registry
from tests.other_user import NOBODY
from tests.small_disk import fill, small_disk

REPO = Path(__file__).resolve().parent.parent


class Notifications:
    """A NOTIFY_SOCKET like systemd's: a datagram socket the daemon writes READY=1 etc. to."""

    def __init__(self, path: Path):
        self.path = path
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # each datagram says its sender
        self.socket.bind(str(path))
        self.received: list[str] = []

    def wait_for(
        self, field: str, timeout: float = 90, process: subprocess.Popen | None = None, count: int = 1
    ) -> None:
        """Until `field` has arrived `count` times; with `process`, only from it (a daemon stopped before
        may still be in the queue) and an AssertionError as soon as it exits."""
        deadline = time.monotonic() + timeout
        while self.received.count(field) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {field}; got {self.received}")
            if process is not None and process.poll() is not None:
                raise AssertionError(f"the daemon exited with {process.returncode} before {field}")
            self.socket.settimeout(min(remaining, 1.0))
            try:
                data, ancillary, _, _ = self.socket.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                continue
            sender = next((int.from_bytes(d[:4], sys.byteorder) for _, kind, d in ancillary
                           if kind == socket.SCM_CREDENTIALS), None)  # fmt: skip
            if process is None or sender == process.pid:
                self.received += data.decode().split("\n")

    def close(self) -> None:
        self.socket.close()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}


def run_assistant(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                          env=clean_env(), timeout=timeout)  # fmt: skip


class Daemon:
    def __init__(self, tmp: Path, config: Path, notify: Notifications, watchdog_usec: int | str = 1_000_000):
        env = clean_env() | {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)}
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

    def wait_for_log(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            assert time.monotonic() < deadline, f"no {text!r} in the log:\n{self.log_text()}"
            time.sleep(0.05)

    def footprint(self) -> tuple[int, int]:
        pid = self.process.pid
        return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))

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


def until(client: socket.socket, kind: str) -> list[dict]:
    """Events on this connection up to and including the first of `kind`."""
    seen = []
    for event in events(client):
        seen.append(event)
        if event["type"] == kind:
            return seen
    raise AssertionError(f"the connection closed before {kind}: {seen}")


def turn(path: Path, text: str) -> list[dict]:
    with connect(path) as client:
        send(client, {"type": "say", "text": text})
        return until(client, "turn_done")


def spoken(seen: list[dict]) -> str:
    return "".join(e["text"] for e in seen if e["type"] in ("text", "error"))


def write_config(tmp_path: Path, model: Path, max_new_tokens: int = 12, extra: str = "") -> Path:
    (tmp_path / "extra_skills").mkdir(exist_ok=True)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"llm:\n  model_dir: {model}\n  kv_cache_len: 8192\n  max_new_tokens: {max_new_tokens}\n"
        f"  sampling: {{temperature: 0.7, seed: 7}}\n"
        f"skills:\n  paths: [{tmp_path / 'extra_skills'}]\n"
        f"control:\n  socket: {tmp_path / 'run' / 'control.sock'}\nstate_dir: {tmp_path / 'state'}\n{extra}"
    )
    return config


def chatty_config(tmp_path: Path, model: Path, max_new_tokens: int) -> Path:
    config = write_config(tmp_path, model, max_new_tokens)
    names = ", ".join(load_registry(Settings(), []).skills)
    text = config.read_text().replace("skills:\n", f"skills:\n  disabled: [{names}]\n")
    # Sampled from all its words as they are: narrowed (0.7, top-k, top-p), the random model now and
    # then writes one or two words over and over, and the reply is cut as a loop.
    text = text.replace("temperature: 0.7,", "temperature: 1.0, top_k: 0, top_p: 1.0,")
    config.write_text(text)
    return config


@pytest.fixture()
def setup(tmp_path: Path, tiny_int8: Path) -> Iterator[tuple[Path, Path, Notifications]]:
    config = write_config(tmp_path, tiny_int8)
    notify = Notifications(tmp_path / "notify.sock")
    yield config, tmp_path / "run" / "control.sock", notify
    notify.close()


@pytest.fixture(scope="module")
def chatty(tiny_int8: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model made to write only whole lowercase words (" the", " timer"): every reply is text,
    said as it streams, to max_new_tokens.

    Its lm_head is biased against every other token. Left as it was, the random model now and then
    stopped, opened a tool call, or wrote a code fence or a line starting "from ": the turn holds such
    text back or ends the reply there, and the reply's only output may be an apology once it is over.
    """
    import onnx

    from assistant.llm.manifest import load_manifest, record_files
    from assistant.skills.constraint import CODE_WORDS

    out = tmp_path_factory.mktemp("models") / "chatty"
    shutil.copytree(tiny_int8, out)
    manifest = load_manifest(out)
    vocabulary = json.loads((out / manifest.tokenizer).read_text())["model"]["vocab"]
    # " from", " return", " returned", " re": a line that starts so may be code, and is held back.
    words = [i for token, i in vocabulary.items() if re.fullmatch(r"Ġ[a-z]+", token) and not any(
        code.startswith(token[1:]) or f"{token[1:]} ".startswith(code) for code in CODE_WORDS)]  # fmt: skip
    post = out / manifest.backends["onnxruntime"].post
    graph = onnx.load(post)
    logits = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = ["unbiased" if name == logits else name for name in node.output]
    bias = np.full(manifest.vocab_size, -1e9, np.float32)
    bias[words] = 0
    graph.graph.initializer.append(onnx.numpy_helper.from_array(bias, "only_words"))
    graph.graph.node.append(onnx.helper.make_node("Add", ["unbiased", "only_words"], [logits]))
    onnx.save(graph, post)
    record_files(out, manifest)
    manifest.save(out)
    return out


HELLO_SKILL = """from assistant import skill


@skill(sentences={'en': ['say hello']})
def hello() -> str:
    '''Greet.'''
    return 'Hello from a new skill.'
"""


NAP_SKILL = """import time
from assistant import skill


@skill(timeout=0.3, sentences={'en': ['take a nap']})
def nap() -> str:
    '''Sleep for a minute.'''
    time.sleep(60)
    return 'Rested.'
"""


def test_ready_watchdog_turn_events_and_clean_sigterm(setup) -> None:
    config, control, notify = setup
    (config.parent / "extra_skills" / "sleepy.py").write_text(NAP_SKILL)
    daemon = Daemon(config.parent, config, notify)
    try:
        notify.wait_for("WATCHDOG=1", timeout=10)
        assert oct(control.stat().st_mode & 0o777) == "0o600"
        assert oct(control.parent.stat().st_mode & 0o777) == "0o700"  # made by the daemon, private
        watcher = connect(control)  # asks nothing: hears only the assistant's own events
        seen = turn(control, "set a timer for 1 seconds")
        assert [e["type"] for e in seen] == ["turn_start", "tool_call", "skill_result", "text", "turn_done"]
        assert seen[1]["text"] == "set_timer" and seen[1]["data"] == {"seconds": 1}
        assert seen[3]["text"] == "Timer set for 1 second."
        assert len({e["request"] for e in seen}) == 1
        llm = turn(control, "tell me a story")  # no intent: the model answers (the random one may stop at once)
        assert llm[-1]["prefilled_tokens"] > 0
        answered = turn(control, "what time is it")[-1]  # a local intent after it: the model ran nothing
        assert (answered["prefilled_tokens"], answered["generated_tokens"]) == (0, 0), answered
        cli = [sys.executable, "-m", "assistant"]
        said = subprocess.run([*cli, "say", "--config", str(config), "what", "day", "is", "it"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert said.returncode == 0 and said.stdout.startswith("Today is ")
        stop = subprocess.run([*cli, "say", "--config", str(config), "stop"], capture_output=True, text=True)
        assert (stop.returncode, stop.stdout.strip(), stop.stderr) == (0, "", "")  # not " (cancelled)", exit 1
        assert [e["type"] for e in turn(control, "never mind")][-2:] == ["skill_result", "turn_done"]
        status_command = [*cli, "status", "--json", "--config", str(config)]
        status = subprocess.run(status_command, capture_output=True, text=True, timeout=60)
        assert json.loads(status.stdout)["model"] == "tiny-qwen2" and not json.loads(status.stdout)["busy"]
        assert json.loads(status.stdout)["state"] == "ready"
        with watcher:  # the ring reaches every client, and nobody else's turn did
            assert until(watcher, "say") == [{"type": "say", "text": "Your timer is done."}]
        # A skill that outlives its timeout ends its turn, and does not hold the exit either.
        assert spoken(turn(control, "take a nap")) == "Sorry, nap took longer than 0.3 seconds."
    finally:
        start = time.monotonic()
        code = daemon.stop(signal.SIGTERM)
    assert code == 0 and time.monotonic() - start < 3
    assert "STOPPING=1" in notify.received or notify.wait_for("STOPPING=1", timeout=1) is None
    assert not control.exists()


def test_hostile_clients_get_an_error_and_every_other_client_goes_on(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    try:
        with connect(control) as watcher:  # connected throughout: it must keep hearing its answers
            send(watcher, {"type": "status", "id": "w1"})
            assert until(watcher, "status")[-1]["request"] == "w1"
            baseline = daemon.footprint()
            hostile = [
                b"this is not json\n",
                b'{"no": "type"}\n',
                b"x" * 70_000 + b"\n",  # longer than a request may be
                b"\xff\xfe{}\n",  # not UTF-8
                b"[" * 60_000 + b"\n",  # nested deeper than any parser's recursion
                b'{"type": "say", "text": "\\ud800"}\n',  # a lone surrogate
                b'{"type": "say", "id": 5, "text": "hi"}\n',
                b"\x00\x01\x02\n",
            ]
            for bad in hostile:
                with connect(control) as client:
                    send(client, bad)
                    replies = list(events(client))  # the daemon closes the connection after its answer
                    assert [r["type"] for r in replies] == ["error"], (bad[:40], replies)
            with connect(control) as client:
                send(client, {"type": "launch_rockets", "id": "r1"})
                said = "unknown request type 'launch_rockets'; the types are say, status and cancel"
                assert next(events(client)) == {"type": "error", "request": "r1", "message": said}
                send(client, {"type": "x" * 60_000, "id": "r2"})
                assert next(events(client))["message"] == (
                    f"unknown request type '{'x' * 36}...; the types are say, status and cancel"
                )

            # A burst of clients connecting at once: every one is accepted and answered.
            burst = [connect(control) for _ in range(200)]
            for i, client in enumerate(burst):
                send(client, {"type": "status", "id": f"b{i}"})
            for i, client in enumerate(burst):
                assert until(client, "status")[-1]["request"] == f"b{i}"
                client.close()

            # A client that asks and never reads is disconnected, not kept.
            silent = connect(control)
            with contextlib.suppress(OSError):  # the daemon may hang up on it while it still sends
                silent.sendall(b'{"type": "status"}\n' * 20_000)
            daemon.wait_for_log("stopped reading: disconnected")
            silent.close()

            send(watcher, {"type": "status", "id": "w2"})
            assert until(watcher, "status")[-1]["request"] == "w2"
            deadline = time.monotonic() + 5

            def flat() -> bool:  # the timers' clock holds its database open a few times a second: ±3 files
                threads, files = daemon.footprint()
                return threads == baseline[0] and files <= baseline[1] + 3

            while not flat() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert flat(), (baseline, daemon.footprint())  # threads and open files, after 210 clients

            # As many connections as are served, none idle for long: one more hears why not.
            send(watcher, {"type": "status", "id": "w3"})
            assert until(watcher, "status")[-1]["request"] == "w3"
            crowd = [connect(control) for _ in range(255)]  # and the watcher
            refused = run_assistant("status", "--config", str(config))
            full = "error: 256 clients are connected, none idle for 10 s; try again later\n"
            assert (refused.returncode, refused.stderr) == (1, full)
            for client in crowd:
                client.close()

        # A second instance on the same socket refuses to start, and leaves the first one's socket.
        second = run_assistant("run", "--config", str(config), "--text-only")
        assert second.returncode == 78 and "already running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert turn(control, "what time is it")[-2]["text"].startswith("It is ")
    finally:
        assert daemon.stop() == 0


def reload(daemon: Daemon) -> None:
    daemon.notify.received.clear()
    daemon.process.send_signal(signal.SIGHUP)
    daemon.notify.wait_for("READY=1", timeout=30, process=daemon.process)
    assert "RELOADING=1" in daemon.notify.received


def test_sighup_reloads_or_keeps_the_running_config_whatever_the_file_holds(setup) -> None:
    config, control, notify = setup
    good = config.read_bytes()
    daemon = Daemon(config.parent, config, notify)
    try:
        reload(daemon)  # nothing changed
        assert daemon.log_text().count("reloaded ") == 1
        broken = [
            good + b"# caf\xe9: not UTF-8\n",
            good + b"mqtt:\n  devices:\n    - {type: light, topic: zigbee2mqtt/nameless}\n",
            good + b"deep: " + b"[" * 5000 + b"]" * 5000 + b"\n",
            good + b"llm: [\n",
            good.replace(b"kv_cache_len: 8192", b"kv_cache_len: 8192\n  backend: gpu"),
        ]
        for text in broken:
            config.write_bytes(text)
            reload(daemon)
            assert daemon.process.poll() is None
            assert turn(control, "what time is it")[-2]["text"].startswith("It is ")
        assert daemon.log_text().count("reload failed, keeping the running configuration") >= 4

        config.write_bytes(good)
        assert turn(control, "say hello")[1]["type"] != "tool_call"  # unknown yet: the model answers
        (config.parent / "extra_skills" / "hello.py").write_text(HELLO_SKILL)
        reload(daemon)
        assert turn(control, "say hello")[-2]["text"] == "Hello from a new skill."
        assert daemon.log_text().count("opening 2 onnxruntime layer sessions") == 1  # the model stayed

        # What a reload cannot apply is named, against what runs: going back to it is not a change.
        restart = "changed: it takes effect when the service restarts"
        config.write_bytes(
            good.replace(b"kv_cache_len: 8192", b"kv_cache_len: 8192\n  threads: 1") + b"tts:\n  length_scale: 1.5\n"
        )
        reload(daemon)
        assert f"llm.threads {restart}" in daemon.log_text() and f"tts {restart}" in daemon.log_text()
        config.write_bytes(good)
        reload(daemon)
        assert daemon.log_text().count(restart) == 2
        # A skill folder that is not there is refused, as at start, instead of loading nothing from it.
        config.write_bytes(good.replace(b"extra_skills", b"extra_skils"))
        reload(daemon)
        assert "extra_skils" in daemon.log_text().split("reload failed, keeping the running configuration")[-1]
        assert turn(control, "say hello")[-2]["text"] == "Hello from a new skill."

        log = daemon.log_text()
        assert "ready in " in log and f"config {config}" in log and str(config.parent / "run") in log
        assert re.search(r"turn \S+ done in [\d.]+ s", log)
    finally:
        assert daemon.stop() == 0


def test_a_state_dir_changed_by_a_reload_waits_for_the_restart_as_the_log_says(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    try:
        assert spoken(turn(control, "add milk to my shopping list")) == "Added milk to the shopping list."
        config.write_text(config.read_text().replace("/state", "/moved"))
        reload(daemon)
        assert "state_dir changed: it takes effect when the service restarts" in daemon.log_text()
        assert spoken(turn(control, "what is on my shopping list")) == "On your shopping list: milk."
        assert not (config.parent / "moved").exists()
    finally:
        assert daemon.stop() == 0


def story(control: Path, during=None) -> list[dict]:
    """A long reply; `during()` is called once, when its first words arrive."""
    with connect(control) as client:
        send(client, {"type": "say", "text": "tell me a long story", "id": "story"})
        seen = []
        for event in events(client):
            seen.append(event)
            if during is not None and event["type"] == "text":
                during()
                during = None
            if event["type"] == "turn_done":
                return seen
    raise AssertionError(seen)


def context_tokens(control: Path) -> int:
    with connect(control) as client:
        send(client, {"type": "status"})
        return until(client, "status")[-1]["context_tokens"]


def test_sighup_during_a_long_turn_leaves_that_turn_untouched(tmp_path: Path, chatty: Path) -> None:
    config = chatty_config(tmp_path, chatty, max_new_tokens=1500)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    try:
        daemon = Daemon(tmp_path, config, notify)
        undisturbed = story(control)
        assert daemon.stop() == 0

        notify.received.clear()
        daemon = Daemon(tmp_path, config, notify)
        before = context_tokens(control)
        config.write_text(config.read_text().replace("llm:\n", "llm:\n  system_prompt: You are a pirate. Arr.\n"))
        disturbed = story(control, during=lambda: daemon.process.send_signal(signal.SIGHUP))
        daemon.wait_for_log("reloaded ")
        after = context_tokens(control)
        assert daemon.stop() == 0
    finally:
        notify.close()
    assert undisturbed[-1]["generated_tokens"] == disturbed[-1]["generated_tokens"] == 1499
    assert spoken(disturbed) == spoken(undisturbed)  # same seed, same words: the reload waited for the turn
    assert after != before  # and then the new prompt took over


def test_sigterm_during_generation_exits_0_within_3_seconds_20_times(tmp_path: Path, chatty: Path) -> None:
    config = chatty_config(tmp_path, chatty, max_new_tokens=4000)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    times = []
    try:
        for attempt in range(20):
            notify.received.clear()
            daemon = Daemon(tmp_path, config, notify)
            with connect(control) as client:
                send(client, {"type": "say", "text": "tell me a long story"})
                until(client, "text")
                if attempt % 2:  # half the time with a reload waiting for the turn as well
                    daemon.process.send_signal(signal.SIGHUP)
                    notify.wait_for("RELOADING=1", timeout=5)
                start = time.monotonic()
                code = daemon.stop(signal.SIGTERM)
                times.append(time.monotonic() - start)
            assert code == 0, daemon.log_text()[-2000:]
            assert times[-1] < 3.0 and not control.exists()
    finally:
        notify.close()
    print(f"SIGTERM during generation: 20 exits, slowest {max(times):.2f} s, mean {sum(times) / 20:.2f} s")


def idle_within(control: Path, seconds: float, busy: bool = False) -> bool:
    """Whether the assistant is idle (with `busy`: running a turn) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with connect(control) as connection:
            send(connection, {"type": "status"})
            if until(connection, "status")[-1]["busy"] == busy:
                return True
        time.sleep(0.05)
    return False


def test_8_clients_at_once_each_get_exactly_their_own_replies(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    failures: list[str] = []

    def client(i: int) -> None:
        with connect(control) as connection:
            for j in range(10):
                item = f"item{i}x{j}"
                send(connection, {"type": "say", "text": f"add {item} to the shopping list", "id": f"c{i}.{j}"})
                seen = until(connection, "turn_done")
                if {e.get("request") for e in seen} != {f"c{i}.{j}"}:
                    failures.append(f"client {i} request {j} saw {seen}")
                elif spoken(seen) != f"Added {item} to the shopping list.":
                    failures.append(f"client {i} request {j} heard {spoken(seen)!r}")

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
        # Every add was stored once (read back from the list itself: spoken, it stops after 20 items).
        with sqlite3.connect(config.parent / "state" / "notes.sqlite3") as db:
            stored = [text for (text,) in db.execute("SELECT text FROM items WHERE list = 'shopping'")]
        assert sorted(stored) == sorted(f"item{i}x{j}" for i in range(8) for j in range(10))
        assert spoken(turn(control, "what's on the shopping list")).endswith(", and 60 more.")
        # `assistant chat` attached to the daemon: each answer after its own question, none shifted.
        chat = subprocess.run([sys.executable, "-m", "assistant", "chat", "--config", str(config)], env=clean_env(),
                              input="what day is it\nwhat time is it\nadd tea to the shopping list\n",
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        answers = [line.removeprefix("> ") for line in chat.stdout.splitlines()]
        assert chat.returncode == 0 and answers[0].startswith("Today is ") and answers[1].startswith("It is ")
        assert answers[2] == "Added tea to the shopping list.", chat.stdout
    finally:
        assert daemon.stop() == 0


def test_cancel_from_any_connection_on_disconnect_and_on_ctrl_c(tmp_path: Path, chatty: Path) -> None:
    config = chatty_config(tmp_path, chatty, max_new_tokens=4000)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    daemon = Daemon(tmp_path, config, notify)
    try:
        # Cancel from the same connection, while the reply streams.
        with connect(control) as connection:
            send(connection, {"type": "say", "text": "tell me a long story", "id": "long"})
            until(connection, "text")
            start = time.monotonic()
            send(connection, {"type": "cancel", "turn": "long", "id": "stop"})
            seen = until(connection, "turn_done")
            assert time.monotonic() - start < 1.0
            assert {"type": "cancelled", "request": "stop", "turn": "long"} in seen
            assert seen[-1]["cancelled"] and seen[-1]["generated_tokens"] < 3999

        # `assistant cancel` from another process.
        with connect(control) as connection:
            send(connection, {"type": "say", "text": "tell me a long story", "id": "long2"})
            until(connection, "text")
            cancelled = run_assistant("cancel", "--config", str(config))
            assert cancelled.returncode == 0 and cancelled.stdout.strip() == "cancelled turn long2"
            assert until(connection, "turn_done")[-1]["cancelled"]

        # A client that goes away cancels its turn.
        with connect(control) as connection:
            send(connection, {"type": "say", "text": "tell me a long story"})
            until(connection, "text")
        assert idle_within(control, 1.0)
        # Ctrl-C on `assistant say` too.
        say = subprocess.Popen([sys.executable, "-m", "assistant", "say", "--config", str(config), "tell", "me"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())  # fmt: skip
        say.stdout.read(1)  # the reply has started
        say.send_signal(signal.SIGINT)
        assert say.wait(timeout=10) == 130
        assert idle_within(control, 1.0)

        # `assistant chat` stays open when its reply is cancelled from elsewhere.
        chat = subprocess.Popen([sys.executable, "-m", "assistant", "chat", "--config", str(config)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=clean_env())  # fmt: skip
        assert chat.stdout.read(2) == b"> "  # its prompt, written before it reads a line
        chat.stdin.write(b"tell me a long story\n")
        chat.stdin.flush()
        chat.stdout.read(1)  # the reply has started
        assert run_assistant("cancel", "--config", str(config)).stdout.strip() == f"cancelled turn {chat.pid}-1"
        assert idle_within(control, 2.0)
        chat.stdin.write(b"and another one\n")
        chat.stdin.flush()
        assert idle_within(control, 10.0, busy=True)  # the chat's second line is a turn
        assert run_assistant("cancel", "--config", str(config)).stdout.strip() == f"cancelled turn {chat.pid}-2"
        chat.stdin.close()
        assert chat.wait(timeout=10) == 0
    finally:
        assert daemon.stop() == 0
        notify.close()


def test_a_timer_survives_kill_9(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    assert (
        turn(control, "set a bank call timer for 2 seconds")[-2]["text"] == "The bank call timer is set for 2 seconds."
    )
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL  # confirmed to the user, then killed
    notify.received.clear()
    restarted = Daemon(config.parent, config, notify)
    try:
        restarted.wait_for_log("saying an announcement of 6 words")  # "Your bank call timer is done."
        assert "bank call" not in restarted.log_text()  # the journal says that it rang, not what it was named
    finally:
        assert restarted.stop() == 0


def test_200_turns_with_flat_memory_threads_and_files(setup, tiny_int8: Path) -> None:
    config, control, notify = setup
    # A context that fills during the warm-up, so that what is measured is the steady state.
    disabled = ("[set_alarm, list_timers, control_timer, cancel_alarms, remove_item, clear_shopping_list, set_volume, "
                "change_volume]")  # fmt: skip
    text = config.read_text().replace("kv_cache_len: 8192", "kv_cache_len: 1024")
    config.write_text(text.replace("skills:\n", f"skills:\n  disabled: {disabled}\n"))
    daemon = Daemon(config.parent, config, notify)
    pid = daemon.process.pid

    def footprint() -> tuple[int, int, int]:
        """RSS, threads and open files. The fewest of 10 looks 50 ms apart: the timers' clock opens its
        database (3 files) every 0.25 s for a moment, a leak stays open in every look."""
        looks = []
        for _ in range(10):
            status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            rss_kb = int(status["VmRSS"].split()[0])
            looks.append((rss_kb, len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))))
            time.sleep(0.05)
        return looks[-1][0], min(look[1] for look in looks), min(look[2] for look in looks)

    kept = connect(control)  # one client's conversation fills the context; each other client's is forgotten

    def turn_of(i: int, text: str) -> list[dict]:
        if i % 2:
            return turn(control, text)
        send(kept, {"type": "say", "text": text})
        return until(kept, "turn_done")

    try:
        phrases = ["what time is it", "add milk to the shopping list", "tell me about the weather", "what day is it"]
        for i in range(80):  # warm-up: the context fills, arenas and caches reach their working size
            turn_of(i, phrases[i % 4])
        assert "context full" in daemon.log_text()
        rss0, threads0, fds0 = footprint()
        for i in range(200):
            seen = turn_of(i, phrases[i % 4])
            assert seen[-1]["type"] == "turn_done"
        time.sleep(0.5)  # connection threads finish
        rss1, threads1, fds1 = footprint()
        assert rss1 < rss0 * 1.10, f"RSS grew from {rss0} kB to {rss1} kB"
        assert threads1 <= threads0 and fds1 <= fds0, (threads0, threads1, fds0, fds1)
    finally:
        kept.close()
        assert daemon.stop() == 0


def test_broken_config_exits_with_the_no_restart_status(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("llm:\n  backend: gpu\n")
    result = subprocess.run([sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 78
    assert "llm.backend" in result.stderr
    unit = (REPO / "systemd/assistant.service").read_text()
    assert "RestartPreventExitStatus=78" in unit.splitlines()


def test_the_unit_restarts_a_daemon_that_ended_by_itself_even_with_status_0(tmp_path: Path) -> None:
    """A skill's os._exit(0) (or sys.exit in a thread it forked) ends the daemon cleanly, unasked, with no log
    line: systemd must bring it back. `systemctl stop` still stops it (a stop is never restarted), a reload is
    SIGHUP to the running process, and a broken configuration (78) is still not retried."""
    unit = (REPO / "systemd/assistant.service").read_text().splitlines()
    assert "Restart=on-failure" in unit and "RestartForceExitStatus=0" in unit
    assert "RestartPreventExitStatus=78" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    copy = tmp_path / "assistant.service"  # the binaries it names need not exist here
    copy.write_text("\n".join("ExecStart=/bin/true" if line.startswith("ExecStart=") else line for line in unit))
    verify = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr


def test_the_unit_does_not_wait_for_a_network_the_assistant_does_not_need_to_start() -> None:
    """Offline, a boot waits for network-online.target until its wait-online service gives up (2 minutes by
    default): the assistant would be deaf that long. It reaches MQTT only when a command is given."""
    unit = (REPO / "systemd/assistant.service").read_text().splitlines()
    dependencies = [line for line in unit if line.startswith(("After=", "Wants=", "Requires="))]
    assert dependencies and not any("network-online" in line for line in dependencies), dependencies


def test_a_socket_path_that_is_not_ours_is_refused_in_one_line(tmp_path: Path, tiny_int8: Path) -> None:
    def folder(name: str, mode: int = 0o700) -> Path:
        path = tmp_path / name
        path.mkdir()
        path.chmod(mode)
        return path

    regular = folder("file") / "control.sock"
    regular.write_text("not a socket: kept as it is")
    (folder("dir") / "control.sock").mkdir()
    cases = {
        regular: "exists and is not a socket",
        tmp_path / "dir" / "control.sock": "exists and is not a socket",
        folder("shared", 0o777) / "control.sock": "writable by other users",
        folder("sticky", 0o1777) / "control.sock": "writable by other users",
        folder("x" * 110) / "control.sock": "must be a path of at most 107 bytes",
    }
    (folder("open", 0o777) / "run").mkdir(mode=0o700)  # private, in a folder anyone may rename it in
    cases[tmp_path / "open" / "run" / "control.sock"] = "replaceable by another user"
    if os.geteuid() == 0:  # a directory made first by another user (as /tmp/assistant-<uid> could be)
        other = folder("other")
        os.chown(other, 65534, 65534)
        cases[other / "control.sock"] = "owned by uid 65534"
        # Another user's link in /tmp to a private folder of ours: its owner may point it elsewhere later.
        link = folder("tmp", 0o1777) / "assistant-0"
        link.symlink_to(folder("private"))
        os.lchown(link, 65534, 65534)
        cases[link / "control.sock"] = "replaceable by another user"
    for path, reason in cases.items():
        config = tmp_path / "config.yaml"
        config.write_text(f"llm:\n  model_dir: {tiny_int8}\ncontrol:\n  socket: {path}\n")
        result = run_assistant("run", "--config", str(config), "--text-only")
        assert result.returncode == 78, (path, result.stderr)
        assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert regular.read_text() == "not a socket: kept as it is"


def test_a_state_dir_another_user_could_change_is_refused_in_one_line(tmp_path: Path, tiny_int8: Path) -> None:
    config = write_config(tmp_path, tiny_int8)
    shared, theirs = tmp_path / "shared", tmp_path / "theirs"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    cases = {
        shared: "writable by other users",
        theirs: f"owned by uid {NOBODY}",
        shared / "state": "replaceable by another user",
    }
    for folder, reason in cases.items():
        config.write_text(re.sub(r"state_dir: .*", f"state_dir: {folder}", config.read_text()))
        result = run_assistant("run", "--config", str(config), "--text-only")
        assert result.returncode == 78, (folder, result.stderr)
        assert f"state_dir: {folder}: {reason}" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        doctor = run_assistant("doctor", "--text-only", "--config", str(config))
        assert doctor.returncode == 1 and f"PROBLEM  state_dir: {folder} is {reason}" in doctor.stdout, doctor.stdout
    assert not (theirs / "notes.sqlite3").exists() and not (theirs / "timers.sqlite3").exists()


def test_a_full_disk_is_said_in_words_and_a_timer_set_after_it_still_rings(tmp_path: Path, tiny_int8: Path) -> None:
    config = write_config(tmp_path, tiny_int8)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    with small_disk(tmp_path / "state", "size=1m,mode=0700") as state, contextlib.closing(notify):
        daemon = Daemon(tmp_path, config, notify)
        try:
            assert spoken(turn(control, "add bread to the shopping list")) == "Added bread to the shopping list."
            fill(state)
            assert spoken(turn(control, "add milk to the shopping list")) == "Sorry, add_item failed: the disk is full."
            assert spoken(turn(control, "set a timer for 1 seconds")) == "Sorry, set_timer failed: the disk is full."
            time.sleep(1)  # the clock goes on looking meanwhile
            (state / "filler").unlink()
            assert spoken(turn(control, "set a timer for 1 seconds")) == "Timer set for 1 second."
            daemon.wait_for_log("saying an announcement of 4 words", timeout=10)  # "Your timer is done."
            listed = spoken(turn(control, "what's on the shopping list"))
            assert listed == "On your shopping list: bread."  # what was confirmed is kept; nothing else
        finally:
            assert daemon.stop() == 0


def test_the_watchdog_is_fed_only_while_the_daemon_is_healthy(setup) -> None:
    from assistant.daemon.run import TURN_LIMIT_SECONDS
    from assistant.daemon.run import Daemon as Assistant

    config, control, notify = setup
    daemon = Assistant(config, load_settings(config), text_only=True)
    try:
        assert daemon.problem() == "the turn thread has stopped"  # not started yet
        daemon.worker.start()
        assert daemon.problem() is None
        daemon.turn_started = time.monotonic() - TURN_LIMIT_SECONDS - 1  # a turn that hangs
        assert daemon.problem() == f"a turn has run for more than {TURN_LIMIT_SECONDS:g} s"
        daemon.turn_started = None
        daemon.voice_thread = threading.Thread(target=lambda: None)
        daemon.voice_thread.start()
        daemon.voice_thread.join()
        assert daemon.problem() == "the voice thread has stopped"
    finally:
        daemon.pending.put(None)
        daemon.control.close()


def test_watchdog_variables_that_are_not_systemds_mean_no_watchdog(setup) -> None:
    config, control, notify = setup
    for odd in ("abc", "-5", "0", " 1000000"):
        notify.received.clear()  # the READY=1 of the one before
        daemon = Daemon(config.parent, config, notify, watchdog_usec=odd)
        try:
            assert spoken(turn(control, "what time is it")).startswith("It is ")
        finally:
            assert daemon.stop() == 0
        assert "Traceback" not in daemon.log_text()


@pytest.mark.parametrize("odd", ["²", "9" * 400, "9" * 5000, "١٠٠٠٠٠٠"])
def test_watchdog_values_no_number_parser_takes_are_no_watchdog_either(monkeypatch, odd: str) -> None:
    """A digit that is not 0-9, more than a float holds, more digits than int() reads: no watchdog, no traceback."""
    from assistant.daemon.notify import watchdog_interval

    monkeypatch.setenv("WATCHDOG_USEC", odd)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None


def test_an_unhealthy_daemon_says_so_once_and_once_more_when_it_is_healthy_again(setup, monkeypatch, caplog) -> None:
    from assistant.daemon.run import Daemon as Assistant

    config, control, notify = setup
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a beat every 50 ms
    daemon = Assistant(config, load_settings(config), text_only=True)
    stopped = threading.Thread(target=lambda: None)
    stopped.start()
    stopped.join()
    daemon.voice_thread = stopped  # the microphone's thread has ended
    with caplog.at_level(logging.INFO, logger="assistant.daemon"):
        main = threading.Thread(target=daemon.run)
        main.start()
        try:
            time.sleep(1)  # 20 beats
            daemon.voice_thread = None
            time.sleep(0.5)
        finally:
            daemon.request_stop()
            main.join(10)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(("unhealthy", "healthy"))]
    assert said == [
        "unhealthy, not telling the watchdog: the voice thread has stopped",
        "healthy again (it was: the voice thread has stopped); telling the watchdog again",
    ]


def test_voice_turns_and_voice_events_reach_every_client(setup) -> None:
    from assistant.daemon.run import Daemon as Assistant

    config, control, notify = setup
    daemon = Assistant(config, load_settings(config), text_only=True)  # the microphone's side is driven by hand here
    try:
        daemon.worker.start()
        with connect(control) as first, connect(control) as second:
            send(first, {"type": "status"})
            until(first, "status")
            daemon._voice_event({"type": "wake", "phrase": "hey computer", "confidence": 1.0})
            assert "".join(daemon.voice_turn("what day is it", threading.Event(), "voice-1")).startswith("Today is ")
            for client in (first, second):
                seen = until(client, "turn_done")
                assert seen[0] == {"type": "wake", "phrase": "hey computer", "confidence": 1.0}
                assert {e["request"] for e in seen[1:]} == {"voice-1"}
                assert seen[1] == {"type": "turn_start", "request": "voice-1", "text": "what day is it"}
    finally:
        daemon.pending.put(None)
        daemon.control.close()


def test_a_voice_turn_carries_the_pipelines_id_on_every_event(setup, test_voice: Path, tmp_path: Path) -> None:
    """The daemon's turn_start/turn_done and the pipeline's audio/latency/reply_done name one turn by one id,
    whoever made the pipeline and however many turns it has heard."""
    from assistant.daemon.run import Daemon as Assistant
    from assistant.voice.audio import WavSink
    from assistant.voice.pipeline import VoicePipeline
    from assistant.voice.tts import Voice

    config, control, notify = setup
    daemon = Assistant(config, load_settings(config), text_only=True)
    try:
        daemon.worker.start()
        with connect(control) as client:
            send(client, {"type": "status"})
            stream = events(client)
            assert next(stream)["type"] == "status"
            for _ in range(2):  # a pipeline made again counts its turns from voice-1 again
                pipeline = VoicePipeline(None, None, Voice(test_voice), WavSink(tmp_path / "out.wav"),
                                         daemon.voice_turn, on_event=daemon._voice_event)  # fmt: skip
                pipeline.start_reply("what day is it", time.monotonic())
                pipeline.finish()
                seen, kinds = [], set()
                while not {"turn_done", "reply_done"} <= kinds:
                    seen.append(next(stream))
                    kinds.add(seen[-1]["type"])
                assert {e["request"] for e in seen} == {"voice-1"}, seen
    finally:
        daemon.pending.put(None)
        daemon.control.close()


LOOKING_SKILL = """import pathlib
import time

from assistant import SkillContext, skill

HERE = pathlib.Path({folder!r})


@skill(timeout=30, sentences={{'en': ['look it up']}})
def look_up(context: SkillContext) -> str:
    '''Look something up, saying so while it takes a while.'''
    (HERE / 'started').touch()
    deadline = time.monotonic() + 30
    while not (HERE / 'go').exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    (HERE / 'go').unlink(missing_ok=True)
    context.say('Still looking.')
    return 'Found it.'


@skill(timeout=0.3, sentences={{'en': ['look it up slowly']}})
def look_up_slowly(context: SkillContext) -> str:
    '''Look something up, taking longer than it may.'''
    found = look_up(context)
    (HERE / 'said').touch()
    return found
"""


def looking(config: Path) -> Path:
    """The skill above in the config's skill folder; the folder where it says it started and waits for "go"."""
    folder = config.parent / "looking"
    folder.mkdir()
    (config.parent / "extra_skills" / "looking.py").write_text(LOOKING_SKILL.format(folder=str(folder)))
    return folder


def wait_for_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path}"
        time.sleep(0.02)


def test_what_a_skill_says_while_it_works_is_its_turns_and_unsaid_once_that_turn_is_stopped(setup, caplog) -> None:
    from assistant.daemon.run import Daemon as Assistant
    from assistant.daemon.run import State

    config, control, notify = setup
    folder = looking(config)
    daemon = Assistant(config, load_settings(config), text_only=True)
    try:
        daemon.worker.start()
        daemon.enter(State.READY)
        with connect(control) as asker, connect(control) as other, caplog.at_level(logging.INFO):
            send(other, {"type": "status", "id": "o1"})
            until(other, "status")
            send(asker, {"type": "say", "text": "look it up", "id": "a1"})
            wait_for_file(folder / "started")
            (folder / "go").touch()
            seen = until(asker, "turn_done")
            assert [e["type"] for e in seen] == ["turn_start", "tool_call", "say", "skill_result", "text", "turn_done"]
            assert seen[2] == {"type": "say", "request": "a1", "text": "Still looking."}  # in its turn, to its asker
            send(other, {"type": "status", "id": "o2"})
            assert [e["type"] for e in until(other, "status")] == ["status"]  # nobody else's turn reaches it

            (folder / "started").unlink()
            send(asker, {"type": "say", "text": "look it up", "id": "a2"})
            wait_for_file(folder / "started")
            send(asker, {"type": "cancel", "turn": "a2", "id": "a3"})
            seen = until(asker, "cancelled")
            assert seen[-1]["turn"] == "a2"
            (folder / "go").touch()
            seen += until(asker, "turn_done")  # the skill ends its work; what it says then goes unsaid
            assert [e["type"] for e in seen] == ["turn_start", "tool_call", "cancelled", "skill_result", "turn_done"]
            assert seen[-1]["cancelled"] and {e["request"] for e in seen} == {"a2", "a3"}, seen
            send(other, {"type": "status", "id": "o3"})
            assert [e["type"] for e in until(other, "status")] == ["status"]

            (folder / "started").unlink()  # a call left running past its timeout: its turn is over
            send(asker, {"type": "say", "text": "look it up slowly", "id": "a4"})
            assert spoken(until(asker, "turn_done")) == "Sorry, look_up_slowly took longer than 0.3 seconds."
            (folder / "go").touch()
            wait_for_file(folder / "said")
            for client, request in ((asker, "a5"), (other, "o4")):
                send(client, {"type": "status", "id": request})
                assert [e["type"] for e in until(client, "status")] == ["status"]
        # `assistant say` prints it too, on a line of its own before the reply.
        (folder / "started").unlink()
        threading.Thread(target=lambda: (wait_for_file(folder / "started"), (folder / "go").touch())).start()
        said = run_assistant("say", "--config", str(config), "look", "it", "up")
        assert (said.returncode, said.stdout) == (0, "Still looking.\nFound it.\n"), said.stderr
        lines = [r.getMessage() for r in caplog.records]
        assert "skill look_up spoke after turn a2 was stopped: not said" in lines, lines
        assert "skill look_up_slowly spoke after its turn was over: not said" in lines, lines
        assert not any("Still looking" in line for line in lines)  # what a skill says stays out of the journal
    finally:
        daemon.pending.put(None)
        daemon.control.close()


def test_a_skill_still_working_when_a_barge_in_cuts_its_reply_says_nothing_after_it(
    setup, test_voice: Path, tmp_path: Path
) -> None:
    """The reply's reply_done is its last word: the skill finishing its work afterwards is neither heard nor sent
    to anyone without its turn's id."""
    from assistant.daemon.run import Daemon as Assistant
    from assistant.voice.audio import WavSink
    from assistant.voice.pipeline import VoicePipeline
    from assistant.voice.tts import Voice

    config, control, notify = setup
    folder = looking(config)
    daemon = Assistant(config, load_settings(config), text_only=True)
    sink = WavSink(tmp_path / "out.wav")
    try:
        daemon.worker.start()
        daemon.voice = VoicePipeline(None, None, Voice(test_voice), sink, daemon.voice_turn,
                                     on_event=daemon._voice_event)  # fmt: skip
        with connect(control) as client:
            send(client, {"type": "status"})
            until(client, "status")
            daemon.voice.start_reply("look it up", time.monotonic())
            wait_for_file(folder / "started")
            daemon.voice.stop_reply()  # a barge-in: the reply ends here
            (folder / "go").touch()
            seen = until(client, "turn_done")
            daemon.voice.finish()
        after = seen[[e["type"] for e in seen].index("reply_done") + 1 :]
        assert after and all(e.get("request") == "voice-1" for e in after), seen
        assert "say" not in [e["type"] for e in seen]
        assert sink.chunks == []  # nothing was played: no reply yet, and no announcement after the stop
    finally:
        sink.close()
        daemon.pending.put(None)
        daemon.control.close()


def test_a_skill_saying_megabytes_is_cut_to_what_a_person_would_hear(setup, caplog) -> None:
    from assistant.daemon.run import Daemon as Assistant
    from assistant.skills.registry import MAX_RESULT

    config, control, notify = setup
    daemon = Assistant(config, load_settings(config), text_only=True)
    try:
        with connect(control) as client, caplog.at_level(logging.INFO, logger="assistant.daemon"):
            send(client, {"type": "status"})
            until(client, "status")
            daemon.announce("The timer is done.\n" + "ring " * 2_000_000)
            (said,) = [e for e in until(client, "say") if e["type"] == "say"]
    finally:
        daemon.control.close()
    assert said["text"].startswith("The timer is done.\nring ring")
    assert len(said["text"]) <= MAX_RESULT
    assert not said["text"].endswith("rin")  # cut between words
    lines = [r.getMessage() for r in caplog.records]
    assert max(map(len, lines)) < 400, "a log line a person reads, not the text"
    assert any(f"{len('The timer is done.') + 1 + 10_000_000} characters" in line for line in lines), lines
    assert not any("\n" in line for line in lines)  # one journal line each


def test_a_client_may_not_name_its_turn_as_the_microphones_are_named(setup) -> None:
    """voice-N names the microphone's turns: a client's turn of that id would take the voice turn's place among the
    running ones (its cancel, its turn_done), or have the voice turn refused."""
    from assistant.daemon.run import Daemon as Assistant
    from assistant.daemon.run import State

    config, control, notify = setup
    daemon = Assistant(config, load_settings(config), text_only=True)
    try:
        daemon.worker.start()
        daemon.enter(State.READY)  # as run() does, without its main loop
        with connect(control) as client:
            send(client, {"type": "say", "text": "what day is it", "id": "voice-1"})
            (error,) = until(client, "error")
            assert error["request"] == "voice-1" and "microphone" in error["message"], error
            send(client, {"type": "say", "text": "what day is it", "id": "kitchen-1"})
            assert until(client, "turn_done")[-1]["request"] == "kitchen-1"
    finally:
        daemon.pending.put(None)
        daemon.control.close()


def test_sigterm_while_a_reload_prefills_a_long_prompt_exits_0(tmp_path: Path, chatty: Path) -> None:
    """The reload thread is inside the model: a stop must not end the interpreter under it."""
    config = chatty_config(tmp_path, chatty, max_new_tokens=12)
    base = config.read_text()
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    try:
        for attempt in range(6):
            config.write_text(base)
            notify.received.clear()
            daemon = Daemon(tmp_path, config, notify)
            prompt = "the weather is sunny " * (1400 + attempt)
            config.write_text(base.replace("llm:\n", f"llm:\n  system_prompt: {prompt}\n"))
            notify.received.clear()
            daemon.process.send_signal(signal.SIGHUP)
            try:
                notify.wait_for("RELOADING=1", timeout=10, process=daemon.process)
            except AssertionError as e:
                raise AssertionError(f"{e}; the daemon's log:\n{daemon.log_text()[-3000:]}") from None
            time.sleep(0.02 * attempt)
            code = daemon.stop(signal.SIGTERM)
            assert code == 0, daemon.log_text()[-2000:]
            assert not control.exists()
    finally:
        notify.close()


def test_a_sighup_while_the_program_starts_is_not_its_end(setup) -> None:
    config, control, notify = setup
    command = [sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"]
    with open(config.parent / "daemon.log", "wb") as log:
        process = subprocess.Popen(command, env=clean_env() | {"NOTIFY_SOCKET": str(notify.path)}, stdout=log,
                                   stderr=log)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            # numpy: among the daemon's first imports, long before the models load (seconds on a board).
            while "_multiarray_umath" not in Path(f"/proc/{process.pid}/maps").read_text():
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.005)
            process.send_signal(signal.SIGHUP)
            notify.wait_for("READY=1", timeout=60, process=process)
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0


HANGUP_AS_IT_STARTS = """import os, signal, sys
import assistant.cli
os.kill(os.getpid(), signal.SIGHUP)  # the command's module loaded, the command not yet known
sys.exit(assistant.cli.main(sys.argv[1:]))
"""


def test_a_sighup_before_the_command_is_known_ends_only_a_command_that_is_not_the_daemon(setup) -> None:
    """The first tenth of a second or more (imports, the arguments): `assistant run` would end there as
    cleanly as systemd sees it, and not be restarted."""
    config, control, notify = setup
    command = [sys.executable, "-c", HANGUP_AS_IT_STARTS]
    run = [*command, "run", "--config", str(config), "--text-only"]
    env = clean_env() | {"NOTIFY_SOCKET": str(notify.path)}
    with open(config.parent / "daemon.log", "wb") as log:
        daemon = subprocess.Popen(run, env=env, stdout=log, stderr=log)
        try:
            notify.wait_for("READY=1", timeout=60, process=daemon)
            assert spoken(turn(control, "what time is it")).startswith("It is ")
            status = subprocess.run([*command, "status", "--config", str(config)], env=clean_env(), timeout=60)
            assert status.returncode == -signal.SIGHUP  # the terminal gone: a client ends as it always did
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
    assert "reload" not in (config.parent / "daemon.log").read_text()  # nothing to reload: read after it


def test_two_daemons_starting_at_once_on_one_socket_leave_one_running(setup) -> None:
    config, control, notify = setup
    from assistant.daemon.control import answers

    command = [sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"]
    env = clean_env() | {"NOTIFY_SOCKET": str(notify.path)}
    with open(config.parent / "daemon.log", "wb") as log:
        for _ in range(50):  # until the first is caught between creating its socket and listening on it
            first = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            while not control.exists() and first.poll() is None:
                pass
            first.send_signal(signal.SIGSTOP)
            if not answers(control):
                break
            first.send_signal(signal.SIGCONT)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0
        else:
            pytest.fail("the first daemon was never caught before it listened")
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, error = second.communicate(timeout=30)  # a second one running would take the socket's place
            assert (second.returncode, error) == (78, f"error: {control}: another assistant is already running there\n")
            first.send_signal(signal.SIGCONT)
            notify.wait_for("READY=1", process=first)
            assert turn(control, "what time is it")[-2]["text"].startswith("It is ")
        finally:
            second.kill()
            second.wait()
            first.send_signal(signal.SIGCONT)
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=30) == 0


SLOW_IMPORT_SKILL = """import pathlib
import time

pathlib.Path(__file__).with_suffix(".importing").touch()
time.sleep(4)
"""


def test_a_stop_while_the_runtime_initialises_exits_0_without_a_traceback(setup) -> None:
    config, control, notify = setup
    command = [sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"]
    env = clean_env() | {"NOTIFY_SOCKET": str(notify.path)}
    log_path = config.parent / "daemon.log"
    for _ in range(5):  # the window is short: each try lands in it more often than not
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            # onnxruntime's native module mapped, its initialisation under way: an error raised in
            # it, the stop's too, comes out of the import as an ImportError.
            while "onnxruntime_pybind11_state" not in Path(f"/proc/{process.pid}/maps").read_text():
                assert process.poll() is None, log_path.read_text()
            for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGCONT):
                process.send_signal(sig)
            assert process.wait(timeout=30) == 0, log_path.read_text()
        finally:
            process.kill()
            process.wait()
        assert "Traceback" not in log_path.read_text()


def test_signals_while_loading_reload_later_or_stop_cleanly(setup) -> None:
    config, control, notify = setup
    (config.parent / "extra_skills" / "slow.py").write_text(SLOW_IMPORT_SKILL)  # loading takes 4 s more
    env = clean_env() | {"NOTIFY_SOCKET": str(notify.path)}
    command = [sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"]
    started: list[subprocess.Popen] = []
    with open(config.parent / "loading.log", "wb") as log:
        try:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            started.append(process)
            notify.wait_for("STATUS=loading the language model", process=process)
            process.send_signal(signal.SIGHUP)  # the default action would end the daemon
            notify.wait_for("READY=1", timeout=60, process=process)
            notify.wait_for("RELOADING=1", timeout=30, process=process)  # the reload asked for while loading
            assert process.poll() is None
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0

            notify.received.clear()
            importing = config.parent / "extra_skills" / "slow.importing"
            importing.unlink()
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
            started.append(process)
            deadline = time.monotonic() + 60
            while not importing.exists():  # the stop lands inside a skill's import, under its `except Exception`
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            for daemon in started:  # none left running when an assertion fails
                if daemon.poll() is None:
                    daemon.kill()
    notify.wait_for("STOPPING=1", timeout=5)
    assert "READY=1" not in notify.received
    assert not control.exists()
    assert "stopped while loading" in (config.parent / "loading.log").read_text()


def test_a_question_belongs_to_the_connection_that_asked_it(setup) -> None:
    config, control, notify = setup
    daemon = Daemon(config.parent, config, notify)
    try:
        assert "bread" in spoken(turn(control, "add bread to the shopping list"))
        with connect(control) as asker, connect(control) as other:
            send(asker, {"type": "say", "text": "clear the shopping list"})
            assert until(asker, "turn_done")[-2]["type"] == "confirm"
            send(other, {"type": "say", "text": "what time is it"})  # not an answer to the question
            assert spoken(until(other, "turn_done")).startswith("It is ")
            send(other, {"type": "say", "text": "yes"})  # nobody asked this connection anything
            assert "skill_result" not in [e["type"] for e in until(other, "turn_done")]
            assert "bread" in spoken(turn(control, "what's on the shopping list"))
            send(other, {"type": "say", "text": "repeat that"})  # its own last reply, not the question
            assert "Do you really want" not in spoken(until(other, "turn_done"))
            send(asker, {"type": "say", "text": "Yes, please."})
            cleared = until(asker, "turn_done")
            assert [e["text"] for e in cleared if e["type"] == "skill_result"] == ["clear_shopping_list"]
        assert "bread" not in spoken(turn(control, "what's on the shopping list"))

        with connect(control) as asker:  # a new request instead of an answer drops the question
            send(asker, {"type": "say", "text": "add milk to the shopping list"})
            until(asker, "turn_done")
            send(asker, {"type": "say", "text": "clear the shopping list"})
            until(asker, "turn_done")
            send(asker, {"type": "say", "text": "what time is it"})
            assert spoken(until(asker, "turn_done")).startswith("It is ")
            send(asker, {"type": "say", "text": "yes"})
            assert "skill_result" not in [e["type"] for e in until(asker, "turn_done")]
        assert "milk" in spoken(turn(control, "what's on the shopping list"))

        with connect(control) as half_closed:  # `nc -N`: sends its request, then shuts its sending side
            send(half_closed, {"type": "say", "text": "what time is it"})
            half_closed.shutdown(socket.SHUT_WR)
            assert spoken(until(half_closed, "turn_done")).startswith("It is ")
            assert half_closed.recv(1) == b""  # and then the assistant closes it
    finally:
        assert daemon.stop() == 0


def test_a_client_given_a_config_that_is_not_there_says_so(tmp_path: Path) -> None:
    """Not the default socket instead: that could be another assistant."""
    for command in (["status"], ["say", "hello"], ["cancel"]):
        result = run_assistant(*command, "--config", str(tmp_path / "typo.yaml"))
        assert result.returncode == 78
        assert result.stderr.strip() == f"error: {tmp_path / 'typo.yaml'}: config file not found"


def test_a_stop_with_clients_connected_logs_no_error(tmp_path: Path, chatty: Path) -> None:
    config = chatty_config(tmp_path, chatty, max_new_tokens=4000)
    control, notify = tmp_path / "run" / "control.sock", Notifications(tmp_path / "notify.sock")
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT):
            notify.received.clear()
            daemon = Daemon(tmp_path, config, notify)
            with connect(control) as idle, connect(control) as talking, connect(control) as half_closed:
                send(idle, {"type": "status"})
                until(idle, "status")  # served, then left idle: an open `assistant chat`
                send(half_closed, {"type": "say", "text": "tell me a long story"})
                half_closed.shutdown(socket.SHUT_WR)  # `nc -N`: hears its turn to the end
                send(talking, {"type": "say", "text": "tell me a long story"})
                until(talking, "text")
                assert daemon.stop(sig) == 0
    finally:
        notify.close()
    log = daemon.log_text()
    assert "stopping" in log and "ERROR" not in log and "Traceback" not in log, log


def test_what_the_daemon_stores_only_its_own_user_can_read(setup) -> None:
    config, control, notify = setup
    old_umask = os.umask(0o022)  # a shell's, and systemd's unless the unit says otherwise
    try:
        daemon = Daemon(config.parent, config, notify)
    finally:
        os.umask(old_umask)
    try:
        assert spoken(turn(control, "add my bank PIN to the shopping list")).startswith("Added")
        assert spoken(turn(control, "set a timer for 10 minutes")) == "Timer set for 10 minutes."
    finally:
        assert daemon.stop() == 0
    state = config.parent / "state"
    stored = [state, *state.iterdir()]
    assert len(stored) >= 3 and {oct(path.stat().st_mode & 0o077) for path in stored} == {"0o0"}, stored
    unit = (REPO / "systemd/assistant.service").read_text()
    assert "UMask=0077" in unit and "StateDirectoryMode=0700" in unit  # a state folder made before, too


def test_a_second_stop_while_loading_still_exits_0(setup) -> None:
    """systemd's `stop` then a `kill`, or Ctrl-C pressed twice: the second lands while the first unwinds."""
    config, control, notify = setup
    command = [sys.executable, "-m", "assistant", "run", "--config", str(config), "--text-only"]
    env = clean_env() | {"NOTIFY_SOCKET": str(notify.path)}
    log_path = config.parent / "daemon.log"
    for gap in (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02):
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            notify.wait_for("STATUS=loading the language model", process=process)
            process.send_signal(signal.SIGTERM)
            time.sleep(gap)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0, (gap, log_path.read_text())
        finally:
            process.kill()
            process.wait()
        notify.received.clear()
        assert "Traceback" not in log_path.read_text(), gap
        assert "stopped while loading" in log_path.read_text(), gap
    for gap in (0.0, 0.001, 0.01, 0.05):  # and once loaded: the second lands in the shutdown or the teardown
        daemon = Daemon(config.parent, config, notify)
        daemon.process.send_signal(signal.SIGTERM)
        time.sleep(gap)
        daemon.process.send_signal(signal.SIGINT)
        assert daemon.stop() == 0, gap
        notify.received.clear()


POOLED_SKILL = """import time
from concurrent.futures import ThreadPoolExecutor

from assistant import skill

POOL = ThreadPoolExecutor(2)


@skill(sentences={"en": ["fetch the news"]}, timeout=0.5)
def news() -> str:
    \"\"\"Fetch the headlines.\"\"\"
    return POOL.submit(time.sleep, 3600).result()
"""


def test_a_stop_ends_the_daemon_although_a_skills_pool_thread_is_stuck(setup) -> None:
    """Python's teardown joins a ThreadPoolExecutor's threads: one stuck would hold the stop until systemd kills."""
    config, control, notify = setup
    (config.parent / "extra_skills" / "news.py").write_text(POOLED_SKILL)
    daemon = Daemon(config.parent, config, notify)
    assert "news" in spoken(turn(control, "fetch the news"))  # the apology for the timeout names it
    start = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - start < 8  # systemd's TimeoutStopSec is 10
    assert "exiting now" in daemon.log_text()


OFFLINE_RUN = """
import socket, sys

def audit(event, args):
    # Any address that is not a file path (a Unix socket's) is the network: a host name looked up, or an
    # IP address connected or sent to.
    if event in ("socket.getaddrinfo", "socket.gethostbyname") or (
        event in ("socket.connect", "socket.sendto", "socket.bind") and not isinstance(args[1], (str, bytes))
    ):
        with open(sys.argv[1], "a") as out:
            out.write(f"{event} {args[1:]!r}\\n")

sys.addaudithook(audit)
from assistant.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_nothing_leaves_the_device(setup) -> None:
    """Loading, answering locally and with the model, a timer, a reload and a stop: no host is looked up and no
    network address is connected or sent to (the control socket and systemd's are files)."""
    config, control, notify = setup
    network = config.parent / "network.log"
    env = clean_env() | {"NOTIFY_SOCKET": str(notify.path)}
    command = [sys.executable, "-c", OFFLINE_RUN, str(network), "run", "--config", str(config), "--text-only"]
    with open(config.parent / "daemon.log", "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        notify.wait_for("READY=1", process=process)
        assert spoken(turn(control, "what time is it")).startswith("It is ")
        assert spoken(turn(control, "set a timer for 10 minutes")) == "Timer set for 10 minutes."
        assert spoken(turn(control, "tell me about the sea"))  # the model's words
        process.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING=1", process=process)
        notify.wait_for("READY=1", process=process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()
    assert not network.exists(), network.read_text()
