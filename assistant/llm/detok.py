"""Streaming detokenization that never emits half a UTF-8 character.

A Chinese character or an emoji often spans several byte-level tokens; decoding them one by one
would print U+FFFD. Text is released only once the decoded tail is whole, and without the U+FFFD of
a character the model began and never finished (a sampled byte token followed by plain text).
"""

from __future__ import annotations

from tokenizers import Tokenizer

REPLACEMENT = "\ufffd"


class StreamDecoder:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.start = 0  # first token of the window still decoded for context
        self.emitted = 0  # tokens whose text has been released

    def _text(self, end: int) -> str:
        return self.tokenizer.decode(self.ids[self.start : end], skip_special_tokens=False)

    def push(self, token: int) -> str:
        """Add a token; return the text it completes (possibly empty)."""
        self.ids.append(token)
        before = self._text(self.emitted)
        after = self._text(len(self.ids))
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.start, self.emitted = self.emitted, len(self.ids)
            return after[len(before) :].replace(REPLACEMENT, "")  # nothing to say, nor to keep
        return ""

    def flush(self) -> str:
        """Whatever is left at the end of the stream, but a last character cut short (a reply
        cancelled or out of tokens in the middle of an emoji), which would be spoken and kept as U+FFFD."""
        before, after = self._text(self.emitted), self._text(len(self.ids))
        self.start = self.emitted = len(self.ids)
        return after[len(before) :].replace(REPLACEMENT, "")
