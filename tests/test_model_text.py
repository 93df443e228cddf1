"""What a small model writes besides plain words, and what the person hears of it: loops, code."""

from __future__ import annotations

from pathlib import Path

from assistant.llm.conversation import Conversation, looping
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
from assistant.skills.constraint import visible_text
from assistant.skills.registry import Registry
from assistant.turn import TurnManager
from tests.test_toolcalls import scripted


def heard(tiny_int8: Path, reply: str, request: str = "hello") -> tuple[str, TurnManager]:
    """What the person hears when the model replies `reply` to `request` (no skills, no intents)."""
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 1024), Registry(), Sampler(), intents=False)
    scripted(engine, reply)
    said = "".join(e.text for e in manager.turn(request) if e.kind in ("text", "error"))
    return said, manager


def test_a_reply_that_repeats_itself_is_cut(tiny_int8: Path) -> None:
    # SmolLM2-135M-Instruct asked to "Count from one to fifty", as it wrote it until max_new_tokens.
    loop = "    {% limit %}\n      Total items - Items\n"
    said, manager = heard(tiny_int8, "Count to 5\n" + loop * 20, "Count from one to fifty.")
    assert said.startswith("Count to 5")
    assert said.count("Total items") <= 4  # not twenty
    assert manager.conversation.messages[-1]["content"].count("Total items") <= 4  # nor kept as said


def test_what_is_not_a_loop() -> None:
    assert not looping("Ha ha ha! That is a good one.")
    assert not looping("1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23")
    assert not looping("No. No. No. ")  # said three times, but short
    assert looping("banana " * 12) and looping("哈" * 80)


def test_code_is_not_read_out(tiny_int8: Path) -> None:
    # SmolLM2-135M-Instruct's answer to "Write a python function that adds two numbers."
    reply = (
        "Here it is:\n```python\ndef add_numbers(x, y):\n    return x + y\n```\n\n"
        "You can use this function like this:\n\n```python\nprint(add_numbers(10, 2))\n```"
    )
    said, manager = heard(tiny_int8, reply)
    assert said == "Here it is:\n\n\nYou can use this function like this:"
    assert manager.conversation.messages[-1]["content"] == reply  # the model still sees what it wrote


def test_code_without_a_fence_is_not_read_out(tiny_int8: Path) -> None:
    # SmolLM2-135M-Instruct's greedy answer to "Write a python function that adds two numbers."
    reply = "def add_numbers(a, b):\n    return a + b\n\nprint(add_numbers(10, 2)) # Outputs: 30"
    said, _ = heard(tiny_int8, reply, "Write a python function that adds two numbers.")
    assert said == "Sorry, I have no answer to that."  # nothing else to say
    said, _ = heard(tiny_int8, reply.replace("print", 'result = add_numbers(3, 4)\nprint(f"{result}")\nprint'))
    assert said == "Sorry, I have no answer to that."
    said, _ = heard(tiny_int8, "Here:\nimport os\nfrom os import path\nclass A:\n    pass\nThat is all.")
    assert said == "Here:\nThat is all."
    said, _ = heard(tiny_int8, "#include <stdio.h>\nint main() {\n  return 0;\n}\nThat is C.")
    assert said == "That is C."
    said, _ = heard(tiny_int8, "Like this:\nfunction add(a, b) {\n  return a + b;\n}\nconst x = add(1, 2);\nSee?")
    assert said == "Like this:\nSee?"


def test_sentences_that_begin_like_code_are_read_out(tiny_int8: Path) -> None:
    words = "Return the book.\nFrom here on, import duties apply.\nClass starts at nine.\nDefine your goal.\nDone."
    said, _ = heard(tiny_int8, words)
    assert said == words
    said, _ = heard(tiny_int8, "Steps:\nreturn the book,\nfrom here walk home.")  # lower case, but not code
    assert said == "Steps:\nreturn the book,\nfrom here walk home."


def test_json_is_not_read_out(tiny_int8: Path) -> None:
    # SmolLM2-135M-Instruct's answers to "提醒我明天早上七点起床" and "Make a note that the car needs new tyres".
    said, _ = heard(tiny_int8, '{\n    "type": "reminder"\n}', "提醒我明天早上七点起床")
    assert said == "抱歉，这个我回答不了。"  # nothing else to say
    said, _ = heard(tiny_int8, 'Done:\n{\n  "note": {"title": "Note"}}\nAnything else?')
    assert said == "Done:\n\nAnything else?"
    said, _ = heard(tiny_int8, 'Here:\n{"id": "12345678901234567890\n\nThat is all.')  # cut short
    assert said == "Here:\n\n\nThat is all."
    said, _ = heard(tiny_int8, "{target_context} is a variable; {x} too.")  # braces in words are words
    assert said == "{target_context} is a variable; {x} too."


