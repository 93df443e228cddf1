"""Built-in skills: lights, switches, covers and thermostats over MQTT.

Devices are declared in config.yaml under mqtt.devices (type light, switch, fan, cover or climate;
an optional area, and aliases the device also answers to):

    - {name: kitchen light, type: light, topic: zigbee2mqtt/kitchen_light, area: kitchen,
       aliases: [ceiling light]}
    - {name: fan, type: fan, convention: homeassistant,
       command_topic: home/fan/set, state_topic: home/fan/state}

Zigbee2MQTT (the default convention): commands are JSON on `<topic>/set`, the device's state is
the JSON on `<topic>`: retained, or published when asked on `<topic>/get` (Zigbee2MQTT retains
none by default); a device that Zigbee2MQTT's `<topic>/availability` says is offline is said
to be offline, since its last state is then stale, and is sent no command, which it could not
carry out ("all the lights" names it and switches the others). Home Assistant MQTT: plain
payloads ("ON", "OFF", numbers) on the command topics (command_topic, brightness_command_topic,
set_position_topic, temperature_command_topic), state on state_topic. A cover with only a command_topic opens and
closes with "OPEN" and "CLOSE" there.

Whatever cannot be done is said in a sentence and logged: a broker that cannot be reached or does
not acknowledge a command, a device whose topic is missing from the configuration, a name that
several devices share. Nothing is ever reported as done unless the broker acknowledged it: when it fails
partway through "all the lights", those it acknowledged are said switched and the others may not be.
Every sentence is said in Chinese to a request in Chinese (SkillContext.language), else in English;
the log keeps the English one, which names the setting to fix.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import socket
import threading
import time
import unicodedata
from collections import Counter
from typing import Annotated, Any, Literal

from assistant import Choices, Range, SkillContext, skill
from assistant.skills.intents import CHINESE_DIGITS, ENGLISH_NUMBERS

log = logging.getLogger(__name__)

TIMEOUT = 3.0  # seconds to reach the broker, to have commands acknowledged, or to wait for a retained state
MAX_STATE = 64 * 1024  # bytes of a reported state worth reading; devices report a few hundred
MAX_PACKET = 2 * MAX_STATE  # bytes of a message the broker may send us: a state with room for its topic
MAX_NUMBER = 1e6  # reported numbers said (brightness, position, temperatures) are far smaller
MAX_WORD = 40  # characters of a reported state worth saying ("on", "closing", "heat")
# One word of Latin letters, as devices report ("on", "heat_cool"): anyone who can publish on a state
# topic would otherwise choose the sentence said (Chinese needs no spaces to make one).
STATE_WORD = re.compile(r"[A-Za-z0-9_-]+")
SWITCHED = ("light", "switch", "fan")  # device types that are only on or off
# What a Zigbee2MQTT device is asked to report, by type (lights, switches, fans and covers: their state).
ASKED = {"climate": ("local_temperature", "current_heating_setpoint")}
EVERYWHERE = "everywhere"  # the area that means the whole home
KINDS_ZH = {"light": "灯", "switch": "开关", "fan": "风扇"}  # the words of Home Assistant's Chinese intents
# Reported states as a Chinese sentence says them (Zigbee2MQTT covers report CLOSE, Home Assistant's closed);
# any other word is read out as the device sent it.
STATES_ZH = {
    "on": "开着",
    "off": "关着",
    "true": "开着",
    "false": "关着",
    "open": "开着",
    "closed": "关着",
    "close": "关着",
    "opening": "正在打开",
    "closing": "正在关闭",
    "stopped": "停着",
    "heat": "在制热",
    "cool": "在制冷",
}


def _devices(settings: Any, *types: str) -> list[dict]:
    return [d for d in settings.mqtt.devices if not types or d.get("type") in types]


def _spoken(device: dict) -> list[str]:
    """Every name a device answers to: its name and its aliases."""
    return [device["name"], *device.get("aliases", [])]


def _names(*types: str):
    return Choices(lambda settings: list(dict.fromkeys(n for d in _devices(settings, *types) for n in _spoken(d))))


def _areas():
    def areas(settings: Any) -> list[str]:
        devices = _devices(settings)
        # No devices, no choices: "everywhere" alone would load switch_all in a home without any.
        return sorted({d["area"] for d in devices if d.get("area")}) + [EVERYWHERE] if devices else []

    return Choices(areas)


class NotDone(Exception):
    """Why a command or a question could not be carried out, as the sentence to say in English and in Chinese."""

    def __init__(self, en: str, zh: str):
        super().__init__(en)
        self.zh = zh
        self.done: list[dict] = []  # of several devices, those the broker acknowledged a command to all the same


class BrokerUnreachable(NotDone):
    def __init__(self, where: str, why: str, why_zh: str):
        # Chinese gets the gist only: the English detail (a path, the system's error text) is in the log.
        super().__init__(
            f"I can't reach the smart home broker at {where} ({why.rstrip('.')}).",
            f"连不上智能家居服务器{where}{f'，{why_zh}' if why_zh else ''}。",
        )


class Refused(NotDone):
    """What the broker's access rules said no to (MQTT 5 gives the reason in its acknowledgements)."""

    def __init__(self, where: str, what: str, what_zh: str, reason: Any):
        denied = "，没有权限" if reason.value == NOT_AUTHORIZED else ""
        super().__init__(
            f"The smart home broker at {where} refused {what}: {str(reason).lower()}.",
            f"智能家居服务器{what_zh}{denied}。",
        )


