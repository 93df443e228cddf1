"""The smart-home skills against a real mosquitto broker started on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt
import pytest

from assistant import SkillContext
from assistant.config import Settings
from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.intents import IntentMatcher
from assistant.skills.registry import BUILTIN_SKILLS, Registry
from assistant.turn import TurnManager

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
def mosquitto(
    tmp_path: Path, allow_anonymous: bool = True, port: int | None = None, acl: str = "", options: tuple[str, ...] = ()
) -> Iterator[int]:
    """A mosquitto broker on a loopback port (a free one unless given), with `acl` as its access rules
    if given and more configuration `options`; yields the port."""
    assert shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists(), "mosquitto is installed by .ci/run"
    port = port or free_port()
    config = tmp_path / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", f"allow_anonymous {str(allow_anonymous).lower()}", "persistence false"]
    lines += options
    if acl:
        (tmp_path / "acl").write_text(acl)
        # Started as root, mosquitto reads its access rules after becoming the user `mosquitto`, who
        # cannot enter pytest's private folder: `user` with our own name keeps the user it started as.
        lines += [f"acl_file {tmp_path / 'acl'}", f"user {pwd.getpwuid(os.getuid()).pw_name}"]
    config.write_text("\n".join(lines) + "\n")
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    log = tmp_path / "mosquitto.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert process.poll() is None, f"mosquitto exited: {log.read_text()}"
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

    def sent_before_now(self) -> list[tuple[str, str]]:
        """Every message the broker passed on before this call: a marker published now comes after them."""
        self.client.publish("marker", "now", qos=1).wait_for_publish(5)
        self.wait_for("marker")
        return [(topic, payload) for topic, payload in self.messages if topic != "marker"]

    def wait_for(self, topic: str) -> str:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for seen_topic, payload in self.messages:
                if seen_topic == topic:
                    return payload
            time.sleep(0.02)
        raise AssertionError(f"nothing on {topic}; saw {self.messages}")

    def publish_retained(self, topic: str, payload: str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def smart_home(port: int, tmp_path: Path, devices: list[dict] = DEVICES, host: str = "127.0.0.1") -> Registry:
    settings = Settings()
    settings.mqtt.host, settings.mqtt.port, settings.mqtt.devices = host, port, devices
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
        # The broker acknowledges before it passes the message on: ask for everything it passed on so far.
        sent = subscriber.sent_before_now()
        assert [p for t, p in sent if t == "zigbee2mqtt/kitchen_light/set"][-1] == '{"brightness": 127}'
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


def test_a_broker_that_never_answers_the_connection_is_given_up_within_the_skill_timeout(tmp_path: Path) -> None:
    # A listening socket whose backlog is full drops new connections' SYNs: the TCP connect hangs,
    # as it does for a broker host that went off the network.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    waiting = []
    for _ in range(4):
        waiting.append(socket.socket())
        waiting[-1].setblocking(False)
        with contextlib.suppress(BlockingIOError):
            waiting[-1].connect(("127.0.0.1", port))
    try:
        registry = smart_home(port, tmp_path)
        start = time.monotonic()
        result = registry.call("switch_device", {"device": "kitchen light", "on": True})
        took = time.monotonic() - start
    finally:
        for s in [*waiting, server]:
            s.close()
    assert result.text == f"I can't reach the smart home broker at 127.0.0.1:{port} (timed out)."
    # paho alone waits 5 s for the connect; with the broker's answer and the acknowledgements after
    # it, that could pass the registry's 10 s, and the command would go out after "failed" was said.
    assert took < 4


def test_without_devices_the_smart_home_skills_stay_away(tmp_path: Path) -> None:
    registry = Registry(settings=Settings(), context=SkillContext(state_dir=tmp_path))
    registry.load_folder(BUILTIN_SKILLS)
    smart_home = {name for name, found in registry.skills.items() if "smart_home.py:" in found.source}
    assert smart_home == set() and not registry.problems
    assert {"current_time", "set_timer", "add_item"} <= registry.skills.keys()  # the others load


def test_a_broker_that_comes_up_later_is_used_without_a_restart(tmp_path: Path) -> None:
    port = free_port()
    registry = smart_home(port, tmp_path)
    assert registry.call("switch_device", {"device": "kitchen light", "on": True}).text.startswith("I can't reach")
    with mosquitto(tmp_path, port=port):
        subscriber = Subscriber(port)
        try:
            assert registry.call("switch_device", {"device": "kitchen light", "on": True}).text.endswith("is on.")
            assert subscriber.wait_for("zigbee2mqtt/kitchen_light/set") == '{"state": "ON"}'
        finally:
            subscriber.close()


def test_broker_settings_that_cannot_work_are_said_and_logged(tmp_path: Path, caplog) -> None:
    unused = free_port()
    with caplog.at_level(logging.WARNING):
        down = smart_home(unused, tmp_path).call("switch_device", {"device": "fan", "on": True})
        no_host = smart_home(unused, tmp_path, host="").call("switch_device", {"device": "fan", "on": True})
        registry = smart_home(unused, tmp_path)
        registry.settings.mqtt.tls, registry.settings.mqtt.ca_file = True, tmp_path / "missing-ca.pem"
        no_ca = registry.call("switch_device", {"device": "fan", "on": True})
    assert down.text == f"I can't reach the smart home broker at 127.0.0.1:{unused} (Connection refused)."
    assert no_host.text == f"I can't reach the smart home broker at :{unused} (Invalid host)."
    assert no_ca.text == (
        f"I can't reach the smart home broker at 127.0.0.1:{unused} "
        f"(mqtt.ca_file {tmp_path / 'missing-ca.pem'}: No such file or directory)."
    )
    # the operator reads the same in the log
    logged = [r.getMessage() for r in caplog.records]
    assert all(any(result.text in line for line in logged) for result in (down, no_host, no_ca))


def test_a_name_two_devices_share_switches_neither(broker: int, tmp_path: Path) -> None:
    devices = [
        {"name": "light", "type": "light", "topic": "z2m/kitchen", "area": "kitchen"},
        {"name": "light", "type": "light", "topic": "z2m/bedroom", "area": "bedroom"},
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)
    try:
        match = IntentMatcher(registry.skills, devices).match("turn on the light in the bedroom")
        assert match is not None and match.arguments == {"device": "light", "on": True}
        assert (
            registry.call(match.skill, match.arguments).text
            == "I can't tell which light you mean: mqtt.devices has 2 of that name (kitchen and bedroom)."
        )
        assert registry.call("set_brightness", {"device": "light", "percent": 10}).text.startswith("I can't tell")
        assert subscriber.sent_before_now() == []
        # by area they are still reachable
        assert registry.call("switch_all", {"on": True, "area": "bedroom"}).text == "The light in the bedroom is on."
        assert subscriber.wait_for("z2m/bedroom/set") == '{"state": "ON"}'
    finally:
        subscriber.close()


def test_a_device_without_a_usable_topic_is_named_and_nothing_is_sent(broker: int, tmp_path: Path, caplog) -> None:
    devices = [
        {"name": "hall light", "type": "light", "area": "hall"},  # no topic
        {"name": "hall lamp", "type": "light", "topic": "z2m/hall_lamp", "area": "hall"},
        {"name": "plug", "type": "switch", "topic": "z2m/+/plug"},
        {"name": "porch light", "type": "light", "convention": "homeassistant", "command_topic": "ha/porch/set"},
        {"name": "curtain", "type": "cover", "convention": "homeassistant", "command_topic": "ha/curtain/set"},
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)
    try:
        with caplog.at_level(logging.WARNING):
            said = [
                registry.call("switch_device", {"device": "hall light", "on": True}).text,
                registry.call("switch_device", {"device": "plug", "on": True}).text,
                registry.call("set_brightness", {"device": "porch light", "percent": 40}).text,
                registry.call("set_cover", {"device": "curtain", "position": 30}).text,
                # one light of the hall cannot be reached, so none is switched
                registry.call("switch_all", {"on": False, "area": "hall"}).text,
            ]
        assert said == [
            "I can't use the hall light: mqtt.devices gives it no topic.",
            "I can't use the plug: its topic 'z2m/+/plug' in mqtt.devices has a wildcard.",
            "I can't use the porch light: mqtt.devices gives it no brightness_command_topic.",
            "I can't use the curtain: mqtt.devices gives it no set_position_topic.",
            "I can't use the hall light: mqtt.devices gives it no topic.",
        ]
        assert [r.getMessage() for r in caplog.records if "I can't use" in r.getMessage()] == [
            f"smart home: {sentence}" for sentence in said
        ]
        assert subscriber.sent_before_now() == []
        # a cover with only a command topic still opens and closes
        assert registry.call("set_cover", {"device": "curtain", "position": 100}).text == "The curtain is open."
        assert subscriber.wait_for("ha/curtain/set") == "OPEN"
    finally:
        subscriber.close()


def test_hostile_state_payloads_are_not_read_out(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    not_understood = "The thermostat is reporting something I don't understand."
    try:
        for payload in [
            "[" * 100_000,  # nested too deep for the JSON parser
            json.dumps("a" * 100_000),
            json.dumps({"state": "a" * 100_000}),
            "null",
            "[1, 2]",
        ]:
            subscriber.publish_retained("zigbee2mqtt/thermostat", payload)
            assert registry.call("device_state", {"device": "thermostat"}).text == not_understood, payload[:20]
        subscriber.publish_retained("zigbee2mqtt/thermostat", json.dumps({"state": "heat", "flood": "c" * 10_000}))
        assert registry.call("device_state", {"device": "thermostat"}).text == "The thermostat is heat."
    finally:
        subscriber.close()


def open_connections(port: int) -> tuple[int, int]:
    """paho client threads of this process, and established TCP connections to the broker on `port`."""
    threads = sum(1 for t in threading.enumerate() if t.name.startswith("paho"))
    # /proc/net/tcp: "sl local_address rem_address st ...", addresses as HEXIP:HEXPORT, st 01 = established
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    connections = sum(1 for row in rows if row[2].endswith(f":{port:04X}") and row[3] == "01")
    return threads, connections


def test_no_connection_outlives_a_call(broker: int, tmp_path: Path) -> None:
    devices = [
        *DEVICES,
        {"name": "odd", "type": "cover", "topic": "z2m/#/odd"},
        {"name": "long", "type": "cover", "topic": "z2m/" + "x" * 70_000},  # longer than MQTT allows
    ]
    for _ in range(3):  # as after reloads: a new registry each time
        registry = smart_home(broker, tmp_path, devices)
        assert registry.call("device_state", {"device": "odd"}).text.startswith("I can't use the odd:")
        assert registry.call("device_state", {"device": "long"}).text.startswith("I can't use the long:")
        assert registry.call("device_state", {"device": "blinds"}).text.endswith("has not reported its state.")
        assert registry.call("switch_all", {"on": True, "kind": "switch"}).text == "The switch is on."
    assert open_connections(broker) == (0, 0)
    down = smart_home(free_port(), tmp_path, devices)
    assert down.call("device_state", {"device": "fan"}).text.startswith("I can't reach")
    assert open_connections(broker) == (0, 0)


# A home named in Chinese and in English, as people mix them.
MIXED = [
    {"name": "卧室灯", "type": "light", "topic": "z2m/woshi", "area": "卧室"},
    {"name": "床头灯", "type": "light", "topic": "z2m/chuangtou", "area": "卧室"},
    {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen", "area": "kitchen"},
    {"name": "fan", "type": "switch", "convention": "homeassistant", "command_topic": "home/fan/set",
     "state_topic": "home/fan/state"},
    {"name": "窗帘", "type": "cover", "topic": "z2m/chuanglian"},
    {"name": "空调", "type": "climate", "topic": "z2m/kongtiao"},
]  # fmt: skip
# The user's own words in Latin letters, said as they are in a Chinese reply.
NAMES = ["kitchen light", "hall light", "light", "kitchen", "bedroom", "fan", "plug", "heater"]


def chinese(text: str) -> str:
    """`text`, checked to be Chinese: no Latin letters but those of the user's names."""
    rest = text
    for name in NAMES:  # longest first where one holds another
        rest = rest.replace(name, "")
    assert re.search(r"[\u4e00-\u9fff]", rest) and not re.search(r"[A-Za-z]", rest), text
    return text


