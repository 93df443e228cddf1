"""Rendering prompts with the model's own chat template, the way transformers does, and tokenizing them
so that only the template's structure can become special tokens.

Text from outside (what the user said or typed, skill results, note contents read back, tool
descriptions) is tokenized with the tokenizer's added tokens switched off: `<|im_end|>` typed by a
user is the six ordinary tokens it spells, never 151645, and cannot close the user's turn.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from assistant.llm.manifest import CHAT_TEMPLATE_FILE, ModelError

# A message's content as (text, markup) parts: markup is ours (e.g. the <tool_call> tags around a
# call) and is tokenized like the template's own text; all other text is plain. A message without
# "parts" is plain text throughout.
Parts = list[tuple[str, bool]]
# Plain text stands in the rendered template as a numbered placeholder between two private-use
# characters, which no template writes; the pieces between placeholders are the template's own.
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


def _raise(message: str) -> None:
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, model_dir: Path, config_file: str = "tokenizer_config.json"):
        path = model_dir / config_file
        config = json.loads(path.read_text())
        template = config.get("chat_template")
        if (model_dir / CHAT_TEMPLATE_FILE).is_file():  # current checkpoints keep it in its own file
            template = (model_dir / CHAT_TEMPLATE_FILE).read_text()
        if isinstance(template, list):  # named templates, e.g. "default" and "tool_use"
            self.named = {t["name"]: t["template"] for t in template}
        elif template:
            self.named = {"default": template}
        else:
            raise ModelError(f"{path}: has no chat_template, and there is no {model_dir / CHAT_TEMPLATE_FILE}")
        self.special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token")}
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda value, indent=None: json.dumps(value, ensure_ascii=False, indent=indent)
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.compiled = {name: env.from_string(text) for name, text in self.named.items()}

    @property
    def wraps_tool_responses(self) -> bool:
        """Whether the template lays out `tool` messages itself (Qwen2.5 wraps them in <tool_response>)."""
        return any("tool_response" in text for text in self.named.values())

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        # Tools are never passed: the system message lists them compactly (skills/prompt.py).
        template = self.compiled.get("default") or next(iter(self.compiled.values()))
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)

    def encode(
        self, messages: list[dict[str, Any]], tokenizer: Tokenizer, plain: Tokenizer, add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of the rendered prompt, as transformers would give them, but for plain text.

        `plain` is plain_tokenizer(tokenizer). The template's text (and markup) may hold added
        tokens (<|im_start|>, ...), which become their ids; everything between two of them, plain
        text included, is tokenized as one run with `plain`, so that BPE merges across where a part
        ends (".\n\n", "}}\n") as it did in training, while plain text can never be an added token.
        """
        texts: list[str] = []

        def placeheld(message: dict[str, Any]) -> dict[str, Any]:
            content = []
            for text, markup in message.get("parts") or [(message["content"], False)]:
                if markup:
                    content.append(text)
                else:
                    content.append(f"\ue000{len(texts)}\ue001")
                    texts.append(text)
            return {"role": message["role"], "content": "".join(content)}

        rendered = self.render([placeheld(m) for m in messages], add_generation_prompt)
        added = _added_tokens(tokenizer)
        ids: list[int] = []
        run = ""  # text since the last added token
        for i, piece in enumerate(_PLACEHOLDER.split(rendered)):
            if i % 2:
                run += texts[int(piece)]
                continue
            for j, part in enumerate(added.pattern.split(piece) if added.pattern else [piece]):
                if j % 2:  # an added token of the template's own text
                    ids += plain.encode(run, add_special_tokens=False).ids if run else []
                    ids.append(added.ids[part])
                    run = ""
                else:
                    run += part
        return ids + (plain.encode(run, add_special_tokens=False).ids if run else [])


@dataclass
class _AddedTokens:
    ids: dict[str, int]
    pattern: re.Pattern | None  # matches any of them, longest first; None when there are none


_ADDED: weakref.WeakKeyDictionary[Tokenizer, _AddedTokens] = weakref.WeakKeyDictionary()


def _added_tokens(tokenizer: Tokenizer) -> _AddedTokens:
    found = _ADDED.get(tokenizer)
    if found is None:
        ids = {token.content: i for i, token in tokenizer.get_added_tokens_decoder().items()}
        names = sorted(ids, key=len, reverse=True)
        pattern = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
        found = _ADDED[tokenizer] = _AddedTokens(ids, pattern)
    return found


def _token_text(token: Any) -> str:
    if isinstance(token, dict):  # older configs store AddedToken dicts
        return token.get("content", "")
    return token or ""


_PLAIN: weakref.WeakKeyDictionary[Tokenizer, Tokenizer] = weakref.WeakKeyDictionary()


def plain_tokenizer(tokenizer: Tokenizer) -> Tokenizer:
    """The same tokenizer without its added tokens, for text from outside.

    Qwen's added tokens (<|im_start|>, <tool_call>, ...) are not in its BPE vocabulary, so
    without them their spelling can only come out as ordinary tokens; all other ids are the same.
    """
    plain = _PLAIN.get(tokenizer)
    if plain is None:  # built once per tokenizer: a round trip through Qwen's 11 MB JSON takes ~0.6 s
        spec = json.loads(tokenizer.to_str())
        spec["added_tokens"] = []
        plain = _PLAIN[tokenizer] = Tokenizer.from_str(json.dumps(spec))
    return plain