class Unusable(NotDone):
    """A device that the configuration does not describe well enough to act on."""


class Offline(NotDone):
    """Devices that Zigbee2MQTT's availability says are offline: it cannot pass them a command."""

    def __init__(self, names: list[str]):
        super().__init__(
            f"The {' and the '.join(names)} {'is' if len(names) == 1 else 'are'} offline.",
            f"{'、'.join(names)}离线了。",
        )


def _said(context: SkillContext, error: NotDone) -> str:
    """The sentence to say; also logged, since the fix is usually in mqtt settings or the broker."""
    log.warning("smart home: %s", error)
    return context.localized(str(error), zh=error.zh)


def _device(context: SkillContext, name: str) -> dict:
    devices = context.settings.mqtt.devices
    found = [d for d in devices if name.casefold() in (n.casefold() for n in _spoken(d))]
    heard = _naming_now(devices, context.heard)
    if heard and found and not _mentioned(found[0], heard) and _others_of_its_kind(found[0], devices):
        # The model's call must name a configured device: asked for the garage light, it picks one of
        # the lights there are. Switching the kitchen light instead would be worse than asking. (The
        # only device of its kind needs no name: "turn on the light", "set the temperature to 21".)
        raise _which_one("device", "设备", [d["name"] for d in devices])
    if context.heard and found and (said := _said_instead(found[0], devices, context.heard)):
        # The model's call may stop at a shorter name that is part of the one said: "kitchen light" for
        # "kitchen light 2", 客厅灯 for 客厅灯2. Switching the other light would be worse than asking.
        raise NotDone(
            f"I don't know whether you mean the {said} or the {found[0]['name']}.",
            f"我不知道你说的是{said}还是{found[0]['name']}。",
        )
    if len(found) > 1:
        # Taking the first would switch the kitchen light when the bedroom one was meant.
        areas = " and ".join(d.get("area") or "no area" for d in found)
        areas_zh = "、".join(d.get("area") or "未分区" for d in found)
        raise Unusable(
            f"I can't tell which {name} you mean: mqtt.devices has {len(found)} of that name ({areas}).",
            f"有{len(found)}个设备叫{name}（{areas_zh}），不知道你说的是哪一个。",
        )
    return found[0]


def _which_one(what: str, what_zh: str, names: list[str]) -> NotDone:
    """The answer "I don't know which device (or area) you mean", with the first eight of those there are."""
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    shown_zh = "、".join(names[:8]) + ("等" if len(names) > 8 else "")
    return NotDone(
        f"I don't know which {what} you mean. The {what}s I know are: {shown}.",
        f"我不知道你说的是哪个{what_zh}。我知道的{what_zh}有：{shown_zh}。",
    )


def _naming_now(devices: list[dict], heard: tuple[str, ...]) -> tuple[str, ...]:
    """The newest of what was heard that names a device ("and the hall light too" after "turn on the
    kitchen light": the call is for the hall light); all of it when none does ("switch it off")."""
    for text in reversed(heard):
        if any(_mentioned(d, (text,)) for d in devices):
            return (text,)
    return heard


# Words that say what kind of thing a device is, not which one: "the garage light" is not the kitchen light.
KIND_WORDS = {"light", "lights", "lamp", "lamps", "fan", "fans", "switch", "plug", "socket", "the", "my"}
KIND_CHARACTERS = "灯的"
LATIN = re.compile(r"[a-z0-9]+")  # the words of a name or sentence as said (_as_said), as _mentioned compares them
# The number words the local sentences hear in device names (numbers_said), read back as digits.
NUMBER_WORDS = {word: str(n) for n, word in enumerate(ENGLISH_NUMBERS)}
ZH_DIGITS = {c: n for n, c in enumerate(CHINESE_DIGITS)} | {"两": 2}


