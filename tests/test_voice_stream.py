"""Streaming speech: a real-size piper voice cut into encoder and decoder, decoded in windows of frames."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from assistant.llm.backends import session_options
from assistant.setup.voice import StreamConfig, split_voice, stream_config_path
from assistant.voice.audio import WavSink
from assistant.voice.pipeline import VoicePipeline
from assistant.voice.spoken import MAX_FIRST_PIECE_WORDS, MAX_PIECE_WORDS, SentenceSplitter
from assistant.voice.tts import Voice, windows

# Streamed and whole-sentence audio agree to float32 rounding: each window holds the decoder's whole
# receptive field around what it emits, so only the order of additions inside a convolution differs.
TOLERANCE = 1e-6  # of full scale (1.0); one int16 step is 3e-5
SENTENCE = "The kitchen light is on now, and the living room is at twenty three degrees."


def run(path: Path, feed: dict) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def test_the_voice_is_real_size(medium_voice: Path) -> None:
    size = medium_voice.stat().st_size
    assert 60e6 < size < 66e6  # the published en_US-lessac-medium.onnx is 63.2 MB


def test_split_voice_encoder_flow_decoder_is_the_whole_voice(split_medium_voice: Path) -> None:
    stream = StreamConfig.load(split_medium_voice)
    assert stream is not None and stream.channels == 192 and stream.hop_length == 256
    # HiFi-GAN v2 as configured for medium voices reaches ±10.7 frames: conv_pre 3, the first
    # upsampling ~1, the 8x resblocks 45 samples (5.6 frames), the later stages under one frame.
    assert stream.pad == 11
    assert stream.flow_pad == 32  # 4 coupling layers of 4 convolutions of kernel 5: 4 × 4 × 2
    voice = Voice(split_medium_voice)
    ids = voice.voice.phonemes_to_ids(voice.voice.phonemize(SENTENCE)[0])
    feed = voice._encoder_feed(ids)
    feed["scales"] = np.array([0.0, 1.0, 0.0], np.float32)  # no noise: both runs draw the same
    whole = run(split_medium_voice, feed).reshape(-1)
    z_p = run(split_medium_voice.with_name(stream.encoder), feed)
    assert z_p.shape[:2] == (1, 192) and z_p.shape[2] * 256 == len(whole)
    mask = np.ones((1, 1, z_p.shape[2]), np.float32)
    z = run(split_medium_voice.with_name(stream.flow), {"z_p": z_p, "mask": mask})
    parts = run(split_medium_voice.with_name(stream.decoder), {"z": z}).reshape(-1)
    np.testing.assert_array_equal(parts, whole)


def test_streamed_windows_equal_the_whole_sentence(split_medium_voice: Path) -> None:
    voice = Voice(split_medium_voice)
    stream = voice.stream
    (z_p,) = voice.latents(SENTENCE)
    assert z_p.shape[2] > 3 * stream.window  # several windows, seams in the middle
    whole = run(split_medium_voice.with_name(stream.decoder), {"z": voice.flow_whole(z_p)}).reshape(-1)
    streamed = list(voice.decode(z_p))
    assert len(streamed) > 3
    joined = np.concatenate(streamed)
    assert len(joined) == len(whole)
    assert np.abs(joined - whole).max() <= TOLERANCE
    # With less context than the receptive field the seams do differ: the tolerance means something.
    # Three frames short, the seams are off by 1.0-1.6e-4 on random weights and noise (12 draws), so
    # the bound sits 10x under that; the full field is 50x inside the tolerance (1.9-2.2e-8).
    stream.pad -= 3
    assert np.abs(np.concatenate(list(voice.decode(z_p))) - whole).max() > 10 * TOLERANCE


def test_the_flow_runs_in_windows_ahead_of_the_decoder(split_medium_voice: Path) -> None:
    voice = Voice(split_medium_voice)
    (z_p,) = voice.latents(SENTENCE)
    flow, sizes = voice.flow, []

    class Recorded:
        def run(self, names, feed: dict) -> list[np.ndarray]:
            sizes.append(feed["z_p"].shape[2])
            return flow.run(names, feed)

    voice.flow = Recorded()
    audio = voice.decode(z_p)
    next(audio)
    s = voice.stream
    # The first audio needed only this much of the flow: its own window's and the second's, so that the
    # second waits for its decoder only; the flow over a window takes longer than the first window's
    # 0.14 s of sound plays, and made after it, the reply's first word stuttered.
    assert sizes == [s.first + s.chunk + s.pad + s.flow_pad]
    next(audio)
    assert len(sizes) == 1
    list(voice.decode(z_p))
    assert max(sizes) <= s.chunk + 2 * s.flow_pad and len(sizes) > 3


def test_fixed_size_windows_as_on_the_npu_equal_the_whole_sentence(split_medium_voice: Path) -> None:
    voice = Voice(split_medium_voice)
    stream = voice.stream
    (z_p,) = voice.latents(SENTENCE)
    whole = run(split_medium_voice.with_name(stream.decoder), {"z": voice.flow_whole(z_p)}).reshape(-1)
    sizes = []
    decoder = voice.decoder

    class FixedShape:  # the compiled window: anything else is refused, as pyaxengine does
        def run(self, feed: dict) -> list[np.ndarray]:
            sizes.append(feed["z"].shape[2])
            return decoder.run(None, feed)

    voice.decoder, voice.fixed = FixedShape(), True
    joined = np.concatenate(list(voice.decode(z_p)))
    assert set(sizes) == {stream.window}
    assert np.abs(joined - whole).max() <= TOLERANCE


@pytest.mark.parametrize("frames", [1, 20, 54, 55, 100, 333])
@pytest.mark.parametrize("fixed", [False, True])
def test_windows_cover_every_frame_once_with_context(frames: int, fixed: bool) -> None:
    chunk, pad = 32, 11
    emitted = []
    for low, high, start, end in windows(frames, chunk, pad, fixed, first=12):
        assert low <= start < end <= high
        assert start - low >= pad or low == 0  # context before, or the sentence's start
        assert high - end >= pad or high >= frames  # context after, or the sentence's end
        if fixed:
            assert high - low == chunk + 2 * pad
        elif start == 0:
            assert end == min(12, frames)  # the first window is short: the first audio comes sooner
        emitted += range(start, end)
    assert emitted == list(range(frames))


def test_first_audio_is_played_before_the_sentence_is_synthesized(split_medium_voice: Path, tmp_path: Path) -> None:
    voice = Voice(split_medium_voice)
    sink = WavSink(tmp_path / "out.wav", rate=voice.rate)
    finished: list[float] = []
    synthesize = voice.synthesize

    def timed(text: str) -> Iterator[np.ndarray]:
        yield from synthesize(text)
        finished.append(time.monotonic())

    voice.synthesize = timed

    def respond(text: str, cancel: threading.Event, turn: str) -> Iterator[str]:
        yield SENTENCE

    events: list[dict] = []
    pipeline = VoicePipeline(None, None, voice, sink, respond, on_event=events.append)
    pipeline.start_reply("hello", time.monotonic())
    pipeline.finish()
    sink.close()
    stream = voice.stream
    assert sink.chunks[0][1] == stream.first * stream.hop_length  # the first, short window's worth
    assert len(sink.chunks) > 3
    assert sink.chunks[0][0] < finished[0]  # heard while the rest of the sentence was still being made


def test_split_setup_step_refuses_a_voice_that_is_not_vits(test_voice: Path, tmp_path: Path) -> None:
    from assistant.setup.download import SetupError

    voice = tmp_path / test_voice.name
    voice.symlink_to(test_voice)
    Path(f"{voice}.json").symlink_to(Path(f"{test_voice}.json"))
    with pytest.raises(SetupError, match="not a piper"):
        split_voice(voice)
    assert not stream_config_path(voice).exists()
    assert Voice(voice).stream is None  # it speaks whole sentences


def test_the_pipeline_warms_the_voice_before_it_listens(split_medium_voice: Path, tmp_path: Path) -> None:
    voice, order = Voice(split_medium_voice), []
    synthesize = voice.synthesize

    def recorded(text: str) -> Iterator[np.ndarray]:
        order.append("synthesis")
        yield from synthesize(text)

    def frames() -> Iterator[np.ndarray]:
        order.append("listening")
        yield from ()

    voice.synthesize = recorded
    sink = WavSink(tmp_path / "out.wav")
    VoicePipeline(None, None, voice, sink, lambda text, cancel, turn: iter(())).run(frames())
    assert order == ["synthesis", "listening"]
    assert sink.chunks == []  # warming is silent


def test_stream_config_round_trips(split_medium_voice: Path) -> None:
    data = json.loads(stream_config_path(split_medium_voice).read_text())
    assert StreamConfig(**data).window == data["chunk"] + 2 * data["pad"]


def test_first_clause_is_spoken_first_in_english() -> None:
    splitter, pieces = SentenceSplitter(), []
    for piece in ["Sure, ", "the kitchen light is on,", " and the heating", " is at 21,000 degrees, ",
                  "which is a lot. Done, bye."]:  # fmt: skip
        pieces += splitter.push(piece)
    pieces += splitter.flush()
    assert pieces == [
        "Sure, the kitchen light is on,",  # "Sure," alone is too short to be worth a clause
        "and the heating is at 21,000 degrees, which is a lot.",  # then whole sentences
        "Done, bye.",
    ]


def test_first_clause_is_spoken_first_in_chinese() -> None:
    splitter, pieces = SentenceSplitter(), []
    for piece in ["好的，", "客厅的灯", "已经打开了，", "温度是23.5度；", "湿度、风速都正常。"]:
        pieces += splitter.push(piece)
    pieces += splitter.flush()
    assert pieces == ["好的，客厅的灯已经打开了，", "温度是23.5度；", "湿度、风速都正常。"]


def test_time_and_numbers_do_not_end_a_clause() -> None:
    splitter = SentenceSplitter()
    assert splitter.push("The meeting is at 10:30 with 1,500 people") == []
    assert splitter.push(": all of them, ") == ["The meeting is at 10:30 with 1,500 people:"]


def test_a_split_voice_missing_a_part_says_so(split_medium_voice: Path, tmp_path: Path) -> None:
    voice = split_medium_voice
    for name in (voice.name, f"{voice.name}.json", stream_config_path(voice).name):  # no encoder, no decoder
        (tmp_path / name).symlink_to(voice.with_name(name))
    with pytest.raises(FileNotFoundError, match="encoder.onnx: part of the split voice is missing; run `assistant"):
        Voice(tmp_path / voice.name)


def test_a_multi_speaker_voice_is_left_whole(medium_voice: Path, tmp_path: Path) -> None:
    from assistant.setup.download import SetupError

    voice = tmp_path / medium_voice.name
    voice.symlink_to(medium_voice)
    config = json.loads(Path(f"{medium_voice}.json").read_text())
    Path(f"{voice}.json").write_text(json.dumps({**config, "num_speakers": 4}))
    with pytest.raises(SetupError, match="multi-speaker"):
        split_voice(voice)
    assert not stream_config_path(voice).exists()


def test_text_without_sentence_ends_is_spoken_in_bounded_pieces() -> None:
    """The voice's encoder takes a piece whole, in memory that grows with its square: a reply that
    never ends a sentence must still reach it in pieces, cut at a clause or a space if it can."""
    words = [f"word{i}" for i in range(300)]
    text = " ".join(words[:50]) + ", " + " ".join(words[50:])
    splitter, pieces = SentenceSplitter(), []
    for i in range(0, len(text), 7):  # streamed as the model writes it
        pieces += splitter.push(text[i : i + 7])
    pieces += splitter.flush()
    assert max(len(p.split()) for p in pieces) <= MAX_PIECE_WORDS
    assert " ".join(pieces).replace(",", "").split() == words  # nothing lost, nothing cut inside a word
    assert any(p.endswith(",") for p in pieces)  # the clause was a cut

    chinese = "这是一个很长的句子没有标点" * 40
    pieces = SentenceSplitter().push(chinese)
    assert [len(p) for p in pieces[:2]] == [MAX_FIRST_PIECE_WORDS, MAX_PIECE_WORDS]
    assert all(len(p) == MAX_PIECE_WORDS for p in pieces[1:])


def test_a_reply_without_punctuation_is_heard_early() -> None:
    """The first piece waits for its words: one long sentence with no clause must not wait for 40 of them."""
    words = ("the light in the kitchen is on and the hall light is off and the heating is at twenty " * 8).split()
    splitter = SentenceSplitter()
    written = next(count for count, word in enumerate(words, 1) if splitter.push(word + " "))
    assert written <= MAX_FIRST_PIECE_WORDS + 1  # the piece is complete when the next word begins
    one_sentence = SentenceSplitter()
    assert one_sentence.push("The kitchen light is on now and the living room is at twenty three degrees. ") == [
        "The kitchen light is on now and the living room is at twenty three degrees."  # a sentence is still whole
    ]


def test_titles_and_latin_abbreviations_do_not_end_a_sentence() -> None:
    splitter, pieces = SentenceSplitter(), []
    for piece in ["Dr. Kim and Mrs. ", "Lee will come, e.g. ", "at noon. Then we go. ", "Ok."]:
        pieces += splitter.push(piece)
    assert pieces + splitter.flush() == ["Dr. Kim and Mrs. Lee will come,", "e.g. at noon.", "Then we go.", "Ok."]


def test_a_numbered_list_is_said_item_by_item_with_its_numbers() -> None:
    splitter, pieces = SentenceSplitter(), []
    for piece in ["Your shopping list:\n1", ". Milk\n", "2. Bread\n  3.", " Eggs, six of them. I have 2. Bye."]:
        pieces += splitter.push(piece)
    pieces += splitter.flush()
    assert pieces == ["Your shopping list:", "1. Milk", "2. Bread", "3. Eggs, six of them.", "I have 2.", "Bye."]
