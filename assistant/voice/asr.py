"""Streaming speech recognition from the wake point to the end of the utterance (vosk)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from assistant.voice.audio import RATE


@dataclass
class AsrEvent:
    kind: str  # "partial" or "final"
    text: str


class Transcriber:
    """One utterance at a time: feed frames until a final event (vosk's endpoint, silence or max length).

    `grammar` restricts the words (a list of phrases); None is free transcription.
    """

    def __init__(
        self, model, silence_timeout: float = 1.2, max_seconds: float = 12.0, grammar: list[str] | None = None
    ):
        from vosk import KaldiRecognizer

        args = (json.dumps([*grammar, "[unk]"], ensure_ascii=False),) if grammar else ()
        self.recognizer = KaldiRecognizer(model, RATE, *args)
        self.silence_timeout, self.max_seconds = silence_timeout, max_seconds
        self.start()

    def start(self) -> None:
        self.recognizer.Reset()
        self.heard = 0  # samples since the start
        self.quiet = 0  # samples since the partial text last changed
        self.partial = ""

    def feed(self, frame: np.ndarray) -> AsrEvent | None:
        self.heard += len(frame)
        if self.recognizer.AcceptWaveform(frame.astype("<i2").tobytes()):
            return self._final(json.loads(self.recognizer.Result()).get("text", ""))
        partial = json.loads(self.recognizer.PartialResult()).get("partial", "")
        if partial != self.partial:
            self.partial, self.quiet = partial, 0
            return AsrEvent("partial", partial)
        self.quiet += len(frame)
        # Nothing new for a while, or talking too long: end the utterance here.
        if (self.partial and self.quiet >= self.silence_timeout * RATE) or self.heard >= self.max_seconds * RATE:
            return self._final(json.loads(self.recognizer.FinalResult()).get("text", ""))
        if not self.partial and self.quiet >= (self.silence_timeout + 3.0) * RATE:
            return self._final("")  # nobody spoke after the wake phrase
        return None

    def _final(self, text: str) -> AsrEvent:
        text = " ".join(t for t in text.split() if t != "[unk]")
        self.start()
        return AsrEvent("final", text)