def _as_said(text: str) -> str:
    """`text` casefolded, with its numbers in digits: the ASR writes "kitchen light two" and 客厅灯二 for
    the devices named "kitchen light 2" and 客厅灯2 (names and what was heard are both compared so)."""
    text = re.sub(r"[a-z]+", lambda m: NUMBER_WORDS.get(m[0], m[0]), text.casefold())
    return re.sub(r"[零一二两三四五六七八九十]+", lambda m: _zh_number(m[0]), text)


def _zh_number(run: str) -> str:
    """A Chinese number up to 99 in digits (二 2, 十二 12, 二十一 21); any other run of numerals as it is."""
    if run in ZH_DIGITS:
        return str(ZH_DIGITS[run])
    tens_ones = re.fullmatch(r"([一二两三四五六七八九]?)十([一二三四五六七八九]?)", run)
    if not tens_ones:
        return run
    tens, ones = tens_ones.groups()
    return str(ZH_DIGITS.get(tens, 1) * 10 + ZH_DIGITS.get(ones, 0))


def _mentioned(device: dict, heard: tuple[str, ...], besides: str = "") -> bool:
    """Whether the asker named the device (or an alias, or its area for a name that only says its kind)
    in what they said: its Latin words that say which one, as words, and its other characters as text.
    `besides` is a name taken out of what was heard first, once: "kitchen light 2" names no kitchen light."""
    words = Counter(w for text in heard for w in LATIN.findall(_as_said(text)))
    words.subtract(LATIN.findall(_as_said(besides)))
    text = "".join(_as_said(" ".join(heard)).split())
    for run in re.findall(r"[^a-z0-9\s]+", _as_said(besides)):
        text = text.replace(run, " ", 1)  # a space: the characters either side of it do not make a name

    def named(name: str) -> bool:
        latin = LATIN.findall(_as_said(name))
        which = [w for w in latin if w not in KIND_WORDS] or latin
        other = "".join(c for c in re.sub(r"[a-z0-9\s]+", "", _as_said(name)) if c not in KIND_CHARACTERS)
        return all(words[w] > 0 for w in which) and (not other or other in text)

    return any(named(n) for n in [*_spoken(device), *([device["area"]] if device.get("area") else [])])


def _said_instead(device: dict, devices: list[dict], heard: tuple[str, ...]) -> str | None:
    """A longer name of another device that the asker said, of which the device's name is only a part
    ("kitchen light 2" for the kitchen light, "left desk lamp" for the desk lamp); None if there is none,
    or if the device is named apart from it ("the desk lamp and the left desk lamp"). Only the newest
    words that name either count: "and the kitchen light 2 too" after "turn on the kitchen light"."""
    # the newest words that name the device (a longer name that holds its name names it too)
    said = next(((text,) for text in reversed(heard) if _mentioned(device, (text,))), ())
    for other in devices:
        if other is device:
            continue
        for longer in _spoken(other):
            if not any(_part_of(name, longer) for name in _spoken(device)):
                continue
            if _mentioned({"name": longer}, said) and not _mentioned(device, said, besides=longer):
                return longer
    return None


def _part_of(name: str, longer: str) -> bool:
    """Whether `longer` says all of `name` and more: "kitchen light" of "kitchen light 2", 客厅灯 of 客厅灯2."""
    name, longer = _as_said(name), _as_said(longer)
    if name == longer:
        return False
    words, other = Counter(LATIN.findall(longer)), re.sub(r"[a-z0-9\s]+", "", longer)
    return Counter(LATIN.findall(name)) <= words and re.sub(r"[a-z0-9\s]+", "", name) in other


def _others_of_its_kind(device: dict, devices: list[dict]) -> bool:
    return any(d is not device and d.get("type") == device.get("type") for d in devices)


def _topic(device: dict, key: str) -> str:
    """The topic under `key` of a device's configuration, which must be one plain topic."""
    topic = device.get(key)
    if not isinstance(topic, str) or not topic:
        raise Unusable(
            f"I can't use the {device['name']}: mqtt.devices gives it no {key}.",
            f"{device['name']}用不了：设备配置里没有它的主题。",
        )
    if "+" in topic or "#" in topic:
        raise Unusable(
            f"I can't use the {device['name']}: its {key} {topic!r} in mqtt.devices has a wildcard.",
            f"{device['name']}用不了：设备配置里它的主题带通配符。",
        )
    if why := _not_mqtt(topic):
        raise Unusable(
            f"I can't use the {device['name']}: its {key} in mqtt.devices is not an MQTT topic: {why}.",
            f"{device['name']}用不了：设备配置里它的主题不是有效的MQTT主题。",
        )
    return topic


def _not_mqtt(topic: str) -> str | None:
    """Why MQTT cannot carry a topic (the broker would drop the connection, paho would raise); None if it can."""
    try:
        size = len(topic.encode())
    except UnicodeEncodeError:  # a lone surrogate, which YAML's "\ud800" lets through
        return "it is not UTF-8 text"
    if size > 65535:
        return "it is longer than 65535 bytes"
    if any(unicodedata.category(c) == "Cc" for c in topic):
        return "it has a control character"
    return None


