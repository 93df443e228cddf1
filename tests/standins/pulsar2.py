"""A stand-in for `pulsar2 llm_build` and `pulsar2 build` (Pulsar2 5.x), for tests of the board path.

The command line is the real one (`pulsar2 llm_build --help` in AXERA's Pulsar2 documentation,
"大模型编译": the same flags, choices and defaults); the output names are the real builds'
(`<model_type>_p<P>_l<i>_together.axmodel`, `<model_type>_post.axmodel`); each layer has the
shape groups that the board's runtime reports for such a build: group 0 decodes one token over
all kv_cache_len rows, group 1 prefills P tokens with a one-row dummy cache, and one group per
`--last_kv_cache_len H` prefills P tokens after H rows. Stricter than the real tool: the model
config must be in ax-llm-build's format (config/qwen2-0.5B.json) and agree with config.json.

`pulsar2 build` (an ONNX model → one axmodel, "模型编译" in the same documentation): `--input`,
`--output_dir`, `--output_name`, `--config` (its JSON: `input_shapes` fixes the input shape, `quant`
names the calibration tar of .npy tensors), `--target_hardware`. The axmodel has one shape group, the
fixed shape, and computes in float (no quantization error is simulated).

Test hooks: PULSAR2_ARGV (write the argv there as JSON), PULSAR2_FAIL (fail with an error of its own),
PULSAR2_KILLED (SIGKILLed midway, as the kernel ends a build that the machine's memory cannot hold).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from pathlib import Path

AX_LLM_BUILD_KEYS = {
    "model_name", "model_type", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size",
    "intermediate_size", "vocab_size", "rope_theta_base", "max_position_embedings", "rope_partial_factor",
    "norm_eps", "norm_type", "hidden_act",
}  # fmt: skip


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pulsar2 llm_build")
    parser.add_argument("--input_path", default="")
    parser.add_argument("--output_path", default=".")
    parser.add_argument("--prefill_len", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--model_config", default="")
    parser.add_argument("--model_type", default="")
    parser.add_argument("--kv_cache_len", type=int, default=127)
    parser.add_argument("--post_topk", type=int, default=0)
    parser.add_argument("--post_weight_type", default="s8", choices=["bf16", "s8", "fp8_e5m2", "fp8_e4m3"])
    parser.add_argument("-t", "--hidden_state_type", default="bf16", choices=["fp16", "bf16", "fp32"])
    parser.add_argument(
        "-w", "--weight_type", default="s8", choices=["fp16", "bf16", "fp32", "s8", "s4", "fp8_e5m2", "fp8_e4m3"]
    )
    parser.add_argument("-c", "--check_level", type=int, default=0)
    parser.add_argument("--chip", default="AX650", choices=["AX620E", "AX650", "LAMBERT"])
    parser.add_argument("--last_kv_cache_len", type=int, action="append", default=None)
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f"ERROR: {message}")
    sys.exit(1)


def layer_groups(args: argparse.Namespace, hidden: int, kv_dim: int) -> list[dict]:
    bf16, u32, L, P = "bfloat16", "uint32", args.kv_cache_len, args.prefill_len

    def group(kv_rows: int, kv_width: int, tokens: int, mask: int, history: int | None) -> dict:
        return {
            "history": history,
            "inputs": [
                ["K_cache", bf16, [1, kv_rows, kv_width]],
                ["V_cache", bf16, [1, kv_rows, kv_width]],
                ["indices", u32, [1, tokens]],
                ["input", bf16, [1, tokens, hidden]],
                ["mask", bf16, [1, tokens, mask]],
            ],
            "outputs": [
                ["K_cache_out", bf16, [1, tokens, kv_dim]],
                ["V_cache_out", bf16, [1, tokens, kv_dim]],
                ["output", bf16, [1, tokens, hidden]],
            ],
        }

    groups = [group(L, kv_dim, 1, L + 1, None)]
    if P:
        groups.append(group(1, hidden, P, P, 0))  # the dummy AXERA's scripts feed: zeros [1, 1, hidden_size]
        groups += [group(h, kv_dim, P, h + P, h) for h in args.last_kv_cache_len or []]
    return groups


def axmodel(path: Path, chip: str, groups: list[dict], graph, npu_mode: str | None = None) -> None:
    """`npu_mode`: the NPU cores it runs on (`pulsar2 build`'s NPU1, NPU2, NPU3); None for llm_build's,
    taken by the pyaxengine stand-in as the whole NPU (the case that vNPU refuses)."""
    buffer = io.BytesIO()
    import onnx

    onnx.save(graph, buffer)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("io.json", json.dumps({"chip": chip, "groups": groups, "npu_mode": npu_mode}))
        archive.writestr("model.onnx", buffer.getvalue())


def build(argv: list[str]) -> None:
    """`pulsar2 build`: the ONNX graph at the fixed input shapes, checked against its calibration data."""
    import tarfile

    import numpy as np
    import onnx
    import onnxruntime

    parser = argparse.ArgumentParser(prog="pulsar2 build")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--output_name", default="compiled.axmodel")
    parser.add_argument("--config", required=True)
    parser.add_argument("--target_hardware", default="AX650", choices=["AX650", "AX620E", "M76H"])
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    if config.get("model_type", "ONNX") != "ONNX":
        fail(f"model_type {config['model_type']} is not ONNX")
    model = onnx.load(args.input)
    inputs = {i.name for i in model.graph.input}
    shapes = {}
    for item in config.get("input_shapes", "").split(";"):
        name, _, dims = item.partition(":")
        if name not in inputs:
            fail(f"input_shapes names {name!r}, the model's inputs are {sorted(inputs)}")
        shapes[name] = [int(d) for d in dims.split("x")]
    if set(shapes) != inputs:
        fail(f"input_shapes must fix every input of this model: {sorted(inputs)}")
    session = onnxruntime.InferenceSession(args.input, providers=["CPUExecutionProvider"])
    for quant in config["quant"]["input_configs"]:
        if quant["tensor_name"] not in inputs or quant.get("calibration_format") != "Numpy":
            fail(f"calibration for {quant['tensor_name']!r}: a model input, as Numpy tensors")
        with tarfile.open(quant["calibration_dataset"]) as tar:
            members = [m for m in tar.getmembers() if m.name.endswith(".npy")]
            if len(members) < quant["calibration_size"]:
                fail(f"calibration_size {quant['calibration_size']} but {len(members)} tensors in the dataset")
            for member in members:
                tensor = np.load(io.BytesIO(tar.extractfile(member).read()))
                if list(tensor.shape) != shapes[quant["tensor_name"]] or tensor.dtype != np.float32:
                    fail(f"calibration tensor {member.name}: {tensor.dtype}{list(tensor.shape)}, expected "
                         f"float32{shapes[quant['tensor_name']]}")  # fmt: skip
        print(f"calibrating {quant['tensor_name']} on {len(members)} tensors", flush=True)
    feed = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    results = session.run(None, feed)
    group = {
        "history": None,
        "inputs": [[name, "float32", shape] for name, shape in shapes.items()],
        "outputs": [[o.name, "float32", list(r.shape)] for o, r in zip(session.get_outputs(), results, strict=True)],
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    axmodel(out / args.output_name, args.target_hardware, [group], model, config.get("npu_mode", "NPU1"))
    print(f"build done: {out / args.output_name}")


def main(argv: list[str]) -> None:
    if os.environ.get("PULSAR2_ARGV"):
        Path(os.environ["PULSAR2_ARGV"]).write_text(json.dumps(argv))
    if argv[:1] == ["build"]:
        return build(argv[1:])
    if not argv or argv[0] != "llm_build":
        fail(f"unknown command {argv[:1]}")
    args = parse(argv[1:])
    hf = Path(args.input_path)
    if not (hf / "config.json").is_file():
        fail(f"{hf}: no config.json")
    config = json.loads((hf / "config.json").read_text())
    if args.model_config:
        given = json.loads(Path(args.model_config).read_text())
        if set(given) != AX_LLM_BUILD_KEYS:
            fail(f"model_config keys {sorted(given)} are not ax-llm-build's {sorted(AX_LLM_BUILD_KEYS)}")
        for ours, theirs in [("num_hidden_layers", "num_hidden_layers"), ("hidden_size", "hidden_size"),
                             ("vocab_size", "vocab_size"), ("rope_theta_base", "rope_theta")]:  # fmt: skip
            if theirs in config and float(given[ours]) != float(config[theirs]):
                fail(f"model_config {ours}={given[ours]} disagrees with config.json {theirs}={config[theirs]}")
    if args.hidden_state_type != "bf16":
        fail("this stand-in builds bf16 hidden states only")
    history = args.last_kv_cache_len or []
    if history and not args.prefill_len:
        fail("--last_kv_cache_len needs --prefill_len")
    for h in history:
        if h <= 0 or h + args.prefill_len > args.kv_cache_len + 1:
            fail(f"--last_kv_cache_len {h} does not fit --kv_cache_len {args.kv_cache_len} with --prefill_len "
                 f"{args.prefill_len}")  # fmt: skip
    if history != sorted(set(history)):
        fail("--last_kv_cache_len values must grow")

    from assistant.llm.checkpoint import Checkpoint, read_shape
    from assistant.llm.export import layer_graph, post_graph

    shape, ck = read_shape(hf), Checkpoint(hf)
    out = Path(args.output_path)
    out.mkdir(parents=True, exist_ok=True)
    prefix = config["model_type"]
    groups = layer_groups(args, shape.hidden_size, shape.kv_dim)
    for i in range(shape.num_layers):
        print(f"building llm decode layers {i + 1}/{shape.num_layers}", flush=True)
        if os.environ.get("PULSAR2_KILLED") and i == shape.num_layers - 1:
            os.kill(os.getpid(), 9)  # as the kernel's out-of-memory killer ends a build (dmesg: "Killed process")
        if os.environ.get("PULSAR2_FAIL") and i == shape.num_layers - 1:
            for k in range(30):
                print(f"compiling layer {k}")
            print("ERROR: out of memory while building llm post layer")
            sys.exit(3)
        name = f"{prefix}_p{args.prefill_len}_l{i}_together" if args.prefill_len else f"{prefix}_l{i}"
        axmodel(out / f"{name}.axmodel", args.chip, groups, layer_graph(ck, shape, i, "float"))
    post = [{"history": None, "inputs": [["input", "bfloat16", [1, 1, shape.hidden_size]]],
             "outputs": [["output", "bfloat16", [1, 1, shape.vocab_size]]]}]  # fmt: skip
    axmodel(out / f"{prefix}_post.axmodel", args.chip, post, post_graph(ck, shape, "float"))
    print("build llm model done!")


if __name__ == "__main__":
    main(sys.argv[1:])
