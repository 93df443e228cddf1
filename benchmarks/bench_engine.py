"""Engine benchmark on the exact Qwen2-0.5B-Instruct shape (random weights, int8 host export).

    python benchmarks/bench_engine.py [--work /tmp/assistant-bench] [--threads 2]

Reports decode tokens/s, prefill of a 300-token prompt, time to first token of a 15-token user
turn after a ~400-token system prompt with and without the prompt cache, the engine's own
overhead per token (sessions replaced by ones that return at once), and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.llm.engine import Engine  # noqa: E402
from assistant.llm.export import export_model  # noqa: E402
from assistant.llm.sampling import Sampler  # noqa: E402
from benchmarks.qwen2_shape import write_random_checkpoint  # noqa: E402
from tests.tiny_model import make_tokenizer  # noqa: E402

DAEMON_SAMPLER = dict(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.05, seed=0)


def prepare(work: Path) -> Path:
    hf, model = work / "hf", work / "qwen2-0.5b-random-int8"
    if not (hf / "model.safetensors").exists():
        print("writing a random Qwen2-0.5B-shaped checkpoint ...", file=sys.stderr)
        write_random_checkpoint(hf)
        make_tokenizer(hf)
    if not (model / "manifest.yaml").exists():
        print("exporting int8 ONNX layers ...", file=sys.stderr)
        start = time.perf_counter()
        export_model(hf, model, weights="int8", progress=lambda message: None)
        print(f"export took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return model


def tokens(n: int, seed: int) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(0, 150_000, n)]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model: Path, threads: int) -> dict:
    engine = Engine(model, threads=threads)
    greedy = Sampler()
    results: dict = {}

    prompt = tokens(300, 1)
    results["prefill_300_s"] = median_time(lambda: (engine.truncate(0), engine.prefill(prompt)), 3)
    results["prefill_tokens_per_s"] = 300 / results["prefill_300_s"]

    engine.truncate(0)
    generated = list(engine.generate(tokens(20, 2), greedy, 128))
    results["decode_tokens_per_s"] = engine.stats.decode_tokens_per_second
    results["decode_tokens"] = len(generated)

    system, user = tokens(400, 3), tokens(15, 4)

    def first_token(cached: bool) -> None:
        engine.prompt_cache = None
        engine.truncate(0)
        if cached:
            engine.cache_prompt(system)
            engine.prefill(system + tokens(30, 5))  # an earlier conversation moved on
            start = time.perf_counter()
        else:
            start = time.perf_counter()
        next(engine.generate(system + user, Sampler(**DAEMON_SAMPLER), 1))
        return time.perf_counter() - start

    results["ttft_cached_s"] = statistics.median(first_token(True) for _ in range(5))
    results["ttft_uncached_s"] = statistics.median(first_token(False) for _ in range(3))
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    results["overhead_ms_per_token_greedy"], results["overhead_ms_per_token_sampling"] = overhead(engine)
    return results


def overhead(engine: Engine) -> tuple[float, float]:
    """ms per decode token spent outside the sessions: sessions that return preallocated outputs."""
    m = engine.manifest
    prompt = tokens(400, 6)
    engine.prompt_cache = None
    engine.truncate(0)
    engine.prefill(prompt)  # with the real sessions; only decoding is timed

    class Instant:
        def __init__(self, outputs: list[np.ndarray]):
            self.outputs = outputs

        def run(self, feeds: dict, prefill: bool = False) -> list[np.ndarray]:
            return self.outputs

    layer_out = [np.zeros((1, 1, m.kv_dim), np.float32)] * 2 + [np.zeros((1, 1, m.hidden_size), np.float32)]
    logits = np.random.default_rng(0).standard_normal((1, 1, m.vocab_size)).astype(np.float32)
    engine.sessions.layers = [Instant(layer_out) for _ in engine.sessions.layers]
    engine.sessions.post = Instant([logits])
    per_token = []
    for sampler in (Sampler(), Sampler(**DAEMON_SAMPLER)):
        engine.truncate(len(prompt))
        start = time.perf_counter()
        count = sum(1 for _ in engine.generate(prompt, sampler, 500))
        per_token.append((time.perf_counter() - start) / count * 1000)
        assert count == 500, "an eos id was drawn; the overhead figure would be skewed"
    return per_token[0], per_token[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    # Built in a child process, so that export memory does not count in this process's peak RSS.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        model = pool.apply(prepare, (args.work,))
    results = measure(model, args.threads)
    results["machine"] = f"{platform.processor() or platform.machine()}, {_cpu_model()}, threads={args.threads}"
    print(json.dumps(results, indent=2))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    main()