def _client(context: SkillContext):
    """A connected client: MQTT 5 where the broker has it, since its acknowledgements say when the
    broker's access rules refuse a command (under 3.1.1 a refused command is acknowledged all the same)."""
    import paho.mqtt.client as mqtt

    try:
        return _connect(context, mqtt.MQTTv5)
    except OnlyOlderProtocol:
        return _connect(context, mqtt.MQTTv311)


class OnlyOlderProtocol(Exception):
    """The broker answered MQTT 5's connection with "unsupported protocol version"."""


UNSUPPORTED_PROTOCOL_VERSION = 132  # MQTT 5's reason code, also what paho makes of 3.1.1's answer
BAD_USER_NAME_OR_PASSWORD = 134  # MQTT 5's reason codes, also what paho makes of 3.1.1's return codes 4 and 5
NOT_AUTHORIZED = 135


def _connect(context: SkillContext, protocol: int):
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    mqtt_settings = context.settings.mqtt
    where = _where(context)
    # A client id of our own: brokers may refuse an empty one, and under MQTT 5 paho does not retry with one.
    client_id = f"voice-assistant-{secrets.token_hex(4)}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    client.connect_timeout = TIMEOUT  # paho's 5 s + answer + acknowledgements would pass the skill timeout
    if mqtt_settings.username:
        client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
    if mqtt_settings.tls:
        try:
            client.tls_set(ca_certs=str(mqtt_settings.ca_file) if mqtt_settings.ca_file else None)
        except OSError as e:  # ssl.SSLError too: a CA file that is missing or holds no certificate
            raise BrokerUnreachable(
                where, f"mqtt.ca_file {mqtt_settings.ca_file}: {e.strerror or e}", "证书文件读不了"
            ) from None
    connected = threading.Event()
    answers = []  # the broker's answer to the connection: success, or why it refused

    def on_connect(c, userdata, flags, reason, properties) -> None:
        answers.append(reason)
        connected.set()

    client.on_connect = on_connect
    properties = None
    if protocol == mqtt.MQTTv5:
        # The broker keeps larger messages to itself: anyone who may publish a state chooses its size,
        # up to the broker's limit (mosquitto's is 256 MB), and paho would take it all into memory.
        properties = Properties(PacketTypes.CONNECT)
        properties.MaximumPacketSize = MAX_PACKET
    try:
        client.connect(mqtt_settings.host, mqtt_settings.port, keepalive=10, properties=properties)
    except (OSError, ValueError) as e:  # ValueError: an empty mqtt.host
        raise BrokerUnreachable(where, getattr(e, "strerror", None) or str(e), _connect_failure_zh(e)) from None
    client.loop_start()
    if not connected.wait(TIMEOUT) or answers[0].is_failure:
        client.disconnect()
        client.loop_stop()
        if answers and answers[0].value == UNSUPPORTED_PROTOCOL_VERSION and protocol == mqtt.MQTTv5:
            raise OnlyOlderProtocol
        if not answers:
            raise BrokerUnreachable(where, "no answer", "服务器没有应答")
        why, why_zh = f"it refused the connection: {answers[0]}", "服务器拒绝了连接"
        if answers[0].value in (BAD_USER_NAME_OR_PASSWORD, NOT_AUTHORIZED):
            # The fix is in the settings that hold them (the password itself is never said nor logged).
            if mqtt_settings.username:
                why, why_zh = f"{why}; check mqtt.username and mqtt.password", f"{why_zh}，用户名或密码不对"
            else:
                why, why_zh = f"{why}; it may want mqtt.username and mqtt.password", f"{why_zh}，它可能要用户名和密码"
        raise BrokerUnreachable(where, why, why_zh)
    return client


def _connect_failure_zh(error: Exception) -> str:
    """Why a connection failed, in Chinese; empty where the system's own words have no short Chinese."""
    if isinstance(error, ConnectionRefusedError):
        return "连接被拒绝"
    if isinstance(error, TimeoutError):
        return "连接超时"
    if isinstance(error, (socket.gaierror, ValueError)):  # ValueError: an empty mqtt.host
        return "找不到这个地址"
    return ""


def _where(context: SkillContext) -> str:
    return f"{context.settings.mqtt.host}:{context.settings.mqtt.port}"