def in_both(registry: Registry, skill: str, arguments: dict) -> tuple[str, str]:
    """The skill's reply to the same call for a request in English and for one in Chinese."""
    replies = []
    for language in ("en", "zh"):
        registry.context.language = language
        replies.append(registry.call(skill, arguments).text)
    registry.context.language = "en"
    return replies[0], chinese(replies[1])


def test_commands_are_confirmed_in_the_language_of_the_request(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path, MIXED), Subscriber(broker)
    try:
        for skill, arguments, english, mandarin in [
            ("switch_device", {"device": "卧室灯", "on": True}, "The 卧室灯 is on.", "卧室灯已打开。"),
            (
                "switch_device",
                {"device": "kitchen light", "on": False},
                "The kitchen light is off.",
                "kitchen light已关闭。",
            ),
            (
                "set_brightness",
                {"device": "卧室灯", "percent": 50},
                "The 卧室灯 is at 50 percent.",
                "卧室灯亮度已调到50%。",
            ),
            ("set_cover", {"device": "窗帘", "position": 30}, "The 窗帘 is at 30 percent.", "窗帘已打开到30%。"),
            ("set_cover", {"device": "窗帘", "position": 100}, "The 窗帘 is open.", "窗帘已打开。"),
            ("set_cover", {"device": "窗帘", "position": 0}, "The 窗帘 is closed.", "窗帘已关闭。"),
            ("set_temperature", {"celsius": 22}, "The 空调 is set to 22 degrees.", "空调温度已设为22度。"),
            (
                "set_temperature",
                {"device": "空调", "celsius": 21.5},
                "The 空调 is set to 21.5 degrees.",
                "空调温度已设为21.5度。",
            ),
            ("switch_all", {"on": True, "area": "卧室"}, "The lights in the 卧室 are on.", "卧室的灯都已打开。"),
            ("switch_all", {"on": False, "area": "kitchen"}, "The light in the kitchen is off.", "kitchen的灯已关闭。"),
            ("switch_all", {"on": False}, "The lights are off.", "所有的灯都已关闭。"),
            ("switch_all", {"on": True, "kind": "switch"}, "The switch is on.", "开关已打开。"),
            ("switch_all", {"on": True, "kind": "fan"}, "There is no fan.", "家里没有风扇。"),
            (
                "switch_all",
                {"on": True, "kind": "switch", "area": "卧室"},
                "There is no switch in the 卧室.",
                "卧室没有开关。",
            ),
        ]:
            subscriber.sent_before_now()
            subscriber.messages.clear()
            assert in_both(registry, skill, arguments) == (english, mandarin)
            # the language changes the words, not the commands: each was sent once for either request
            sent = subscriber.sent_before_now()
            assert sent[: len(sent) // 2] == sent[len(sent) // 2 :], sent
    finally:
        subscriber.close()


def test_states_are_read_out_in_the_language_of_the_request(broker: int, tmp_path: Path) -> None:
    devices = [*MIXED, {"name": "plug", "type": "switch", "convention": "homeassistant", "command_topic": "ha/plug"}]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)
    try:
        subscriber.publish_retained("z2m/woshi", json.dumps({"state": "ON", "brightness": 127}))
        subscriber.publish_retained("home/fan/state", "OFF")
        subscriber.publish_retained("z2m/chuanglian", json.dumps({"state": "OPEN", "position": 30}))
        subscriber.publish_retained(
            "z2m/kongtiao", json.dumps({"local_temperature": 21.5, "current_heating_setpoint": 22})
        )
        subscriber.publish_retained("z2m/kitchen", "[1, 2]")
        assert [in_both(registry, "device_state", {"device": d["name"]}) for d in devices] == [
            ("The 卧室灯 is on, at 50 percent.", "卧室灯开着，亮度50%。"),
            ("The 床头灯 has not reported its state.", "床头灯还没有报告状态。"),
            ("The kitchen light is reporting something I don't understand.", "kitchen light报的状态我看不懂。"),
            ("The fan is off.", "fan关着。"),
            ("The 窗帘 is open, 30 percent open.", "窗帘开着，开了30%。"),
            ("The 空调 is 21.5 degrees, set to 22.", "空调室温21.5度，设在22度。"),
            ("The plug does not report its state.", "plug不报告状态。"),
        ]
    finally:
        subscriber.close()


