"""Rendering prompts with the model's own chat template, the way transformers does."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from assistant.llm.manifest import ModelError


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, model_dir: Path, config_file: str = "tokenizer_config.json"):
        path = model_dir / config_file
        config = json.loads(path.read_text())
        template = config.get("chat_template")
        if (model_dir / "chat_template.jinja").is_file():  # newer checkpoints keep it in its own file
            template = (model_dir / "chat_template.jinja").read_text()
        if isinstance(template, list):  # named templates, e.g. "default" and "tool_use"
            self.named = {t["name"]: t["template"] for t in template}
        elif template:
            self.named = {"default": template}
        else:
            raise ModelError(f"{path}: has no chat_template")
        self.special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token")}
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.compiled = {name: env.from_string(text) for name, text in self.named.items()}

    @property
    def renders_tools(self) -> bool:
        """Whether the template itself lays out tool signatures (Qwen2.5 does, Qwen2 does not)."""
        return any("tools" in text for text in self.named.values())

    def render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, tools: list[dict] | None = None
    ) -> str:
        name = "tool_use" if tools and "tool_use" in self.compiled else "default"
        template = self.compiled.get(name) or next(iter(self.compiled.values()))
        return template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, tools=tools, **self.special
        )


def _token_text(token: Any) -> str:
    if isinstance(token, dict):  # older configs store AddedToken dicts
        return token.get("content", "")
    return token or ""
