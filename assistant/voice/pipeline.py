"""The voice loop: frames → wake phrase → utterance → turn → sentences → speech, with barge-in.

One thread reads audio and never waits on the model, so the wake phrase is heard even while a
reply is being spoken (barge-in: playback and generation stop at once, and a new turn starts).
A turn runs in its own thread and hands finished pieces (the first clause, then sentences) to a
speaking thread, so the first words are heard while the model is still writing the rest.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from assistant.skills.intents import reply_language
from assistant.turn import SORRY, asks
from assistant.voice.asr import AsrEvent, Transcriber
from assistant.voice.audio import BLOCK, RATE
from assistant.voice.spoken import SentenceSplitter
from assistant.voice.tts import Voice
from assistant.voice.wake import WakeDetector

log = logging.getLogger(__name__)

# A turn: the user's words, a cancel event and the turn's id (voice-1, voice-2: the id on the pipeline's own
# events of it, for the daemon to put on its events) in, pieces of reply text out. Called as the turn starts, on
# the listening thread, in the order the turns were heard; iterated on the turn's own thread.
Respond = Callable[[str, threading.Event, str], Iterator[str]]
EARCON_RATE = 16000
# How long after the speaker has said the wake phrase (a reply "to wake me, say hey computer") the microphone may
# still deliver it: the device's latency and the wake recogniser's endpoint after it.
ECHO_SECONDS = 1.5


def _tone(frequency: float, seconds: float) -> np.ndarray:
    """A sine at EARCON_RATE, faded in and out (a Hann window), peak 1."""
    t = np.arange(int(seconds * EARCON_RATE)) / EARCON_RATE
    return np.sin(2 * np.pi * frequency * t) * np.hanning(len(t))


def earcon() -> np.ndarray:
    """A short rising two-tone chime."""
    return (np.concatenate([_tone(880.0, 0.08), _tone(1320.0, 0.08)]) * 8000).astype(np.int16)


def alert() -> np.ndarray:
    """Three short beeps before an announcement: something rings, listen (a timer, an alarm)."""
    beep = _tone(1000.0, 0.12) * 9000
    return np.concatenate([beep, np.zeros(int(0.08 * EARCON_RATE))] * 3).astype(np.int16)


def _scripts(text: str) -> str:
    """The kinds of letters in `text`, as Unicode names them (CJK, HANGUL, LATIN), for the log: what a voice
    that said nothing was given, without the words themselves."""
    kinds = {unicodedata.name(c, "?").split()[0] for c in text if c.isalpha()}
    return ", ".join(sorted(kinds)) or "no letters"


def ahead(items: Iterator, lead: int = 8) -> Iterator:
    """`items` (a reply's audio), made on a thread of their own up to `lead` ahead of the one being played.

    A streaming voice makes a window (0.37 s of sound) in 40-200 ms, and the start of a sentence (its
    encoding and first two windows) in 0.3-0.6 s: made only once what comes before has played, the
    speech would stop for that long at every window and sentence. Leaving early waits for the item
    being made (a barge-in cuts its synthesis at once)."""
    ready: queue.Queue = queue.Queue(maxsize=lead)
    done, left = object(), threading.Event()

    def make() -> None:
        try:
            for item in items:
                ready.put(item)
                if left.is_set():
                    break
        except Exception as e:  # raised where the chunks are played, as without the thread
            ready.put(e)
        finally:
            ready.put(done)

    threading.Thread(target=make, name="synthesis", daemon=True).start()
    try:
        while (item := ready.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        left.set()
        while item is not done:  # the maker may wait to hand over a chunk: take it, until it has ended
            item = ready.get()


@dataclass
class Reply:
    """One turn in flight: its threads, its cancel switch and its timing."""

    request: str = ""  # the voice turn's id, on each of its events
    cancel: threading.Event = field(default_factory=threading.Event)
    speaking: threading.Event = field(default_factory=threading.Event)  # its first audio (or piece) has been played
    threads: list[threading.Thread] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)
    text: str = ""
    # Its events are told under this lock, the last (reply_done) once: nothing of it comes after. Reentrant: a
    # listener may cut the reply as it hears of its audio.
    telling: threading.RLock = field(default_factory=threading.RLock)
    done: bool = False
    voiced: bool = False  # the voice made sound of it, heard or not (a speaker that fails loses it)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)


class VoicePipeline:
    def __init__(
        self,
        wake: WakeDetector,
        transcriber: Transcriber,
        voice: Voice,
        sink,
        respond: Respond,
        on_event: Callable[[dict], None] = lambda event: None,
        play_earcon: bool = True,
        follow_up_seconds: float = 4.0,
        sentence_silence: float = 0.2,
    ):
        self.wake, self.transcriber, self.voice, self.sink = wake, transcriber, voice, sink
        self.sentence_silence = sentence_silence
        self.respond, self.on_event = respond, on_event
        self.play_earcon, self.follow_up_seconds = play_earcon, follow_up_seconds
        self.reply: Reply | None = None
        self.listening_until: float | None = None  # follow-up: hear without the wake phrase until then
        self.position = 0.0  # seconds of audio read so far
        self.hearing = False  # a command is being transcribed
        # One thing on the speaker at a time: a reply's piece or an announcement (a timer ringing).
        self.speaker = threading.Lock()
        self.hushed = threading.Event()  # a wake or "stop" cuts an announcement too
        self.cut: list[Reply] = []  # replies stopped whose threads may not have ended yet
        self.turns = itertools.count(1)
        self.saying_phrase_until = 0.0  # monotonic: the speaker is saying the wake phrase, as part of a reply

    def emit(self, kind: str, **data) -> None:
        self.on_event({"type": kind, **data})

    def run(self, frames: Iterable[np.ndarray]) -> None:
        """Process a stream of 16 kHz frames; returns when it ends and the last reply is spoken."""
        self.voice.warm_up()  # before listening: the first reply must not pay for onnxruntime's first runs
        self.hearing, self.position = False, 0.0
        outages = getattr(frames, "outages", 0)
        for frame in frames:
            if getattr(frames, "outages", 0) != outages:  # the microphone was lost since the last frame
                outages = frames.outages
                self._audio_lost()
            self.position += len(frame) / RATE
            wake = self.wake.feed(frame)
            if wake is None or self.hearing:  # a command being heard is not a wake phrase, whatever it sounds like
                self._hear(frame)
                continue
            if time.monotonic() < self.saying_phrase_until:
                log.info("wake phrase heard as the reply says it: taken for the assistant's own voice")
                self._hear(frame)
                continue
            if self.reply is not None and self.reply.alive():
                self.emit("barge_in", request=self.reply.request)
            self.stop_reply(chime=self.play_earcon)
            self.emit("wake", phrase=wake.phrase, confidence=wake.confidence, at=self.position)
            self.transcriber.start()
            self.hearing = True
            # Words said right after the phrase, in the same breath, are already behind us: hear them first.
            for start in range(0, len(wake.after), BLOCK):
                self._hear(wake.after[start : start + BLOCK])
        # Audio that ends in the middle of a command (a file) still has it answered and the reply spoken; a
        # microphone that ends because the assistant is stopping has neither.
        stopped = getattr(frames, "stopped", None)
        if stopped and stopped.is_set():
            self.stop_reply()  # the reply's pieces already written are not spoken first: the stop waits for them
        elif self.hearing:
            self._heard(self.transcriber.end())
        self.finish()

    def _audio_lost(self) -> None:
        """The microphone came back after an outage (seconds, or hours): what was heard before it does not
        go on with what comes now. A command cut by it is dropped, not completed by the next words said near
        the microphone (the television's, an hour later) and answered without a wake phrase."""
        self.wake.reset(refractory=False)  # nor is half a wake phrase before it and half after one
        self.listening_until = None
        if self.hearing:
            log.info("the microphone was lost while a command was being heard: it is not answered")
            self.hearing = False
            self.transcriber.start()
            self.emit("final", text="", at=self.position)

    def _hear(self, frame: np.ndarray) -> None:
        replying = self.reply is not None and self.reply.alive()
        if not self.hearing and not replying and self.listening_until is not None:
            if self.position <= self.listening_until:
                self.transcriber.start(wait=self.listening_until - self.position)
                self.hearing = True
            self.listening_until = None
        if not self.hearing:
            return
        event = self.transcriber.feed(frame)
        if event is None:
            return
        if event.kind == "partial":
            self.emit("partial", text=event.text)
            return
        self._heard(event)

    def _heard(self, event: AsrEvent) -> None:
        """The end of an utterance: a command to answer, "stop", the wake phrase again, or nothing."""
        self.hearing = False
        # The wake recogniser heard the command too, as one utterance it has not finished: forget
        # it, and the rest of a command cut at its longest, or their end could match the phrase
        # and wake (and answer) a second time. After nothing at all, the phrase said again (the
        # user trying once more) is heard at once.
        self.wake.reset(refractory=bool(event.text))
        final = time.monotonic()
        # The wake phrase said again after a pause ("hey computer … hey computer, lights on") is
        # heard by the command's recogniser: it is not part of the command.
        text = event.text
        while (rest := self.wake.after_phrase(text)) is not None:
            text = rest
        if event.text and not text:  # only the phrase again: the command is still to come
            self.transcriber.start()
            self.hearing = True
            return
        self.emit("final", text=text, at=self.position)
        if not text:
            return  # nothing was said: back to listening, quietly
        if text.strip().lower() in ("stop", "停", "停止"):
            self.stop_reply()  # silence at once, not once the turn has answered
        # "stop" is a turn too: its skill stops what rings on (an alarm rings again every 30 s until it is told
        # to stop), as it does for `assistant say stop`.
        self.start_reply(text, final - event.silence, final)

    def start_reply(self, text: str, speech_ended: float, final: float | None = None) -> None:
        """Answer `text`; times are from `speech_ended` (the VAD's end of speech), `final` is the ASR's result."""
        reply = Reply(
            f"voice-{next(self.turns)}", times={"end_of_speech": speech_ended, "asr_final": final or speech_ended}
        )
        pieces = self.respond(text, reply.cancel, reply.request)
        sentences: queue.Queue[str | None] = queue.Queue()
        reply.threads = [
            threading.Thread(target=self._generate, args=(text, pieces, reply, sentences), name="turn", daemon=True),
            threading.Thread(target=self._speak, args=(reply, sentences), name="speak", daemon=True),
        ]
        self.reply = reply
        for thread in reply.threads:
            thread.start()

    def _generate(self, text: str, pieces: Iterator[str], reply: Reply, sentences: queue.Queue) -> None:
        splitter = SentenceSplitter()
        try:
            for piece in pieces:
                reply.times.setdefault("first_token", time.monotonic())
                reply.text += piece
                for sentence in splitter.push(piece):
                    first = "first_clause" not in reply.times
                    reply.times.setdefault("first_clause", time.monotonic())
                    sentences.put(sentence)
                    if first:
                        # The rest of the reply is not needed before the first clause has been heard: leave
                        # the CPU to its synthesis until its first audio plays.
                        reply.speaking.wait(timeout=1.0)
                if reply.cancel.is_set():
                    return
            for sentence in splitter.flush():
                sentences.put(sentence)
        except Exception:
            log.exception("turn failed")
            sentences.put(SORRY[reply_language(text)])
        finally:
            sentences.put(None)

    def _speak(self, reply: Reply, sentences: queue.Queue) -> None:
        """Play the reply's pieces as they come, each made while the one before it plays (ahead)."""
        silent = threading.Event()  # the output failed: nothing more of this reply can be said
        holding = False  # the speaker, from a piece's first audio to its end
        try:
            for sentence, audio in ahead(self._synthesized(reply, sentences, silent)):
                if audio is not None and not (reply.cancel.is_set() or silent.is_set()):
                    if not holding:
                        holding = self.speaker.acquire()  # between pieces an announcement may go first
                    self._play(reply, sentence, audio, silent)
                    continue
                if holding:  # the end of the piece (or of what will be said of it)
                    if audio is None and not (reply.cancel.is_set() or silent.is_set()):
                        if self.sentence_silence > 0:
                            self._play(reply, sentence, np.zeros(round(self.sentence_silence * self.voice.rate),
                                                                 np.int16), silent, breath=True)  # fmt: skip
                        self._end_sound()
                    self.speaker.release()
                    holding = False
                reply.speaking.set()  # a first piece with nothing to say ("---", an emoji) holds the rest back
        except Exception:  # the voice failed: the rest of this reply is lost, not the loop
            log.exception("speaking the reply failed")
            while sentences.get() is not None:  # what the turn still writes
                pass
        finally:
            if holding:
                self.speaker.release()
            reply.speaking.set()
        if reply.text.strip() and not reply.voiced and not (reply.cancel.is_set() or silent.is_set()):
            # Only the chime was heard: a reply in a language the voice does not speak, or only emoji. The
            # reply's words (a note read back, what the user asked) are not for the journal above debug.
            log.warning("the voice (it speaks %s) could say nothing of the reply (%d characters, %s)",
                        self.voice.language, len(reply.text), _scripts(reply.text))  # fmt: skip
            log.debug("the reply it could not say: %r", reply.text[:200])
        self._done(reply)
        # A reply that asks something is followed by listening without the wake phrase.
        if not reply.cancel.is_set() and asks(reply.text):
            self.listening_until = self.position + self.follow_up_seconds

    def _synthesized(
        self, reply: Reply, sentences: queue.Queue, silent: threading.Event
    ) -> Iterator[tuple[str, np.ndarray | None]]:
        """(piece, audio) of each piece of the reply as the turn writes it, then (piece, None) at its end;
        no more audio once the reply is cancelled or nothing more can be said."""
        while (sentence := sentences.get()) is not None:
            if not (reply.cancel.is_set() or silent.is_set()):
                for audio in self.voice.synthesize(sentence):
                    yield sentence, audio
                    if reply.cancel.is_set() or silent.is_set():
                        break
            yield sentence, None

    def _done(self, reply: Reply) -> None:
        """The reply's last event, once: when it has been spoken, or as it is cut (before what cuts it starts)."""
        with reply.telling:
            if not reply.done:
                reply.done = True
                self.emit("reply_done", request=reply.request, text=reply.text, cancelled=reply.cancel.is_set())

    def _play(
        self, reply: Reply, sentence: str, audio: np.ndarray, silent: threading.Event, breath: bool = False
    ) -> None:
        if not breath:
            reply.voiced = True
            # A speaker that fails (unplugged) loses the sound: it is not told to the clients as heard.
            heard = (ready := getattr(self.sink, "ready", None)) is None or ready()
            with reply.telling:
                if reply.done:  # cut meanwhile, and said to be done: nothing more of it is told, or played
                    return
                reply.speaking.set()  # the turn need not wait for a first audio that will not play
                if not heard:
                    return
                if "first_audio" not in reply.times:
                    reply.times["first_audio"] = time.monotonic()
                    self._latency(reply)
                self.emit("audio", request=reply.request, text=sentence, samples=len(audio), rate=self.voice.rate)
        if reply.cancel.is_set():  # cut while the clients were told (they may be slow): the sink's stop is over
            return
        if not breath and self.wake is not None and self.wake.said_in(sentence):
            # The microphone hears it too: until then a wake is the reply's own voice, not someone cutting it.
            self.saying_phrase_until = time.monotonic() + len(audio) / self.voice.rate + ECHO_SECONDS
        try:
            self.sink.play(audio, self.voice.rate)
        except Exception:  # the output failed: the rest of this reply is lost, not the loop
            log.exception("speaking the reply failed")
            silent.set()
        if reply.cancel.is_set() or silent.is_set():  # the speaker stopped short: only what it said may echo
            self.saying_phrase_until = min(self.saying_phrase_until, time.monotonic() + ECHO_SECONDS)

    def announce(self, text: str) -> None:
        """Speak outside a turn (a timer ringing): between a reply's pieces, never over them."""
        self.hushed.clear()  # before waiting for the speaker: a wake or "stop" meanwhile cuts it too
        with self.speaker:
            self.sink.play(alert(), EARCON_RATE)
            for audio in self.voice.synthesize(text):
                if self.hushed.is_set():
                    return
                self.sink.play(audio, self.voice.rate)
            self._end_sound()

    def _end_sound(self) -> None:
        """Nothing follows what was played last at once: the sink plays what it holds back of its end (its
        resampler's delay) now, not a second later. Sinks that hold nothing back need not have the method."""
        if (end_sound := getattr(self.sink, "end_sound", None)) is not None:
            end_sound()

    def _latency(self, reply: Reply) -> None:
        t = reply.times
        start = t["end_of_speech"]
        stages = ("asr_final", "first_token", "first_clause", "first_audio")
        breakdown = {k: round((t[k] - start) * 1000) for k in stages if k in t}
        self.emit("latency", request=reply.request, **{f"{k}_ms": v for k, v in breakdown.items()})
        log.info("latency from end of speech: %s", ", ".join(f"{k} {v} ms" for k, v in breakdown.items()))

    def stop_reply(self, chime: bool = False) -> None:
        """Barge-in or "stop": silence now (an announcement too), stop generating and synthesizing. `chime`
        (a wake): the earcon.

        The reply's threads are not waited for: a skill under way (up to skills.timeout_seconds) or a turn
        waiting for another to end does not see the cancel, and the audio read meanwhile would be heard
        only then, or lost. Cancelled, they say nothing more, and the next reply's pieces wait for the
        speaker as announcements do."""
        self.hushed.set()
        if self.reply is not None:
            self.reply.cancel.set()
            self.reply.speaking.set()  # a turn waiting for its first audio goes on, to see the cancel
            self.cut = [reply for reply in self.cut if reply.alive() and reply is not self.reply] + [self.reply]
            self._done(self.reply)
        self.sink.stop()
        self.voice.cut()
        if chime:
            self.sink.play(earcon(), EARCON_RATE)
            self._end_sound()  # the whole chime now: at 44.1 kHz a third of it came a second later

    def finish(self) -> None:
        for reply in [*self.cut, self.reply]:
            for thread in reply.threads if reply is not None else []:
                thread.join()
        self.cut.clear()
