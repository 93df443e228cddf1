"""Audio in and out: 16 kHz mono int16 frames from a microphone, a WAV file or stdin; sinks to match.

Every source yields blocks of int16 samples at 16 kHz, whatever the device or file rate, resampled
with soxr (a proper band-limited resampler). Sinks take int16 at any rate and resample to theirs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
import sys
import threading
import time
import wave
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

log = logging.getLogger(__name__)

RATE = 16000  # what the speech recognisers take
BLOCK = 1600  # 100 ms frames
# What microphones take, in the order tried when one refuses the rate asked for (and its own default).
USUAL_RATES = (48000, 44100, 16000, 32000, 22050, 96000, 8000)
STALL_SECONDS = 2.0  # a microphone open but silent this long has stopped delivering audio
# A microphone that drops out again and again (a loose USB plug) is said at most this often, with a count: two
# lines a dropout filled the journal. It is steady again after this long without one.
DROPOUTS_SAID_EVERY = 60.0


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """int16 mono at from_rate → int16 mono at to_rate, a whole sound at once."""
    resampler = Resampler(to_rate)
    return np.concatenate([resampler(pcm, from_rate), resampler.flush()])


def _warn_if_narrowband(rate: int, source: str) -> None:
    """Audio below 16 kHz lacks the top of the band the speech models were trained with: at 8 kHz (a
    telephone, a Bluetooth headset) vosk hears neither the wake phrase nor a command, and nothing
    else would say why."""
    if rate < RATE:
        log.warning("%s: audio at %d Hz (sounds up to %d Hz only); the speech models are made for 16 kHz "
                    "and may hear little of it", source, rate, rate // 2)  # fmt: skip


def _mono(samples: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        return samples
    return samples.reshape(-1, channels).mean(axis=1).astype(np.int16)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV file as mono int16 and its rate; a clear error, naming the file, for anything else.

    Read chunk by chunk rather than with the wave module, which (before Python 3.12) refuses the
    extensible header that ffmpeg and sox write for more than two channels. A file cut short keeps
    its whole frames.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a WAV file")
    chunks, at = {}, 12
    while at + 8 <= len(data):
        name, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        chunks.setdefault(name, data[at + 8 : at + 8 + size])
        at += 8 + size + (size & 1)  # chunks are padded to an even length
    fmt, pcm = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or len(fmt) < 16 or pcm is None:
        raise ValueError(f"{path}: not a WAV file (no format or no data)")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real format is in its sub-format
        tag = int.from_bytes(fmt[24:26], "little")
    if tag != 1:
        raise ValueError(f"{path}: not a PCM WAV file (format {tag}); 16-bit PCM WAV is needed")
    if bits != 16:
        raise ValueError(f"{path}: {bits}-bit samples; 16-bit PCM WAV is needed")
    if channels < 1 or rate < 1:
        raise ValueError(f"{path}: a WAV header with {channels} channels at {rate} Hz")
    frame = 2 * channels
    samples = np.frombuffer(pcm[: len(pcm) // frame * frame], dtype="<i2")
    return _mono(samples, channels), rate


def wav_source(path: Path, block: int = BLOCK) -> Iterator[np.ndarray]:
    samples, rate = read_wav(path)
    _warn_if_narrowband(rate, str(path))
    samples = resample(samples, rate, RATE)
    for start in range(0, len(samples), block):
        yield samples[start : start + block]


def stdin_source(rate: int = RATE, block: int = BLOCK) -> Iterator[np.ndarray]:
    """Raw little-endian int16 mono PCM on standard input, at `rate`, resampled as one sound."""
    _warn_if_narrowband(rate, "standard input")
    size, to_rate = block * rate // RATE * 2, Resampler(RATE)
    while chunk := sys.stdin.buffer.read(size):
        if len(out := to_rate(np.frombuffer(chunk[: len(chunk) // 2 * 2], dtype="<i2"), rate)):
            yield out  # (the first is short by the resampler's delay)
    if len(end := to_rate.flush()):
        yield end


# PortAudio lists the devices once, when it starts: a microphone plugged in later (the USB one that
# appears after the service has started at boot, or one back under another card number) is found only
# by starting it again, which closes every stream it has open. The speaker holds this lock while it
# plays; the microphone restarts PortAudio under it, its own stream closed, and closes the speaker's
# between two sounds (it opens again for the next).
_portaudio = threading.Lock()
_speakers: weakref.WeakSet[SpeakerSink] = weakref.WeakSet()  # with their device open, which a restart closes


# A speaker that fails asks for it too; the microphone, which is open, restarts PortAudio between two of
# its blocks, at most every audio.reopen_max_seconds.
_rescan_wanted = threading.Event()
_rescanned = 0.0  # when PortAudio was last restarted


def _rescan(sounddevice) -> None:
    global _rescanned
    with _portaudio:
        for speaker in list(_speakers):  # between two sounds: it opens the device again for the next
            speaker._close()
        _rescan_wanted.clear()
        _rescanned = time.monotonic()
        if sounddevice._initialized:  # not if the last start failed
            sounddevice._terminate()
        sounddevice._initialize()


_fallbacks_said: set[tuple[str, str | int | None, int]] = set()  # a device's rate said in the log, once


def open_at_a_rate(
    sounddevice, kind: str, device: str | int | None, rate: int | None, open_stream: Callable
) -> tuple[object, int]:
    """`open_stream(rate)` for the device (`kind` "input" or "output") and its rate: at `rate` (else the device's
    default), or at the first of the usual rates it takes, said once in the log; an error naming the device and the
    rates tried if none."""
    default = int(sounddevice.query_devices(device, kind)["default_samplerate"])
    rates = list(dict.fromkeys([rate or default, default, *USUAL_RATES]))
    refused = None
    for tried in rates:
        try:
            stream = open_stream(tried)
        except Exception as e:  # PortAudio errors have no common base class
            refused = refused or e  # the first: the one at the rate wanted
            continue
        if tried != rates[0] and (kind, device, tried) not in _fallbacks_said:
            _fallbacks_said.add((kind, device, tried))
            name = "microphone" if kind == "input" else "speaker"
            log.warning("%s %s does not take %d Hz (%s): open at %d Hz instead", name, _named(device), rates[0],
                        f"audio.{kind}_rate" if rate else "its default", tried)  # fmt: skip
        return stream, tried
    raise OSError(f"{_named(device)} opens at none of {', '.join(map(str, rates))} Hz ({refused})")


def _named(device: str | int | None) -> str:
    return "default" if device is None else repr(device)


class MicSource:
    """The microphone through sounddevice; a device that disappears is reopened with backoff.

    An outage is said once in the log, and its end; audio dropped because the reader could not keep
    up (a busy CPU) is said too, at most once a minute: what was said then was not heard. `outages`
    counts them, for the reader to know that the audio before one and after it do not join.
    """

    def __init__(self, device: str | int | None = None, rate: int | None = None, max_backoff: float = 30.0):
        import sounddevice

        self.sounddevice = sounddevice
        self.device, self.rate, self.max_backoff = device, rate, max_backoff
        self.frames: queue.Queue[np.ndarray] = queue.Queue(maxsize=100)
        self.stopped = threading.Event()
        self.counting = threading.Lock()
        self.lost, self.overflows = 0, 0  # samples dropped, and the device's own overflows, not yet said
        self.lost_said = -1e9  # when they were last said
        self.opened = False
        self.outages = 0
        self.dropouts = Dropouts()

    def __iter__(self) -> Iterator[np.ndarray]:
        backoff, outage = 0.5, None  # outage: when the microphone was lost, while it is
        while not self.stopped.is_set():
            try:
                if outage is not None or _rescan_wanted.is_set():
                    _rescan(self.sounddevice)
                stream, rate = open_at_a_rate(self.sounddevice, "input", self.device, self.rate, self._stream)
                with stream:
                    heard = False  # an open that delivers nothing does not end the outage
                    to_rate = Resampler(RATE)  # the blocks resampled as one sound, or every edge would click
                    while (block := self._next()) is not None:
                        if not heard:
                            heard = True
                            self._say_open(rate, outage)
                            backoff, outage = 0.5, None
                        self._say_lost(rate)
                        self.dropouts.say_steady()
                        if len(block := to_rate(block, rate)):  # the first is short by the resampler's delay
                            yield block
                        if _rescan_wanted.is_set() and time.monotonic() - _rescanned >= self.max_backoff:
                            break  # for a speaker that is not found: close, restart PortAudio, open again
            except Exception as e:  # PortAudio errors have no common base class
                if outage is None:
                    outage = time.monotonic()
                    self.outages += 1
                    self.dropouts.dropped(e, self.max_backoff)
                else:
                    log.debug("microphone: %s; trying again in %.1f s", e, backoff)
                    self.dropouts.say_count()
                if self.stopped.wait(backoff):
                    return
                backoff = min(backoff * 2, self.max_backoff)

    def _stream(self, rate: int):
        return self.sounddevice.InputStream(device=self.device, channels=1, samplerate=rate, dtype="int16",
                                            blocksize=BLOCK * rate // RATE, callback=self._callback)  # fmt: skip

    def _next(self) -> np.ndarray | None:
        """The next block from the device; None once stopped (at once, stalled or not)."""
        for _ in range(round(STALL_SECONDS / 0.25)):
            if self.stopped.is_set():
                return None
            with contextlib.suppress(queue.Empty):
                return self.frames.get(timeout=0.25)
        raise OSError("the microphone stopped delivering audio")

    def _callback(self, indata, frames, when, status) -> None:
        try:  # the consumer is stuck: drop rather than grow without bound
            self.frames.put_nowait(indata[:, 0].copy())
        except queue.Full:
            with self.counting:
                self.lost += frames
        if status.input_overflow:  # the device's own buffer overran before this block
            with self.counting:
                self.overflows += 1

    def _say_open(self, rate: int, outage: float | None) -> None:
        name = self.device or "default"
        if outage is not None:
            self.dropouts.back()
            # Not each time a loose plug comes back; but after a long outage, whichever it was.
            if self.dropouts.said_this_one or time.monotonic() - outage >= DROPOUTS_SAID_EVERY:
                log.info("microphone back after %.0f s: %s at %d Hz", time.monotonic() - outage, name, rate)
        elif self.opened:
            return  # opened again for a speaker that was not found
        else:
            log.info("microphone open: %s at %d Hz", name, rate)
        self.opened = True
        _warn_if_narrowband(rate, "microphone")

    def _say_lost(self, rate: int) -> None:
        if not (self.lost or self.overflows) or time.monotonic() - self.lost_said < 60:
            return
        with self.counting:
            lost, overflows, self.lost, self.overflows = self.lost, self.overflows, 0, 0
        self.lost_said = time.monotonic()
        log.warning("microphone: %.1f s of audio lost (and %d overruns of the device): the assistant could not "
                    "keep up, the CPU is too busy; what was said then was not heard",
                    lost / rate, overflows)  # fmt: skip


@dataclass
class Dropouts:
    """The microphone's dropouts, as the log says them: the first, and when it is back; then, while it keeps
    dropping out (a loose USB plug), a count at most every DROPOUTS_SAID_EVERY seconds; and when it has been
    steady that long again."""

    run: int = 0  # dropouts since the microphone was last steady
    unsaid: int = 0  # of them, not said yet
    said_at: float = -1e9  # when the log last said one or a count
    back_at: float | None = None  # when it last came back, while it is not steady
    said_this_one: bool = False  # the last dropout was said in the log (and so is its end)

    def dropped(self, error: Exception, max_backoff: float) -> None:
        self.said_this_one = self.run == 0  # the first of a run
        self.run, self.back_at = self.run + 1, None
        if self.said_this_one:
            self.said_at = time.monotonic()
            log.warning("microphone: %s; trying again until it works (every %g s at most)", error, max_backoff)
        else:
            self.unsaid += 1
            log.debug("microphone: %s; dropped out again", error)
            self.say_count()

    def say_count(self) -> None:
        if self.unsaid and time.monotonic() - self.said_at >= DROPOUTS_SAID_EVERY:
            log.warning("the microphone dropped out %d time%s in the last %.0f s (a loose plug or cable?); it is "
                        "opened again each time", self.unsaid, "s" * (self.unsaid != 1),
                        time.monotonic() - self.said_at)  # fmt: skip
            self.unsaid, self.said_at = 0, time.monotonic()

    def back(self) -> None:
        self.back_at = time.monotonic()

    def say_steady(self) -> None:
        """Called with each block heard."""
        if self.back_at is None or time.monotonic() - self.back_at < DROPOUTS_SAID_EVERY:
            return
        self.say_count()
        if self.run > 1:
            log.info("microphone steady again: no dropout for %.0f s, after %d in a row",
                     time.monotonic() - self.back_at, self.run)  # fmt: skip
        self.run, self.unsaid, self.back_at = 0, 0, None


class Resampler:
    """The chunks of a sound (a streaming voice's windows, a microphone's blocks) resampled to `to_rate` as
    one: resampled each on its own, their edges ring and every seam clicks, and the lengths are rounded at
    every chunk. The output lags the input by the resampler's delay (1,300 samples from 16 to 22.05 kHz),
    which `flush` gives at the end; a chunk at another rate is another sound, after the last one's end."""

    def __init__(self, to_rate: int):
        self.to_rate, self.from_rate, self.stream = to_rate, None, None

    def __call__(self, pcm: np.ndarray, rate: int) -> np.ndarray:
        pcm = pcm.astype(np.int16, copy=False)
        if rate == self.from_rate:
            return self._chunk(pcm) if self.stream else pcm
        end = self.flush()
        self.from_rate = rate
        if rate != self.to_rate:
            # In floats: soxr dithers what it writes as int16, and silence would come out as noise.
            self.stream = soxr.ResampleStream(rate, self.to_rate, 1, dtype="float32")
            pcm = self._chunk(pcm)
        return np.concatenate([end, pcm]) if len(end) else pcm

    def _chunk(self, pcm: np.ndarray, last: bool = False) -> np.ndarray:
        out = self.stream.resample_chunk(pcm.astype(np.float32) / 32768.0, last=last)
        return np.clip(np.round(out * 32768.0), -32768, 32767).astype(np.int16)

    def flush(self) -> np.ndarray:
        """The end of the sound, which the resampler holds back until it knows what follows."""
        end = self._chunk(np.zeros(0, np.int16), last=True) if self.stream else np.zeros(0, np.int16)
        self.from_rate, self.stream = None, None
        return end