def _publish(context: SkillContext, changes: list[tuple[dict, str, Any]]) -> list[dict]:
    """Send each (device, field, value) over one connection, except to the devices Zigbee2MQTT says are
    offline, which are returned; BrokerUnreachable or Refused unless the broker acknowledged every message
    sent, with the devices whose messages it did acknowledge in its `done`."""
    # Every message is made before any is sent: one device without a topic changes none.
    messages = [_message(device, field, value) for device, field, value in changes]
    where = _where(context)
    client = _client(context)
    refused = {}  # message id → the broker's reason (MQTT 5: its access rules deny the topic)

    def on_publish(c, userdata, mid, reason, properties) -> None:
        if reason.is_failure:
            refused[mid] = reason

    client.on_publish = on_publish
    try:
        availability = [_availability(device) for device, _, _ in changes]
        gone = _offline_topics(context, client, availability)
        online = [topic not in gone for topic in availability]
        offline = [device for (device, _, _), up in zip(changes, online, strict=True) if not up]
        messages = [message for message, up in zip(messages, online, strict=True) if up]
        devices = [device for (device, _, _), up in zip(changes, online, strict=True) if up]
        sent = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        deadline = time.monotonic() + TIMEOUT
        done, failure = [], None  # every message is waited for: the others may be done though one failed
        for device, (topic, _), message in zip(devices, messages, sent, strict=True):
            # qos 1: published means the broker acknowledged it; anything less is a failure to report.
            try:
                message.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as e:  # the connection dropped, or the client's queue is full
                failure = failure or BrokerUnreachable(where, str(e), "连接断了")
                continue
            if not message.is_published():
                why = f"it did not confirm the command within {TIMEOUT:g} seconds"
                failure = failure or BrokerUnreachable(where, why, "命令没有得到确认")
            elif (reason := refused.get(message.mid)) is not None:
                failure = failure or Refused(where, f"the command to {topic}", "拒绝了这个命令", reason)
            else:
                done.append(device)
        if failure:
            failure.done = done
            raise failure
    finally:
        client.disconnect()
        client.loop_stop()
    return offline


def _availability(device: dict) -> str | None:
    """The topic of Zigbee2MQTT's availability of a device; None in a convention that has none."""
    if device.get("convention", "zigbee2mqtt") != "zigbee2mqtt":
        return None
    return f"{_topic(device, 'topic')}/availability"


def _offline_topics(context: SkillContext, client: Any, topics: list[str | None]) -> set[str]:
    """Those of the availability topics whose retained message says offline (a device without one is
    taken as online, as Zigbee2MQTT's availability is off by default)."""
    topics = list(dict.fromkeys(t for t in topics if t))
    if not topics:
        return set()
    offline: set[str] = set()
    answered = threading.Event()

    def on_message(c, userdata, message) -> None:
        _acknowledge_now(c)
        if _offline(message.payload):
            offline.add(message.topic)

    def on_unsubscribe(c, userdata, mid, reasons, properties) -> None:
        answered.set()

    def on_disconnect(c, userdata, flags, reason, properties) -> None:
        answered.set()

    client.on_message, client.on_unsubscribe, client.on_disconnect = on_message, on_unsubscribe, on_disconnect
    # The broker sends the retained messages as it takes the subscription, and answers a connection's
    # packets in order: they have all arrived when the unsubscription is acknowledged, a round trip later.
    client.subscribe([(topic, 0) for topic in topics])
    client.unsubscribe(topics)
    if not answered.wait(TIMEOUT):
        raise BrokerUnreachable(_where(context), f"no answer within {TIMEOUT:g} seconds", "服务器没有应答")
    if not client.is_connected():
        raise BrokerUnreachable(_where(context), "the connection dropped", "连接断了")
    return offline


def _acknowledge_now(client: Any) -> None:
    """Have TCP acknowledge what arrived at once. mosquitto holds a small packet until its last one is
    acknowledged (Nagle), and Linux delays an acknowledgement up to 40 ms while we have nothing to send:
    the answer after a retained message would come 40 ms late (a QoS 1 one we answer with a PUBACK)."""
    sock = client.socket()
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):  # Linux only, and only until the next read
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def _message(device: dict, field: str, value: Any) -> tuple[str, str]:
    """The topic and payload of one change in the device's convention."""
    if device.get("convention", "zigbee2mqtt") == "homeassistant":
        if field == "position" and value in (0, 100) and not device.get("set_position_topic"):
            # Home Assistant's default payloads: most covers open and close and have no position topic.
            return _topic(device, "command_topic"), "OPEN" if value else "CLOSE"
        topic_key = {"state": "command_topic", "brightness": "brightness_command_topic",
                     "position": "set_position_topic", "temperature": "temperature_command_topic"}[field]  # fmt: skip
        return _topic(device, topic_key), str(value)
    z2m_field = {"temperature": "current_heating_setpoint"}.get(field, field)
    # allow_nan=False: NaN or infinity is refused here too, never published as invalid JSON.
    return f"{_topic(device, 'topic')}/set", json.dumps({z2m_field: value}, allow_nan=False)


