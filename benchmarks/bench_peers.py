"""The engine beside other CPU runtimes, on the same checkpoint, measured in rotation.

    python benchmarks/bench_peers.py --llama-cpp DIR --genai-python PYTHON [--rounds 3]
                                     [--work /tmp/assistant-bench] [--model NAME=DIR ...]

The random Qwen2-0.5B-shaped checkpoint of bench_engine.py is turned into each system's files by
that system's own tools: llama.cpp's `convert_hf_to_gguf.py` and `llama-quantize` (Q8_0, Q4_0),
and onnxruntime-genai's model builder (int8, int4). Nothing of theirs is part of this repository.

* DIR, llama.cpp: a source tree built for this CPU. The package index carries one, vendored in
  llama-cpp-python's source archive:
      pip download llama-cpp-python --no-deps --no-binary :all: && tar xzf llama_cpp_python-*.tar.gz
      cd llama_cpp_python-*/vendor/llama.cpp && cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF
      cmake --build build -j2 --target llama-bench llama-quantize
  Its converter runs in this Python and needs `pip install sentencepiece`; it is given Qwen's
  real tokenizer (tests/qwen_tokenizer.py), as it refuses tokenizers it does not know.
* PYTHON, onnxruntime-genai: an interpreter with `onnxruntime-genai torch==2.13.0 transformers
  onnx onnx-ir` installed (its model builder imports onnx_ir), best in its own virtual environment.

Every round runs each system once, one after another, each in its own process with 2 threads:
a 300-token prompt (prefill time), then 128 greedy tokens (decode tokens/s), and the process's
peak RSS. llama.cpp is measured by its own `llama-bench`: `-p 300 -n 0`, then `-p 0 -n 128 -d 300`
(decode after 300 tokens of context, as the others decode after their prompt). Medians and ranges
over the rounds, and each system's figures divided by the engine int8's of the same round; this
machine's speed changes from minute to minute, so only figures from the same run compare.

Decoding one token reads every weight once, so no runtime decodes faster than the machine can
read its weight files. Right before each system, a plain C loop (compiled here with `cc`) reads
a buffer of the engine int8's weight bytes 128 times with 2 threads; each system whose files are
read whole each token (the engine's layers and post, llama.cpp's GGUF, whose output matrix is
its embedding table) is reported with the share of that read rate its decode reached.

Prefill is the opposite case: the 300 rows share each weight, so it is held by arithmetic, not
by reading. Right before each system a second C loop times 2 threads of 8-bit multiply-add
instructions on registers (`vpdpbusd`; AVX2's `vpmaddubsw` + `vpmaddwd` without VNNI), and each
prefill is reported as the share of that rate its weight matmuls reached: the checkpoint's
weight multiply-adds for 300 tokens ÷ prefill time (attention over the prompt, about 3% more,
left out).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_engine import _cpu_model, prepare  # noqa: E402
from tests.qwen_tokenizer import qwen_tokenizer_files  # noqa: E402

PROMPT = [int(t) for t in np.random.default_rng(1).integers(0, 150_000, 300)]
DECODE = 128
THREADS = 2

ENGINE_RUN = """
import json, sys, time
from pathlib import Path
import numpy as np
from assistant.llm.engine import Engine
from assistant.llm.sampling import Sampler
engine = Engine(Path(sys.argv[1]), threads={threads})
prompt = json.loads(sys.argv[2])
start = time.perf_counter()
engine.prefill(prompt)
prefill = time.perf_counter() - start
engine.truncate(0)
never_stop = np.ones(engine.manifest.vocab_size, dtype=bool)
never_stop[list(engine.stop_ids)] = False  # a random model may draw a stop id; every run decodes {decode}
tokens = list(engine.generate(prompt, Sampler(), {decode} + 1, allowed=lambda generated: never_stop))
print(json.dumps({{"prefill_s": prefill, "decode_tok_s": engine.stats.decode_tokens_per_second,
                  "decoded": engine.stats.generated_tokens}}))