@contextlib.contextmanager
def fake_broker(
    mqtt_5: bool = True,
    puback: bool = False,
    suback: int | None = None,
    unsubscribe: Literal["acknowledge", "ignore", "drop"] = "acknowledge",
) -> Iterator[tuple[int, list[int]]]:
    """An MQTT server that answers as a broker does, as far as these tests need; yields its port and
    the protocol levels it was asked for. Without MQTT 5 it answers a CONNECT of level 5 with 3.1.1's
    CONNACK 0x01, as that specification has it (3.1.2.2). It acknowledges a QoS 1 PUBLISH only if
    `puback`, answers a SUBSCRIBE with `suback` as its reason code if one is given, and does with an
    UNSUBSCRIBE what `unsubscribe` says (acknowledges it, ignores it or drops the connection)."""
    server = socket.create_server(("127.0.0.1", 0))
    levels: list[int] = []
    connections = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                connections.append(connection)
                level = connection.recv(4096)[8]  # after the fixed header (2) and "MQTT" with its length (6)
                levels.append(level)
                if level == 5 and not mqtt_5:
                    connection.sendall(b"\x20\x02\x00\x01")  # unacceptable protocol version
                    connection.close()
                    continue
                five = level == 5
                connection.sendall(b"\x20\x03\x00\x00\x00" if five else b"\x20\x02\x00\x00")  # accepted
                while packet := connection.recv(4096):  # one packet a read: small ones, sent one by one
                    if packet[0] >> 4 == 3 and packet[0] & 0x06 == 0x02 and puback:  # PUBLISH, QoS 1
                        topic_length = int.from_bytes(packet[2:4], "big")
                        connection.sendall(b"\x40\x02" + packet[4 + topic_length : 6 + topic_length])
                    elif packet[0] >> 4 == 8 and suback is not None:  # SUBSCRIBE
                        properties = b"\x00" if five else b""
                        answer = packet[2:4] + properties + bytes([suback])
                        connection.sendall(bytes([0x90, len(answer)]) + answer)
                    elif packet[0] >> 4 == 10 and unsubscribe == "drop":
                        connection.close()
                        break
                    elif (
                        packet[0] >> 4 == 10 and unsubscribe == "acknowledge"
                    ):  # UNSUBSCRIBE: a reason code a topic in MQTT 5, none in 3.1.1
                        topics, at = 0, 5 + packet[4] if five else 4  # past the packet id and the properties
                        while at < len(packet):
                            topics, at = topics + 1, at + 2 + int.from_bytes(packet[at : at + 2], "big")
                        answer = packet[2:4] + (b"\x00" + bytes(topics) if five else b"")
                        connection.sendall(bytes([0xB0, len(answer)]) + answer)

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    try:
        yield server.getsockname()[1], levels
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept(), which close() alone would leave waiting
        server.close()
        serving.join(5)
        for connection in connections:
            connection.close()


def test_what_cannot_be_done_is_said_in_the_language_of_the_request(tmp_path: Path, caplog) -> None:
    down = free_port()
    shared = [
        {"name": "light", "type": "light", "topic": "z2m/kitchen", "area": "kitchen"},
        {"name": "light", "type": "light", "topic": "z2m/bedroom", "area": "bedroom"},
        {"name": "hall light", "type": "light"},  # no topic
        {"name": "plug", "type": "switch", "topic": "z2m/+/plug"},
        {"name": "空调", "type": "climate", "topic": "z2m/kongtiao"},
        {"name": "heater", "type": "climate", "topic": "z2m/heater"},
    ]
    unreachable, registry = smart_home(down, tmp_path, MIXED), smart_home(down, tmp_path, shared)
    with caplog.at_level(logging.WARNING):
        said = [
            in_both(unreachable, "switch_device", {"device": "卧室灯", "on": True}),
            in_both(registry, "switch_device", {"device": "light", "on": True}),
            in_both(registry, "switch_device", {"device": "hall light", "on": True}),
            in_both(registry, "device_state", {"device": "plug"}),
        ]
    assert said == [
        (
            f"I can't reach the smart home broker at 127.0.0.1:{down} (Connection refused).",
            f"连不上智能家居服务器127.0.0.1:{down}，连接被拒绝。",
        ),
        (
            "I can't tell which light you mean: mqtt.devices has 2 of that name (kitchen and bedroom).",
            "有2个设备叫light（kitchen、bedroom），不知道你说的是哪一个。",
        ),
        ("I can't use the hall light: mqtt.devices gives it no topic.", "hall light用不了：设备配置里没有它的主题。"),
        (
            "I can't use the plug: its topic 'z2m/+/plug' in mqtt.devices has a wildcard.",
            "plug用不了：设备配置里它的主题带通配符。",
        ),
    ]
    # The log keeps the English sentence, which names the setting to fix, whatever the reply's language.
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("smart home:")] == [
        f"smart home: {english}" for english, _ in said for _ in range(2)
    ]
    assert in_both(registry, "set_temperature", {"celsius": 20}) == (
        "Which thermostat: 空调, heater?",
        "哪个空调：空调、heater？",
    )
    with mosquitto(tmp_path, allow_anonymous=False) as port:
        assert in_both(smart_home(port, tmp_path, MIXED), "switch_device", {"device": "fan", "on": True}) == (
            f"I can't reach the smart home broker at 127.0.0.1:{port} "
            "(it refused the connection: Not authorized; it may want mqtt.username and mqtt.password).",
            f"连不上智能家居服务器127.0.0.1:{port}，服务器拒绝了连接，它可能要用户名和密码。",
        )
    with fake_broker() as (port, _):
        assert in_both(smart_home(port, tmp_path, MIXED), "switch_all", {"on": True, "area": "卧室"}) == (
            f"I can't reach the smart home broker at 127.0.0.1:{port} "
            "(it did not confirm the command within 3 seconds).",
            f"连不上智能家居服务器127.0.0.1:{port}，命令没有得到确认。",
        )


