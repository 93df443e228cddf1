"""Host exporter: a Hugging Face Qwen2 / Llama checkpoint → per-layer ONNX graphs with the AXERA I/O.

Each decoder layer becomes one graph with the inputs K_cache, V_cache, indices, input, mask and
the outputs K_cache_out, V_cache_out, output (the AXERA per-layer contract), and post.onnx maps
the last hidden state to logits, its output named `output` as on the board. Linear weights are
int8 with one scale per output channel; inside the graph the activations are quantized per
token to uint8 for onnxruntime's integer kernels, while the graph's inputs and outputs stay
float (README: "Host backend"). `weights="float"` keeps float32 weights for exactness tests.
The graphs are written directly with onnx.helper from memory-mapped weights, so exporting
needs neither torch nor the whole model in memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from assistant.llm.chat_template import CHAT_TEMPLATE_FILE, ChatTemplate
from assistant.llm.checkpoint import Checkpoint, ModelShape, read_shape
from assistant.llm.embeddings import EMBEDDINGS_FILE, write_embeddings
from assistant.llm.manifest import LayerFiles, Manifest, ModelError, record_files

log = logging.getLogger(__name__)

OPSET = 23  # RMSNormalization, RotaryEmbedding and Attention with grouped K/V heads
# Weights use 7 of their 8 bits ("reduce range"): the AVX2 u8 x s8 kernel adds pairs of products
# in int16, and 2 x 255 x 127 saturates it, costing far more precision than the lost bit does.
WEIGHT_LEVELS = 63


class Graph:
    """A tiny builder over onnx.helper: each op returns the name of its (first) output."""

    def __init__(self, weights: str):
        self.weights = weights
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0
        self.quantized: dict[str, tuple[str, str]] = {}

    def _name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, array: np.ndarray, hint: str = "c") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, out: str | list[str] = "", domain: str = "", **attrs):
        """Add a node; `out` names those of its outputs that are graph outputs ("" for the others)."""
        wanted = [out] if isinstance(out, str) else out
        names = [name or self._name(op_type.lower()) for name in wanted + [""] * (outputs - len(wanted))]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, domain=domain or None, **attrs))
        return names[0] if outputs == 1 else names

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None) -> str:
        """x @ weight.T (+ bias), weight [out, in] as in the checkpoint."""
        if self.weights == "int8":
            y = self._matmul_int8(x, weight)
        else:
            y = self.op("MatMul", x, self.const(np.ascontiguousarray(weight.T, dtype=np.float32), "w"))
        return y if bias is None else self.op("Add", y, self.const(bias.astype(np.float32), "b"))

    def linears(
        self,
        x: str,
        weights: list[np.ndarray],
        biases: list[np.ndarray | None] | None = None,
        names: list[str] | None = None,
    ) -> list[str]:
        """Several linears of the same input as one matmul (fewer, larger kernels), split after.

        `names` names the outputs that are graph outputs ("" for the others).
        """
        bias = None
        if biases and any(b is not None for b in biases):
            bias = np.concatenate(
                [np.zeros(w.shape[0]) if b is None else b for w, b in zip(weights, biases, strict=True)]
            )
        y = self.linear(x, np.concatenate(weights), bias)
        sizes = self.const(np.array([w.shape[0] for w in weights]))
        return self.op("Split", y, sizes, axis=-1, outputs=len(weights), out=names or "")

    def _matmul_int8(self, x: str, weight: np.ndarray) -> str:
        # Activations are quantized per row (per token) to uint8 inside the graph, so that one
        # outlier token in a prefill chunk cannot crush the others' precision; MatMulInteger then
        # runs onnxruntime's u8 x s8 kernels, the fastest int8 path on AVX2 CPUs.
        x_q, x_scale = self._quantized_rows(x)
        w_q, w_scale = quantize_int8_columns(weight)
        one, zero_point = self.const(np.float32(1.0)), self.const(np.uint8(128), "zp")
        w_q, w_scale = self.const(w_q, "wq"), self.const(w_scale, "ws")
        y = self.op("MatMulIntegerToFloat", x_q, w_q, one, w_scale, zero_point, domain="com.microsoft")
        return self.op("Mul", y, x_scale)

    def _quantized_rows(self, x: str) -> tuple[str, str]:
        """uint8 (zero point 128) copy of x with one scale per row; computed once per input."""
        if x not in self.quantized:
            peak = self.op("ReduceMax", self.op("Abs", x), self.const(np.array([-1])), keepdims=1)
            peak = self.op("Max", peak, self.const(np.float32(1e-12)))
            scale = self.op("Mul", peak, self.const(np.float32(1 / 127)))
            shifted = self.op("Add", self.op("Round", self.op("Div", x, scale)), self.const(np.float32(128)))
            self.quantized[x] = (self.op("Cast", shifted, to=TensorProto.UINT8), scale)
        return self.quantized[x]

    def rms_norm(self, x: str, weight: np.ndarray, eps: float) -> str:
        return self.op("RMSNormalization", x, self.const(weight.astype(np.float32), "norm"), axis=-1, epsilon=eps)

    def model(self, inputs: list, outputs: list, name: str):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="assistant")


def quantize_int8_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: weight [out, in] → (int8 [in, out], float32 scales [out])."""
    scale = np.abs(weight).max(axis=1) / WEIGHT_LEVELS
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(weight / scale[:, None]), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
    return np.ascontiguousarray(q.T), scale.astype(np.float32)