class WavSink:
    """Writes what is played to a WAV file at `rate`, sounds that follow each other resampled as one (as the
    speaker plays them); a stop drops what the resampler still holds of the sound cut, as the speaker's does."""

    def __init__(self, path: Path, rate: int = 22050):
        self.rate = rate
        self.file = wave.open(str(path), "wb")  # noqa: SIM115 (closed by close())
        self.file.setnchannels(1)
        self.file.setsampwidth(2)
        self.file.setframerate(rate)
        self.resample = Resampler(rate)
        self.writing = threading.Lock()  # a barge-in's stop and chime come from another thread than the reply
        self.chunks: list[tuple[float, int]] = []  # (time written, samples), for tests and latency

    def play(self, pcm: np.ndarray, rate: int) -> None:
        with self.writing:
            self._write(self.resample(pcm, rate))

    def _write(self, out: np.ndarray) -> None:
        self.file.writeframes(out.astype("<i2").tobytes())
        self.chunks.append((time.monotonic(), len(out)))

    def end_sound(self) -> None:
        with self.writing:
            if len(end := self.resample.flush()):
                self._write(end)

    def stop(self) -> None:
        with self.writing:
            self.resample.flush()

    def close(self) -> None:
        with self.writing:
            try:
                if len(end := self.resample.flush()):
                    self._write(end)
            finally:
                self.file.close()