def test_a_spoken_request_is_answered_in_its_own_language(broker: int, tmp_path: Path, tiny_int8: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path, MIXED), Subscriber(broker)
    manager = TurnManager(
        Conversation(Engine(tiny_int8, kv_cache_len=2048), "You are a test.", 16), registry, Sampler()
    )

    def said(text: str) -> list[str]:
        return [event.text for event in manager.turn(text) if event.kind in ("text", "error")]

    try:
        subscriber.publish_retained("z2m/woshi", json.dumps({"state": "ON"}))
        subscriber.publish_retained("z2m/kitchen", json.dumps({"state": "ON"}))
        assert said("打开卧室灯") == ["卧室灯已打开。"]
        assert subscriber.wait_for("z2m/woshi/set") == '{"state": "ON"}'
        assert said("卧室灯是什么状态") == ["卧室灯开着。"]
        assert said("关闭卧室的灯") == ["卧室的灯都已关闭。"]
        assert said("打开窗帘") == ["窗帘已打开。"]
        assert said("把温度设置为22度") == ["空调温度已设为22度。"]
        assert said("关掉kitchen light") == ["kitchen light已关闭。"]
        # the next request in English is answered in English
        assert said("turn on the kitchen light") == ["The kitchen light is on."]
        assert said("is the kitchen light on") == ["The kitchen light is on."]
        assert said("kitchen light开着吗") == ["kitchen light开着。"]
    finally:
        subscriber.close()


def test_a_command_the_brokers_access_rules_refuse_is_said_not_done(tmp_path: Path, caplog) -> None:
    """MQTT 5: the broker's acknowledgement carries "not authorized" (3.1.1 would acknowledge it as done)."""
    acl = "topic read #\ntopic readwrite marker\ntopic readwrite zigbee2mqtt/kitchen_light/#\n"
    with mosquitto(tmp_path, acl=acl) as port:
        registry, subscriber = smart_home(port, tmp_path), Subscriber(port)
        try:
            on = registry.call("switch_device", {"device": "kitchen light", "on": True}).text
            assert on == "The kitchen light is on."
            assert registry.call("set_cover", {"device": "blinds", "position": 30}).text == (
                f"The smart home broker at 127.0.0.1:{port} refused the command to zigbee2mqtt/blinds/set: "
                "not authorized."
            )
            registry.context.language = "zh"
            assert registry.call("set_cover", {"device": "blinds", "position": 0}).text == (
                "智能家居服务器拒绝了这个命令，没有权限。"
            )
            assert [t for t, _ in subscriber.sent_before_now()] == ["zigbee2mqtt/kitchen_light/set"]
            assert "refused the command to zigbee2mqtt/blinds/set" in caplog.text
        finally:
            subscriber.close()


def test_a_broker_that_refuses_the_user_name_or_password_names_the_settings(tmp_path: Path, caplog) -> None:
    passwords = tmp_path / "passwords"
    passwords.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "alice", "s3cret"], check=True)
    # `user` with our own name: the broker reads the file after it would have become the user `mosquitto`
    options = (f"password_file {passwords}", f"user {pwd.getpwuid(os.getuid()).pw_name}")
    with mosquitto(tmp_path, allow_anonymous=False, options=options) as port:
        registry = smart_home(port, tmp_path, MIXED)
        mqtt_settings = registry.settings.mqtt
        with caplog.at_level(logging.WARNING):
            anonymous = in_both(registry, "switch_device", {"device": "fan", "on": True})
            mqtt_settings.username, mqtt_settings.password = "alice", "wrong password"
            wrong = in_both(registry, "switch_device", {"device": "fan", "on": True})
            mqtt_settings.username = "bob"
            unknown = registry.call("device_state", {"device": "fan"}).text
        mqtt_settings.username, mqtt_settings.password = "alice", "s3cret"
        right = registry.call("switch_device", {"device": "fan", "on": True}).text
    where = f"127.0.0.1:{port}"
    assert anonymous == (
        f"I can't reach the smart home broker at {where} "
        "(it refused the connection: Not authorized; it may want mqtt.username and mqtt.password).",
        f"连不上智能家居服务器{where}，服务器拒绝了连接，它可能要用户名和密码。",
    )
    assert wrong == (
        f"I can't reach the smart home broker at {where} "
        "(it refused the connection: Not authorized; check mqtt.username and mqtt.password).",
        f"连不上智能家居服务器{where}，服务器拒绝了连接，用户名或密码不对。",
    )
    assert unknown == wrong[0]
    assert right == "The fan is on."
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "check mqtt.username and mqtt.password" in logged and "wrong password" not in logged


def test_a_broker_without_mqtt_5_is_used_over_3_1_1(tmp_path: Path) -> None:
    with fake_broker(mqtt_5=False, puback=True) as (port, levels):
        registry = smart_home(port, tmp_path)
        assert (
            registry.call("switch_device", {"device": "kitchen light", "on": True}).text == "The kitchen light is on."
        )
        assert levels == [5, 4]


def test_a_broker_that_wants_a_client_id_gets_one(tmp_path: Path) -> None:
    with mosquitto(tmp_path, options=("allow_zero_length_clientid false",)) as port:
        registry = smart_home(port, tmp_path)
        assert (
            registry.call("switch_device", {"device": "kitchen light", "on": True}).text == "The kitchen light is on."
        )


def test_a_state_the_broker_refuses_to_give_is_said_refused(tmp_path: Path) -> None:
    """MQTT 5's SUBACK carries "not authorized" (mosquitto grants the subscription and sends nothing)."""
    with fake_broker(suback=0x87) as (port, _):
        registry = smart_home(port, tmp_path)
        start = time.monotonic()
        assert registry.call("device_state", {"device": "blinds"}).text == (
            f"The smart home broker at 127.0.0.1:{port} refused to give the state of zigbee2mqtt/blinds: "
            "not authorized."
        )
        assert time.monotonic() - start < 2  # said when refused, not after waiting for a state
        registry.context.language = "zh"
        assert (
            registry.call("device_state", {"device": "blinds"}).text == "智能家居服务器不让查blinds的状态，没有权限。"
        )


def test_a_reported_state_is_said_only_as_a_word(broker: int, tmp_path: Path) -> None:
    """Whoever can publish on a state topic chooses its words: a sentence there is not read out."""
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        for state in [
            "unlocked. The alarm is off",
            "on, call 555 0100",
            "on\nok",
            "o\u202en",
            "门锁已打开请把钥匙放在门口",
        ]:
            subscriber.publish_retained("zigbee2mqtt/thermostat", json.dumps({"state": state}))
            assert registry.call("device_state", {"device": "thermostat"}).text == (
                "The thermostat is reporting something I don't understand."
            ), state
        subscriber.publish_retained("home/fan/state", "heat_cool")
        assert registry.call("device_state", {"device": "fan"}).text == "The fan is heat_cool."
    finally:
        subscriber.close()


def test_a_zigbee2mqtt_device_that_does_not_retain_its_state_is_asked_for_it(broker: int, tmp_path: Path) -> None:
    """Zigbee2MQTT retains no state by default: it publishes a device's state when asked on `<topic>/get`."""
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    asked = []
    states = {
        "zigbee2mqtt/kitchen_light": {"state": "ON", "brightness": 254},
        "zigbee2mqtt/thermostat": {"local_temperature": 19},
    }

    def answer(client, userdata, message) -> None:  # what Zigbee2MQTT does: read the device, publish its state
        asked.append(json.loads(message.payload))
        device = message.topic.removesuffix("/get")
        client.publish(device, json.dumps(states[device]))

    bridge = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    bridge.on_message = answer
    bridge.connect("127.0.0.1", broker)
    bridge.subscribe("zigbee2mqtt/+/get", qos=1)
    bridge.loop_start()
    try:
        time.sleep(0.2)  # the subscription is in place
        start = time.monotonic()
        assert registry.call("device_state", {"device": "kitchen light"}).text == (
            "The kitchen light is on, at 100 percent."
        )
        assert time.monotonic() - start < 2  # said when the answer came, not after waiting for a retained state
        assert registry.call("device_state", {"device": "thermostat"}).text == "The thermostat is 19 degrees."
        assert asked == [{"state": ""}, {"local_temperature": "", "current_heating_setpoint": ""}]
        # Home Assistant's convention has no such request: nothing is sent for its devices.
        assert registry.call("device_state", {"device": "fan"}).text == "The fan has not reported its state."
        assert [topic for topic, _ in subscriber.sent_before_now()] == [
            "zigbee2mqtt/kitchen_light/get",
            "zigbee2mqtt/kitchen_light",
            "zigbee2mqtt/thermostat/get",
            "zigbee2mqtt/thermostat",
        ]
    finally:
        bridge.disconnect()
        bridge.loop_stop()
        subscriber.close()


