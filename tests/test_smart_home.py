"""The smart-home skills against a real mosquitto broker started on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from assistant import SkillContext
from assistant.config import Settings
from assistant.skills.intents import IntentMatcher
from assistant.skills.registry import BUILTIN_SKILLS, Registry

REPO = Path(__file__).resolve().parent.parent
DEVICES = [
    {"name": "kitchen light", "type": "light", "topic": "zigbee2mqtt/kitchen_light"},
    {"name": "fan", "type": "switch", "convention": "homeassistant", "command_topic": "home/fan/set",
     "state_topic": "home/fan/state"},
    {"name": "blinds", "type": "cover", "topic": "zigbee2mqtt/blinds"},
    {"name": "thermostat", "type": "climate", "topic": "zigbee2mqtt/thermostat"},
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mosquitto(tmp_path: Path, allow_anonymous: bool = True) -> Iterator[int]:
    """A mosquitto broker on a free loopback port; yields the port."""
    assert shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists(), "mosquitto is installed by .ci/run"
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous {str(allow_anonymous).lower()}\npersistence false\n")
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[int]:
    with mosquitto(tmp_path) as port:
        yield port


class Subscriber:
    def __init__(self, port: int):
        self.messages: list[tuple[str, str]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, r, p: (c.subscribe("#"), self.ready.set())
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode()))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(5)
        time.sleep(0.2)  # the subscription is in place

    def wait_for(self, topic: str) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for seen_topic, payload in self.messages:
                if seen_topic == topic:
                    return payload
            time.sleep(0.02)
        raise AssertionError(f"nothing on {topic}; saw {self.messages}")

    def publish_retained(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def smart_home(port: int, tmp_path: Path) -> Registry:
    settings = Settings()
    settings.mqtt.host, settings.mqtt.port, settings.mqtt.devices = "127.0.0.1", port, DEVICES
    registry = Registry(settings=settings, context=SkillContext(settings=settings, state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    assert not registry.problems
    return registry


def test_commands_reach_the_broker_in_each_convention(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        assert (
            registry.call("switch_device", {"device": "kitchen light", "on": True}).text == "The kitchen light is on."
        )
        assert subscriber.wait_for("zigbee2mqtt/kitchen_light/set") == '{"state": "ON"}'
        registry.call("switch_device", {"device": "fan", "on": False})
        assert subscriber.wait_for("home/fan/set") == "OFF"
        registry.call("set_brightness", {"device": "kitchen light", "percent": 50})
        assert [p for t, p in subscriber.messages if t == "zigbee2mqtt/kitchen_light/set"][-1] == '{"brightness": 127}'
        registry.call("set_cover", {"device": "blinds", "position": 30})
        assert subscriber.wait_for("zigbee2mqtt/blinds/set") == '{"position": 30}'
        registry.call("set_temperature", {"device": "thermostat", "celsius": 21.5})
        assert subscriber.wait_for("zigbee2mqtt/thermostat/set") == '{"current_heating_setpoint": 21.5}'
        # a device of the wrong kind is refused by the schema, before any message
        assert "invalid arguments" in registry.call("set_cover", {"device": "fan", "position": 3}).error
    finally:
        subscriber.close()


def test_state_queries_read_the_retained_state(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/kitchen_light", json.dumps({"state": "ON", "brightness": 254}))
        subscriber.publish_retained("home/fan/state", "OFF")
        assert (
            registry.call("device_state", {"device": "kitchen light"}).text
            == "The kitchen light is on, at 100 percent."
        )
        assert registry.call("device_state", {"device": "fan"}).text == "The fan is off."
        assert registry.call("device_state", {"device": "blinds"}).text == "The blinds has not reported its state."
        # Devices report unknown values as null and numbers as strings too.
        subscriber.publish_retained("zigbee2mqtt/kitchen_light", json.dumps({"state": "OFF", "brightness": None}))
        subscriber.publish_retained("zigbee2mqtt/thermostat", json.dumps({"local_temperature": "21.5", "state": None}))
        assert registry.call("device_state", {"device": "kitchen light"}).text == "The kitchen light is off."
        assert registry.call("device_state", {"device": "thermostat"}).text == "The thermostat is 21.5 degrees."
    finally:
        subscriber.close()


def test_spoken_commands_in_both_languages(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        matcher = IntentMatcher(registry.skills, DEVICES)
        for text, payload in [
            ("turn off the kitchen light", '{"state": "OFF"}'),
            ("打开kitchen light", '{"state": "ON"}'),
        ]:
            match = matcher.match(text)
            assert match is not None and match.skill == "switch_device", text
            registry.call(match.skill, match.arguments)
            assert subscriber.wait_for("zigbee2mqtt/kitchen_light/set") == payload
            subscriber.messages.clear()
    finally:
        subscriber.close()


def test_a_broker_that_is_down_is_a_spoken_error_not_a_hang(tmp_path: Path) -> None:
    registry = smart_home(free_port(), tmp_path)  # nothing listens there
    start = time.monotonic()
    result = registry.call("switch_device", {"device": "kitchen light", "on": True})
    assert result.text.startswith("I can't reach the smart home broker at 127.0.0.1:")
    assert time.monotonic() - start < 5


def test_without_devices_the_smart_home_skills_stay_away(tmp_path: Path) -> None:
    registry = Registry(settings=Settings(), context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    assert "switch_device" not in registry.skills and not registry.problems