def _command(context: SkillContext, device: dict, field: str, value: Any) -> None:
    """Send one change to one device."""
    if _publish(context, [(device, field, value)]):
        raise Offline([device["name"]])


@skill(
    # The English sentence is the library's too; as the skill's own, it is also the prompt's example call,
    # which teaches a small model the device argument of the call people ask for most.
    sentences={"en": [("turn on [the] {device}", {"on": True})],
               "zh": [("打开{device}", {"on": True}), ("(关闭|关掉){device}", {"on": False})]},
    intents={"HassTurnOn": {"device": "{name}", "on": True}, "HassTurnOff": {"device": "{name}", "on": False}},
)  # fmt: skip
def switch_device(device: Annotated[str, _names(*SWITCHED)], on: bool, context: SkillContext) -> str:
    """Switch a light, a switch or a fan on or off.

    Args:
        device: the name of the light, switch or fan
        on: true to switch it on, false to switch it off
    """
    try:
        _command(context, _device(context, device), "state", "ON" if on else "OFF")
    except NotDone as e:
        return _said(context, e)
    return context.localized(f"The {device} is {'on' if on else 'off'}.", zh=f"{device}已{'打开' if on else '关闭'}。")


@skill(intents={"HassLightSet": {"device": "{name}", "percent": "{brightness}"}})
def set_brightness(
    device: Annotated[str, _names("light")], percent: Annotated[int, Range(0, 100)], context: SkillContext
) -> str:
    """Set the brightness of a light.

    Args:
        device: the name of the light
        percent: the brightness in percent
    """
    try:
        found = _device(context, device)
        homeassistant = found.get("convention") == "homeassistant"
        # Zigbee2MQTT and Home Assistant lights count brightness to 254 and 255.
        level = round(percent * (255 if homeassistant else 254) / 100)
        _command(context, found, "brightness", level)
    except NotDone as e:
        return _said(context, e)
    return context.localized(f"The {device} is at {percent} percent.", zh=f"{device}亮度已调到{percent}%。")


@skill(
    intents={
        "HassTurnOn": {"device": "{name}", "position": 100},
        "HassTurnOff": {"device": "{name}", "position": 0},
        "HassSetPosition": {"device": "{name}"},
    }
)
def set_cover(
    device: Annotated[str, _names("cover")], position: Annotated[int, Range(0, 100)], context: SkillContext
) -> str:
    """Open, close or partly open a cover (blinds, shutters, curtains).

    Args:
        device: the name of the cover
        position: how far open in percent (0 is closed)
    """
    try:
        _command(context, _device(context, device), "position", position)
    except NotDone as e:
        return _said(context, e)
    if position in (0, 100):
        return context.localized(
            f"The {device} is {'open' if position else 'closed'}.", zh=f"{device}已{'打开' if position else '关闭'}。"
        )
    return context.localized(f"The {device} is at {position} percent.", zh=f"{device}已打开到{position}%。")


# Home Assistant's Chinese sentences switch one device or the lights of one area: "all the lights" is ours.
ALL_LIGHTS_ZH = "[家里|{area}][的](所有|全部)[的]灯"


