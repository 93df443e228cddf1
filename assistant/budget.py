"""Does the system prompt leave room for a conversation? Token counts at start-up and in `config check`.

The board's context is kv_cache_len tokens in all (1023 for the seed's build). The system prompt
(persona and tool lines) is prefilled once and stays; what is left holds the conversation, and it
must hold at least one reply (reply_room) and one exchange around it (TURN_ROOM). When it
does not, skills marked `optional_tool` are left out of the prompt first (their sentences still work
by voice, without the model); if that is not enough, the assistant does not start and says which
skills to disable or which kv_cache_len would fit.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from assistant.config import ConfigError, Settings
from assistant.llm.chat_template import ChatTemplate, plain_tokenizer
from assistant.skills.prompt import (
    counted_values,
    example_exchange,
    prompt_messages,
    shared_values,
    tool_line,
    value_line,
)
from assistant.skills.sdk import Skill

# Tokens of a request, a tool call and its result, besides the reply: a spoken request is ~10-30
# tokens, a call ~20, a result ~20-60, and the chat format adds ~5 a message.
TURN_ROOM = 128


def reply_room(max_new_tokens: int, kv_cache_len: int) -> int:
    """Tokens kept free for a reply: llm.max_new_tokens, but at most a quarter of the context (a reply
    that runs longer stops when the context is full)."""
    return min(max_new_tokens, kv_cache_len // 4)


@dataclass
class PromptBudget:
    """What the system prompt costs, in tokens of the model's own tokenizer."""

    kv_cache_len: int
    max_new_tokens: int
    system: int
    """Everything prefilled at start-up: the system message (persona, tools) and the example exchange."""
    persona: int
    """llm.system_prompt."""
    skills: dict[str, int]
    """Each tool line in the prompt, by skill name."""
    values: int = 0
    """Choices that several tools share (device names), listed once."""
    intents_only: list[str] = field(default_factory=list)
    """Skills left out of the prompt to make room; their local sentences still work."""
    unlisted: dict[str, int] = field(default_factory=dict)
    """Shared choices only counted in the prompt to make room (device: 120), each call still held to them."""

    @property
    def frame(self) -> int:
        """The chat format, the tools' header and the example exchange."""
        return self.system - self.persona - sum(self.skills.values()) - self.values

    @property
    def room(self) -> int:
        """Left for the conversation."""
        return self.kv_cache_len - self.system

    @property
    def needed(self) -> int:
        return reply_room(self.max_new_tokens, self.kv_cache_len) + TURN_ROOM

    @property
    def fits(self) -> bool:
        return self.room >= self.needed

    def lines(self) -> list[str]:
        """The budget for a person: one line each for the totals, the skills and what was left out."""
        lines = [
            f"prompt budget: system prompt {self.system} of kv_cache_len {self.kv_cache_len} tokens "
            f"(persona {self.persona}, {len(self.skills)} tools {sum(self.skills.values())}, shared choices "
            f"{self.values}, format and example {self.frame}); "
            f"{self.room} left for the conversation, which needs {self.needed} "
            f"(a reply of {self.needed - TURN_ROOM} + {TURN_ROOM})"
        ]
        if self.skills:
            lines.append("tool lines: " + ", ".join(f"{name} {n}" for name, n in self.skills.items()))
        if self.intents_only:
            lines.append("by voice only, left out of the prompt for room: " + ", ".join(self.intents_only))
        if self.unlisted:
            counted = ", ".join(f"{name} ({n})" for name, n in self.unlisted.items())
            lines.append(f"choices counted, not listed, in the prompt for room: {counted}; a call still names one")
        return lines


@dataclass
class PromptPlan:
    """What goes into the prompt: the tools, the example exchange, and what they cost."""

    tools: list[dict]
    example: tuple[str, dict] | None
    budget: PromptBudget
    list_values: bool = True  # prompt_messages' list_values


