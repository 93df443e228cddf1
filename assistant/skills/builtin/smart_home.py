"""Built-in skills: lights, switches, covers and thermostats over MQTT.

Devices are declared in config.yaml under mqtt.devices (type light, switch, fan, cover or climate;
an optional area, and aliases the device also answers to):

    - {name: kitchen light, type: light, topic: zigbee2mqtt/kitchen_light, area: kitchen,
       aliases: [ceiling light]}
    - {name: fan, type: fan, convention: homeassistant,
       command_topic: home/fan/set, state_topic: home/fan/state}

Zigbee2MQTT (the default convention): commands are JSON on `<topic>/set`, the device's state is
the retained JSON on `<topic>`. Home Assistant MQTT: plain payloads ("ON", "OFF", numbers) on the
command topics (command_topic, brightness_command_topic, set_position_topic,
temperature_command_topic), state on state_topic.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Annotated, Any, Literal

from assistant import Choices, Range, SkillContext, skill

TIMEOUT = 3.0  # seconds to reach the broker or to wait for a retained state
SWITCHED = ("light", "switch", "fan")  # device types that are only on or off
EVERYWHERE = "everywhere"  # the area that means the whole home


def _devices(settings: Any, *types: str) -> list[dict]:
    return [d for d in settings.mqtt.devices if not types or d.get("type") in types]


def _names(*types: str):
    return Choices(lambda settings: [d["name"] for d in _devices(settings, *types)])


def _areas():
    return Choices(lambda settings: sorted({d["area"] for d in _devices(settings) if d.get("area")}) + [EVERYWHERE])


def _device(context: SkillContext, name: str) -> dict:
    return next(d for d in context.settings.mqtt.devices if d["name"] == name)


class BrokerUnreachable(Exception):
    pass


def _client(context: SkillContext):
    import paho.mqtt.client as mqtt

    mqtt_settings = context.settings.mqtt
    where = f"{mqtt_settings.host}:{mqtt_settings.port}"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    if mqtt_settings.username:
        client.username_pw_set(mqtt_settings.username, mqtt_settings.password)
    if mqtt_settings.tls:
        client.tls_set(ca_certs=str(mqtt_settings.ca_file) if mqtt_settings.ca_file else None)
    connected = threading.Event()
    answers = []  # the broker's answer to the connection: success, or why it refused

    def on_connect(c, userdata, flags, reason, properties) -> None:
        answers.append(reason)
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(mqtt_settings.host, mqtt_settings.port, keepalive=10)
    except OSError as e:
        raise BrokerUnreachable(f"{where} ({e.strerror or e})") from None
    client.loop_start()
    if not connected.wait(TIMEOUT) or answers[0].is_failure:
        client.disconnect()
        client.loop_stop()
        reason = f"it refused the connection: {answers[0]}" if answers else "no answer"
        raise BrokerUnreachable(f"{where} ({reason})")
    return client


def _publish(context: SkillContext, topic: str, payload: str) -> None:
    client = _client(context)
    try:
        message = client.publish(topic, payload, qos=1)
        # qos 1: published means the broker acknowledged it; anything less is a failure to report.
        try:
            message.wait_for_publish(TIMEOUT)
        except (RuntimeError, ValueError) as e:  # the connection dropped, or the client's queue is full
            raise BrokerUnreachable(f"{context.settings.mqtt.host}:{context.settings.mqtt.port} ({e})") from None
        if not message.is_published():
            where = f"{context.settings.mqtt.host}:{context.settings.mqtt.port}"
            raise BrokerUnreachable(f"{where} (it did not confirm the command within {TIMEOUT:g} seconds)")
    finally:
        client.disconnect()
        client.loop_stop()


def _command(context: SkillContext, device: dict, field: str, value: Any) -> None:
    """Send one change in the device's convention."""
    if device.get("convention", "zigbee2mqtt") == "homeassistant":
        topic_key = {"state": "command_topic", "brightness": "brightness_command_topic",
                     "position": "set_position_topic", "temperature": "temperature_command_topic"}[field]  # fmt: skip
        _publish(context, device[topic_key], str(value))
        return
    z2m_field = {"temperature": "current_heating_setpoint"}.get(field, field)
    # allow_nan=False: NaN or infinity is refused here too, never published as invalid JSON.
    _publish(context, f"{device['topic']}/set", json.dumps({z2m_field: value}, allow_nan=False))


def _unreachable(error: BrokerUnreachable) -> str:
    return f"I can't reach the smart home broker at {error}."


