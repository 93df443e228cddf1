"""Accuracy of the host exports: a real model's perplexity, and logits on the Qwen2-0.5B shape.

    python benchmarks/bench_accuracy.py [--work /tmp/assistant-bench]

SmolLM2-135M-Instruct (tests/smollm2.py): perplexity of the test passage for the float, int8 and
s4 exports, how often their most likely next token is the float export's, and how many of the
test questions (plus three that reach near-ties) get the float export's greedy answer. On the
random Qwen2-0.5B-shaped checkpoint: against transformers in float32, along its greedy path of
20 tokens after a 40-token prompt (teacher-forced), the logits' cosine similarity and top-1
agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.llm.conversation import Conversation  # noqa: E402
from assistant.llm.engine import Engine  # noqa: E402
from assistant.llm.export import export_model  # noqa: E402
from assistant.llm.sampling import Sampler  # noqa: E402
from benchmarks.bench_engine import prepare  # noqa: E402
from tests.smollm2 import make_smollm2  # noqa: E402
from tests.test_engine import QUESTIONS, score_passage  # noqa: E402

NEAR_TIES = ["How many legs does a spider have?", "What language is spoken in Spain?",
             "What is the boiling point of water in Celsius?"]  # fmt: skip
WEIGHTS = ("float", "int8", "s4")


def smollm2(work: Path) -> dict:
    hf = work / "smollm2-hf"
    if not (hf / "model.safetensors").exists():
        make_smollm2(hf)
    results: dict = {}
    answers = {}
    for weights in WEIGHTS:
        model = work / f"smollm2-{weights}"
        if not (model / "manifest.yaml").exists():
            export_model(hf, model, weights=weights, kv_cache_len=512, progress=lambda message: None)
        scored = score_passage(model)
        results[weights] = {"perplexity": scored.perplexity, "top1": scored.top1}
        engine = Engine(model)
        answers[weights] = [
            "".join(Conversation(engine, "You are a helpful assistant.", 32).reply(q, Sampler()))
            for q in QUESTIONS + NEAR_TIES
        ]
    reference, top1 = results["float"], results["float"]["top1"]
    for weights in WEIGHTS:
        r = results[weights]
        r["perplexity_vs_float"] = r["perplexity"] / reference["perplexity"] - 1
        r["top1_agreement_with_float"] = float(np.mean(r.pop("top1") == top1))
        r["answers_equal_to_float"] = (
            f"{sum(a == b for a, b in zip(answers[weights], answers['float'], strict=True))}/{len(answers['float'])}"
        )
    return results


def qwen2_shape(work: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    models = prepare(work)
    reference = AutoModelForCausalLM.from_pretrained(work / "hf", dtype=torch.float32).eval()
    ids = [int(t) for t in np.random.default_rng(11).integers(0, 150_000, 40)]
    with torch.no_grad():
        path = reference.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0, len(ids) :].tolist()
        ref_logits = reference(torch.tensor([ids + path])).logits[0, len(ids) - 1 : -1].numpy()
    del reference
    results = {}
    for weights, model in models.items():
        engine = Engine(model)
        logits = [engine.prefill(ids)] + [engine.forward([token]) for token in path[:-1]]
        cosines = [
            float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(logits, ref_logits, strict=True)
        ]
        agree = sum(int(np.argmax(a)) == t for a, t in zip(logits, path, strict=True))
        results[weights] = {
            "cosine_median": float(np.median(cosines)),
            "cosine_min": min(cosines),
            "top1": f"{agree}/20",
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/assistant-bench"))
    args = parser.parse_args()
    print(
        json.dumps({"smollm2_135m_instruct": smollm2(args.work), "qwen2_0.5b_shape": qwen2_shape(args.work)}, indent=2)
    )


if __name__ == "__main__":
    main()
