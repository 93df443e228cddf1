"""Tool calls the model cannot get wrong: constrained decoding with llguidance.

The model writes freely until it opens a call with `<tool_call>`. From there until `</tool_call>`
only tokens that keep the text a valid call are allowed: `{"name": <a registered skill>,
"arguments": <an object valid for that skill's JSON Schema>}`. A 0.5B model therefore cannot
name a skill that does not exist or pass arguments its schema forbids.

Where the tokenizer has `<tool_call>` as one added token (Qwen2.5 and later), only that token
opens a call: text that merely spells the tag (a user's words repeated) does not. Qwen2 has no
such token, so there the tag's text opens it, as the model writes it: `<`, `tool`, `_call`, `>`
or `>\n` (the byte-level BPE joins punctuation and the newline after it).
"""

from __future__ import annotations

import json
import re

import llguidance
import llguidance.numpy as llnumpy
import numpy as np
from tokenizers import Tokenizer

OPEN, CLOSE = "<tool_call>", "</tool_call>"
FENCE = "```"
# A JSON object on lines of its own, which a small model writes instead of words or of a tagged call.
JSON_START = re.compile(r'^[ \t]*(\{)\s*"', re.M)
# What may yet turn out to open a code block or a JSON object, held back while the reply streams.
MAY_OPEN = re.compile(r"^[ \t]*(\{\s*)\Z|(`{1,2})\Z", re.M)
# A line of code written without a fence: only the forms code takes, lower case, so that sentences
# such as "Return the book" or "From here on" are words.
CODE_LINE = re.compile(
    r"^[ \t]*(def \w+\(|class \w+\s*[(:]|import \w[\w.]*\s*(?:$|,|as\b)|from [\w.]+ import |#include\b"
    r"|return(?:[ \t]+[\w.]+)?[ \t]*;?[ \t]*$|return\b.*[-+*/%=<>()\[\];]"  # not "return the book,"
    r"|function\s*\w*\s*\(|(?:const|let|var) \w+\s*=[^=])",
    re.M,
)
# The lines that go on with code after a CODE_LINE: blank, indented, a closing bracket, a comment, a line
# that opens a block or ends a statement, an assignment (result = add(3, 4)) or a call on its own such as
# print(add(1, 2)).
CODE_MORE = re.compile(
    r"\s*\Z|[ \t}\])#]|.*[{;][ \t]*\Z|[\w.]+[ \t]*[-+*/]?=[^=]|[\w.]+\(.*\)[ \t]*;?[ \t]*(?:(?:#|//).*)?\Z"
)
# How such a line starts: a line that is still being written and begins so is held back until it ends.
CODE_WORDS = ("def ", "class ", "import ", "from ", "return", "#include", "function", "const ", "let ", "var ")


