"""A real instruction-tuned model, SmolLM2-135M-Instruct, set up and run like the board's Qwen2.

Its chat template is kept in chat_template.jinja (as current transformers writes it), so these
tests also cover such models end to end. Through the compact tool prompt the daemon answers a
plain question in words and calls built-in skills for requests the local intents do not cover;
how many it gets right measures the prompt on a 135M model (README: "The tool prompt").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from assistant.skills.intents import IntentMatcher

REPO = Path(__file__).resolve().parent.parent

# Requests in other words than the skills' sentences, and the skill that answers each.
COMMANDS = [
    ("I need to buy eggs, put them on my shopping list", "add_item"),
    ("I want my alarm to go off at half past six", "set_alarm"),
    ("Start a countdown for ten minutes", "set_timer"),
    ("I'd like a timer of three minutes for the tea", "set_timer"),
    ("Could you make it a bit louder?", "change_volume"),
    ("Get rid of all my timers", "cancel_timers"),
    ("Make a note that the car needs new tyres", "add_item"),
    ("Which day of the week are we on?", "current_date"),
    ("Is there anything on my grocery list?", "read_items"),
    ("Add bananas to my list of groceries", "add_item"),
]


def test_a_model_with_chat_template_jinja_is_set_up_and_chats(smollm2_model: Path) -> None:
    assert (smollm2_model / "chat_template.jinja").is_file()
    assert "chat_template" not in json.loads((smollm2_model / "tokenizer_config.json").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    chat = subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--model", str(smollm2_model), "--max-new-tokens", "20"],
        input="What is the capital of France?\n", capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "Paris" in chat.stdout


def test_the_daemon_answers_and_calls_skills_through_the_compact_prompt(smollm2_model: Path, tmp_path: Path) -> None:
    from tests.test_prompt import greedy_daemon, say, serving

    daemon = greedy_daemon(smollm2_model, tmp_path, "max_new_tokens: 60")
    assert len(daemon.manager.conversation.tools) == len(daemon.registry.skills)  # every built-in skill
    matcher = IntentMatcher(daemon.registry.skills)

    def talk() -> tuple[list[dict], list[str]]:
        answer = say(daemon.socket_path, "What is the capital of France?")
        right = []
        for text, skill in COMMANDS:
            assert matcher.match(text) is None, f"{text!r} is a local intent: it would not measure the model"
            daemon.manager.conversation.reset()  # each request on its own
            calls = [e["text"] for e in say(daemon.socket_path, text) if e["type"] == "tool_call"]
            right += [text] if calls[:1] == [skill] else []
        return answer, right

    answer, right = serving(daemon, talk)
    assert "Paris" in "".join(e["text"] for e in answer if e["type"] == "text")
    assert not [e for e in answer if e["type"] == "tool_call"]
    print(f"SmolLM2-135M-Instruct called the right skill for {len(right)} of {len(COMMANDS)}: {right}")
    assert len(right) >= 2, right  # 5 of 10 measured (README); a margin for other CPUs


# A home of more devices than a small context can list, and requests for some of them in other words
# than the local sentences (the device named as the home names it), with the device each names.
DEVICES = [
    "porch light",
    "garage door opener",
    "desk lamp",
    "aquarium pump",
    "coffee machine",
    "reading lamp",
    "patio heater",
    "hallway light",
    "bathroom fan",
    "garden fountain",
    "christmas tree",
    "night light",
    "guest room lamp",
    "sauna",
    "attic light",
    "basement light",
    "pool pump",
    "window fan",
    "dehumidifier",
    "air purifier",
    "kettle",
    "toaster",
    "electric blanket",
    "towel warmer",
    "printer",
    "monitor",
    "speaker",
    "television",
    "radio",
    "doorbell light",
    "driveway light",
    "shed light",
    "greenhouse fan",
    "cellar light",
    "pantry light",
    "closet light",
    "nursery lamp",
    "office light",
    "studio light",
    "workshop light",
    "laundry light",
    "dryer",
    "washing machine",
    "dishwasher",
    "fridge light",
    "oven light",
    "hood fan",
    "ceiling fan",
    "floor lamp",
    "piano lamp",
    "bar light",
    "stairs light",
    "balcony light",
    "terrace light",
    "fireplace",
    "heated floor",
    "water heater",
    "sprinkler",
    "lawn mower",
    "fish tank light",
]
DEVICE_REQUESTS = [
    ("Please power up the coffee machine", "coffee machine"),
    ("I'm cold, get the electric blanket going", "electric blanket"),
    ("Kill the sprinkler, it's raining", "sprinkler"),
    ("The fish tank light needs to be on now", "fish tank light"),
    ("Could you get the patio heater running?", "patio heater"),
    ("Enable the air purifier please", "air purifier"),
    ("We're done with the television, shut it down", "television"),
    ("Fire up the sauna for me", "sauna"),
    ("Can the dehumidifier be started?", "dehumidifier"),
    ("Get the pool pump working", "pool pump"),
]


def devices_named(model: Path, tmp_path: Path, kv_cache_len: int) -> tuple[bool, list[str]]:
    """Whether the daemon's prompt lists the devices' names at `kv_cache_len`, and the requests of
    DEVICE_REQUESTS whose first call switches the device asked for."""
    from assistant.config import load_settings
    from assistant.daemon.run import Daemon
    from tests.test_prompt import say, serving

    devices = "".join(
        f"    - {{name: {name}, type: {'light' if 'light' in name or 'lamp' in name else 'switch'}, topic: z2m/d{i}}}\n"
        for i, name in enumerate(DEVICES)
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        f"llm:\n  model_dir: {model}\n  max_new_tokens: 60\n  kv_cache_len: {kv_cache_len}\n"
        f"  sampling: {{temperature: 0}}\ncontrol:\n  socket: {tmp_path / 'control.sock'}\n"
        f"state_dir: {tmp_path / 'state'}\nmqtt:\n  devices:\n{devices}"
    )
    daemon = Daemon(config, load_settings(config), text_only=True)
    conversation = daemon.manager.conversation

    def talk() -> list[str]:
        right = []
        for text, device in DEVICE_REQUESTS:
            assert daemon.manager.intents.match(text) is None, f"{text!r} is a local intent"
            conversation.reset()  # each request on its own
            calls = [e for e in say(daemon.socket_path, text) if e["type"] == "tool_call"]
            call = (calls[0]["text"], (calls[0].get("data") or {}).get("device")) if calls else None
            right += [text] if call == ("switch_device", device) else []
        return right

    right = serving(daemon, talk)
    return DEVICES[1] in conversation.system["content"], right


def test_a_home_of_devices_counted_not_listed_still_gets_the_device_asked_for(
    smollm2_model: Path, tmp_path: Path
) -> None:
    for folder in ("listed", "counted"):
        (tmp_path / folder).mkdir()
    listed, by_list = devices_named(smollm2_model, tmp_path / "listed", 1023)
    counted, by_count = devices_named(smollm2_model, tmp_path / "counted", 900)
    assert listed and not counted  # 1023 rows hold the 60 names with room for a turn; 900 do not
    print(f"SmolLM2 switched the device asked for: names listed {len(by_list)}, counted {len(by_count)} of "
          f"{len(DEVICE_REQUESTS)}: {by_list} / {by_count}")  # fmt: skip
    # Measured: listed 1 (it names the first of the list, porch light), counted 5, with the example call a
    # switch_device one (with a device_state example, no call switched anything); a margin for other CPUs.
    assert len(by_count) >= 3 and len(by_count) + 1 >= len(by_list), (by_list, by_count)