class NullSink:
    def play(self, pcm: np.ndarray, rate: int) -> None:
        pass

    def end_sound(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class SpeakerSink:
    """The speaker through sounddevice; `stop` cuts playback at once (barge-in).

    Sounds that follow each other (a sentence's windows, the sentences of a reply) go through one open
    stream, resampled as one sound; the device is let go after IDLE seconds without sound, or when it
    fails, and opened again for the next sound: a speaker missing at the start or gone later loses what
    it would have played, and the assistant goes on.
    """

    IDLE = 1.0

    def __init__(self, device: str | int | None = None, rate: int | None = None):
        import sounddevice

        self.sounddevice = sounddevice
        self.device, self.rate = device, rate
        self.interrupted = threading.Event()
        # One sound at a time: the wake's chime, played while a reply's sound is being cut, waits for
        # it to stop (a block at most) rather than clear the stop and play over it.
        self.playing = threading.Lock()
        self.failing = False  # said once in the log until the speaker plays again
        self.stream, self.resample = None, None  # while the device is open
        self.idle: threading.Timer | None = None  # lets it go
        self.played = 0.0  # when the last sound was handed to it

    def play(self, pcm: np.ndarray, rate: int) -> None:
        with self.playing, _portaudio:
            self._play(pcm, rate)
            self._let_go_later()

    def _let_go_later(self) -> None:
        self.played = time.monotonic()
        if self.idle is not None:
            self.idle.cancel()
        if self.stream is not None:
            self.idle = threading.Timer(self.IDLE, self._let_go)
            self.idle.daemon = True
            self.idle.start()

    def ready(self) -> bool:
        """Whether a sound played now would be heard: the device open, or opened now. A sound is told to the
        clients (`audio`) only then, not while the speaker fails."""
        with self.playing, _portaudio:
            opening = self.stream is None
            try:
                self._open()
            except Exception as e:  # PortAudio errors have no common base class
                self._failed(e)
                return False
            if opening:
                self._let_go_later()  # should nothing be played after all
            return True

    def _open(self) -> None:
        if self.stream is None:
            self.stream, out_rate = open_at_a_rate(self.sounddevice, "output", self.device, self.rate, self._stream)
            self.stream.start()
            self.resample = Resampler(out_rate)
            _speakers.add(self)

    def _play(self, pcm: np.ndarray, rate: int) -> None:
        self.interrupted.clear()
        try:
            self._open()
            self._write(self.resample(pcm, rate))
            if self.failing:
                log.info("speaker: playing again")
                _rescan_wanted.clear()  # found: the microphone need not be closed to look for it
            self.failing = False
        except Exception as e:  # PortAudio errors have no common base class
            self._failed(e)

    def _write(self, out: np.ndarray) -> None:
        block = self.resample.to_rate // 10
        for start in range(0, len(out), block):
            if self.interrupted.is_set():
                self._close(cut=True)  # what the device still holds is not heard either
                return
            self.stream.write(out[start : start + block].reshape(-1, 1))

    def _failed(self, error: Exception) -> None:
        self._close(cut=True)
        if not self.failing:
            log.warning("speaker: %s; the assistant goes on without sound", error)
        self.failing = True
        _rescan_wanted.set()  # it may be there, plugged in after PortAudio listed the devices

    def end_sound(self) -> None:
        """Nothing follows the sound played last at once (the chime, an announcement, a reply's piece): the end
        the resampler holds back (its delay, 58 ms from 16 to 44.1 kHz) plays now, not when the device is let go
        a second later, after a silence."""
        with self.playing, _portaudio:
            if self.stream is None:  # cut, failed or let go: nothing is held
                return
            try:
                self._write(self.resample.flush())
            except Exception as e:  # PortAudio errors have no common base class
                self._failed(e)

    def _stream(self, rate: int):
        return self.sounddevice.OutputStream(device=self.device, samplerate=rate, channels=1, dtype="int16")

    def _let_go(self) -> None:
        with self.playing, _portaudio:
            if time.monotonic() - self.played >= self.IDLE:  # not played since (a timer cancelled too late)
                self._close()

    def _close(self, cut: bool = False) -> None:
        """Let the device go (the caller holds _portaudio): after what it holds has played, or at once (`cut`)."""
        stream, self.stream = self.stream, None
        _speakers.discard(self)
        if stream is None:
            return
        with contextlib.suppress(Exception):  # a device that is gone fails this too
            if not cut and len(end := self.resample.flush()):
                stream.write(end.reshape(-1, 1))
            stream.abort() if cut else stream.stop()
            stream.close()

    def stop(self) -> None:
        """Silence at once: a sound being played ends within a block, and what the device and the resampler
        still hold of the last one (the reply cut between two of its windows) is dropped, not played after."""
        self.interrupted.set()
        with self.playing, _portaudio:
            self._close(cut=True)

    def close(self) -> None:
        self.interrupted.set()
        with self.playing, _portaudio:
            self._close()


def list_devices() -> str:
    import sounddevice

    return str(sounddevice.query_devices()) or "no audio devices found"