def call_schema(tools: list[dict]) -> dict:
    """One JSON Schema for any call of any tool, in Qwen's {"name", "arguments"} shape."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": tool["function"]["name"]}, "arguments": tool["function"]["parameters"]},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    # Compact JSON, as the model was trained to write it; no room for endless whitespace.
    guidance = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
    # anyOf, not oneOf: llguidance compiles oneOf only when it can prove the branches exclusive.
    return {"anyOf": options, "x-guidance": guidance}


class ToolCallConstraint:
    """The engine's `allowed` hook: None (anything) outside a call, the grammar's mask inside one."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, eos_ids: list[int], tools: list[dict]):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.lltokenizer = llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=vocab_size, eos_token=eos_ids)
        self.open_id = tokenizer.token_to_id(OPEN)  # None: the tag is plain text (Qwen2)
        close = f'"{CLOSE}"'
        if (close_id := tokenizer.token_to_id(CLOSE)) is not None:  # Qwen2.5 has it as one added token
            close = f'("{CLOSE}" | <[{close_id}]>)'
        call = f"call: %json {json.dumps(call_schema(tools))}\n"
        # Two ways in: right after the tag, or after a token that also held the newline after it.
        self.grammar = self._grammar(f'start: "\\n" call "\\n" {close}\n{call}')
        self.grammar_after_newline = self._grammar(f'start: call "\\n" {close}\n{call}')
        self.bitmask = llnumpy.allocate_token_bitmask(1, vocab_size)
        self.reset()

    def _grammar(self, lark: str) -> str:
        grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.lltokenizer)
        if failed:
            raise ValueError(f"tool call grammar: {messages[0]}")
        return grammar

    @property
    def tags_are_text(self) -> bool:
        """Whether the tags in this reply are only text: the tag is a token here and was never used.

        Then a `<tool_call>` in the reply is the model repeating the words, to be said, not run.
        """
        return self.open_id is not None and self.opened == 0

    def reset(self) -> None:
        self.opened = 0  # calls opened in this generation
        self.matcher: llguidance.LLMatcher | None = None
        self.seen = 0
        self.tail = ""  # the last characters of free text, to spot the opening tag

    def __call__(self, generated: list[int]) -> np.ndarray | None:
        self.follow(generated)
        if self.matcher is None:
            return None
        llnumpy.fill_next_token_bitmask(self.matcher, self.bitmask)
        return np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")[: self.vocab_size].view(bool)

    def forced(self, generated: list[int]) -> list[int]:
        """The tokens that must follow `generated`, whatever the model would say (none outside a call).

        Inside a call the grammar often leaves one way on: the keys and punctuation of the JSON,
        the rest of a skill's name once it is unambiguous. The engine runs such a span in one
        forward pass instead of a decode step (and an lm_head) per token.
        """
        self.follow(generated)
        return [] if self.matcher is None else list(self.matcher.compute_ff_tokens())

    def follow(self, generated: list[int]) -> None:
        """Take in the tokens of this reply so far (a shorter list starts a new reply). The engine asks
        nothing after a reply's last token, so a reader of the reply calls this to have every token seen:
        a reply cut just after the opening tag did use the tag."""
        if len(generated) < self.seen:  # a new generation
            self.reset()
        for token in generated[self.seen :]:
            self._advance(token)
        self.seen = len(generated)

    def _advance(self, token: int) -> None:
        if self.matcher is not None:
            if not self.matcher.consume_token(token):
                raise RuntimeError(f"constrained decoding broke: {self.matcher.get_error()}")
            if self.matcher.is_stopped():  # the call is closed; free text again
                self.matcher, self.tail = None, ""
            return
        grammar = None
        if self.open_id is not None:
            grammar = self.grammar if token == self.open_id else None
        else:
            piece = self.tokenizer.decode([token], skip_special_tokens=False)
            self.tail = (self.tail + piece)[-len(OPEN) - len(piece) :]
            if self.tail.endswith(OPEN):
                grammar = self.grammar
            elif piece.strip("\n") == ">" and self.tail.rstrip("\n").endswith(OPEN):
                grammar = self.grammar_after_newline
        if grammar is not None:
            self.matcher = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
            self.opened += 1


def reply_parts(reply: str, finished: bool = True) -> list[tuple[str, str]]:
    """A reply as (text, kind) parts, kind "text", "open", "call" (a call's body) or "close".

    A call ends at the closing tag after its JSON object, so an argument that contains the tag
    ("note that </tool_call> closes a call") is part of the call. While the reply streams, a call
    whose JSON is not complete yet is still open; in a finished reply, a body that is not JSON ends
    at the first closing tag. A call left open has no "close" part.
    """
    parts, rest = [], reply
    while (start := rest.find(OPEN)) >= 0:
        parts += [(rest[:start], "text"), (OPEN, "open")]
        rest = rest[start + len(OPEN) :]
        end = _call_end(rest, finished)
        if end is None:
            parts.append((rest, "call"))
            return parts
        parts += [(rest[:end], "call"), (CLOSE, "close")]
        rest = rest[end + len(CLOSE) :]
    parts.append((rest, "text"))
    return parts


def _call_end(body: str, finished: bool) -> int | None:
    """Where the closing tag of the call whose body starts `body` is, or None if it has none (yet)."""
    stripped = body.lstrip()
    try:
        _, end = json.JSONDecoder().raw_decode(stripped)
        end += len(body) - len(stripped)
    except ValueError:
        if not finished:
            return None
        end = 0
    found = body.find(CLOSE, end)
    return None if found < 0 else found


