"""Speech out: each piece of a reply (assistant.voice.spoken cuts and cleans it) spoken by a piper voice
that streams too (windows of frames) once `assistant setup` has split it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from assistant.config import ConfigError
from assistant.voice.spoken import said_in_parts, speakable


def windows(
    frames: int, chunk: int, pad: int, fixed: bool, first: int | None = None
) -> Iterator[tuple[int, int, int, int]]:
    """Decoder windows over a sentence's frames: (window start, window end, emit start, emit end).

    Every emitted frame has `pad` frames of context each side inside its window, or the sentence's
    own edge, so the joined audio is the whole-sentence audio. `fixed`: every window is exactly
    chunk + 2 * pad frames (the NPU's compiled shape), placed inside the sentence when it is that
    long; otherwise windows are as short as the context allows, and the first emits only `first`
    frames, so that the first audio comes sooner (the next window is ready long before it has played).
    """
    size, start = chunk + 2 * pad, 0
    while start < frames:
        if fixed:
            low = min(max(start - pad, 0), max(frames - size, 0))
            high = low + size
            end = high - pad if high < frames else frames
        else:
            low, end = max(start - pad, 0), min(start + (first if start == 0 and first else chunk), frames)
            high = min(end + pad, frames)
        yield low, high, start, end
        start = end


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


class _Cuttable:
    """A voice's onnxruntime session, whose run under way the voice's `cut` ends."""

    def __init__(self, session, voice: Voice):
        self.session, self.voice = session, voice

    def run(self, names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(names, feed, self.voice.run_options)


class Voice:
    """A piper voice (.onnx with its .onnx.json beside it), whole or split for streaming.

    When `assistant setup` has split the voice (`<voice>.stream.json`), a sentence is encoded once,
    then its flow and decoder run in windows of frames, each window's audio played as soon as it is
    ready; the decoder runs on the NPU when the board build exists and pyaxengine is installed.
    Otherwise piper synthesises whole sentences.
    """

    def __init__(
        self,
        path: Path,
        speaker: int | None = None,
        length_scale: float = 1.0,
        decoder: str = "auto",
        provider: str = "AxEngineExecutionProvider",
    ):
        import onnxruntime
        from piper import PiperVoice, SynthesisConfig
        from piper.config import PiperConfig

        from assistant.llm.backends import axengine_available, session_options
        from assistant.setup.voice import StreamConfig

        path = Path(path)
        if not path.is_file() or not Path(f"{path}.json").is_file():
            raise FileNotFoundError(
                f"{path}: piper voice (and its .onnx.json) not found; install it with `assistant setup`"
            )
        config = PiperConfig.from_dict(json.loads(Path(f"{path}.json").read_text(encoding="utf-8")))
        if speaker is not None and not 0 <= speaker < max(config.num_speakers, 1):
            # The voice would index past its speaker table on the first sentence, in the middle of a reply.
            raise ConfigError(
                f"tts.speaker: {speaker} is not a speaker of {path.name}, which has "
                f"{config.num_speakers} (0 to {max(config.num_speakers, 1) - 1}); leave it empty for the voice's own"
            )
        self.stream = StreamConfig.load(path)
        for name in [self.stream.encoder, self.stream.flow, self.stream.decoder] if self.stream else []:
            if not path.with_name(name).is_file():
                missing = path.with_name(name)
                raise FileNotFoundError(f"{missing}: part of the split voice is missing; run `assistant setup` again")

        self.run_options = onnxruntime.RunOptions()  # of the synthesis under way: `cut` ends it

        def session(file: Path):  # built here rather than with PiperVoice.load: it shares the LLM's threads
            cpu = ["CPUExecutionProvider"]
            return _Cuttable(onnxruntime.InferenceSession(str(file), session_options(), providers=cpu), self)

        self.voice = PiperVoice(session=session(path.with_name(self.stream.encoder) if self.stream else path),
                                config=config)  # fmt: skip
        self.config = SynthesisConfig(speaker_id=speaker, length_scale=length_scale)
        self.rate = config.sample_rate
        # What it can say: "en" from espeak's "en-us"; Mandarin voices are espeak's "cmn" or pinyin.
        espeak = config.espeak_voice.split("-")[0]
        self.language = "zh" if espeak in ("cmn", "zh") or config.phoneme_type.value == "pinyin" else espeak
        self.decoder, self.fixed = None, False
        if self.stream:
            self.flow = session(path.with_name(self.stream.flow))
            axmodel = path.with_name(self.stream.axmodel) if self.stream.axmodel else None
            if decoder == "axengine" or (decoder == "auto" and axmodel and axmodel.is_file() and axengine_available()):
                from assistant.llm.backends import AxRunner

                if axmodel is None:
                    raise FileNotFoundError(f"{path}: no decoder built for the NPU; run `assistant setup --target ...`")
                self.decoder, self.fixed = AxRunner(axmodel, provider), True
            else:
                self.decoder = session(path.with_name(self.stream.decoder))
        self.backend = "axengine" if self.fixed else "onnxruntime"

    def latents(self, text: str) -> Iterator[np.ndarray]:
        """z_p [1, C, frames], the flow's input, of each sentence piper finds in `text` (the split voice's encoder)."""
        for phonemes in self.voice.phonemize(text):
            if phonemes:
                ids = self.voice.phonemes_to_ids(phonemes)
                yield self.voice.session.run(None, self._encoder_feed(ids))[0]

    def flow_whole(self, z_p: np.ndarray) -> np.ndarray:
        """z [1, C, frames], the decoder's input, of a whole sentence at once."""
        return self.flow.run(None, {"z_p": z_p, "mask": np.ones((1, 1, z_p.shape[2]), np.float32)})[0]

    def _encoder_feed(self, ids: list[int]) -> dict[str, np.ndarray]:
        cfg, voice_cfg = self.config, self.voice.config

        def chosen(value: float | None, default: float) -> float:
            return default if value is None else value

        scales = [chosen(cfg.noise_scale, voice_cfg.noise_scale), chosen(cfg.length_scale, voice_cfg.length_scale),
                  chosen(cfg.noise_w_scale, voice_cfg.noise_w_scale)]  # fmt: skip
        feed = {
            "input": np.array([ids], dtype=np.int64),  # [1, n]
            "input_lengths": np.array([len(ids)], dtype=np.int64),  # [1]
            "scales": np.array(scales, dtype=np.float32),  # [3]: noise, length, noise_w
        }
        if voice_cfg.num_speakers > 1:
            sid = voice_cfg.default_speaker_id if cfg.speaker_id is None else cfg.speaker_id
            feed["sid"] = np.array([sid], dtype=np.int64)
        return feed

    def decode(self, z_p: np.ndarray) -> Iterator[np.ndarray]:
        """Float audio of z_p [1, C, frames], a decoder window at a time.

        The flow runs in windows too, each just ahead of the decoder's needs: the first audio waits
        for the flow over its first window and context only, not over the whole sentence. A short
        first window's flow covers the second decoder window too: made after the first window's
        sound has begun, the flow over a window took longer than that sound (0.14 s) and the speech
        stopped there; the first sound comes no later for it.
        """
        assert self.stream is not None
        s, hop, frames = self.stream, self.stream.hop_length, z_p.shape[2]
        z, done = np.zeros_like(z_p), 0  # z of frames [0, done) computed
        first_flow = (s.first + s.chunk if s.first else s.chunk) + s.pad
        flow_windows = windows(frames, s.chunk, s.flow_pad, False, first_flow)
        for low, high, start, end in windows(frames, s.chunk, s.pad, self.fixed, s.first):
            while done < min(high, frames):
                f_low, f_high, f_start, f_end = next(flow_windows)
                mask = np.ones((1, 1, f_high - f_low), np.float32)
                out = self.flow.run(None, {"z_p": z_p[:, :, f_low:f_high], "mask": mask})[0]
                z[:, :, f_start:f_end] = out[:, :, f_start - f_low : f_end - f_low]
                done = f_end
            part = z[:, :, low:high]
            if self.fixed:
                feed = np.zeros((1, z.shape[1], s.window), np.float32)  # the compiled shape
                feed[:, :, : part.shape[2]] = part
                audio = self.decoder.run({"z": feed})[0]
            else:
                audio = self.decoder.run(None, {"z": part})[0]
            yield audio.reshape(-1)[(start - low) * hop : (end - low) * hop]

    def synthesize(self, text: str) -> Iterator[np.ndarray]:
        """int16 audio at self.rate: a chunk per decoder window (split voice) or per sentence (whole)."""
        run = self.run_options
        try:
            for part in said_in_parts(speakable(text, self.language)):
                yield from self._synthesize(part)
        except Exception:
            if not run.terminate:  # not ended by `cut`, which a barge-in wants: a real failure
                raise

    def _synthesize(self, text: str) -> Iterator[np.ndarray]:
        if self.stream is None:
            for chunk in self.voice.synthesize(text, self.config):
                yield chunk.audio_int16_array
            return
        for z in self.latents(text):
            for audio in self.decode(z):
                yield _to_int16(audio)

    def cut(self) -> None:
        """End the synthesis under way at once, between two of its operators (a barge-in): a voice that is not
        split takes a piece whole, 40 words in 1-3 s on a PC, and the next command's answer would wait for it.
        """
        import onnxruntime

        self.run_options.terminate = True
        self.run_options = onnxruntime.RunOptions()  # for the syntheses that come next

    def warm_up(self) -> None:
        """One synthesis thrown away: the first real reply does not pay for onnxruntime's first runs."""
        for _ in self.synthesize("Hello."):
            pass
