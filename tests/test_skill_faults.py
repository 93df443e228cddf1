"""Faults inside skills end the turn with their cause in words; they never stop the assistant.

Brokers here are real: mosquitto refusing a client, and a plain TCP server that accepts MQTT
connections and then never acknowledges a command (what a broker stuck on a full disk does).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from assistant import SkillContext, background, skill
from assistant.config import Settings
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from tests.test_smart_home import DEVICES, free_port, mosquitto, smart_home


def assistant(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")} | (env or {})
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


def test_nan_and_infinity_are_refused_before_any_skill_runs(tmp_path: Path) -> None:
    registry = smart_home(free_port(), tmp_path)  # nothing listens there: a call that got through would say so
    for bad in ("NaN", "Infinity", "-Infinity"):
        arguments = json.loads(f'{{"device": "thermostat", "celsius": {bad}}}')
        result = registry.call("set_temperature", arguments)
        assert result.error == "invalid arguments for set_temperature: numbers must be finite"


def test_a_broker_that_refuses_the_client_is_reported(tmp_path: Path) -> None:
    with mosquitto(tmp_path, allow_anonymous=False) as port:
        said = smart_home(port, tmp_path).call("switch_device", {"device": "kitchen light", "on": True}).text
    refused = "(it refused the connection: Not authorized)"
    assert said == f"I can't reach the smart home broker at 127.0.0.1:{port} {refused}."


def test_a_command_the_broker_never_confirms_is_reported(tmp_path: Path) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    connections = []

    def accept() -> None:  # answers CONNECT with a CONNACK, then reads and acknowledges nothing
        connection, _ = server.accept()
        connection.recv(1024)
        connection.sendall(bytes([0x20, 0x02, 0x00, 0x00]))
        connections.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    try:
        said = smart_home(port, tmp_path).call("set_cover", {"device": "blinds", "position": 0}).text
        expected = "(it did not confirm the command within 3 seconds)"
        assert said == f"I can't reach the smart home broker at 127.0.0.1:{port} {expected}."
    finally:
        for connection in connections:
            connection.close()
        server.close()


def test_a_background_task_that_fails_is_restarted_with_backoff(tmp_path: Path) -> None:
    runs: list[float] = []

    @background
    def flaky(context: SkillContext, stop: threading.Event) -> None:
        runs.append(time.monotonic())
        if len(runs) < 3:
            raise OSError("the sensor is unplugged")
        stop.wait()

    registry = Registry(context=SkillContext(state_dir=tmp_path))
    registry.background.append(flaky.__assistant_background__)
    stop = threading.Event()
    registry.start_background(stop)
    deadline = time.monotonic() + 10
    while len(runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    assert len(runs) == 3
    assert 0.9 < runs[1] - runs[0] < 1.8 and 1.9 < runs[2] - runs[1] < 3.0  # 1 s, then 2 s


def test_a_skill_that_cannot_be_described_is_skipped_not_fatal(tmp_path: Path) -> None:
    settings = Settings()
    settings.mqtt.devices = [*DEVICES, {"type": "light", "topic": "zigbee2mqtt/nameless"}]  # no name
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=tmp_path))

    @skill
    def noop() -> str:
        """Do nothing."""
        return "done"

    registry.add_function(noop, "test")
    registry.load_folder(BUILTIN_SKILLS)
    assert "noop" in registry.skills and "current_time" in registry.skills
    assert any("switch_device cannot be described: KeyError: 'name'" in p for p in registry.problems)


def test_built_in_skills_load_wherever_the_config_lives(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "config.yaml"
    config.parent.mkdir()
    config.write_text("mqtt:\n  devices:\n    - {name: lamp, type: light, topic: zigbee2mqtt/lamp}\n")
    listed = assistant("skills", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    names = [line.split(":")[0] for line in listed.stdout.splitlines() if not line.startswith(" ")]
    for name in ("current_time", "set_timer", "add_item", "switch_device", "what_can_you_do"):
        assert name in names
    assert "  say (en): what's on the shopping list | read my notes" in listed.stdout  # (template, slots) pairs


def test_config_check_does_not_print_the_mqtt_password(tmp_path: Path, installed_models: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mqtt:\n  username: me\n  password: hunter2\n")
    checked = assistant("config", "check", "--config", str(config), env=installed_models)
    assert checked.returncode == 0, checked.stderr
    assert "hunter2" not in checked.stdout and "password: (set, not shown)" in checked.stdout
