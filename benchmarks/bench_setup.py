"""Setup benchmark on the exact Qwen2-0.5B-Instruct shape: the embedding step and the host export.

    python benchmarks/bench_setup.py [--work /tmp/assistant-bench]

Each step runs in its own process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.llm.checkpoint import Checkpoint  # noqa: E402
from assistant.llm.embeddings import write_embeddings  # noqa: E402
from assistant.llm.export import export_onnx  # noqa: E402
from benchmarks.qwen2_shape import write_random_checkpoint  # noqa: E402


def embeddings_step(hf: Path, out: Path) -> dict:
    start = time.perf_counter()
    write_embeddings(Checkpoint(hf), out)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def export_step(hf: Path, out: Path) -> dict:
    start = time.perf_counter()
    export_onnx(hf, out, "int8", progress=lambda message: None)
    return {
        "seconds": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_child(fn, *args) -> dict:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    args = parser.parse_args()
    hf = args.work / "hf"
    if not (hf / "model.safetensors").exists():
        write_random_checkpoint(hf)
    out = args.work / "setup-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results = {"embeddings": in_child(embeddings_step, hf, out), "host_export": in_child(export_step, hf, out)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
