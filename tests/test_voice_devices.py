"""The microphone and the speaker through the real PortAudio and ALSA, without sound hardware.

ALSA's `file` plugin over its `null` device is a capture device that reads a raw file (and a playback
device that writes one), defined in the `.asoundrc` of a home folder. A device "plugged in" is that file
written while the assistant runs. The null device keeps no time: capture delivers as fast as it is read,
which is also a microphone whose reader cannot keep up.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def asoundrc(home: Path, name: str = "!default", played: Path | None = None) -> str:
    """The text of an .asoundrc whose `name` device captures a recorded tone and appends what it plays
    to `played`."""
    tone = home / "mic.raw"
    (np.sin(np.arange(16000 * 60) / 5) * 3000).astype("<i2").tofile(tone)
    out = f"|cat >> {played}" if played else "/dev/null"
    return textwrap.dedent(f"""
        pcm.{name} {{
            type file
            slave.pcm "null"
            file "{out}"
            infile "{tone}"
            format "raw"
        }}
    """)


def run_child(home: Path, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`code` in a Python whose ALSA reads `home`'s .asoundrc; its log on stderr."""
    prelude = "import logging, sys, threading, time\nlogging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("WARNING:assistant.voice.audio")]


def test_a_microphone_plugged_in_after_the_start_is_heard(tmp_path: Path) -> None:
    """The board boots, the service starts, the USB microphone appears a moment later."""
    (tmp_path / "later").write_text(asoundrc(tmp_path))
    result = run_child(tmp_path, f"""
        from assistant.voice.audio import MicSource
        mic = MicSource(None, 16000, max_backoff=0.2)
        import shutil
        threading.Timer(1.0, shutil.copy, ("{tmp_path / "later"}", "{tmp_path / ".asoundrc"}")).start()
        frames = iter(mic)
        print(len(next(frames)))
        mic.stopped.set()
    """, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == 1600
    assert "microphone back after" in result.stderr


def test_a_missing_microphone_is_said_once_in_the_log(tmp_path: Path) -> None:
    result = run_child(
        tmp_path,
        """
        from assistant.voice.audio import MicSource
        mic = MicSource("usb mic", 16000, max_backoff=0.1)
        threading.Timer(3.0, mic.stopped.set).start()
        print(sum(1 for _ in mic))
    """,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0"]
    tries = result.stderr.count("DEBUG:assistant.voice.audio:microphone:")
    assert tries >= 10, result.stderr[-2000:]  # it keeps trying, quietly
    (said,) = warnings(result.stderr)
    assert "'usb mic'" in said


def test_audio_lost_because_the_assistant_cannot_keep_up_is_said(tmp_path: Path) -> None:
    """On a busy CPU (the model writing a reply) the reader falls behind and the device's audio is dropped:
    the user's words then are not heard, and the log says why."""
    (tmp_path / ".asoundrc").write_text(asoundrc(tmp_path))
    result = run_child(
        tmp_path,
        """
        from assistant.voice.audio import MicSource
        mic = MicSource(None, 16000)
        for count, frame in enumerate(mic):
            time.sleep(0.05)  # the device delivers far faster than this reader reads
            if count == 40:
                mic.stopped.set()
    """,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (said,) = warnings(result.stderr)  # once, not for every frame lost
    assert "of audio lost" in said and "could not keep up" in said, said


def test_the_speaker_plays_a_sentence_as_one_sound_at_its_own_rate(tmp_path: Path, split_medium_voice: Path) -> None:
    """A streaming voice's sentence comes in windows at 22.05 kHz; a speaker at 48 kHz: resampled window by
    window, each window's edges ring and every seam clicks (and the device is opened again each time)."""
    (tmp_path / ".asoundrc").write_text(asoundrc(tmp_path, played=tmp_path / "played.raw"))
    result = run_child(tmp_path, f"""
        import numpy as np
        from assistant.voice.audio import SpeakerSink, resample
        from assistant.voice.tts import Voice
        voice = Voice("{split_medium_voice}")
        chunks = list(voice.synthesize("The kitchen light is on and the hall light is off."))
        assert len(chunks) > 3 and voice.rate == 22050
        sink = SpeakerSink(None, 48000)
        for chunk in chunks:
            sink.play(chunk, voice.rate)
        sink.close()
        resample(np.concatenate(chunks), voice.rate, 48000).tofile("{tmp_path / "whole.raw"}")
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    played, whole = (np.fromfile(tmp_path / name, "<i2").astype(int) for name in ("played.raw", "whole.raw"))
    assert len(played) == len(whole)
    assert np.abs(played - whole).max() <= 3  # int16 steps


def test_a_reply_played_by_a_speaker_that_is_there_is_told_to_the_clients(tmp_path: Path, test_voice: Path) -> None:
    """The speaker is opened before a piece is told (`audio`), so that sound it cannot play is not told: one that
    is there is told every piece, and plays it."""
    (tmp_path / ".asoundrc").write_text(asoundrc(tmp_path, played=tmp_path / "played.raw"))
    result = run_child(tmp_path, f"""
        from assistant.voice.audio import SpeakerSink
        from assistant.voice.pipeline import VoicePipeline
        from assistant.voice.tts import Voice
        events = []
        sink = SpeakerSink(None, 16000)
        pipeline = VoicePipeline(None, None, Voice("{test_voice}"), sink,
                                 lambda text, cancel, turn: iter(["The light is on. ", "The heating is on."]),
                                 on_event=events.append)
        pipeline.start_reply("hello", time.monotonic())
        pipeline.finish()
        sink.close()
        print(" ".join(e["text"] for e in events if e["type"] == "audio"))
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "The light is on." in result.stdout and "The heating is on." in result.stdout, result.stderr[-2000:]
    assert (tmp_path / "played.raw").stat().st_size > 16000  # half a second at least


class UsbMicrophone:
    """sounddevice with a USB microphone that can be unplugged (`present`) and stall (`delivering`): an ALSA
    device cannot be made to stop delivering here, so this one stands in for PortAudio."""

    _initialized = 1

    def __init__(self) -> None:
        self.present, self.delivering = True, True

    def query_devices(self, device, kind: str) -> dict:
        if not self.present:
            raise ValueError(f"No input device matching {device!r}")
        return {"default_samplerate": 16000}

    def InputStream(self, callback, blocksize: int, **settings):  # noqa: N802 (sounddevice's name)
        import contextlib
        import types

        if not self.present:
            raise OSError("Error opening InputStream: Device unavailable")

        @contextlib.contextmanager
        def stream():
            closed = threading.Event()

            def deliver() -> None:
                while not closed.wait(0.1):
                    if self.delivering and self.present:
                        callback(
                            np.ones((blocksize, 1), np.int16),
                            blocksize,
                            None,
                            types.SimpleNamespace(input_overflow=False),
                        )

            thread = threading.Thread(target=deliver, daemon=True)
            thread.start()
            try:
                yield
            finally:
                closed.set()
                thread.join()

        return stream()

    def _terminate(self) -> None:
        pass

    def _initialize(self) -> None:
        pass


def test_a_microphone_unplugged_and_stalled_is_said_once_and_heard_again(caplog: pytest.LogCaptureFixture) -> None:
    from assistant.voice.audio import MicSource

    device = UsbMicrophone()
    mic = MicSource("usb", max_backoff=1.0)
    mic.sounddevice = device
    # seconds from the start; a stall is noticed after 2 s without audio; at the end it stalls as it is stopped
    script = [(1.0, "unplugged"), (3.0, "stalled"), (6.0, "working"), (7.5, "stalled"), (8.0, "stop")]
    start = time.monotonic()

    def follow() -> None:
        for at, state in script:
            time.sleep(max(0.0, start + at - time.monotonic()))
            device.present, device.delivering = state != "unplugged", state == "working"
            if state == "stop":
                mic.stopped.set()

    threading.Thread(target=follow, daemon=True).start()
    with caplog.at_level(logging.DEBUG, "assistant.voice.audio"):
        heard, outages = zip(*((time.monotonic() - start, mic.outages) for _ in mic), strict=True)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert [message.split(":")[0] for message in said] == ["microphone open", "microphone", "microphone back after 4 s"]
    assert (
        said[1]
        == "microphone: the microphone stopped delivering audio; trying again until it works (every 1 s at most)"
    )
    assert heard[0] < 0.5 and any(6.0 < at < 7.5 for at in heard)  # back within the backoff
    # what comes after the outage is told apart from what came before (a command cut by it is not completed)
    assert {n for at, n in zip(heard, outages, strict=True) if at < 1.0} == {0}
    assert {n for at, n in zip(heard, outages, strict=True) if at > 6.0} == {1}
    assert time.monotonic() - start < 8.5  # a stop does not wait for the stalled device


def test_a_microphone_that_keeps_dropping_out_is_said_with_a_count_not_each_time(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loose USB plug: the microphone drops out and comes back every second. Said each time (a warning and
    an info line a cycle), that fills the journal; said once, then with a count at most every "minute" (here
    2 s), and when it is steady again, it does not. Back after a long outage is said, whichever it was."""
    from assistant.voice import audio
    from assistant.voice.audio import MicSource

    monkeypatch.setattr(audio, "STALL_SECONDS", 0.3, raising=False)  # noticed sooner than 2 s, for a short test
    monkeypatch.setattr(audio, "DROPOUTS_SAID_EVERY", 2.0, raising=False)
    device = UsbMicrophone()
    mic = MicSource("usb", max_backoff=0.5)
    mic.sounddevice = device
    start = time.monotonic()

    def loose_plug() -> None:
        while time.monotonic() - start < 5.0:
            device.delivering = True
            time.sleep(0.3)
            device.delivering = False
            time.sleep(0.5)
        time.sleep(2.5)  # out for longer than the "minute": its end is said
        device.delivering = True
        time.sleep(3.0)  # steady for longer than the "minute"
        mic.stopped.set()

    threading.Thread(target=loose_plug, daemon=True).start()
    with caplog.at_level(logging.DEBUG, "assistant.voice.audio"):
        for _ in mic:
            pass
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    counts = [int(found[1]) for m in said if (found := re.match(r"the microphone dropped out (\d+) times? in", m))]
    assert mic.outages >= 4, said
    assert said[:3] == [
        "microphone open: usb at 16000 Hz",
        "microphone: the microphone stopped delivering audio; trying again until it works (every 0.5 s at most)",
        said[2],
    ]
    assert said[2].startswith("microphone back after")
    assert 1 <= len(counts) <= 4 and len(said) == 3 + len(counts) + 2, said  # not two lines a dropout
    assert [m for m in said if m.startswith("microphone back after")][1:] == [said[-2]], said  # the long one
    assert 1 + sum(counts) == mic.outages  # every dropout counted
    assert said[-1].startswith("microphone steady again") and f"after {mic.outages} in a row" in said[-1], said


def test_a_speaker_plugged_in_after_the_start_plays_while_the_microphone_works(tmp_path: Path) -> None:
    """The USB speaker appears after the service has started; the microphone was there all along (one
    that keeps time, UsbMicrophone: ALSA's would flood the test; PortAudio's new listing is the real one)."""
    (tmp_path / "later").write_text(asoundrc(tmp_path, "kitchenspeaker", played=tmp_path / "played.raw"))
    result = run_child(tmp_path, f"""
        import shutil
        import numpy as np
        import sounddevice
        from assistant.voice.audio import MicSource, SpeakerSink
        from tests.test_voice_devices import UsbMicrophone
        mic = MicSource("usb", 16000, max_backoff=0.5)
        mic.sounddevice = UsbMicrophone()
        mic.sounddevice._terminate, mic.sounddevice._initialize = sounddevice._terminate, sounddevice._initialize
        sink = SpeakerSink("kitchenspeaker", 16000)
        heard = []
        threading.Thread(target=lambda: heard.extend(1 for _ in mic), daemon=True).start()
        sink.play(np.ones(1600, np.int16), 16000)  # not there yet
        shutil.copy("{tmp_path / "later"}", "{tmp_path / ".asoundrc"}")
        for _ in range(20):
            time.sleep(0.25)
            sink.play(np.full(1600, 7, np.int16), 16000)
        sink.close()
        mic.stopped.set()
        print(len(heard))
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) > 30  # the microphone went on (at 10 blocks a second)
    played = np.fromfile(tmp_path / "played.raw", "<i2") if (tmp_path / "played.raw").exists() else np.zeros(0)
    assert len(played) >= 1600 and set(played) == {7}, result.stderr[-2000:]
    assert result.stderr.count("WARNING:assistant.voice.audio:speaker") == 1
    assert "INFO:assistant.voice.audio:speaker: playing again" in result.stderr
    assert result.stderr.count("INFO:assistant.voice.audio:microphone open") == 1  # not when opened again


def test_a_speaker_that_fails_once_and_plays_again_leaves_the_microphone_open(tmp_path: Path) -> None:
    """A speaker fails mid-reply (here its recording stops taking audio) and plays again at the next sound: the
    microphone is not closed afterwards to look for a speaker that is already found (audio lost, and the reply's
    device closed under it)."""
    (tmp_path / ".asoundrc").write_text(textwrap.dedent(f"""
        pcm.flaky {{
            type file
            slave.pcm "null"
            file "|head -c 20000 > {tmp_path / "played.raw"}"
            format "raw"
        }}
    """))  # fmt: skip
    result = run_child(tmp_path, """
        import numpy as np
        import sounddevice
        from assistant.voice import audio
        from assistant.voice.audio import MicSource, SpeakerSink
        from tests.test_voice_devices import UsbMicrophone
        device = UsbMicrophone()
        device._terminate, device._initialize = sounddevice._terminate, sounddevice._initialize
        opened, open_stream = [], device.InputStream
        device.InputStream = lambda **settings: opened.append(1) or open_stream(**settings)
        mic = MicSource("usb", 16000, max_backoff=1.0)
        mic.sounddevice = device
        blocks = iter(mic)
        next(blocks)
        audio._rescanned = time.monotonic()  # PortAudio restarted just now: the next restart is 1 s away
        sink = SpeakerSink("flaky", 16000)
        failed = False
        for _ in range(40):  # until it has failed and played again
            sink.play(np.full(1600, 7, np.int16), 16000)
            failed = failed or sink.failing
            if failed and not sink.failing:
                break
        assert failed and not sink.failing
        for count, _ in enumerate(blocks):  # 2 s
            if count == 20:
                mic.stopped.set()
        print(len(opened))
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "INFO:assistant.voice.audio:speaker: playing again" in result.stderr
    assert int(result.stdout) == 1, result.stderr[-2000:]


def test_a_sine_through_the_microphone_and_the_speaker_has_no_seams(tmp_path: Path) -> None:
    """A 48 kHz microphone and a 48 kHz speaker: the 16 kHz side is resampled block by block. Resampled each on
    its own, every block's edges ring (a click ten times a second); resampled as one sound, the blocks join into
    what the whole recording resampled at once gives, at the edges as in the middle."""
    home = tmp_path
    sine = (np.sin(2 * np.pi * 440 * np.arange(48000 * 10) / 48000) * 8000).astype("<i2")
    sine.tofile(home / "mic48.raw")
    (home / ".asoundrc").write_text(textwrap.dedent(f"""
        pcm.!default {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{home / "mic48.raw"}"
            format "raw"
        }}
    """) + asoundrc(home, "speaker", played=home / "played.raw"))  # fmt: skip
    result = run_child(home, f"""
        import numpy as np
        from assistant.voice.audio import MicSource, SpeakerSink
        mic = MicSource(None, 48000)
        heard = []
        for block in mic:
            heard.append(block)
            if len(heard) == 30:  # the first 30 blocks: fewer than the queue holds, so none is dropped
                mic.stopped.set()
        np.concatenate(heard).astype("<i2").tofile("{home / "heard.raw"}")
        sink = SpeakerSink("speaker", 48000)
        tone = (np.sin(2 * np.pi * 440 * np.arange(16000 * 3) / 16000) * 8000).astype(np.int16)
        for start in range(0, len(tone), 1600):
            sink.play(tone[start : start + 1600], 16000)
        sink.close()
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    from assistant.voice.audio import resample

    heard = np.fromfile(home / "heard.raw", "<i2").astype(int)
    whole = resample(sine[: 30 * 4800], 48000, 16000).astype(int)
    assert len(heard) > 28 * 1600
    assert np.abs(heard - whole[: len(heard)]).max() <= 3, np.abs(heard - whole[: len(heard)]).max()
    played = np.fromfile(home / "played.raw", "<i2").astype(int)
    tone = (np.sin(2 * np.pi * 440 * np.arange(16000 * 3) / 16000) * 8000).astype(np.int16)
    assert np.abs(played - resample(tone, 16000, 48000).astype(int)).max() <= 3


def only_48k(home: Path, name: str = "!default") -> str:
    """An .asoundrc whose `name` capture device takes 48 kHz only (a converter it cannot load for any other rate),
    as many USB and I2S microphones do, reading a recorded tone."""
    tone = home / "mic48.raw"
    (np.sin(2 * np.pi * 440 * np.arange(48000 * 30) / 48000) * 8000).astype("<i2").tofile(tone)
    return textwrap.dedent(f"""
        pcm.{name} {{
            type file
            slave.pcm {{ type plug; slave {{ pcm "null"; rate 48000 }} rate_converter "none-installed" }}
            file "/dev/null"
            infile "{tone}"
            format "raw"
        }}
    """)


def test_a_microphone_that_refuses_the_configured_rate_opens_at_one_it_takes(tmp_path: Path) -> None:
    """audio.input_rate 16000 (what the speech models take) and a microphone that only takes 48 kHz: it is
    heard, at 48 kHz resampled, and the log says once which rate it took."""
    (tmp_path / ".asoundrc").write_text(only_48k(tmp_path))
    result = run_child(tmp_path, """
        from assistant.voice.audio import MicSource
        mic = MicSource(None, 16000, max_backoff=0.2)
        for count, block in enumerate(mic):
            if count == 20:
                mic.stopped.set()
        print(count)
    """, timeout=15)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == 20
    # (and audio lost: the null device delivers as fast as it is read)
    (said,) = [line for line in warnings(result.stderr) if "does not take" in line]
    assert said.endswith(":microphone default does not take 16000 Hz (audio.input_rate): open at 48000 Hz instead")
    assert "INFO:assistant.voice.audio:microphone open: default at 48000 Hz" in result.stderr


def test_a_microphone_that_opens_at_no_rate_is_named_with_the_rates_tried(tmp_path: Path) -> None:
    """The device is listed but opens at no rate (here its recording is gone once PortAudio has listed it): one
    line names it, the rates tried and why."""
    (tmp_path / ".asoundrc").write_text(only_48k(tmp_path, "usbmic"))
    result = run_child(tmp_path, f"""
        import os
        from assistant.voice.audio import MicSource
        mic = MicSource("usbmic", 16000, max_backoff=0.2)
        os.remove("{tmp_path / "mic48.raw"}")
        threading.Timer(1.0, mic.stopped.set).start()
        print(sum(1 for _ in mic))
    """, timeout=30)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["0"]
    (said,) = warnings(result.stderr)
    assert said.startswith(
        "WARNING:assistant.voice.audio:microphone: 'usbmic' opens at none of 16000, 48000, 44100, 32000, 22050, "
        "96000, 8000 Hz ("
    ), said
    assert said.endswith("); trying again until it works (every 0.2 s at most)"), said


def test_a_speaker_that_refuses_the_configured_rate_plays_at_one_it_takes(tmp_path: Path) -> None:
    """audio.output_rate 16000 and a speaker that only takes 48 kHz: it plays, resampled, said once in the log."""
    rc = only_48k(tmp_path, "speaker48").replace('file "/dev/null"', f'file "|cat >> {tmp_path / "played.raw"}"')
    (tmp_path / ".asoundrc").write_text(rc)
    result = run_child(tmp_path, """
        import numpy as np
        from assistant.voice.audio import SpeakerSink
        sink = SpeakerSink("speaker48", 16000)
        for _ in range(3):
            sink.play(np.full(1600, 1000, np.int16), 16000)
            sink.close()  # and opened again for the next sound
    """)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    played = np.fromfile(tmp_path / "played.raw", "<i2") if (tmp_path / "played.raw").exists() else np.zeros(0)
    assert len(played) >= 3 * 4500, result.stderr[-2000:]  # 0.1 s three times, at 48 kHz
    (said,) = warnings(result.stderr)
    assert said.endswith(":speaker 'speaker48' does not take 16000 Hz (audio.output_rate): open at 48000 Hz instead")
