"""The tools as the model reads them: one short line each, and one example exchange.

The board's whole context is kv_cache_len tokens (1023), and Qwen's JSON signatures for the
built-in skills alone take ~1,400. They are not needed: the constraint (constraint.py) carries the
full schemas and makes every call parse and validate, so the prompt only says which tools exist,
what their arguments are called and which values they take:

    set_timer(hours?, minutes?, seconds?: int, label?: str): Start a countdown timer.
    add_item(text: str, list?): Add an item to the shopping list or a note to the notes.
    list: notes|shopping

(choices that several tools share, such as device names, are listed once, after the tools),

and then shows one call in Qwen's syntax as a first exchange of the conversation (a user's request
made from a skill's own sentence, the assistant's call): small models follow a demonstrated turn
far better than a described one.

Messages come with "parts", (text, markup) pairs: markup is ours (the call syntax, whose
`<tool_call>` may be one special token) and is tokenized as such; everything that comes from a
skill (names, descriptions, sentences, values from the configuration) is tokenized as plain text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from assistant.llm.chat_template import Parts
from assistant.skills.constraint import CLOSE, OPEN

HEADER = "Tools:\n"


def tool_line(tool: dict, shared: Mapping[str, list] | None = None) -> str:
    """`name(arg: type, optional?: type): Description.` for one Qwen tool signature.

    Arguments whose choices are among their name's in `shared` (shared_values) are listed once for all tools.
    Consecutive arguments of one type share it, as in `hours?, minutes?: int`.
    """
    shared = shared or {}
    function = tool["function"]
    schema = function.get("parameters") or {}
    required = set(schema.get("required", []))
    groups: list[tuple[list[str], str]] = []  # (names, type)
    for name, spec in schema.get("properties", {}).items():
        if name not in required and len(spec.get("enum", [None, None])) == 1:
            continue  # nothing to choose: the argument can only be left out or given its one value
        # A free value keeps its type, and choices of its own (none in the shared list) are shown here.
        listed = name in shared and "enum" in spec and set(spec["enum"]) <= set(shared[name])
        kind = "" if listed else _type(spec)
        shown = name + ("" if name in required else "?")
        if groups and groups[-1][1] == kind and kind:
            groups[-1][0].append(shown)
        else:
            groups.append(([shown], kind))
    arguments = ", ".join(", ".join(names) + (f": {kind}" if kind else "") for names, kind in groups)
    return f"{function['name']}({arguments}): {_first_sentence(function.get('description', ''))}"


def shared_values(tools: list[dict]) -> dict[str, list]:
    """Choices of an argument that several tools take (device names, list names), to be listed once.

    Each tool's own choices may be fewer (only the lights): the constraint holds each call to its own.
    """
    choices: dict[str, list[list]] = {}
    for tool in tools:
        for name, spec in (tool["function"].get("parameters") or {}).get("properties", {}).items():
            if "enum" in spec:
                choices.setdefault(name, []).append(spec["enum"])
    shared = {}
    for name, lists in choices.items():
        # Only choices that meet another tool's: a skill's `list: todo|done` beside the notes'
        # `list: notes|shopping` stays in its own line, or the model reads four lists for each.
        meeting = [v for i, v in enumerate(lists) if any(set(v) & set(w) for j, w in enumerate(lists) if j != i)]
        if meeting:
            shared[name] = list(dict.fromkeys(value for values in meeting for value in values))
    return shared


FEW_CHOICES = 8  # listed whatever the room: their names cost about what their count would


def counted_values(shared: Mapping[str, list]) -> dict[str, int]:
    """The shared choices that are only counted when the room is short (a home of many devices), with their counts."""
    return {name: len(values) for name, values in shared.items() if len(values) > FEW_CHOICES}


def value_line(name: str, values: list, listed: bool = True) -> str:
    if not listed and len(values) > FEW_CHOICES:  # as counted_values has it; the grammar still allows only these
        return f"{name}: one of {len(values)}, named as the request names it\n"
    return f"{name}: {'|'.join(_choice(v) for v in values)}\n"


def prompt_messages(
    persona: str, tools: list[dict], example: tuple[str, dict] | None = None, list_values: bool = True
) -> list[dict]:
    """The messages every conversation starts with: the system message, then the example exchange.

    `list_values`: the shared choices (device names) are listed, rather than only counted."""
    parts: Parts = [(persona.strip(), False)]
    if tools:
        # One piece a line, newline included: ".\n" is one token, and pieces are tokenized apart.
        shared = shared_values(tools)
        parts += [("\n\n" + HEADER, True), *[(tool_line(tool, shared) + "\n", False) for tool in tools]]
        parts += [(value_line(name, values, list_values), False) for name, values in shared.items()]
    messages = [_message("system", parts)]
    if tools and example:
        request, call = example
        messages.append(_message("user", [(request, False)]))
        messages.append(call_message(call))
    return messages


def call_message(*calls: dict) -> dict:
    """The assistant's turn that makes `calls`, laid out as Qwen writes them (the constraint's grammar too):
    one tag each, on lines of their own, so that the tool response after it answers them all."""
    parts: Parts = []
    for number, call in enumerate(calls):
        body = json.dumps(call, ensure_ascii=False)
        parts += [("\n" * (number > 0) + OPEN + "\n", True), (body, False), ("\n" + CLOSE, True)]
    return _message("assistant", parts)


def example_exchange(tools: list[dict], sentences: dict[str, list] | None = None) -> tuple[str, dict] | None:
    """A request and its call, from the first English sentence whose slots take numbers or choices.

    `sentences` are the skills' English sentence templates by name; without a fitting one, the
    first tool's description is the request.
    """
    for tool in tools:
        function = tool["function"]
        properties = function["parameters"].get("properties", {})
        required = set(function["parameters"].get("required", []))
        for sentence in (sentences or {}).get(function["name"], []):
            template, fixed = sentence if isinstance(sentence, (tuple, list)) else (sentence, {})
            slots = re.findall(r"\{(\w+)\}", template)
            if not slots or "<" in template or not all(_speakable(properties.get(s)) for s in slots):
                continue
            arguments = {**{s: _example(properties[s]) for s in slots}, **fixed}
            if required <= set(arguments):
                return _say(template, arguments), {"name": function["name"], "arguments": arguments}
    if not tools:
        return None
    function = tools[0]["function"]
    properties = function["parameters"].get("properties", {})
    arguments = {name: _example(properties[name]) for name in function["parameters"].get("required", [])}
    return _first_sentence(function.get("description", "")), {"name": function["name"], "arguments": arguments}


def _message(role: str, parts: Parts) -> dict:
    return {"role": role, "content": "".join(text for text, _ in parts), "parts": parts}


def _speakable(spec: dict | None) -> bool:
    return spec is not None and ("enum" in spec or spec.get("type") in ("integer", "number"))


def _say(template: str, arguments: dict[str, Any]) -> str:
    """A hassil template as a person would say it: optional words kept, the first alternative, slots filled."""
    text = template
    while (inner := re.sub(r"\[([^\[\]]*)\]|\(([^()]*)\)", _first_option, text)) != text:
        text = inner
    text = re.sub(r"\{(\w+)\}", lambda m: str(arguments[m.group(1)]), text)
    return " ".join(text.split())


def _first_option(match: re.Match) -> str:
    return (match.group(1) if match.group(1) is not None else match.group(2)).split("|")[0]


def _example(spec: dict) -> Any:
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec.get("type")
    if kind in ("integer", "number"):
        value = min(max(5, spec.get("minimum", 5)), spec.get("maximum", math.inf))  # 5, or the nearest bound
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return "..."


def _choice(value: Any) -> str:
    """A choice as the model reads it: words bare (`up|down`), other values as JSON."""
    return value if isinstance(value, str) and re.fullmatch(r"\w+", value) else json.dumps(value, ensure_ascii=False)


def _type(spec: dict) -> str:
    if "enum" in spec:
        return "|".join(_choice(v) for v in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    return {"integer": "int", "number": "number", "string": "str", "boolean": "bool"}.get(kind, kind)


def _first_sentence(text: str) -> str:
    """The gist of a description in few tokens: its first sentence without remarks in parentheses,
    and of that the first clause when it says something on its own (three words or more)."""
    sentence = re.sub(r"\s*\([^()]*\)", "", text.strip().split(". ")[0]).strip().rstrip(".")
    clause = sentence.split(", ")[0]
    return (clause if len(clause.split()) >= 3 else sentence) + "."