"""

GENAI_RUN = """
import json, sys, time
import onnxruntime_genai as og
config = og.Config(sys.argv[1])
model = og.Model(config)
prompt = json.loads(sys.argv[2])
params = og.GeneratorParams(model)
params.set_search_options(max_length=len(prompt) + {decode} + 1, do_sample=False)
generator = og.Generator(model, params)
start = time.perf_counter()
generator.append_tokens(prompt)  # the prompt's forward pass
prefill = time.perf_counter() - start
start = time.perf_counter()
for _ in range({decode}):
    generator.generate_next_token()
decode = time.perf_counter() - start
print(json.dumps({{"prefill_s": prefill, "decode_tok_s": {decode} / decode, "decoded": {decode}}}))
"""


READ_CEILING = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* argv: bytes, passes. Prints the milliseconds of each pass over the buffer. */
int main(int argc, char **argv) {
    size_t words = strtoull(argv[1], NULL, 10) / 8 / 64 * 64;
    int passes = atoi(argv[2]);
    uint64_t *data = aligned_alloc(4096, words * 8), total = 0;
    for (size_t i = 0; i < words; i++) data[i] = i;  /* touched, so every page is in memory */
    for (int pass = 0; pass < passes; pass++) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        #pragma omp parallel for num_threads(2) schedule(static) reduction(+:total)
        for (size_t block = 0; block < words; block += 64) {
            uint64_t sum = 0;
            for (int j = 0; j < 64; j++) sum += data[block + j];
            total += sum;
        }
        clock_gettime(CLOCK_MONOTONIC, &end);
        printf("%.4f\n", (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) * 1e-6);
    }
    return total == 1;  /* the sum is used, so the loop is not optimised away */
}
"""


MAC_CEILING = r"""
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* argv: iterations, passes. Prints the milliseconds of each pass: 2 threads each running `iterations`
   rounds of CHAINS independent 8-bit multiply-add instructions on registers (no memory). */
#define CHAINS 12
#ifdef __AVX512VNNI__
#define MACS_PER_OP 64
typedef __m512i vec;
static vec madd(vec acc, vec a, vec b) { return _mm512_dpbusd_epi32(acc, a, b); }
static vec splat(int x) { return _mm512_set1_epi32(x); }
static int lane(vec v) { return _mm512_reduce_add_epi32(v); }
#else  /* AVX2 without VNNI: u8 x s8 pairs to int16, then to int32, as the integer GEMM kernels do */
#define MACS_PER_OP 32
typedef __m256i vec;
static vec madd(vec acc, vec a, vec b) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)));
}
static vec splat(int x) { return _mm256_set1_epi32(x); }
static int lane(vec v) { return _mm256_extract_epi32(v, 0); }
#endif

int main(int argc, char **argv) {
    long iterations = atol(argv[1]);
    int passes = atoi(argv[2]), seed = argc;
    long total = 0;
    for (int pass = 0; pass < passes; pass++) {
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        #pragma omp parallel num_threads(2) reduction(+:total)
        {
            vec acc[CHAINS], a = splat(seed), b = splat(seed * 3);
            for (int c = 0; c < CHAINS; c++) acc[c] = splat(c);
            for (long i = 0; i < iterations; i++)
                for (int c = 0; c < CHAINS; c++) acc[c] = madd(acc[c], a, b);
            for (int c = 0; c < CHAINS; c++) total += lane(acc[c]);
        }
        clock_gettime(CLOCK_MONOTONIC, &end);
        printf("%.4f\n", (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) * 1e-6);
    }
    printf("%d\n", MACS_PER_OP * CHAINS);
    return total == 1;
}
"""


