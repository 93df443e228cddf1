"""A conversation over the engine: chat-template prompts, the prompt cache, and context overflow."""

from __future__ import annotations

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

    def __init__(self, engine: Engine, system_prompt: str, max_new_tokens: int = 256):
        self.engine = engine
        self.template = ChatTemplate(Path(engine.model_dir), engine.manifest.chat_template)
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
        text = self.template.render(messages, add_generation_prompt=add_generation_prompt)
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
            user_turns = [i for i, m in enumerate(self.messages) if m["role"] == "user"]
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
        self.messages.append({"role": "user", "content": user_text})
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
