"""Local intents: hassil sentence templates declared by skills, matched before the LLM is asked.

A skill declares templates per language, with {slots} named after its parameters:

    @skill(sentences={"en": ["set a timer for {minutes} minute[s]",
                             ("turn on the {room} light", {"on": True})],
                      "zh": ["设置一个{minutes}分钟的计时器"]})

The slot lists come from the skill's own schema: enum → its values, a bounded integer → a range,
boolean → on/off words, any other string → a wildcard. A (template, slots) pair fixes slot values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from hassil import Intents, recognize

from assistant.skills.sdk import Skill

log = logging.getLogger(__name__)

# Words for true and false, per language.
BOOLEAN_WORDS = {
    "en": [("on", True), ("off", False), ("yes", True), ("no", False)],
    "zh": [("打开", True), ("开", True), ("关闭", False), ("关", False)],
}


@dataclass
class IntentMatch:
    skill: str
    arguments: dict[str, Any]
    language: str


class IntentMatcher:
    def __init__(self, skills: dict[str, Skill]):
        self.skills = skills
        self.intents: dict[str, Intents] = {}
        by_language: dict[str, dict] = {}
        for name, found in skills.items():
            for language, sentences in found.sentences.items():
                data = by_language.setdefault(language, {"language": language, "intents": {}, "lists": {}})
                entries = []
                for sentence in sentences:
                    text, fixed = sentence if isinstance(sentence, tuple) else (sentence, {})
                    entries.append({"sentences": [text], "slots": dict(fixed)})
                data["intents"][name] = {"data": entries}
                for slot, schema in found.parameters["properties"].items():
                    data["lists"][f"{name}__{slot}"] = _slot_list(schema, language)
        for language, data in by_language.items():
            # Slot names are per skill: {slot} refers to the list {skill__slot} while keeping the slot name.
            for name, intent in data["intents"].items():
                for entry in intent["data"]:
                    entry["sentences"] = [_scope(s, name, skills[name]) for s in entry["sentences"]]
            try:
                self.intents[language] = Intents.from_dict(data)
            except Exception as e:  # a template that hassil cannot parse
                log.error("local intents for %s not loaded: %s", language, e)

    def match(self, text: str) -> IntentMatch | None:
        for language, intents in self.intents.items():
            result = recognize(text, intents)
            if result is None or result.intent.name not in self.skills:
                continue
            schema = self.skills[result.intent.name].parameters["properties"]
            arguments = {}
            for slot, entity in result.entities.items():
                arguments[slot] = _typed(entity.value, schema.get(slot, {}))
            return IntentMatch(result.intent.name, arguments, language)
        return None


def _scope(sentence: str, skill_name: str, found: Skill) -> str:
    for slot in found.parameters["properties"]:
        sentence = sentence.replace("{" + slot + "}", "{" + f"{skill_name}__{slot}:{slot}" + "}")
    return sentence


def _slot_list(schema: dict, language: str) -> dict:
    if "enum" in schema:
        return {"values": [{"in": str(v), "out": v} for v in schema["enum"]]}
    if schema.get("type") == "integer":
        return {"range": {"from": int(schema.get("minimum", 0)), "to": int(schema.get("maximum", 1000))}}
    if schema.get("type") == "boolean":
        return {"values": [{"in": word, "out": value} for word, value in BOOLEAN_WORDS.get(language, [])]}
    return {"wildcard": True}


def _typed(value: Any, schema: dict) -> Any:
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    if schema.get("type") == "string" and isinstance(value, str):
        return value.strip()
    return value
