"""Conversations over many turns on the tiny random model: the history is cut at whole exchanges."""

from __future__ import annotations

import resource
from pathlib import Path

from assistant import skill
from assistant.llm.conversation import Conversation, is_tool_response
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.registry import Registry
from assistant.turn import TurnManager


@skill(sentences={"en": ["read the log"]})
def read_log() -> dict:
    """A long result for the model to put in words."""
    return {"lines": ["the door opened at seven and closed again"] * 12}


def check_history(messages: list[dict]) -> None:
    assert not messages or (messages[0]["role"] == "user" and not is_tool_response(messages[0]))
    for before, after in zip(messages, messages[1:], strict=False):
        if is_tool_response(after):
            assert before["role"] == "assistant" and "<tool_call>" in before["content"], (before, after)
        if before["role"] == "assistant" and "<tool_call>" in before["content"]:
            assert is_tool_response(after), (before, after)


def test_hundreds_of_turns_of_several_askers_keep_whole_exchanges(tiny_int8: Path) -> None:
    registry = Registry()
    registry.add_function(read_log, "test")
    engine = Engine(tiny_int8, kv_cache_len=512)
    conversation = Conversation(engine, "You are a test.", 48, registry.tools())
    manager = TurnManager(conversation, registry, Sampler(temperature=1.0, seed=5))
    system = len(engine.prompt_cache.tokens)
    rss = []
    for turn in range(300):
        asker = ("a", "b", None)[turn % 3]
        text = "read the log" if turn % 4 == 0 else f"tell me something about the number {turn} " * (turn % 7 + 1)
        events = list(manager.turn(text, asker=asker))
        assert events, turn
        for messages in manager.histories.values():
            check_history(messages)
        assert engine.stats.prefilled_tokens <= engine.kv_len - system, turn
        assert engine.pos <= engine.kv_len
        rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    assert rss[-1] - rss[50] < 20_000, rss[::25]  # kB