def _tensor(name: str, elem_type: int, dims: list):
    return helper.make_tensor_value_info(name, elem_type, dims)


def layer_graph(ck: Checkpoint, shape: ModelShape, i: int, weights: str):
    """One decoder layer with the AXERA per-layer I/O contract.

    Written with opset 23's fused operators (RMSNormalization, RotaryEmbedding, Attention with
    grouped K/V heads), which onnxruntime runs as single kernels.
    """
    g = Graph(weights)
    p = f"model.layers.{i}."
    heads, kv_heads, head_dim = shape.num_heads, shape.num_kv_heads, shape.head_dim

    def bias(name: str) -> np.ndarray | None:
        return ck.f32(p + name) if shape.attention_bias and p + name in ck else None

    # Rotary angles from the absolute positions, in float32 like transformers.
    inv_freq = 1.0 / (shape.rope_theta ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))
    positions = g.op("Unsqueeze", g.op("Cast", "indices", to=TensorProto.FLOAT), g.const(np.array([2])))
    angles = g.op("Mul", positions, g.const(inv_freq.astype(np.float32), "inv_freq"))  # [1, T, head_dim / 2]
    cos, sin = g.op("Cos", angles), g.op("Sin", angles)

    x = "input"
    h = g.rms_norm(x, ck.f32(p + "input_layernorm.weight"), shape.rms_norm_eps)
    scale = np.float32(1.0 / np.sqrt(head_dim))  # folded into q_proj, so Attention runs with scale 1
    q, k, _ = g.linears(
        h,
        [
            ck.f32(p + "self_attn.q_proj.weight") * scale,
            ck.f32(p + "self_attn.k_proj.weight"),
            ck.f32(p + "self_attn.v_proj.weight"),
        ],
        [_scaled(bias("self_attn.q_proj.bias"), scale), bias("self_attn.k_proj.bias"), bias("self_attn.v_proj.bias")],
        names=["", "", "V_cache_out"],
    )
    q = g.op("RotaryEmbedding", q, cos, sin, num_heads=heads)
    g.op("RotaryEmbedding", k, cos, sin, num_heads=kv_heads, out="K_cache_out")
    keys = g.op("Concat", "K_cache", "K_cache_out", axis=1)
    values = g.op("Concat", "V_cache", "V_cache_out", axis=1)
    attn = g.op("Attention", q, keys, values, "mask", q_num_heads=heads, kv_num_heads=kv_heads, scale=1.0)
    h = g.op("Add", x, g.linear(attn, ck.f32(p + "self_attn.o_proj.weight")))

    m = g.rms_norm(h, ck.f32(p + "post_attention_layernorm.weight"), shape.rms_norm_eps)
    gate, up = g.linears(m, [ck.f32(p + "mlp.gate_proj.weight"), ck.f32(p + "mlp.up_proj.weight")])
    act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # SiLU(gate) * up; fused by onnxruntime
    g.op("Add", h, g.linear(act, ck.f32(p + "mlp.down_proj.weight")), out="output")

    f, u32 = TensorProto.FLOAT, TensorProto.UINT32
    inputs = [
        _tensor("K_cache", f, [1, "kv_len", shape.kv_dim]),
        _tensor("V_cache", f, [1, "kv_len", shape.kv_dim]),
        _tensor("indices", u32, [1, "T"]),
        _tensor("input", f, [1, "T", shape.hidden_size]),
        _tensor("mask", f, [1, "T", "kv_len_plus_T"]),
    ]
    outputs = [
        _tensor("K_cache_out", f, [1, "T", shape.kv_dim]),
        _tensor("V_cache_out", f, [1, "T", shape.kv_dim]),
        _tensor("output", f, [1, "T", shape.hidden_size]),
    ]
    return g.model(inputs, outputs, f"layer_{i}")


def _scaled(bias: np.ndarray | None, scale: np.float32) -> np.ndarray | None:
    return None if bias is None else bias * scale


