"""A conversation over the engine: chat-template prompts, the prompt cache, and context overflow.

Messages are {"role", "content"} dicts; those that mix our markup with outside text also carry
"parts" (chat_template.Parts), so that only the markup can become special tokens.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from assistant.budget import reply_room
from assistant.llm.chat_template import ChatTemplate, Parts, plain_tokenizer
from assistant.llm.detok import StreamDecoder
from assistant.llm.engine import AllowedTokens, Engine
from assistant.llm.manifest import ModelError
from assistant.llm.sampling import Sampler
from assistant.skills.constraint import OPEN, reply_parts
from assistant.skills.prompt import example_exchange, prompt_messages

log = logging.getLogger(__name__)

# Skill results go back to the model in this tag. A small model may go on to write one itself (SmolLM2
# copies the data it was given): the reply ends there, as at a special token.
RESPONSE = "<tool_response>"
# A reply that ends in the same words over and over (a small model's loop: "Total items - Items" to
# max_new_tokens, a minute of speech) is cut once they have come this many times and make this many
# characters. A unit longer than LOOP_UNIT is not looked for: a chorus sung three times is let be.
LOOP_COPIES, LOOP_CHARS, LOOP_UNIT = 3, 80, 200
PROGRESS_SECONDS = 2.0  # at most one progress line this often while the system prompt is prefilled


class TooLong(ModelError):
    """A message that does not fit in the context even with every older turn dropped."""


class EmptyMessage(ModelError):
    """A message with nothing in it but whitespace."""


class Conversation:
    """Messages in the model's chat format; each reply streams text as it is generated.

    The system prompt is prefilled once (engine.cache_prompt). When the next turn would not fit
    in kv_cache_len with room for a reply, the oldest turns are dropped, never the system prompt.
    """

    def __init__(
        self,
        engine: Engine,
        system_prompt: str,
        max_new_tokens: int = 256,
        tools: list[dict] | None = None,
        example: tuple[str, dict] | None = None,
        list_values: bool = True,
    ):
        self.engine = engine
        self.template = ChatTemplate(Path(engine.model_dir), engine.manifest.chat_template)
        self.plain = plain_tokenizer(engine.tokenizer)
        # The tools are listed compactly in the system message (skills/prompt.py) whatever the
        # template: templates that lay out tools themselves (Qwen2.5) would spend ~1,400 tokens.
        # An example exchange follows it; both are prefilled once and never dropped.
        self.tools = tools or []
        self.prefix = prompt_messages(system_prompt, self.tools, example or example_exchange(self.tools), list_values)
        self.system = self.prefix[0]
        self.max_new_tokens = max_new_tokens
        self.messages: list[dict] = []
        # Room kept free for the reply when old turns have to go.
        self.reserve = reply_room(max_new_tokens, engine.kv_len)
        system_ids = self._encode([], add_generation_prompt=False)
        shortest = self._encode([{"role": "user", "content": "Hi."}])  # the least a turn can be
        if len(shortest) + self.reserve > engine.kv_len:
            raise ModelError(
                f"the system prompt ({len(system_ids)} tokens) leaves no room for a turn and a reply of "
                f"{self.reserve} tokens in kv_cache_len {engine.kv_len}"
            )
        start = last = time.monotonic()

        def progress(done: int, total: int) -> None:  # a long prompt is seconds of NPU work: say so
            nonlocal last
            if done < total and time.monotonic() - last >= PROGRESS_SECONDS:
                last = time.monotonic()
                log.info("prefilling the system prompt: %d of %d tokens", done, total)

        self.system_len = len(system_ids)
        engine.cache_prompt(system_ids, progress)
        log.info("system prompt prefilled: %d tokens in %.1f s", len(system_ids), time.monotonic() - start)

    def _encode(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """The prefix (system message and example) and then `messages`, as token ids."""
        return self.template.encode([*self.prefix, *messages], self.engine.tokenizer, self.plain, add_generation_prompt)

    def reset(self) -> None:
        self.messages.clear()

    def check_fits(self, text: str) -> None:
        """TooLong if the person's `text` would not fit even with every older turn dropped."""
        ids = self._encode([{"role": "user", "content": text}])
        if len(ids) + self.reserve > self.engine.kv_len:
            raise TooLong(f"the message is too long: {len(ids)} tokens for kv_cache_len {self.engine.kv_len}")

    def prompt_ids(self) -> list[int]:
        """The prompt for the next reply, without the oldest turns it needs to drop to fit.

        Once turns have to go, enough go to leave half the conversation's room free: every turn
        after a cut changes what the cache holds after the system prompt, so the history kept is
        prefilled again, and cutting only what the next turn needs would do that at every turn from
        then on (seconds of NPU work each, with a long context). The turn being answered is never
        dropped: if it does not fit on its own, TooLong is raised and the history is left as it was.
        """
        users = [i for i, m in enumerate(self.messages) if m["role"] == "user" and not is_tool_response(m)]
        cuts = [0, *users[1:]]  # keep everything, or everything from a later user turn on
        ids = self._encode(self.messages)
        if len(ids) + self.reserve <= self.engine.kv_len:
            return ids
        half = self.engine.kv_len - (self.engine.kv_len - self.system_len - self.reserve) // 2
        fitting = self._fewest_cuts(cuts, half) or self._fewest_cuts(cuts, self.engine.kv_len)
        if fitting is None:
            alone = len(self._encode(self.messages[cuts[-1] :]))
            raise TooLong(f"the message is too long: {alone} tokens for kv_cache_len {self.engine.kv_len}")
        dropped, ids = fitting
        log.info("context full: dropping the %d oldest turns", dropped)
        del self.messages[: cuts[dropped]]
        return ids

    def _fewest_cuts(self, cuts: list[int], limit: int) -> tuple[int, list[int]] | None:
        """The fewest of `cuts` to make (and the prompt then) for the prompt and a reply to fit in `limit` tokens."""
        fitting = None
        low, high = 1, len(cuts) - 1  # encodings shrink as cuts grow
        while low <= high:
            middle = (low + high) // 2
            ids = self._encode(self.messages[cuts[middle] :])
            if len(ids) + self.reserve <= limit:
                fitting, high = (middle, ids), middle - 1
            else:
                low = middle + 1
        return fitting

    def reply(
        self,
        user_text: str,
        sampler: Sampler,
        cancel: threading.Event | None = None,
        allowed: AllowedTokens | None = None,
    ) -> Iterator[str]:
        """Stream the reply to `user_text` as text pieces; the exchange is kept in the history."""
        if not user_text.strip():  # the model would answer a blank turn at length, and the history keep both
            raise EmptyMessage("the message is empty")
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
        except Exception:  # too long, or text the tokenizer refuses: the history stays as it was
            self.messages.pop()
            raise
        stream = StreamDecoder(self.engine.tokenizer)
        pieces: list[str] = []
        held = ""  # text that may be the start of RESPONSE: given out once the next piece shows it is not
        tag = self.engine.tokenizer.token_to_id(OPEN)  # None: the tag is only ever text (Qwen2)
        used_tag = False
        said = ""  # the reply's end, to spot a loop
        tokens = self.engine.generate(prompt, sampler, self.max_new_tokens, cancel, allowed)
        follow, generated = getattr(allowed, "follow", None), []
        try:
            for token in tokens:
                used_tag = used_tag or token == tag
                if follow is not None:  # before the piece is read: a call opened by the last token is a call
                    generated.append(token)
                    follow(generated)
                piece, held, ended = until(held + stream.push(token), RESPONSE)
                if piece:
                    pieces.append(piece)
                    yield piece
                if ended:  # the model goes on to write the tool's answer itself: its own reply is over
                    return
                said = (said + piece)[-LOOP_UNIT * LOOP_COPIES :]
                if piece and looping(said):
                    log.warning("the reply repeats itself: cut after %d characters", len("".join(pieces)))
                    return
            if tail := (held + stream.flush()).split(RESPONSE)[0]:  # the reply ended: nothing more to wait for
                pieces.append(tail)
                yield tail
        finally:  # a cancelled reply is kept as far as it was spoken
            tokens.close()
            # Where the tag is a token, a reply that never used it only wrote the tags as words.
            self.messages.append(assistant_message("".join(pieces), markup=tag is None or used_tag))


