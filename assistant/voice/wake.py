"""The wake phrase: a vosk recogniser restricted to a grammar of the configured phrases.

With the grammar, anything else said comes out as [unk] (or as a fragment of a phrase), so a wake
needs an utterance that starts with a whole phrase, every word of it above the confidence
threshold; after a wake, further wakes are ignored for the refractory period. The command is
expected after a short pause (the earcon invites it).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from assistant.voice.audio import RATE

log = logging.getLogger(__name__)


@dataclass
class Wake:
    phrase: str
    at_seconds: float  # position in the audio stream where the phrase ended
    confidence: float


class WakeDetector:
    def __init__(self, model, phrases: list[str], min_confidence: float = 0.6, refractory_seconds: float = 2.0):
        from vosk import KaldiRecognizer

        self.phrases = [" ".join(p.lower().split()) for p in phrases]
        grammar = json.dumps([*self.phrases, "[unk]"], ensure_ascii=False)  # vosk reads the words raw
        self.recognizer = KaldiRecognizer(model, RATE, grammar)
        self.recognizer.SetWords(True)
        self.min_confidence = min_confidence
        self.refractory = refractory_seconds
        self.samples = 0
        self.last_wake = -1e9

    def feed(self, frame: np.ndarray) -> Wake | None:
        self.samples += len(frame)
        # Only whole utterances count (vosk's endpoint after the phrase): a wake decided on a
        # partial result would hand the end of the phrase itself to the command recogniser.
        if not self.recognizer.AcceptWaveform(frame.astype("<i2").tobytes()):
            return None
        return self._check(json.loads(self.recognizer.Result()))

    def _check(self, result: dict) -> Wake | None:
        words = result.get("result", [])
        text = " ".join(w["word"] for w in words)
        phrase = next((p for p in self.phrases if text == p or text.startswith(p + " ")), None)
        if phrase is None:
            return None
        confidence = min(w.get("conf", 0.0) for w in words[: len(phrase.split())])
        now = self.samples / RATE
        if confidence < self.min_confidence:
            log.debug("wake phrase %r below confidence (%.2f)", phrase, confidence)
            return None
        if now - self.last_wake < self.refractory:
            return None
        self.last_wake = now
        log.info("wake phrase %r (confidence %.2f)", phrase, confidence)
        return Wake(phrase, now, confidence)

    def reset(self) -> None:
        self.recognizer.Reset()