@skill(
    sentences={
        "en": [("all [the] lights on", {"on": True}), ("all [the] lights (off|out)", {"on": False})],
        "zh": [
            (f"(打开|开|开启){ALL_LIGHTS_ZH}", {"on": True}),
            (f"[把]{ALL_LIGHTS_ZH}[都|全](打开|开开|开了)[吧]", {"on": True}),
            (f"(关闭|关掉|关|关上){ALL_LIGHTS_ZH}", {"on": False}),
            (f"[把]{ALL_LIGHTS_ZH}[都|全](关闭|关掉|关了|关上)[吧]", {"on": False}),
            ("[把][家里|{area}][的]灯(全部|都|全)(打开|开开|开了)[吧]", {"on": True}),
            ("[把][家里|{area}][的]灯(全部|都|全)(关闭|关掉|关了|关上)[吧]", {"on": False}),
            # as "lights off" is: with no room of its own, the assistant's home is the room
            ("开灯", {"on": True}),
            ("关灯", {"on": False}),
        ],
    },
    intents={
        "HassTurnOn": {"on": True, "kind": "{domain}"},
        "HassTurnOff": {"on": False, "kind": "{domain}"},
    },
)
def switch_all(
    on: bool,
    context: SkillContext,
    kind: Literal["light", "switch", "fan"] = "light",
    area: Annotated[str, _areas()] = EVERYWHERE,
) -> str:
    """Switch every light (or switch, or fan) in an area, or in the whole home, on or off.

    Args:
        on: true to switch them on, false to switch them off
        kind: "light", "switch" or "fan"
        area: the area, or "everywhere"
    """
    if context.heard and area != EVERYWHERE and not _mentioned({"name": area}, context.heard):
        # As with a device: asked for the garage's lights, the model's call names an area there is.
        areas = sorted({d["area"] for d in _devices(context.settings) if d.get("area")})
        return _said(context, _which_one("area", "区域", areas))
    devices = [
        d
        for d in _devices(context.settings, kind)
        if area == EVERYWHERE or d.get("area", "").casefold() == area.casefold()
    ]
    where = "" if area == EVERYWHERE else f" in the {area}"
    kind_zh = KINDS_ZH[kind]
    if not devices:
        return context.localized(
            f"There is no {kind}{where}.", zh=f"{'家里' if area == EVERYWHERE else area}没有{kind_zh}。"
        )
    state, state_zh = ("on", "已打开") if on else ("off", "已关闭")
    try:
        offline = _publish(context, [(d, "state", "ON" if on else "OFF") for d in devices])
    except NotDone as e:
        if not e.done:
            return _said(context, e)
        # Some were switched before the broker failed: saying only the failure would leave them unsaid.
        said, done = _said(context, e), [d["name"] for d in e.done]
        rest = [d["name"] for d in devices if all(d is not switched for switched in e.done)]
        return context.localized(
            f"{said} The {' and the '.join(done)} {'is' if len(done) == 1 else 'are'} {state};"
            f" the {' and the '.join(rest)} may not be.",
            zh=f"{said}{'、'.join(done)}{state_zh}，{'、'.join(rest)}可能没有{state_zh[1:]}。",
        )
    where_zh = "" if area == EVERYWHERE else f"{area}的"
    if offline:
        said = _said(context, Offline([d["name"] for d in offline]))
        switched = len(devices) - len(offline)
        if not switched:
            return said
        others = f"{kind.replace('switch', 'switche')}s{where} are" if switched > 1 else f"{kind}{where} is"
        return context.localized(
            f"{said} The other {others} {state}.",
            zh=f"{said}{where_zh}其他{kind_zh}{'都' if switched > 1 else ''}{state_zh}。",
        )
    if len(devices) > 1:
        return context.localized(
            f"The {kind.replace('switch', 'switche')}s{where} are {state}.",
            zh=f"{where_zh or '所有的'}{kind_zh}都{state_zh}。",
        )
    return context.localized(f"The {kind}{where} is {state}.", zh=f"{where_zh}{kind_zh}{state_zh}。")


@skill(intents={"HassClimateSetTemperature": {"device": "{name}", "celsius": "{temperature}"}})
def set_temperature(
    celsius: Annotated[float, Range(5, 35)],
    context: SkillContext,
    device: Annotated[str, _names("climate")] | None = None,
) -> str:
    """Set the target temperature of a thermostat.

    Args:
        celsius: the target temperature in degrees Celsius
        device: the name of the thermostat; may be left out when there is only one
    """
    if device is None:
        thermostats = [d["name"] for d in _devices(context.settings, "climate")]
        if len(thermostats) > 1:
            return context.localized(
                f"Which thermostat: {', '.join(thermostats)}?", zh=f"哪个空调：{'、'.join(thermostats)}？"
            )
        device = thermostats[0]
    try:
        _command(context, _device(context, device), "temperature", celsius)
    except NotDone as e:
        return _said(context, e)
    return context.localized(f"The {device} is set to {celsius:g} degrees.", zh=f"{device}温度已设为{celsius:g}度。")


@skill(sentences={"en": ["is [the] {device} (on|off|open|closed|shut)", "what is the state of [the] {device}",
                         "how is [the] {device}"],
                  "zh": ["{device}(开着|关着)吗", "{device}是(开着|关着)吗", "{device}是不是(开着|关着)",
                         "{device}(开着|关着)不", "{device}是什么状态"]})  # fmt: skip