def test_a_call_written_without_its_tags_is_not_read_out(tiny_int8: Path) -> None:
    for reply in (
        '{"name": "set_timer", "arguments": {"minutes": 5}}',
        'Sure.\n```json\n{"name": "set_timer", "arguments": {"minutes": 5}}\n```',
    ):
        said, _ = heard(tiny_int8, reply, "set a timer for five minutes")
        assert "set_timer" not in said and "minutes" not in said, said


def test_what_smollm2_writes_to_be_seen_is_not_heard(smollm2_model: Path, tmp_path: Path) -> None:
    from tests.test_prompt import greedy_daemon, say, serving

    daemon = greedy_daemon(smollm2_model, tmp_path, "max_new_tokens: 60")
    requests = ["Show me a JSON example.", "Make a note that the car needs new tyres"]
    requests += ["Call the set_timer function with 4 minutes.", "Show me the JSON for a timer of 5 minutes."]
    requests += ["Write a python function that adds two numbers."]

    def talk() -> list[str]:
        return ["".join(e["text"] for e in say(daemon.socket_path, text) if e["type"] == "text") for text in requests]

    for text, said in zip(requests, serving(daemon, talk), strict=True):
        print(f"{text!r}: {said!r}")
        marks = ("```", '{"', "{\n", "def ", "set_timer", "add_numbers(")
        assert said.strip() and not any(mark in said for mark in marks), said


def test_what_is_said_of_code_only_grows_as_the_reply_streams() -> None:
    replies = [
        "Here:\n  ```python\nx = 1\n```\nDone `x`. And ``y``.",
        'See ```x```{"a": 1} and ```y```\n{"b": 2}',
        'A:\n  {"a": [1, {"b": "}"}]}\nB {"c": 1}\n{ no json }\n{"cut": "short',
        'Sure.\n```json\n{"name": "set_timer", "arguments": {"minutes": 5}}\n```\n'
        '<tool_call>\n{"name": "x"}\n</tool_call>',
        "Here:\ndef add(a, b):\n    return a + b\n\nprint(add(1, 2)) # 3\nreturns 3.\nfrom x import y\ndone",
        "#include <stdio.h>\nint main() {\n  return 0;\n}\nThat is C. const x = 1;\nconst y = 2;\nok",
    ]
    for reply in replies:
        said = [visible_text(reply[:end]) for end in range(len(reply) + 1)] + [visible_text(reply, finished=True)]
        for before, after in zip(said, said[1:], strict=False):
            assert after.startswith(before), (reply, before, after)


def test_a_reply_that_goes_on_writing_code_ends(tiny_int8: Path) -> None:
    # The person would wait in silence while the code is written, for words about code they cannot see.
    code = "".join(f"    total = total + {n}  # add {n}\n" for n in range(40))
    reply = f"Here it is:\n```python\ndef add():\n    total = 0\n{code}```\nThis function adds the numbers."
    said, manager = heard(tiny_int8, reply, "Write a python function that adds numbers.")
    assert said == "Here it is:"
    kept = manager.conversation.messages[-1]["content"]
    assert kept.startswith("Here it is:\n```python\n") and len(kept) < 300  # it ended there
    said, _ = heard(tiny_int8, f"```python\n{code}```", "Write a python function that adds numbers.")
    assert said == "Sorry, I have no answer to that."


def test_words_after_code_written_without_a_fence_are_said_in_full(tiny_int8: Path) -> None:
    # The code is short enough to wait for; the sentence after it is judged once its line is whole.
    code = "def add(a, b):\n" + "".join(f"    a = a + {n}\n" for n in range(8)) + "    return a + b\n"
    words = "This function adds the two numbers you give it, and a few more, " * 3 + "then returns the sum."
    said, _ = heard(tiny_int8, code + words, "Write a python function that adds two numbers.")
    assert len(code) < 200 < len(code) + len(words) and said == words
    endless = "Here:\ndef add():\n" + "".join(f"    total = total + {n}  # add {n}\n" for n in range(40)) + words
    said, manager = heard(tiny_int8, endless, "Write a python function that adds numbers.")
    kept = manager.conversation.messages[-1]["content"]
    assert said == "Here:" and kept.startswith("Here:\ndef add():\n") and len(kept) < 300  # it ended there