def run(command: list[str], env: dict | None = None) -> tuple[str, float]:
    """Run a child process; its stdout and its own peak RSS in MB."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{command[0]} ... failed with exit code {process.returncode}")
    return out, usage.ru_maxrss / 1024


def build_ceiling(work: Path, name: str, code: str) -> Path:
    source, binary = work / f"{name}.c", work / name
    source.write_text(code)
    subprocess.run(["cc", "-O3", "-march=native", "-fopenmp", str(source), "-o", str(binary)], check=True)
    return binary


def read_rate(binary: Path, nbytes: int) -> float:
    """Bytes a second the machine reads with 2 threads this minute: the median of DECODE passes."""
    out = subprocess.run([str(binary), str(nbytes), str(DECODE)], capture_output=True, text=True).stdout
    return nbytes / (statistics.median(float(line) for line in out.split()) / 1e3)


def mac_rate(binary: Path) -> float:
    """8-bit multiply-adds a second of 2 threads this minute: the median of 20 passes."""
    iterations = 2_000_000
    out = subprocess.run([str(binary), str(iterations), "20"], capture_output=True, text=True).stdout
    *passes, per_iteration = out.split()
    return 2 * iterations * int(per_iteration) / (statistics.median(float(ms) for ms in passes) / 1e3)


def weight_macs_per_token(hf: Path) -> int:
    """Multiply-adds of one token through every layer's weight matmuls (q, k, v, o, gate, up, down)."""
    config = json.loads((hf / "config.json").read_text())
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    kv = hidden // heads * config["num_key_value_heads"]
    per_layer = hidden * (2 * hidden + 2 * kv) + 3 * hidden * config["intermediate_size"]
    return per_layer * config["num_hidden_layers"]


def weight_bytes(model: Path) -> int:
    """An engine model's bytes read each token: its layer and post graphs (not the embedding table)."""
    return sum(path.stat().st_size for path in model.rglob("*.onnx*"))


def build_llama_cpp(hf: Path, work: Path, llama: Path) -> dict[str, Path]:
    ggufs = {kind: work / f"llama-{kind.lower()}.gguf" for kind in ("Q8_0", "Q4_0")}
    f16 = work / "llama-f16.gguf"
    if not all(path.exists() for path in ggufs.values()):
        # The same weights with Qwen's own tokenizer, the only kind of Qwen2 tokenizer the converter takes.
        source = work / "hf-qwen-tokenizer"
        source.mkdir(exist_ok=True)
        tokenizer = qwen_tokenizer_files()
        for name in ("model.safetensors", "config.json", "generation_config.json"):
            _link(source / name, hf / name)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            _link(source / name, tokenizer / name)
        convert = [
            sys.executable,
            str(llama / "convert_hf_to_gguf.py"),
            str(source),
            "--outtype",
            "f16",
            "--outfile",
            str(f16),
        ]
        subprocess.run(convert, check=True, env={**os.environ, "PYTHONPATH": str(llama / "gguf-py")})
        for kind, path in ggufs.items():
            subprocess.run([str(llama / "build/bin/llama-quantize"), str(f16), str(path), kind], check=True)
        f16.unlink()
    return ggufs


def _link(link: Path, target: Path) -> None:
    if not link.exists():
        link.symlink_to(target.resolve())


def build_genai(hf: Path, work: Path, python: str) -> dict[str, Path]:
    models = {precision: work / f"genai-{precision}" for precision in ("int8", "int4")}
    for precision, out in models.items():
        if not (out / "genai_config.json").exists():
            builder = [python, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out)]
            subprocess.run([*builder, "-p", precision, "-e", "cpu", "-c", str(work / "genai-cache")], check=True)
    return models


def measure_engine(model: Path) -> dict:
    code = ENGINE_RUN.format(threads=THREADS, decode=DECODE)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out, rss = run([sys.executable, "-c", code, str(model), json.dumps(PROMPT)], env)
    return json.loads(out.splitlines()[-1]) | {"peak_rss_mb": rss, "weight_bytes": weight_bytes(model)}


def measure_genai(model: Path, python: str) -> dict:
    out, rss = run([python, "-c", GENAI_RUN.format(decode=DECODE), str(model), json.dumps(PROMPT)])
    return json.loads(out.splitlines()[-1]) | {"peak_rss_mb": rss}