def test_a_huge_state_is_never_taken_into_memory(broker: int, tmp_path: Path) -> None:
    """Anyone who can publish on a state topic chooses its size (mosquitto passes on up to 256 MB):
    the broker is told how large a packet the assistant takes, and keeps larger ones to itself."""
    subscriber = Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/thermostat", "b" * 100_000_000)
    finally:
        subscriber.close()
    # In a process of its own, whose peak memory is reset after the imports ("5" to clear_refs: Linux).
    query = f"""
import re, sys
from pathlib import Path
from typing import Literal
from tests.test_smart_home import smart_home
def kib(key): return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text())[1])
registry = smart_home({broker}, Path(sys.argv[1]))
Path("/proc/self/clear_refs").write_text("5")
before = kib("VmRSS")
print(registry.call("device_state", {{"device": "thermostat"}}).text)
print((kib("VmHWM") - before) // 1024)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", query, str(tmp_path)], capture_output=True, text=True, env=env, check=True
    )
    said, grown_mb = result.stdout.splitlines()
    assert said == "The thermostat has not reported its state."
    assert int(grown_mb) < 20, f"the query's peak memory grew by {grown_mb} MB"


def test_a_device_answers_to_its_aliases_in_questions_and_in_the_models_calls(broker: int, tmp_path: Path) -> None:
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen", "aliases": ["ceiling light", "顶灯"]},
        {"name": "lamp", "type": "light", "topic": "z2m/lamp", "aliases": ["Reading Light"]},
        {"name": "bedroom light", "type": "light", "topic": "z2m/bedroom", "aliases": ["lamp"]},  # another's name
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)
    matcher = IntentMatcher(registry.skills, devices)
    try:
        subscriber.publish_retained("z2m/kitchen", json.dumps({"state": "ON"}))
        for text, said in [("is the ceiling light on", "The ceiling light is on."), ("顶灯开着吗", "The 顶灯 is on.")]:
            match = matcher.match(text)
            assert match is not None and match.skill == "device_state", text
            assert registry.call(match.skill, match.arguments).text == said
        # the model may call a device by any name it answers to
        assert registry.call("switch_device", {"device": "Reading Light", "on": False}).text == (
            "The Reading Light is off."
        )
        assert subscriber.wait_for("z2m/lamp/set") == '{"state": "OFF"}'
        assert registry.call("switch_device", {"device": "lamp", "on": False}).text.startswith(
            "I can't tell which lamp you mean"
        )
    finally:
        subscriber.close()


def test_a_broker_that_goes_away_during_a_question_is_not_a_device_without_state(tmp_path: Path) -> None:
    answers = []
    with mosquitto(tmp_path) as port:
        registry = smart_home(port, tmp_path)
        asking = threading.Thread(target=lambda: answers.append(registry.call("device_state", {"device": "blinds"})))
        asking.start()
        time.sleep(1)  # connected and subscribed, waiting for a state; then the broker stops
    stopped = time.monotonic()
    asking.join()
    assert answers[0].text == f"I can't reach the smart home broker at 127.0.0.1:{port} (the connection dropped)."
    # said when it dropped (and paho's thread ended its 1 s pause before reconnecting), not after waiting 3 s
    assert time.monotonic() - stopped < 1.8
    registry.context.language = "zh"
    with mosquitto(tmp_path, port=port):  # back again: the next question is answered as usual
        assert registry.call("device_state", {"device": "blinds"}).text == "blinds还没有报告状态。"


def test_a_topic_mqtt_cannot_carry_is_named_not_sent(broker: int, tmp_path: Path) -> None:
    """What YAML lets through and MQTT forbids: the broker would drop the connection, paho would raise."""
    topics = ["z2m/a\x00b", "z2m/a\x1b[2Jb", "z2m/a\ud800b", "z2m/" + "x" * 70_000]
    why = ["it has a control character"] * 2 + ["it is not UTF-8 text", "it is longer than 65535 bytes"]
    devices = [{"name": f"light {i}", "type": "light", "topic": topic} for i, topic in enumerate(topics)]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)
    try:
        for i in range(len(topics)):
            for skill in ("switch_device", "device_state"):
                start = time.monotonic()
                result = registry.call(
                    skill, {"device": f"light {i}", **({"on": True} if skill == "switch_device" else {})}
                )
                assert result.text == (
                    f"I can't use the light {i}: its topic in mqtt.devices is not an MQTT topic: {why[i]}."
                ), (i, skill, result)
                assert time.monotonic() - start < 1
        assert subscriber.sent_before_now() == []
    finally:
        subscriber.close()


def test_a_zigbee2mqtt_device_gone_offline_is_said_offline_not_its_last_state(broker: int, tmp_path: Path) -> None:
    """Zigbee2MQTT's availability (retained on `<topic>/availability`) says when a device stopped answering:
    its last state, retained, is then stale (a bulb switched off at the wall still "is on")."""
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/kitchen_light", json.dumps({"state": "ON"}))
        subscriber.publish_retained("zigbee2mqtt/kitchen_light/availability", json.dumps({"state": "offline"}))
        subscriber.publish_retained("zigbee2mqtt/thermostat/availability", "offline")  # as older Zigbee2MQTT says it
        start = time.monotonic()
        assert registry.call("device_state", {"device": "kitchen light"}).text == "The kitchen light is offline."
        assert registry.call("device_state", {"device": "thermostat"}).text == "The thermostat is offline."
        assert time.monotonic() - start < 2  # no device answers while offline: nothing to wait for
        registry.context.language = "zh"
        assert registry.call("device_state", {"device": "kitchen light"}).text == "kitchen light离线了。"
        subscriber.publish_retained("zigbee2mqtt/kitchen_light/availability", json.dumps({"state": "online"}))
        assert registry.call("device_state", {"device": "kitchen light"}).text == "kitchen light开着。"
    finally:
        subscriber.close()


def test_numbers_no_device_reports_are_not_said(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    not_understood = "The kitchen light is reporting something I don't understand."
    try:
        for payload, said in [
            ('{"state": "ON", "brightness": 1e308}', "The kitchen light is on."),  # percent of it: infinity
            ('{"state": "ON", "brightness": -5e306}', "The kitchen light is on."),
            ('{"brightness": "1e308"}', not_understood),
            ('{"state": ' + "9" * 400 + "}", not_understood),  # too large for a float
            ('{"state": "OPEN", "position": ' + "9" * 400 + "}", "The kitchen light is open."),
            ('{"local_temperature": -1e308}', not_understood),
            ('{"state": "ON", "brightness": 127}', "The kitchen light is on, at 50 percent."),
        ]:
            subscriber.publish_retained("zigbee2mqtt/kitchen_light", payload)
            result = registry.call("device_state", {"device": "kitchen light"})
            assert (result.text, result.error) == (said, None), payload[:40]
    finally:
        subscriber.close()


LIGHTS = [
    {"name": "kitchen light", "type": "light", "topic": "zigbee2mqtt/kitchen_light", "area": "kitchen"},
    {"name": "hall light", "type": "light", "topic": "zigbee2mqtt/hall_light", "area": "hall"},
    {"name": "lamp", "type": "light", "convention": "homeassistant", "command_topic": "home/lamp/set", "area": "hall"},
    {"name": "desk light", "type": "light", "topic": "zigbee2mqtt/desk_light"},  # Zigbee2MQTT says nothing of it
]


def test_a_command_to_a_zigbee2mqtt_device_gone_offline_is_said_offline_not_done(broker: int, tmp_path: Path) -> None:
    """Zigbee2MQTT cannot carry out a command for a device its availability says is offline."""
    registry, subscriber = smart_home(broker, tmp_path, LIGHTS), Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/kitchen_light/availability", json.dumps({"state": "offline"}))
        subscriber.publish_retained("zigbee2mqtt/hall_light/availability", "online")  # as older Zigbee2MQTT says it
        start = time.monotonic()
        assert registry.call("switch_device", {"device": "kitchen light", "on": True}).text == (
            "The kitchen light is offline."
        )
        assert registry.call("set_brightness", {"device": "kitchen light", "percent": 40}).text == (
            "The kitchen light is offline."
        )
        assert time.monotonic() - start < 1  # the retained availability is there at once: nothing to wait for
        registry.context.language = "zh"
        assert registry.call("switch_device", {"device": "kitchen light", "on": False}).text == "kitchen light离线了。"
        assert registry.call("switch_device", {"device": "hall light", "on": True}).text == "hall light已打开。"
        registry.context.language = "en"
        took = []
        for _ in range(9):
            start = time.monotonic()
            registry.call("switch_device", {"device": "hall light", "on": True})
            took.append(time.monotonic() - start)
        # An online device costs a round trip (a few ms), not a TCP delayed ACK (40 ms) on the broker's side.
        assert sorted(took)[4] < 0.03, took
        assert registry.call("switch_device", {"device": "desk light", "on": True}).text == "The desk light is on."
        assert registry.call("switch_device", {"device": "lamp", "on": True}).text == "The lamp is on."
        assert [(t, p) for t, p in subscriber.sent_before_now() if not t.endswith("availability")] == [
            *[("zigbee2mqtt/hall_light/set", '{"state": "ON"}')] * 10,
            ("zigbee2mqtt/desk_light/set", '{"state": "ON"}'),
            ("home/lamp/set", "ON"),
        ]
        subscriber.publish_retained("zigbee2mqtt/kitchen_light/availability", json.dumps({"state": "online"}))
        assert registry.call("switch_device", {"device": "kitchen light", "on": True}).text == (
            "The kitchen light is on."
        )
    finally:
        subscriber.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_a_device_with_availability_is_commanded_and_asked_in_a_round_trip(
    broker: int, tmp_path: Path, qos: int
) -> None:
    """Older Zigbee2MQTT retains its availability at QoS 0, newer at QoS 1: neither waits on a delayed ACK."""
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/kitchen_light/availability", "online", qos=qos)
        subscriber.publish_retained("zigbee2mqtt/kitchen_light", json.dumps({"state": "ON"}), qos=qos)
        for name, arguments, said in [
            ("switch_device", {"device": "kitchen light", "on": True}, "The kitchen light is on."),
            ("device_state", {"device": "kitchen light"}, "The kitchen light is on."),
        ]:
            took = []
            for _ in range(9):
                start = time.monotonic()
                assert registry.call(name, arguments).text == said
                took.append(time.monotonic() - start)
            # A round trip is a few ms here; a TCP delayed ACK on the broker's side would be 40 ms each.
            assert sorted(took)[4] < 0.03, (name, took)
    finally:
        subscriber.close()


def test_all_lights_off_names_the_offline_one_and_switches_the_others(broker: int, tmp_path: Path, caplog) -> None:
    registry, subscriber = smart_home(broker, tmp_path, LIGHTS), Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/kitchen_light/availability", json.dumps({"state": "offline"}))
        match = IntentMatcher(registry.skills, LIGHTS).match("turn off all the lights")
        assert match is not None and match.skill == "switch_all"
        assert registry.call(match.skill, match.arguments).text == (
            "The kitchen light is offline. The other lights are off."
        )
        assert sorted(t for t, _ in subscriber.sent_before_now() if t.endswith("set")) == [
            "home/lamp/set",
            "zigbee2mqtt/desk_light/set",
            "zigbee2mqtt/hall_light/set",
        ]
        assert registry.call("switch_all", {"on": False, "area": "kitchen"}).text == "The kitchen light is offline."
        subscriber.publish_retained("zigbee2mqtt/hall_light/availability", json.dumps({"state": "offline"}))
        registry.context.language = "zh"
        assert (
            registry.call("switch_all", {"on": True, "area": "hall"}).text == "hall light离线了。hall的其他灯已打开。"
        )
        assert registry.call("switch_all", {"on": True}).text == "kitchen light、hall light离线了。其他灯都已打开。"
        registry.context.language = "en"
        assert registry.call("switch_all", {"on": True}).text == (
            "The kitchen light and the hall light are offline. The other lights are on."
        )
        assert "smart home: The kitchen light and the hall light are offline." in caplog.text
    finally:
        subscriber.close()


def test_a_broker_that_drops_or_ignores_the_availability_question_is_said_unreachable(tmp_path: Path) -> None:
    with fake_broker(puback=True, unsubscribe="drop") as (port, _):
        registry = smart_home(port, tmp_path, LIGHTS)
        start = time.monotonic()
        assert registry.call("switch_device", {"device": "kitchen light", "on": True}).text == (
            f"I can't reach the smart home broker at 127.0.0.1:{port} (the connection dropped)."
        )
        assert time.monotonic() - start < 1.8  # when it dropped (and paho's 1 s pause), not after waiting 3 s
        registry.context.language = "zh"
        assert registry.call("switch_all", {"on": False}).text == f"连不上智能家居服务器127.0.0.1:{port}，连接断了。"

    with fake_broker(puback=True, unsubscribe="ignore") as (port, _):
        registry = smart_home(port, tmp_path, LIGHTS)
        start = time.monotonic()
        assert registry.call("switch_device", {"device": "kitchen light", "on": True}).text == (
            f"I can't reach the smart home broker at 127.0.0.1:{port} (no answer within 3 seconds)."
        )
        assert time.monotonic() - start < 4  # once, not again for the command, which is never sent


def test_the_model_switches_only_a_device_the_person_named(broker: int, tmp_path: Path, tiny_int8: Path) -> None:
    """Its call must name a configured device, so asked for the garage light it picks one that exists."""
    from tests.test_toolcalls import scripted

    registry, subscriber = smart_home(broker, tmp_path, LIGHTS + MIXED[:2]), Subscriber(broker)
    engine = Engine(tiny_int8, kv_cache_len=2048)
    conversation = Conversation(engine, "You are a test.", 64, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(), intents=False)

    def said(text: str, on: bool | None = True) -> str:
        arguments = {"device": "hall light"} | ({} if on is None else {"on": on})
        call = {"name": "switch_device" if on is not None else "device_state", "arguments": arguments}
        scripted(engine, f"<tool_call>\n{json.dumps(call)}\n</tool_call>")
        return "".join(e.text for e in manager.turn(text) if e.kind in ("text", "error"))

    try:
        for heard in ("turn on the garage light", "turn the porch lamp on"):
            assert said(heard).startswith("I don't know which device you mean. The devices I know are: kitchen")
        assert said("is the garage light on", on=None).startswith("I don't know which device you mean.")
        assert said("打开车库的灯").startswith("我不知道你说的是哪个设备。我知道的设备有：kitchen light、hall light")
        assert [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")] == []
        assert said("turn on the light in the hall") == "The hall light is on."
        assert said("thanks, and now switch it off", on=False) == "The hall light is off."  # named the turn before
        sent = [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")]
        assert sent == ["zigbee2mqtt/hall_light/set"] * 2
    finally:
        subscriber.close()


def test_a_call_that_names_part_of_the_name_said_switches_neither(broker: int, tmp_path: Path) -> None:
    """Asked for the kitchen light 2, the model's call may stop at "kitchen light", a name that exists."""
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen"},
        {"name": "kitchen light 2", "type": "light", "topic": "z2m/kitchen2"},
        {"name": "客厅灯", "type": "light", "topic": "z2m/keting"},
        {"name": "客厅灯2", "type": "light", "topic": "z2m/keting2"},
        {"name": "desk lamp", "type": "light", "topic": "z2m/desk"},
        {"name": "reading light", "type": "light", "topic": "z2m/reading", "aliases": ["left desk lamp"]},
        {"name": "fan", "type": "fan", "topic": "z2m/fan"},
        {"name": "fan light", "type": "light", "topic": "z2m/fan_light"},
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)

    def call(heard: str, skill: str, arguments: dict) -> str:
        registry.context.heard = (heard,)
        return registry.call(skill, arguments).text

    try:
        registry.context.heard = ("turn on kitchen light 2",)
        assert in_both(registry, "switch_device", {"device": "kitchen light", "on": True}) == (
            "I don't know whether you mean the kitchen light 2 or the kitchen light.",
            "我不知道你说的是kitchen light 2还是kitchen light。",
        )
        registry.context.heard = ("把客厅灯2调到一半",)
        assert in_both(registry, "set_brightness", {"device": "客厅灯", "percent": 50}) == (
            "I don't know whether you mean the 客厅灯2 or the 客厅灯.",
            "我不知道你说的是客厅灯2还是客厅灯。",
        )
        # an alias is a name said too, and the other device may be of another kind
        assert call("is the left desk lamp on", "device_state", {"device": "desk lamp"}) == (
            "I don't know whether you mean the left desk lamp or the desk lamp."
        )
        assert call("switch off the fan light", "switch_device", {"device": "fan", "on": False}) == (
            "I don't know whether you mean the fan light or the fan."
        )
        assert [t for t, _ in subscriber.sent_before_now() if t.endswith(("/set", "/get"))] == []
        # the shorter name said on its own, or besides the longer one, is the device meant
        assert call("turn on the kitchen light", "switch_device", {"device": "kitchen light", "on": True}) == (
            "The kitchen light is on."
        )
        assert call("打开客厅灯和客厅灯2", "switch_device", {"device": "客厅灯", "on": True}) == "The 客厅灯 is on."
        both = "the desk lamp and the left desk lamp on"
        assert call(both, "switch_device", {"device": "desk lamp", "on": True}) == "The desk lamp is on."
        assert call("turn on kitchen light 2", "switch_device", {"device": "kitchen light 2", "on": True}) == (
            "The kitchen light 2 is on."
        )
        sent = [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")]
        assert sent == ["z2m/kitchen/set", "z2m/keting/set", "z2m/desk/set", "z2m/kitchen2/set"]
    finally:
        subscriber.close()


def test_all_the_lights_in_chinese_are_switched_without_the_model(broker: int, tmp_path: Path) -> None:
    registry, subscriber = smart_home(broker, tmp_path, MIXED), Subscriber(broker)
    matcher = IntentMatcher(registry.skills, MIXED)
    registry.context.language = "zh"
    lights = {"z2m/woshi/set", "z2m/chuangtou/set", "z2m/kitchen/set"}
    try:
        for text, on, area, reply in [
            ("关掉所有的灯", False, None, "所有的灯都已关闭。"),
            ("把家里的灯全部打开", True, None, "所有的灯都已打开。"),
            ("关灯", False, None, "所有的灯都已关闭。"),
            ("打开卧室的所有灯", True, "卧室", "卧室的灯都已打开。"),
        ]:
            match = matcher.match(text)
            assert match is not None and match.skill == "switch_all", text
            assert match.arguments == {"on": on} | ({"area": area} if area else {}), text
            assert registry.call(match.skill, match.arguments).text == reply
            sent = subscriber.sent_before_now()
            expected = {"z2m/woshi/set", "z2m/chuangtou/set"} if area else lights
            assert {t for t, _ in sent if t.endswith("/set")} == expected, text
            assert {p for t, p in sent if t.endswith("/set")} == {json.dumps({"state": "ON" if on else "OFF"})}
            subscriber.messages.clear()
        # one device is still one device
        match = matcher.match("关掉床头灯")
        assert match is not None and (match.skill, match.arguments) == (
            "switch_device",
            {"device": "床头灯", "on": False},
        )
    finally:
        subscriber.close()


def test_a_number_in_a_name_is_heard_in_words_as_the_asr_writes_it(broker: int, tmp_path: Path) -> None:
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen"},
        {"name": "kitchen light 2", "type": "light", "topic": "z2m/kitchen2"},
        {"name": "客厅灯", "type": "light", "topic": "z2m/keting"},
        {"name": "客厅灯12", "type": "light", "topic": "z2m/keting12"},
        {"name": "一楼灯", "type": "light", "topic": "z2m/yilou"},
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)

    def call(heard: str, device: str) -> str:
        registry.context.heard = (heard,)
        return registry.call("switch_device", {"device": device, "on": True}).text

    try:
        assert call("turn on kitchen light two", "kitchen light 2") == "The kitchen light 2 is on."
        assert call("打开客厅灯十二", "客厅灯12") == "The 客厅灯12 is on."
        assert call("打开一楼灯", "一楼灯") == "The 一楼灯 is on."
        assert call("turn on kitchen light two", "kitchen light") == (
            "I don't know whether you mean the kitchen light 2 or the kitchen light."
        )
        assert call("打开客厅灯十二", "客厅灯") == "I don't know whether you mean the 客厅灯12 or the 客厅灯."
        sent = [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")]
        assert sent == ["z2m/kitchen2/set", "z2m/keting12/set", "z2m/yilou/set"]
    finally:
        subscriber.close()


def test_a_number_said_in_words_reaches_the_device_without_the_model(broker: int, tmp_path: Path) -> None:
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen"},
        {"name": "kitchen light 2", "type": "light", "topic": "z2m/kitchen2"},
        {"name": "hall light 12", "type": "light", "topic": "z2m/hall12", "aliases": ["lamp 3"]},
        {"name": "客厅灯", "type": "light", "topic": "z2m/keting"},
        {"name": "客厅灯2", "type": "light", "topic": "z2m/keting2"},
        {"name": "客厅灯12", "type": "light", "topic": "z2m/keting12"},
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)
    matcher = IntentMatcher(registry.skills, devices)
    try:
        for text, device, topic in [
            ("turn on kitchen light two", "kitchen light 2", "z2m/kitchen2/set"),
            ("turn on the kitchen light 2", "kitchen light 2", "z2m/kitchen2/set"),
            ("turn on kitchen light", "kitchen light", "z2m/kitchen/set"),
            ("turn on hall light twelve", "hall light 12", "z2m/hall12/set"),
            ("turn on lamp three", "hall light 12", "z2m/hall12/set"),
            ("打开客厅灯二", "客厅灯2", "z2m/keting2/set"),
            ("打开客厅灯两", "客厅灯2", "z2m/keting2/set"),
            ("打开客厅灯十二", "客厅灯12", "z2m/keting12/set"),
            ("打开客厅灯", "客厅灯", "z2m/keting/set"),
        ]:
            match = matcher.match(text)
            assert match is not None and (match.skill, match.arguments) == (
                "switch_device",
                {"device": device, "on": True},
            ), text
            registry.context.heard = (text,)
            assert registry.call(match.skill, match.arguments).text == f"The {device} is on.", text
            assert [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")] == [topic], text
            subscriber.messages.clear()
    finally:
        subscriber.close()


def test_all_the_lights_over_a_connection_that_drops_partway_says_which_were_switched(tmp_path: Path) -> None:
    """mosquitto drops a client that sends a packet over its max_packet_size: the third command's, long topic."""
    far = "home/" + "porch/" * 80 + "set"  # a topic of 400 characters
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen"},
        {"name": "hall light", "type": "light", "topic": "z2m/hall"},
        {"name": "porch light", "type": "light", "convention": "homeassistant", "command_topic": far},
    ]
    with mosquitto(tmp_path, options=("max_packet_size 300",)) as port:
        registry, subscriber = smart_home(port, tmp_path, devices), Subscriber(port)
        try:
            reply = registry.call("switch_all", {"on": True}).text
            assert reply.startswith(f"I can't reach the smart home broker at 127.0.0.1:{port} ("), reply
            assert reply.endswith(" The kitchen light and the hall light are on; the porch light may not be."), reply
            registry.context.language = "zh"
            reply = registry.call("switch_all", {"on": False}).text
            assert reply.startswith(f"连不上智能家居服务器127.0.0.1:{port}"), reply
            assert reply.endswith("kitchen light、hall light已关闭，porch light可能没有关闭。"), reply
            sent = [(t, p) for t, p in subscriber.sent_before_now() if t.endswith("/set")]
            states = [json.dumps({"state": s}) for s in ("ON", "OFF")]
            assert sent == [(f"z2m/{d}/set", state) for state in states for d in ("kitchen", "hall")]
        finally:
            subscriber.close()


