"""A conversation over the engine: chat-template prompts, the prompt cache, and context overflow."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from assistant.llm.chat_template import ChatTemplate
from assistant.llm.detok import StreamDecoder
from assistant.llm.engine import AllowedTokens, Engine
from assistant.llm.manifest import ModelError
from assistant.llm.sampling import Sampler

log = logging.getLogger(__name__)


class Conversation:
    """Messages in the model's chat format; each reply streams text as it is generated.

    The system prompt is prefilled once (engine.cache_prompt). When the next turn would not fit
    in kv_cache_len with room for a reply, the oldest turns are dropped, never the system prompt.
    """

    def __init__(self, engine: Engine, system_prompt: str, max_new_tokens: int = 256, tools: list[dict] | None = None):
        self.engine = engine
        self.template = ChatTemplate(Path(engine.model_dir), engine.manifest.chat_template)
        # Templates that know tools (Qwen2.5) lay them out themselves; for the others (Qwen2) the
        # same block is written into the system message.
        self.tools = tools if tools and self.template.renders_tools else None
        if tools and not self.tools:
            system_prompt = f"{system_prompt}\n\n{tools_block(tools)}"
        self.system = {"role": "system", "content": system_prompt}
        self.max_new_tokens = max_new_tokens
        self.messages: list[dict] = []
        # Room kept free for the reply when old turns have to go.
        self.reserve = min(max_new_tokens, engine.kv_len // 4)
        system_ids = self._encode([self.system], add_generation_prompt=False)
        if len(system_ids) + self.reserve >= engine.kv_len:
            raise ModelError(f"the system prompt ({len(system_ids)} tokens) leaves no room in kv_cache_len")
        engine.cache_prompt(system_ids)

    def _encode(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        text = self.template.render(messages, add_generation_prompt=add_generation_prompt, tools=self.tools)
        return self.engine.tokenizer.encode(text, add_special_tokens=False).ids

    def reset(self) -> None:
        self.messages.clear()

    def prompt_ids(self) -> list[int]:
        """The prompt for the next reply, dropping the oldest turns until it fits."""
        while True:
            ids = self._encode([self.system, *self.messages])
            if len(ids) + self.reserve <= self.engine.kv_len:
                return ids
            # Drop the oldest user turn and everything up to the next user turn.
            user_turns = [i for i, m in enumerate(self.messages) if m["role"] == "user" and not is_tool_response(m)]
            if len(user_turns) < 2:
                raise ModelError(f"the message is too long: {len(ids)} tokens for kv_cache_len {self.engine.kv_len}")
            log.info("context full: dropping the oldest turn")
            del self.messages[: user_turns[1]]

    def reply(
        self,
        user_text: str,
        sampler: Sampler,
        cancel: threading.Event | None = None,
        allowed: AllowedTokens | None = None,
    ) -> Iterator[str]:
        """Stream the reply to `user_text` as text pieces; the exchange is kept in the history."""
        return self.respond({"role": "user", "content": user_text}, sampler, cancel, allowed)

    def respond(
        self,
        message: dict,
        sampler: Sampler,
        cancel: threading.Event | None = None,
        allowed: AllowedTokens | None = None,
    ) -> Iterator[str]:
        """Add a message (the user's, or a tool response) and stream the assistant's reply to it."""
        self.messages.append(message)
        try:
            prompt = self.prompt_ids()
        except ModelError:
            self.messages.pop()
            raise
        stream = StreamDecoder(self.engine.tokenizer)
        pieces: list[str] = []
        try:
            for token in self.engine.generate(prompt, sampler, self.max_new_tokens, cancel, allowed):
                if piece := stream.push(token):
                    pieces.append(piece)
                    yield piece
            if tail := stream.flush():
                pieces.append(tail)
                yield tail
        finally:  # a cancelled reply is kept as far as it was spoken
            self.messages.append({"role": "assistant", "content": "".join(pieces)})


def tools_block(tools: list[dict]) -> str:
    """Qwen's tool instructions, for chat templates that do not render tools themselves."""
    signatures = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{signatures}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def tool_response_message(results: list, renders_tools: bool) -> dict:
    """Skill results for the model: a `tool` message where the template knows it, else Qwen's user wrapping."""
    body = "\n".join(f"<tool_response>\n{json.dumps(r, ensure_ascii=False)}\n</tool_response>" for r in results)
    if renders_tools:
        return {"role": "tool", "content": "\n".join(json.dumps(r, ensure_ascii=False) for r in results)}
    return {"role": "user", "content": body}


def is_tool_response(message: dict) -> bool:
    return message["role"] == "tool" or message["content"].startswith("<tool_response>")