def measure_llama(gguf: Path, llama: Path) -> dict:
    """Prefill of the prompt, then decode after a context as long as the prompt, as the others do.

    llama-bench's own generation test starts from an empty context; `-d` fills the context first.
    """
    bench = [str(llama / "build/bin/llama-bench"), "-m", str(gguf), "-t", str(THREADS), "-r", "1", "-o", "json"]
    out, prefill_rss = run([*bench, "-p", str(len(PROMPT)), "-n", "0"])
    prefill = json.loads(out)[0]
    out, decode_rss = run([*bench, "-p", "0", "-n", str(DECODE), "-d", str(len(PROMPT))])
    decode = json.loads(out)[0]
    return {
        "prefill_s": len(PROMPT) / prefill["avg_ts"],
        "decode_tok_s": decode["avg_ts"],
        "peak_rss_mb": max(prefill_rss, decode_rss),
        "weight_bytes": gguf.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    parser.add_argument("--llama-cpp", type=Path, default=None, help="a built llama.cpp source tree")
    parser.add_argument("--genai-python", default=None, help="a Python with onnxruntime-genai")
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR: another engine model directory")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    # Exported in a child process: a child's peak RSS counts its parent's size when it was forked.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        models = pool.apply(prepare, (args.work,))
    systems = {f"engine {weights}": (measure_engine, model) for weights, model in models.items()}
    for spec in args.model:
        name, _, path = spec.partition("=")
        systems[f"engine {name}"] = (measure_engine, Path(path))
    hf = args.work / "hf"
    if args.llama_cpp:
        for kind, gguf in build_llama_cpp(hf, args.work, args.llama_cpp).items():
            systems[f"llama.cpp {kind}"] = (lambda g: measure_llama(g, args.llama_cpp), gguf)
    if args.genai_python:
        for precision, model in build_genai(hf, args.work, args.genai_python).items():
            systems[f"onnxruntime-genai {precision}"] = (lambda m: measure_genai(m, args.genai_python), model)

    ceiling, ceiling_bytes = build_ceiling(args.work, "read_ceiling", READ_CEILING), weight_bytes(models["int8"])
    mac_ceiling, prefill_macs = build_ceiling(args.work, "mac_ceiling", MAC_CEILING), weight_macs_per_token(hf)
    rounds: dict[str, list[dict]] = {name: [] for name in systems}
    for i in range(args.rounds):
        for name, (measure, target) in systems.items():
            rate, macs = read_rate(ceiling, ceiling_bytes), mac_rate(mac_ceiling)
            result = measure(target)
            result["mac_g_s"] = macs / 1e9
            result["prefill_share_of_mac_rate"] = prefill_macs * len(PROMPT) / result["prefill_s"] / macs
            if "weight_bytes" in result:
                result["read_gb_s"] = rate / 1e9
                result["share_of_read_rate"] = result.pop("weight_bytes") * result["decode_tok_s"] / rate
            rounds[name].append(result)
            print(f"round {i + 1} {name}: {result}", file=sys.stderr, flush=True)
    report: dict = {
        "machine": f"{platform.machine()}, {_cpu_model()}, {os.cpu_count()} CPUs, threads={THREADS}",
        "load_average_at_end": os.getloadavg(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    base = rounds["engine int8"]
    for name, results in rounds.items():
        values = {key: [r[key] for r in results] for key in results[0]}
        # Ratios within a round compare figures taken a minute apart, whatever the machine did.
        values["decode_vs_engine_int8"] = [
            r["decode_tok_s"] / b["decode_tok_s"] for r, b in zip(results, base, strict=True)
        ]
        values["prefill_vs_engine_int8"] = [r["prefill_s"] / b["prefill_s"] for r, b in zip(results, base, strict=True)]
        report[name] = {k: {"median": statistics.median(v), "range": [min(v), max(v)]} for k, v in values.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
