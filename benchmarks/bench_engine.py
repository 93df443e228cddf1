"""Engine benchmark on the exact Qwen2-0.5B-Instruct shape (random weights, int8 and s4 host exports).

    python benchmarks/bench_engine.py [--work /tmp/assistant-bench] [--threads 2] [--rounds 3]

For each export, in rotation (each round measures int8 then s4, each in a fresh process, so that
both see the same moments of a machine whose speed varies): decode tokens/s, prefill of a
300-token prompt, time to first token of a 15-token user turn after a ~400-token system prompt
with and without the prompt cache, a constrained tool call with and without the grammar
fast-forward (tokens per forward pass, time per call), the engine's own overhead per token
(sessions replaced by ones that return at once), and peak RSS. For scale, it also times the
int8 matmuls of one token alone (24 layers' four and the lm_head, the same onnxruntime kernels
as the export, nothing else): no decode loop can beat that floor. Medians and ranges over rounds.
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
from typing import Annotated, Literal

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant import Range, skill  # noqa: E402
from assistant.llm.backends import OnnxRunner  # noqa: E402
from assistant.llm.engine import Engine  # noqa: E402
from assistant.llm.export import Graph, export_model  # noqa: E402
from assistant.llm.manifest import load_manifest  # noqa: E402
from assistant.llm.sampling import Sampler  # noqa: E402
from assistant.skills.constraint import OPEN, ToolCallConstraint  # noqa: E402
from assistant.skills.registry import Registry  # noqa: E402
from benchmarks.qwen2_shape import write_random_checkpoint  # noqa: E402
from tests.tiny_model import make_tokenizer  # noqa: E402

DAEMON_SAMPLER = dict(temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.05, seed=0)


WEIGHTS = ("int8", "s4")


def prepare(work: Path) -> dict[str, Path]:
    hf = work / "hf"
    if not (hf / "model.safetensors").exists():
        print("writing a random Qwen2-0.5B-shaped checkpoint ...", file=sys.stderr)
        write_random_checkpoint(hf)
        make_tokenizer(hf)
    models = {}
    for weights in WEIGHTS:
        models[weights] = model = work / f"qwen2-0.5b-random-{weights}"
        if not (model / "manifest.yaml").exists():
            print(f"exporting {weights} ONNX layers ...", file=sys.stderr)
            start = time.perf_counter()
            export_model(hf, model, weights=weights, progress=lambda message: None)
            print(f"export took {time.perf_counter() - start:.1f} s", file=sys.stderr)
    write_matmul_floor(models["int8"], work / "matmul-floor")
    return models


def write_matmul_floor(model: Path, out: Path) -> None:
    """One graph per layer with just its four int8 matmuls, and one with the lm_head."""
    if (out / "post.onnx").exists():
        return
    import onnx
    from onnx import TensorProto, helper

    m = load_manifest(model)
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)

    def save(name: str, shapes: dict[str, list[tuple[int, int]]]) -> None:
        g = Graph("int8")
        outputs = []
        for x, layer_shapes in shapes.items():
            for rows, cols in layer_shapes:
                y = g.linear(x, rng.standard_normal((cols, rows), np.float32))
                outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, None))
        inputs = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1, s[0][0]]) for x, s in shapes.items()]
        onnx.save(g.model(inputs, outputs, name), out / f"{name}.onnx")

    hidden, ffn = m.hidden_size, m.intermediate_size
    attention_out = m.num_heads * m.head_dim
    for i in range(m.num_layers):
        save(
            f"layer_{i}",
            {
                "h": [(hidden, attention_out + 2 * m.kv_dim), (hidden, 2 * ffn)],
                "a": [(attention_out, hidden)],
                "f": [(ffn, hidden)],
            },
        )
    save("post", {"h": [(hidden, m.vocab_size)]})


def matmul_floor_ms(floor: Path, threads: int) -> float:
    """ms per token for the int8 matmuls alone (median of 20 tokens)."""
    runners = [OnnxRunner(path, threads) for path in sorted(floor.glob("*.onnx"))]
    feeds = []
    for runner in runners:
        shapes = runner.inputs()
        feeds.append({name: np.ones([1, 1, shape[-1]], np.float32) for name, shape in shapes.items()})

    def token() -> None:
        for runner, feed in zip(runners, feeds, strict=True):
            runner.session.run(None, feed)  # every output

    token()
    return median_time(token, 20) * 1000


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

    for fast in (False, True):
        name = "tool_call_fast_forward" if fast else "tool_call_token_by_token"
        results[name + "_s"], results[name + "_tokens_per_forward"] = tool_call(engine, fast)

    results["overhead_ms_per_token_greedy"], results["overhead_ms_per_token_sampling"] = overhead(engine)
    results["decode_ms_per_token"] = 1000 / results["decode_tokens_per_s"]
    results["int8_matmul_floor_ms_per_token"] = matmul_floor_ms(model.parent / "matmul-floor", threads)
    return results


@skill
def set_timer(minutes: Annotated[int, Range(1, 120)]) -> str:
    """Start a countdown timer."""
    return ""


@skill
def light(room: Literal["kitchen", "hall", "bedroom"], on: bool) -> str:
    """Switch a light."""
    return ""


class OpenedCall:
    """The `allowed` hook of a reply that opens a call at once; the grammar decides the rest.

    With `fast`, it also passes on the grammar's forced spans, and the engine fast-forwards.
    """

    def __init__(self, engine: Engine, constraint: ToolCallConstraint, fast: bool):
        self.opening = engine.tokenizer.encode(OPEN, add_special_tokens=False).ids
        self.vocab_size = engine.manifest.vocab_size
        self.constraint = constraint
        if fast:
            self.forced = lambda generated: constraint.forced(generated) if len(generated) >= len(self.opening) else []

    def __call__(self, generated: list[int]) -> np.ndarray | None:
        if len(generated) >= len(self.opening):
            return self.constraint(generated)
        allowed = np.zeros(self.vocab_size, dtype=bool)
        allowed[self.opening[len(generated)]] = True
        return allowed


def tool_call(engine: Engine, fast: bool, calls: int = 5) -> tuple[float, float]:
    """Median seconds per constrained call (after the prompt), and tokens per forward pass over all calls."""
    registry = Registry()
    for func in (set_timer, light):
        registry.add_function(func, "bench")
    eos = [engine.tokenizer.token_to_id("<|im_end|>")]  # the test tokenizer's, not the checkpoint's ids
    constraint = ToolCallConstraint(engine.tokenizer, engine.manifest.vocab_size, eos, registry.tools())
    prompt = tokens(40, 7)
    times, run, forwards = [], 0, 0
    for seed in range(calls):
        constraint.reset()
        engine.truncate(0)
        engine.prefill(prompt)  # cached below: only the call is timed
        start = time.perf_counter()
        text: list[int] = []
        hook = OpenedCall(engine, constraint, fast)
        for token in engine.generate(prompt, Sampler(temperature=1.0, seed=seed), 100, allowed=hook):
            text.append(token)
            if engine.tokenizer.decode(text, skip_special_tokens=False).endswith("</tool_call>"):
                break
        times.append(time.perf_counter() - start)
        assert "</tool_call>" in engine.tokenizer.decode(text, skip_special_tokens=False), "a call was cut short"
        run += engine.stats.generated_tokens
        forwards += engine.stats.decode_forwards
    return statistics.median(times), run / forwards


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
        assert count == 500, "a stop id was drawn; the overhead figure would be skewed"
    return per_token[0], per_token[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    fork = multiprocessing.get_context("fork")
    # Built, and each measured, in a child process: export memory and the other model do not
    # count in a measurement's peak RSS, and every run starts with a fresh onnxruntime.
    with fork.Pool(1) as pool:
        models = pool.apply(prepare, (args.work,))
    rounds: dict[str, list[dict]] = {weights: [] for weights in WEIGHTS}
    for _ in range(args.rounds):
        for weights, model in models.items():
            with fork.Pool(1) as pool:
                rounds[weights].append(pool.apply(measure, (model, args.threads)))
    report: dict = {"machine": f"{platform.processor() or platform.machine()}, {_cpu_model()}, threads={args.threads}"}
    for weights, results in rounds.items():
        values = {key: [r[key] for r in results] for key in results[0]}
        report[weights] = {k: {"median": statistics.median(v), "range": [min(v), max(v)]} for k, v in values.items()}
    print(json.dumps(report, indent=2))


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


if __name__ == "__main__":
    main()