def device_state(device: Annotated[str, _names()], context: SkillContext) -> str:
    """Tell the current state of a device, from the state it last reported.

    Args:
        device: the name of the device
    """
    received: list[bytes] = []
    refused = []  # the broker's reason for refusing the subscription (its access rules)
    offline = []  # Zigbee2MQTT said the device stopped answering
    arrived = threading.Event()

    def on_message(client, userdata, message) -> None:
        _acknowledge_now(client)
        if message.topic == availability:
            if _offline(message.payload):
                offline.append(True)
                arrived.set()  # an offline device answers no question: nothing to wait for
            return
        received.append(message.payload)
        arrived.set()

    def on_subscribe(client, userdata, mid, reasons, properties) -> None:
        if reasons and reasons[-1].is_failure:  # the state's topic, subscribed to last
            refused.append(reasons[-1])
            arrived.set()

    def on_disconnect(client, userdata, flags, reason, properties) -> None:
        arrived.set()  # no state comes over a connection the broker dropped

    try:
        found = _device(context, device)
        key = "state_topic" if found.get("state_topic") else "topic"
        if not found.get(key):
            return context.localized(f"The {device} does not report its state.", zh=f"{device}不报告状态。")
        topic = _topic(found, key)
        availability = _availability(found) if key == "topic" else None  # Home Assistant's state_topic has none
        client = _client(context)
    except NotDone as e:
        return _said(context, e)
    client.on_message, client.on_subscribe, client.on_disconnect = on_message, on_subscribe, on_disconnect
    try:
        # Zigbee2MQTT's availability, retained, comes before the state subscribed to after it: a device
        # gone offline keeps its last state, which is then stale.
        client.subscribe([(availability, 0), (topic, 0)] if availability else topic)
        if availability:
            # Zigbee2MQTT retains no state unless told to: asked on <topic>/get, it reads the device and
            # publishes the state (after the subscription, as the broker keeps a connection's order).
            client.publish(f"{topic}/get", json.dumps(dict.fromkeys(ASKED.get(found["type"], ("state",)), "")))
        arrived.wait(TIMEOUT)  # a retained state arrives at once, an asked one when the device answers
        dropped = not client.is_connected()
    finally:
        client.disconnect()
        client.loop_stop()
    if refused:
        refusal = Refused(_where(context), f"to give the state of {topic}", f"不让查{device}的状态", refused[0])
        return _said(context, refusal)
    if offline:
        return context.localized(f"The {device} is offline.", zh=f"{device}离线了。")
    if not received and dropped:  # the broker, not the device, is what went quiet
        return _said(context, BrokerUnreachable(_where(context), "the connection dropped", "连接断了"))
    if not received:
        return context.localized(f"The {device} has not reported its state.", zh=f"{device}还没有报告状态。")
    return _describe(context, device, received[0])


def _offline(payload: bytes) -> bool:
    """Whether Zigbee2MQTT's availability says offline: {"state": "offline"}, or "offline" as older versions say."""
    try:
        said = json.loads(payload)
    except (ValueError, RecursionError):
        said = payload.decode(errors="replace")
    return (said.get("state") if isinstance(said, dict) else said) == "offline"


def _describe(context: SkillContext, device: str, payload: bytes) -> str:
    not_understood = context.localized(
        f"The {device} is reporting something I don't understand.", zh=f"{device}报的状态我看不懂。"
    )
    if len(payload) > MAX_STATE:  # not a device's state; nothing of it is worth saying
        return not_understood
    try:
        state = json.loads(payload)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        state = payload.decode(errors="replace")
    if not isinstance(state, dict):  # a plain payload ("ON", "open") is the state itself
        state = {"state": state}
    said = []  # (English, Chinese) of each thing said
    if (word := _word(state.get("state"))) is not None:
        said.append((word, STATES_ZH.get(word, f"状态是{word}")))
    # Devices report numbers as numbers, strings or null (unknown): only a number is said.
    # Zigbee2MQTT reports the brightness a light will come back at also while it is off.
    if (brightness := _number(state.get("brightness"))) is not None and word not in ("off", "false"):
        percent = round(brightness * 100 / 254)
        said.append((f"at {percent} percent", f"亮度{percent}%"))
    if (position := _number(state.get("position"))) is not None:
        said.append((f"{position:g} percent open", f"开了{position:g}%"))
    if (temperature := _number(state.get("local_temperature"))) is not None:
        said.append((f"{temperature:g} degrees", f"室温{temperature:g}度"))
    if (setpoint := _number(state.get("current_heating_setpoint"))) is not None:
        said.append((f"set to {setpoint:g}", f"设在{setpoint:g}度"))
    if not said:
        return not_understood
    return context.localized(
        f"The {device} is {', '.join(en for en, _ in said)}.", zh=f"{device}{'，'.join(zh for _, zh in said)}。"
    )


def _word(value: object) -> str | None:
    """A reported state worth saying: one short word, true or false, or a number; None otherwise."""
    if isinstance(value, bool):
        return str(value).lower()
    if (number := _number(value)) is not None:
        return f"{number:g}"
    if isinstance(value, str) and len(value.strip()) <= MAX_WORD and STATE_WORD.fullmatch(value.strip()):
        return value.strip().lower()
    return None


def _number(value: object) -> float | None:
    """A reported number ("21.5" as well as 21.5); None for null, text or one no device reports."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of hundreds of digits
        return None
    return number if abs(number) < MAX_NUMBER else None  # NaN and infinity fail the comparison too
