"""Speech out: the reply cut into sentences as it streams, each synthesised by a piper voice."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# A sentence ends at . ! ? followed by a space (so 3.5 and example.com stay whole), or right
# after Chinese / Japanese sentence punctuation, or at a line break.
_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|(?<=[。！？；…])[”」』）]*|\n+")


class SentenceSplitter:
    def __init__(self) -> None:
        self.buffer = ""

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the sentences it completed."""
        self.buffer += text
        sentences, start = [], 0
        for match in _END.finditer(self.buffer):
            if match.end() == len(self.buffer) and not match.group():
                break  # "。" at the very end: a closing quote may still follow
            sentence = self.buffer[start : match.end()].strip()
            if sentence:
                sentences.append(sentence)
            start = match.end()
        self.buffer = self.buffer[start:]
        return sentences

    def flush(self) -> list[str]:
        rest, self.buffer = self.buffer.strip(), ""
        return [rest] if rest else []


class Voice:
    """A piper voice (.onnx with its .onnx.json beside it)."""

    def __init__(self, path: Path, speaker: int | None = None, length_scale: float = 1.0):
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        from assistant.llm.backends import session_options

        if not Path(path).is_file() or not Path(f"{path}.json").is_file():
            raise FileNotFoundError(
                f"{path}: piper voice (and its .onnx.json) not found; install it with `assistant setup`"
            )
        # Built here rather than with PiperVoice.load so that its session shares the LLM's threads.
        config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
        session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        self.voice = PiperVoice(session=session, config=config)
        self.config = SynthesisConfig(speaker_id=speaker, length_scale=length_scale)
        self.rate = self.voice.config.sample_rate

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """int16 audio at self.rate, a chunk per sentence piper finds in `text`."""
        for chunk in self.voice.synthesize(text, self.config):
            yield chunk.audio_int16_array
