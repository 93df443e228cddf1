"""The tools as the model reads them: one short line each, in the system prompt.

The board's whole context is kv_cache_len tokens (1023), and Qwen's JSON signatures for the
built-in skills alone take ~1,400. They are not needed: the constraint (constraint.py) carries the
full schemas and makes every call parse and validate, so the prompt only says which tools exist,
what their arguments are called and which values they take, and shows the call syntax once:

    set_timer(minutes?: int 0-1440, seconds?: int 0-3600, label?: str): Start a countdown timer.
    add_item(text: str, list?: "notes"|"shopping"): Add an item to the shopping list or a note to the notes.

The prompt is returned as parts, (text, markup): markup is ours (the call syntax, whose
`<tool_call>` may be one special token) and is tokenized as such; everything that comes from a
skill (names, descriptions, values from the configuration) is tokenized as plain text.
"""

from __future__ import annotations

import json

from assistant.llm.chat_template import Parts
from assistant.skills.constraint import CLOSE, OPEN

HEADER = "You can call these tools:\n"
SYNTAX = "Call one only when asked, like this:\n"


def tool_line(tool: dict) -> str:
    """`name(arg: type, optional?: type): Description.` for one Qwen tool signature."""
    function = tool["function"]
    schema = function.get("parameters") or {}
    required = set(schema.get("required", []))
    arguments = ", ".join(
        f"{name}{'' if name in required else '?'}: {_type(spec)}" for name, spec in schema.get("properties", {}).items()
    )
    return f"{function['name']}({arguments}): {_first_sentence(function.get('description', ''))}"


def tools_prompt(tools: list[dict]) -> Parts:
    """The tool lines, then one example call in Qwen's syntax (a small model copies its shape)."""
    if not tools:
        return []
    parts: Parts = [(HEADER, True)]
    parts += [(tool_line(tool) + "\n", False) for tool in tools]
    # Qwen's layout of a call, newlines included: the constraint's grammar expects exactly it.
    example = json.dumps(example_call(tools), ensure_ascii=False)
    parts += [(f"{SYNTAX}{OPEN}\n", True), (example, False), (f"\n{CLOSE}", True)]
    return parts


def system_message(persona: str, tools: list[dict]) -> dict:
    """The system message: the persona from the configuration, then the tools."""
    parts: Parts = [(persona.strip(), False)]
    if tools:
        parts += [("\n\n", True), *tools_prompt(tools)]
    return {"role": "system", "content": "".join(text for text, _ in parts), "parts": parts}


def example_call(tools: list[dict]) -> dict:
    """A call of the first tool that takes arguments, with values its schema allows."""

    def takes_arguments(tool: dict) -> bool:
        return bool(tool["function"].get("parameters", {}).get("required"))

    function = next((t for t in tools if takes_arguments(t)), tools[0])["function"]
    schema = function.get("parameters") or {}
    properties = schema.get("properties", {})
    wanted = schema.get("required") or list(properties)[:1]
    return {"name": function["name"], "arguments": {name: _example(properties[name]) for name in wanted}}


def _example(spec: dict):
    if "enum" in spec:
        return spec["enum"][0]
    kind = spec.get("type")
    if kind in ("integer", "number"):
        value = min(max(5, spec.get("minimum", 5)), spec.get("maximum", 5))
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    return "..."


def _type(spec: dict) -> str:
    if "enum" in spec:
        return "|".join(json.dumps(v, ensure_ascii=False) for v in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    name = {"integer": "int", "number": "number", "string": "str", "boolean": "bool"}.get(kind, kind)
    if "minimum" in spec or "maximum" in spec:
        name += f" {_number(spec.get('minimum', ''))}-{_number(spec.get('maximum', ''))}"
    return name


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _first_sentence(text: str) -> str:
    sentence = text.strip().split(". ")[0].strip()
    return sentence if sentence.endswith(".") else sentence + "."