def test_all_the_lights_with_one_command_refused_says_which_were_switched(tmp_path: Path) -> None:
    acl = "topic read #\ntopic readwrite marker\ntopic readwrite z2m/#\n"
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen"},
        {"name": "porch light", "type": "light", "convention": "homeassistant", "command_topic": "home/porch/set"},
        {"name": "hall light", "type": "light", "topic": "z2m/hall"},
    ]
    with mosquitto(tmp_path, acl=acl) as port:
        registry, subscriber = smart_home(port, tmp_path, devices), Subscriber(port)
        try:
            assert registry.call("switch_all", {"on": True}).text == (
                f"The smart home broker at 127.0.0.1:{port} refused the command to home/porch/set: not authorized."
                " The kitchen light and the hall light are on; the porch light may not be."
            )
            assert [t for t, _ in subscriber.sent_before_now()] == ["z2m/kitchen/set", "z2m/hall/set"]
        finally:
            subscriber.close()


def test_a_longer_name_said_after_the_shorter_one_is_the_one_meant(broker: int, tmp_path: Path) -> None:
    """The turn before named the kitchen light; this one names the kitchen light 2, which the model's call
    may shorten to "kitchen light"."""
    devices = [
        {"name": "kitchen light", "type": "light", "topic": "z2m/kitchen"},
        {"name": "kitchen light 2", "type": "light", "topic": "z2m/kitchen2"},
        {"name": "客厅灯", "type": "light", "topic": "z2m/keting"},
        {"name": "客厅灯2", "type": "light", "topic": "z2m/keting2"},
    ]
    registry, subscriber = smart_home(broker, tmp_path, devices), Subscriber(broker)

    def call(heard: tuple[str, ...], device: str) -> str:
        registry.context.heard = heard
        return registry.call("switch_device", {"device": device, "on": True}).text

    try:
        assert call(("turn on the kitchen light", "and the kitchen light 2 too"), "kitchen light") == (
            "I don't know whether you mean the kitchen light 2 or the kitchen light."
        )
        assert call(("打开客厅灯", "还有客厅灯二"), "客厅灯") == (
            "I don't know whether you mean the 客厅灯2 or the 客厅灯."
        )
        # the newest words that name one of them decide: a name said now, or the one before "it"
        assert call(("turn on kitchen light 2", "and now the kitchen light"), "kitchen light") == (
            "The kitchen light is on."
        )
        assert call(("turn on the kitchen light 2", "switch it on again"), "kitchen light") == (
            "I don't know whether you mean the kitchen light 2 or the kitchen light."
        )
        assert call(("turn on the kitchen light", "and the kitchen light 2 too"), "kitchen light 2") == (
            "The kitchen light 2 is on."
        )
        sent = [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")]
        assert sent == ["z2m/kitchen/set", "z2m/kitchen2/set"]
    finally:
        subscriber.close()


def test_a_light_that_is_off_is_not_said_to_be_at_its_last_brightness(broker: int, tmp_path: Path) -> None:
    """Zigbee2MQTT keeps reporting the brightness a light had when it was switched off."""
    registry, subscriber = smart_home(broker, tmp_path), Subscriber(broker)
    try:
        subscriber.publish_retained("zigbee2mqtt/kitchen_light", '{"state": "OFF", "brightness": 254}')
        assert in_both(registry, "device_state", {"device": "kitchen light"}) == (
            "The kitchen light is off.",
            "kitchen light关着。",
        )
        subscriber.publish_retained("zigbee2mqtt/kitchen_light", '{"state": "ON", "brightness": 254}')
        on = registry.call("device_state", {"device": "kitchen light"}).text
        assert on == "The kitchen light is on, at 100 percent."
    finally:
        subscriber.close()


def test_the_models_call_switches_the_lights_only_of_an_area_the_person_named(broker: int, tmp_path: Path) -> None:
    """Its call can only name a configured area: asked for the garage's lights, it picks one that exists."""
    registry, subscriber = smart_home(broker, tmp_path, MIXED), Subscriber(broker)

    def call(heard: str, area: str) -> str:
        registry.context.heard = (heard,)
        return registry.call("switch_all", {"on": False, "area": area}).text

    try:
        assert call("turn off the lights in the garage", "kitchen") == (
            "I don't know which area you mean. The areas I know are: kitchen, 卧室."
        )
        registry.context.language = "zh"
        assert call("关掉车库的灯", "卧室") == "我不知道你说的是哪个区域。我知道的区域有：kitchen、卧室。"
        registry.context.language = "en"
        assert [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")] == []
        assert call("turn off the kitchen lights", "kitchen") == "The light in the kitchen is off."
        assert call("关掉卧室的灯", "卧室") == "The lights in the 卧室 are off."
        assert call("turn off all the lights", "everywhere") == "The lights are off."
        sent = [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")]
        assert sent == ["z2m/kitchen/set", "z2m/woshi/set", "z2m/chuangtou/set", *sent[3:]]
        assert sorted(sent[3:]) == ["z2m/chuangtou/set", "z2m/kitchen/set", "z2m/woshi/set"]
    finally:
        subscriber.close()


def test_a_call_for_the_device_of_the_turn_before_is_held_to_the_one_named_now(broker: int, tmp_path: Path) -> None:
    """"And the hall light too" after "turn on the kitchen light": a call for the kitchen light again is not it."""
    registry, subscriber = smart_home(broker, tmp_path, LIGHTS), Subscriber(broker)

    def call(heard: tuple[str, ...], device: str) -> str:
        registry.context.heard = heard
        return registry.call("switch_device", {"device": device, "on": True}).text

    try:
        before = "turn on the kitchen light"
        assert call((before, "and the hall light too"), "kitchen light").startswith(
            "I don't know which device you mean. The devices I know are: kitchen light, hall light"
        )
        assert [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")] == []
        assert call((before, "and the hall light too"), "hall light") == "The hall light is on."
        assert call((before, "switch it on again"), "kitchen light") == "The kitchen light is on."
        sent = [t for t, _ in subscriber.sent_before_now() if t.endswith("/set")]
        assert sent == ["zigbee2mqtt/hall_light/set", "zigbee2mqtt/kitchen_light/set"]
    finally:
        subscriber.close()