def looping(text: str) -> bool:
    """Whether `text` ends in one stretch of it written again and again (LOOP_COPIES, LOOP_CHARS)."""
    for size in range(1, min(LOOP_UNIT, len(text) // LOOP_COPIES) + 1):
        copies = max(LOOP_COPIES, -(-LOOP_CHARS // size))
        if copies * size <= len(text) and text.endswith(text[-size:] * copies):
            return True
    return False


def until(text: str, stop: str) -> tuple[str, str, bool]:
    """`text` up to `stop`, as it streams: (what can be given out, the end of it that may be the
    start of `stop` and is held back, whether `stop` was found)."""
    if (found := text.find(stop)) >= 0:
        return text[:found], "", True
    for k in range(min(len(stop), len(text) + 1) - 1, 0, -1):
        if text.endswith(stop[:k]):
            return text[:-k], text[-k:], False
    return text, "", False


def assistant_message(reply: str, markup: bool = True) -> dict:
    """The model's reply for the history: its tool-call tags are markup, as the model wrote them
    (unless `markup` is False: where the tag is a token, a reply that never used it spelled them)."""
    if not markup or OPEN not in reply:
        return {"role": "assistant", "content": reply}
    parts: Parts = [(part, kind in ("open", "close")) for part, kind in reply_parts(reply) if part]
    return {"role": "assistant", "content": reply, "parts": parts}


def tool_response_message(results: list, template_wraps: bool) -> dict:
    """Skill results for the model: a `tool` message where the template wraps it, else Qwen's user wrapping.

    The results are plain text: a note read back that says `<|im_end|>` is just those characters.
    """
    bodies = [json.dumps(r, ensure_ascii=False) for r in results]
    if template_wraps:
        return {"role": "tool", "content": "\n".join(bodies)}
    parts: Parts = []
    for i, body in enumerate(bodies):
        parts += [("\n" * (i > 0) + RESPONSE + "\n", True), (body, False), ("\n</tool_response>", True)]
    return {"role": "user", "content": "".join(text for text, _ in parts), "parts": parts}


def is_tool_response(message: dict) -> bool:
    parts = message.get("parts")
    return message["role"] == "tool" or bool(message["role"] == "user" and parts and parts[0][1])