def plan_prompt(
    template: ChatTemplate,
    tokenizer: Tokenizer,
    persona: str,
    skills: list[Skill],
    kv_cache_len: int,
    max_new_tokens: int,
    where: str = "",
    any_length: bool = False,
) -> PromptPlan:
    """The tools that go into the prompt, and the budget; ConfigError with advice if nothing fits.

    `any_length`: the model runs on the host backend, which takes any llm.kv_cache_len.
    """
    plain = plain_tokenizer(tokenizer)

    def count(text: str) -> int:
        return len(plain.encode(text, add_special_tokens=False))

    def plan_of(kept: list[Skill], listed: bool) -> PromptPlan:
        tools = [s.tool() for s in kept]
        example = example_exchange(tools, {s.name: s.sentences.get("en", []) for s in kept})
        prefix = prompt_messages(persona, tools, example, listed)
        shared = shared_values(tools)
        budget = PromptBudget(
            kv_cache_len=kv_cache_len,
            max_new_tokens=max_new_tokens,
            system=len(template.encode(prefix, tokenizer, plain, add_generation_prompt=False)),
            persona=count(persona.strip()),
            skills={t["function"]["name"]: count(tool_line(t, shared) + "\n") for t in tools},
            values=sum(count(value_line(name, values, listed)) for name, values in shared.items()),
            unlisted={} if listed else counted_values(shared),
        )
        return PromptPlan(tools, example, budget, listed)

    optional = [s for s in reversed(skills) if s.optional_tool]  # the last loaded go first

    def without(number: int, listed: bool) -> PromptPlan:
        left_out = {id(s) for s in optional[:number]}
        return plan_of([s for s in skills if id(s) not in left_out], listed)

    # Optional tools give way first; then the shared choices (the names of a home of many devices) are
    # only counted, the grammar still holding each call to them; then both.
    for listed in (True, False):
        plan = plan_of(skills, listed)
        if not plan.budget.fits and optional:
            # The fewest optional tools to leave out, found by halving: taken out one at a time, each with a
            # new plan of every tool line, 500 of them kept a PC busy for 20 s before the assistant started.
            fitting, short = len(optional), 0
            plan = without(fitting, listed)
            while plan.budget.fits and fitting - short > 1:
                middle = (short + fitting) // 2
                tried = without(middle, listed)
                if tried.budget.fits:
                    fitting, plan = middle, tried
                else:
                    short = middle
        if plan.budget.fits or not counted_values(shared_values(plan.tools)):
            break
    in_prompt = {t["function"]["name"] for t in plan.tools}
    plan.budget.intents_only = [s.name for s in skills if s.name not in in_prompt]
    if not plan.budget.fits:
        raise ConfigError(where + advice(plan.budget, any_length))
    return plan


def advice(budget: PromptBudget, any_length: bool = False) -> str:
    """One line: what does not fit, and the skills to disable or the kv_cache_len that would fit
    (a setting for a model on the host backend, `any_length`; a rebuild for the board's)."""
    short = budget.needed - budget.room
    largest = sorted(budget.skills.items(), key=lambda item: -item[1])
    disable, freed = [], 0
    for name, tokens in largest:
        if freed >= short:
            break
        disable.append(name)
        freed += tokens
    fixes = []
    if freed >= short:
        fixes.append(f"disable {', '.join(disable)} (skills.disabled)")
    kv = budget.kv_cache_len
    while kv - budget.system < reply_room(budget.max_new_tokens, kv) + TURN_ROOM:
        kv += 1
    host = f" (the host backend takes any: set llm.kv_cache_len to {kv})" if any_length else ""
    fixes.append(f"use a model with kv_cache_len {kv} or more{host}")
    reply = budget.needed - TURN_ROOM
    if reply > short:
        fixes.append(f"lower llm.max_new_tokens to {reply - short}")
    else:
        fixes.append("shorten llm.system_prompt")
    left_out = f" even without {', '.join(budget.intents_only)}" if budget.intents_only else ""
    return (
        f"the system prompt takes {budget.system} of kv_cache_len {budget.kv_cache_len} tokens (persona "
        f"{budget.persona}, tools {sum(budget.skills.values())}){left_out}, leaving {budget.room} for the "
        f"conversation, which needs {budget.needed}: " + ", or ".join(fixes)
    )


def plan_for_settings(settings: Settings, skills: list[Skill], engine=None) -> PromptPlan:
    """plan_prompt for the model `settings` names (or the loaded `engine`)."""
    from assistant.llm.manifest import load_manifest

    if engine is not None:
        model_dir, manifest, tokenizer, kv_len = engine.model_dir, engine.manifest, engine.tokenizer, engine.kv_len
        any_length = engine.board is None
    else:
        model_dir = Path(settings.llm.model_dir)
        manifest = load_manifest(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / manifest.tokenizer))
        kv_len = settings.llm.kv_cache_len or manifest.kv_cache_len
        # The ONNX layers, which take any length: chosen, or what the auto backend runs without the NPU's.
        npu = "axengine" in manifest.backends and importlib.util.find_spec("axengine") is not None
        any_length = "onnxruntime" in manifest.backends and (
            settings.llm.backend == "onnxruntime" or (settings.llm.backend == "auto" and not npu)
        )
    template = ChatTemplate(Path(model_dir), manifest.chat_template)
    persona, max_new_tokens = settings.llm.system_prompt, settings.llm.max_new_tokens
    where = f"{settings.source}: "
    return plan_prompt(template, tokenizer, persona, skills, kv_len, max_new_tokens, where, any_length)