def parse_tool_calls(text: str) -> tuple[str, list[dict]]:
    """Split a reply into its spoken text and its calls ({"name", "arguments"} dicts).

    A call that is not valid JSON is returned as {"error": ...} so the turn can say so.
    """
    spoken, calls = [], []
    for part, kind in reply_parts(text):
        if kind == "text":
            spoken.append(part)
        elif kind == "call":
            try:
                call = json.loads(part)
                if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                    raise ValueError("not a {name, arguments} object")
                calls.append({"name": call["name"], "arguments": call.get("arguments", {})})
            except ValueError as e:
                calls.append({"error": f"malformed tool call ({e})"})
    return "".join(spoken).strip(), calls


def visible_text(reply: str, finished: bool = False) -> str:
    """The part of a (possibly unfinished) reply that is outside tool calls, safe to speak now.

    While the reply streams, a trailing "<", "<tool", "</tool" ... might be the start of a tag, so it
    is held back until the next piece shows what it is. The result only ever grows as the reply does.
    """
    parts = reply_parts(reply, finished)
    # A closing tag with no call open is markup the model wrote by mistake: not read out.
    text = without_code("".join(part for part, kind in parts if kind == "text").replace(CLOSE, ""), finished)
    if parts[-1][1] == "text" and not finished:
        for tag in (OPEN, CLOSE):
            for k in range(len(tag) - 1, 0, -1):
                if text.endswith(tag[:k]):
                    return text[:-k]
    return text


def without_code(text: str, finished: bool = False) -> str:
    """`text` without what is written to be seen, not heard: ``` fenced blocks, JSON objects on lines
    of their own (a call written without its tags among them) and code without a fence (CODE_LINE and the
    indented lines under it), which a voice would read out sign by sign.

    While the text streams, nothing is given from where such a block may start until it has ended. A JSON
    object that never ends (the reply stopped inside it) is left out up to the next blank line.
    """
    return _unsaid(text, finished)[0]


def code_being_written(reply: str) -> int:
    """How many characters long the code block or JSON object is that the streaming `reply` is inside
    (0: none), outside its tool calls."""
    return _unsaid("".join(part for part, kind in reply_parts(reply, False) if kind == "text"), False)[1]


def _unsaid(text: str, finished: bool) -> tuple[str, int]:
    """without_code's text, and the length of the block it stopped in while streaming."""
    said, at = [], 0
    while True:
        fence, json_start = text.find(FENCE, at), JSON_START.search(text, at)  # ^ only where a line starts
        code = CODE_LINE.search(text, at)
        starts = (fence, json_start.start(1) if json_start else -1, code.start(1) if code else -1, len(text))
        start = min(i for i in starts if i >= 0)
        said.append(text[at:start])
        if start == len(text):
            break
        if code and start == code.start(1):
            at = _code_end(text, start, finished)
            if at < 0:  # a line after the code's first, still being written, is not counted as code yet
                undecided = text.rfind("\n") + 1
                return "".join(said), (undecided if undecided > start else len(text)) - start
            continue
        if start == fence:
            end = text.find(FENCE, start + len(FENCE))
            if end < 0:
                return "".join(said), len(text) - start  # code to the end, or until its block closes
            at = end + len(FENCE)
            continue
        try:
            _, at = json.JSONDecoder().raw_decode(text, start)
        except ValueError:
            if not finished:
                return "".join(said), len(text) - start
            blank = text.find("\n\n", start)
            at = len(text) if blank < 0 else blank
    text = "".join(said)
    if not finished and _may_be_code(line := text[text.rfind("\n") + 1 :].lstrip(" \t")):
        text = text[: len(text) - len(line)]
    held = None if finished else MAY_OPEN.search(text)
    return (text if held is None else text[: held.start(1) if held[1] is not None else held.start(2)]), 0


def _code_end(text: str, start: int, finished: bool) -> int:
    """Where the code that starts with the CODE_LINE at `start` ends: at the first line after it that is
    not code (CODE_MORE). -1: not known yet, the text streams on (a line is judged once it is whole)."""
    end = text.find("\n", start)
    while end >= 0:
        line_start = end + 1
        end = text.find("\n", line_start)
        if end < 0 and not finished:
            return -1
        line = text[line_start:] if end < 0 else text[line_start:end]
        if not CODE_MORE.match(line) and not CODE_LINE.match(line):
            return line_start
    return len(text) if finished else -1


def _may_be_code(line: str) -> bool:
    """Whether a line still being written (from its first word on) may turn out to be a CODE_LINE."""
    return any(word.startswith(line) or line.startswith(word) for word in CODE_WORDS)
