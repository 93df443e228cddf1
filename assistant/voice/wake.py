"""The wake phrase: a vosk recogniser restricted to a grammar of the configured phrases.

With the grammar, anything else said comes out as [unk] (or as a fragment of a phrase), so a wake
needs an utterance that starts with a whole phrase, every word of it above the confidence
threshold; after a wake, further wakes are ignored for the refractory period.

The command may follow after a pause (the earcon invites it) or in the same breath ("hey computer,
turn on the light"): the last seconds of audio are kept, and a wake carries the audio from the
phrase's last word's end (vosk's word times) up to now, for the command's recogniser to start from.

vosk computes those times in 32-bit float from the samples since its recogniser started: after weeks
of listening they are off by tens to hundreds of milliseconds, and the command would start that far
from the phrase's end. The recogniser is replaced by a fresh one every hour of audio, between two
utterances, so its times stay exact.
"""

from __future__ import annotations

import collections
import json
import logging
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from assistant.config import ConfigError
from assistant.voice.audio import RATE

log = logging.getLogger(__name__)


@dataclass
class Wake:
    phrase: str
    at_seconds: float  # position in the audio stream where the phrase ended
    confidence: float
    after: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int16))  # audio since the phrase ended


UNHEARD_FIX = "choose words it knows (Chinese: the model's words, separated by spaces)"


def as_heard(phrase: str) -> str:
    """A phrase as the recogniser writes words: lower case, no punctuation ("Hey, Computer!"), an
    apostrophe only inside a word ("don't"). Letters, marks (Hindi's, Thai's vowel signs) and digits stay."""
    kept = "".join(c if unicodedata.category(c)[0] in "LMN" or c == "'" else " " for c in phrase.lower())
    return " ".join(word.strip("'") for word in kept.split() if word.strip("'"))


def unheard_phrase(model, phrases: list[str]) -> str | None:
    """Why one of `phrases` could never be heard by `model` (a vosk Model), or None.

    vosk leaves a word it does not know out of the grammar, with a warning in its own log (which the
    daemon silences), and the phrase never matches.
    """
    for phrase in map(as_heard, phrases):
        if unknown := [word for word in phrase.split() if model.vosk_model_find_word(word) < 0]:
            why = "is not a word the speech model knows, so that phrase could never be heard"
            return f"{unknown[0]!r} (in {phrase!r}) {why}"
    return None


class WakeDetector:
    def __init__(
        self,
        model,
        phrases: list[str],
        min_confidence: float = 0.6,
        refractory_seconds: float = 2.0,
        history_seconds: float = 15.0,
        fresh_after_seconds: float = 3600.0,
    ):
        self.phrases = [as_heard(p) for p in phrases]
        if problem := unheard_phrase(model, phrases):
            raise ConfigError(f"wake.phrases: {problem}; {UNHEARD_FIX}")
        if model.vosk_model_find_word("[unk]") < 0:
            log.warning("wake.model: the speech model has no [unk] word, so the wake recogniser takes any speech "
                        "for a wake phrase: the assistant may wake whenever someone talks, and at its own replies; "
                        "a model with [unk] (vosk's small models have it) hears only the phrases")  # fmt: skip
        self.model, self.grammar = model, json.dumps([*self.phrases, "[unk]"], ensure_ascii=False)  # read raw
        self.recognizer = self._fresh_recognizer()
        self.started = 0  # the stream's sample the recogniser started at: its word times count from there
        self.fresh_after = int(fresh_after_seconds * RATE)
        self.min_confidence = min_confidence
        self.refractory = refractory_seconds
        self.samples = 0  # fed so far
        self.last_wake = -1e9
        self.history: collections.deque[tuple[int, np.ndarray]] = collections.deque()  # (first sample, frame)
        self.history_samples = int(history_seconds * RATE)

    def feed(self, frame: np.ndarray) -> Wake | None:
        self.history.append((self.samples, frame))
        self.samples += len(frame)
        while self.samples - (self.history[0][0] + len(self.history[0][1])) >= self.history_samples:
            self.history.popleft()  # it ended longer ago than we keep
        # Only whole utterances count (vosk's endpoint after the phrase): a wake decided on a
        # partial result would hand the end of the phrase itself to the command recogniser.
        if not self.recognizer.AcceptWaveform(frame.astype("<i2").tobytes()):
            return None
        wake = self._check(json.loads(self.recognizer.Result()))
        self._renew_if_due()  # between two utterances: a phrase said as the hour ends is in the one just ended
        return wake

    def _fresh_recognizer(self):
        from vosk import KaldiRecognizer

        recognizer = KaldiRecognizer(self.model, RATE, self.grammar)
        recognizer.SetWords(True)
        return recognizer

    def _renew_if_due(self) -> None:
        if self.samples - self.started >= self.fresh_after:
            self.recognizer, self.started = self._fresh_recognizer(), self.samples
            log.debug("wake recogniser started afresh, its word times from now")

    def _check(self, result: dict) -> Wake | None:
        words = result.get("result", [])
        phrase = self.phrase_at_start(" ".join(w["word"] for w in words))
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
        ended = self.started + round(words[len(phrase.split()) - 1]["end"] * RATE)  # in the stream's samples
        log.info("wake phrase %r (confidence %.2f), %.2f s of audio after it", phrase, confidence,
                 (self.samples - ended) / RATE)  # fmt: skip
        return Wake(phrase, now, confidence, self.audio_since(ended))

    def phrase_at_start(self, text: str) -> str | None:
        """The configured phrase that `text` starts with, as whole words, if any."""
        text = " ".join(text.lower().split())
        return next((p for p in self.phrases if text == p or text.startswith(p + " ")), None)

    def after_phrase(self, text: str) -> str | None:
        """What `text` says after a configured phrase it starts with, or None if it starts with none.
        Words are compared without the spaces between them: a Chinese recogniser may cut 你好小智 as
        你好 小 智 where the phrase has 你好 小智."""
        words = text.split()
        for phrase in self.phrases:
            wanted, said = phrase.replace(" ", ""), ""
            for count, word in enumerate(words, start=1):
                said += word.lower()
                if said == wanted:
                    return " ".join(words[count:])
                if not wanted.startswith(said):
                    break
        return None

    def said_in(self, text: str) -> bool:
        """Whether `text` (a reply) says one of the phrases; compared without spaces, as in after_phrase."""
        said = as_heard(text).replace(" ", "")
        return any(phrase.replace(" ", "") in said for phrase in self.phrases)

    def audio_since(self, sample: int) -> np.ndarray:
        """The kept audio from stream position `sample` to now."""
        parts = [frame[max(sample - start, 0) :] for start, frame in self.history if start + len(frame) > sample]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def reset(self, refractory: bool = True) -> None:
        """Forget the utterance heard so far, and ignore wakes for the refractory period from now."""
        self.recognizer.Reset()
        self._renew_if_due()
        if refractory:
            self.last_wake = self.samples / RATE