@skill(
    sentences={"zh": [("打开{device}", {"on": True}), ("(关闭|关掉){device}", {"on": False})]},
    intents={"HassTurnOn": {"device": "{name}", "on": True}, "HassTurnOff": {"device": "{name}", "on": False}},
)
def switch_device(device: Annotated[str, _names(*SWITCHED)], on: bool, context: SkillContext) -> str:
    """Switch a light, a switch or a fan on or off.

    Args:
        device: the name of the light, switch or fan
        on: true to switch it on, false to switch it off
    """
    try:
        _command(context, _device(context, device), "state", "ON" if on else "OFF")
    except BrokerUnreachable as e:
        return _unreachable(e)
    return f"The {device} is {'on' if on else 'off'}."


@skill(intents={"HassLightSet": {"device": "{name}", "percent": "{brightness}"}})
def set_brightness(
    device: Annotated[str, _names("light")], percent: Annotated[int, Range(0, 100)], context: SkillContext
) -> str:
    """Set the brightness of a light.

    Args:
        device: the name of the light
        percent: the brightness in percent
    """
    found = _device(context, device)
    homeassistant = found.get("convention") == "homeassistant"
    # Zigbee2MQTT and Home Assistant lights count brightness to 254 and 255.
    level = round(percent * (255 if homeassistant else 254) / 100)
    try:
        _command(context, found, "brightness", level)
    except BrokerUnreachable as e:
        return _unreachable(e)
    return f"The {device} is at {percent} percent."


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
    except BrokerUnreachable as e:
        return _unreachable(e)
    return f"The {device} is {'open' if position == 100 else 'closed' if position == 0 else f'at {position} percent'}."


@skill(
    sentences={"en": [("all [the] lights on", {"on": True}), ("all [the] lights (off|out)", {"on": False})]},
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
    devices = [
        d
        for d in _devices(context.settings, kind)
        if area == EVERYWHERE or d.get("area", "").casefold() == area.casefold()
    ]
    where = "" if area == EVERYWHERE else f" in the {area}"
    if not devices:
        return f"There is no {kind}{where}."
    try:
        for found in devices:
            _command(context, found, "state", "ON" if on else "OFF")
    except BrokerUnreachable as e:
        return _unreachable(e)
    state = "on" if on else "off"
    if len(devices) > 1:
        return f"The {kind.replace('switch', 'switche')}s{where} are {state}."
    return f"The {kind}{where} is {state}."


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
            return f"Which thermostat: {', '.join(thermostats)}?"
        device = thermostats[0]
    try:
        _command(context, _device(context, device), "temperature", celsius)
    except BrokerUnreachable as e:
        return _unreachable(e)
    return f"The {device} is set to {celsius:g} degrees."


@skill(sentences={"en": ["is [the] {device} (on|off|open|closed|shut)", "what is the state of [the] {device}",
                         "how is [the] {device}"],
                  "zh": ["{device}(开着|关着)吗", "{device}是(开着|关着)吗", "{device}是不是(开着|关着)",
                         "{device}(开着|关着)不", "{device}是什么状态"]})  # fmt: skip
def device_state(device: Annotated[str, _names()], context: SkillContext) -> str:
    """Tell the current state of a device, from the state it last reported.

    Args:
        device: the name of the device
    """
    found = _device(context, device)
    topic = found.get("state_topic") or found.get("topic")
    if not topic:
        return f"The {device} does not report its state."
    received: list[bytes] = []
    arrived = threading.Event()

    def on_message(client, userdata, message) -> None:
        received.append(message.payload)
        arrived.set()

    try:
        client = _client(context)
    except BrokerUnreachable as e:
        return _unreachable(e)
    client.on_message = on_message
    client.subscribe(topic)
    arrived.wait(TIMEOUT)  # a retained state arrives at once
    client.disconnect()
    client.loop_stop()
    if not received:
        return f"The {device} has not reported its state."
    return _describe(device, received[0])


def _describe(device: str, payload: bytes) -> str:
    try:
        state = json.loads(payload)
    except ValueError:
        state = payload.decode(errors="replace").strip()
    if not isinstance(state, dict):
        return f"The {device} is {str(state).lower()}."
    said = []
    if isinstance(state.get("state"), str | bool):
        said.append(str(state["state"]).lower())
    # Devices report numbers as numbers, strings or null (unknown): only a number is said.
    if (brightness := _number(state.get("brightness"))) is not None:
        said.append(f"at {round(brightness * 100 / 254)} percent")
    if (position := _number(state.get("position"))) is not None:
        said.append(f"{position:g} percent open")
    if (temperature := _number(state.get("local_temperature"))) is not None:
        said.append(f"{temperature:g} degrees")
    if (setpoint := _number(state.get("current_heating_setpoint"))) is not None:
        said.append(f"set to {setpoint:g}")
    return f"The {device} is " + (", ".join(said) if said else "reporting something I don't understand") + "."


def _number(value: object) -> float | None:
    """A reported number ("21.5" as well as 21.5); None for null, text or anything not finite."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