def post_graph(ck: Checkpoint, shape: ModelShape, weights: str):
    """Final RMSNorm and lm_head (tied to the embeddings when the checkpoint says so)."""
    g = Graph(weights)
    head = "model.embed_tokens.weight" if shape.tie_word_embeddings or "lm_head.weight" not in ck else "lm_head.weight"
    h = g.rms_norm("input", ck.f32("model.norm.weight"), shape.rms_norm_eps)
    g.op("Identity", g.linear(h, ck.f32(head)), out="output")  # the logits, named as Pulsar2's post model names them
    inputs = [_tensor("input", TensorProto.FLOAT, [1, "T", shape.hidden_size])]
    outputs = [_tensor("output", TensorProto.FLOAT, [1, "T", shape.vocab_size])]
    return g.model(inputs, outputs, "post")


def export_onnx(
    hf_dir: Path, out_dir: Path, weights: str = "int8", progress: Callable[[str], None] = log.info
) -> LayerFiles:
    """Write onnx/layer_{i}.onnx and onnx/post.onnx for the checkpoint in `hf_dir`."""
    import onnx

    if weights not in ("int8", "float"):
        raise ValueError(f"weights must be 'int8' or 'float', not {weights!r}")
    shape = read_shape(hf_dir)
    ck = Checkpoint(hf_dir)
    (out_dir / "onnx").mkdir(parents=True, exist_ok=True)
    layers = []
    for i in range(shape.num_layers):
        rel = f"onnx/layer_{i}.onnx"
        onnx.save(layer_graph(ck, shape, i, weights), out_dir / rel)
        layers.append(rel)
        progress(f"layer {i + 1}/{shape.num_layers}: {rel}")
    onnx.save(post_graph(ck, shape, weights), out_dir / "onnx/post.onnx")
    progress("post: onnx/post.onnx")
    return LayerFiles(layers=layers, post="onnx/post.onnx", weights=weights)


def copy_tokenizer(hf_dir: Path, out_dir: Path) -> None:
    """The tokenizer and the chat template, which current checkpoints keep in chat_template.jinja."""
    for file in ("tokenizer.json", "tokenizer_config.json"):
        if not (hf_dir / file).is_file():
            raise ModelError(f"{hf_dir / file}: missing; the model folder needs its tokenizer")
        shutil.copyfile(hf_dir / file, out_dir / file)
    if (hf_dir / CHAT_TEMPLATE_FILE).is_file():
        shutil.copyfile(hf_dir / CHAT_TEMPLATE_FILE, out_dir / CHAT_TEMPLATE_FILE)
    ChatTemplate(out_dir)  # a model without a chat template fails setup, not the first chat


def new_manifest(hf_dir: Path, name: str, kv_cache_len: int, backends: dict[str, LayerFiles]) -> Manifest:
    shape = read_shape(hf_dir)
    # The manifest's dimensions are the checkpoint's, field for field.
    dims = {f.name: getattr(shape, f.name) for f in dataclasses.fields(Manifest) if hasattr(shape, f.name)}
    return Manifest(
        name=name,
        source=str(hf_dir),
        kv_cache_len=kv_cache_len,
        eos_token_ids=_eos_ids(hf_dir),
        embeddings=EMBEDDINGS_FILE,
        backends=backends,
        **dims,
    )


def export_model(
    hf_dir: Path,
    out_dir: Path,
    *,
    weights: str = "int8",
    kv_cache_len: int = 1023,
    name: str | None = None,
    progress: Callable[[str], None] = log.info,
) -> Manifest:
    """A host model directory from `hf_dir`: tokenizer, bf16 embeddings, onnx/ layers, manifest."""
    read_shape(hf_dir)  # an unusable folder fails here, before anything is written
    checkpoint = Checkpoint(hf_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(hf_dir, out_dir)
    write_embeddings(checkpoint, out_dir)
    progress(f"embeddings: {EMBEDDINGS_FILE}")
    layers = export_onnx(hf_dir, out_dir, weights, progress)
    manifest = new_manifest(hf_dir, name or hf_dir.resolve().name, kv_cache_len, {"onnxruntime": layers})
    record_files(out_dir, manifest)
    manifest.save(out_dir)
    return manifest


def _eos_ids(hf_dir: Path) -> list[int]:
    """eos ids from generation_config.json (Qwen2 lists <|im_end|> and <|endoftext|>), else config.json."""
    ids: list[int] = []
    for file in ("generation_config.json", "config.json"):
        path = hf_dir / file
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            for token in value if isinstance(value, list) else [value]:
                if token is not None and token not in ids:
                    ids.append(int(token))
    return ids
