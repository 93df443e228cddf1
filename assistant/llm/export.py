"""Host exporter: a Hugging Face Qwen2 / Llama checkpoint → per-layer ONNX graphs with the AXERA I/O.

Each decoder layer becomes one graph with the inputs K_cache, V_cache, indices, input, mask and
the outputs K_cache_out, V_cache_out, output (the AXERA per-layer contract), and post.onnx maps
the last hidden state to logits, its output named `output` as on the board. Every linear layer
is one MatMulNBits node: weights quantized per block of input channels ("int8": 8 bits; "s4":
4 bits in the decoder layers, Pulsar2's s4 counterpart, the lm_head staying 8-bit), activations
quantized per block to int8 inside the kernel, the graph's inputs and outputs float (README:
"Host backend"). `weights="float"` keeps float32 weights for exactness tests. The graphs are
written directly with onnx.helper from memory-mapped weights, so exporting needs neither torch
nor the whole model in memory.
"""

from __future__ import annotations

import dataclasses
import functools
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
WEIGHT_TYPES = ("int8", "s4", "float")
# Quantized weights: one scale per block of BLOCK input channels (finer than one per output
# channel, so an outlier weight costs precision only in its own block). onnxruntime's
# MatMulNBits then quantizes each activation row per block to int8 too (accuracy_level 4) and
# runs its integer kernels: one fused node per linear layer. Blocks of 32 or 64 came within
# 1.3% of its perplexity on SmolLM2 and decoded slower (README: "Host backend").
BLOCK = 128
INT8_COMPUTE = 4  # MatMulNBits accuracy_level: int8 activations, the integer kernels


class Graph:
    """A tiny builder over onnx.helper: each op returns the name of its (first) output."""

    def __init__(self, weights: str, levels: int | None = None):
        self.weights = weights
        self.levels = levels  # the largest |quantized weight| for 8 bits (None: 128, see int8_levels)
        self.nodes: list = []
        self.initializers: list = []
        self.count = 0

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

    def linear(self, x: str, weight: np.ndarray, bias: np.ndarray | None = None, bits: int = 8) -> str:
        """x @ weight.T (+ bias), weight [out, in] as in the checkpoint; `bits` when quantized."""
        if self.weights == "float":
            y = self.op("MatMul", x, self.const(np.ascontiguousarray(weight.T, dtype=np.float32), "w"))
            return y if bias is None else self.op("Add", y, self.const(bias.astype(np.float32), "b"))
        packed, scales = quantize_blocks(weight, bits, BLOCK, self.levels if bits == 8 else None)
        inputs = [x, self.const(packed, "wq"), self.const(scales, "ws")]
        if bias is not None:
            inputs += ["", "", self.const(bias.astype(np.float32), "b")]  # no zero points, no g_idx
        n, k = weight.shape
        attrs = dict(K=k, N=n, bits=bits, block_size=BLOCK, accuracy_level=INT8_COMPUTE)
        return self.op("MatMulNBits", *inputs, domain="com.microsoft", **attrs)

    def linears(
        self,
        x: str,
        weights: list[np.ndarray],
        biases: list[np.ndarray | None] | None = None,
        names: list[str] | None = None,
        bits: int = 8,
    ) -> list[str]:
        """Several linears of the same input as one matmul (fewer, larger kernels), split after.

        `names` names the outputs that are graph outputs ("" for the others).
        """
        bias = None
        if biases and any(b is not None for b in biases):
            bias = np.concatenate(
                [np.zeros(w.shape[0]) if b is None else b for w, b in zip(weights, biases, strict=True)]
            )
        y = self.linear(x, np.concatenate(weights), bias, bits)
        sizes = self.const(np.array([w.shape[0] for w in weights]))
        return self.op("Split", y, sizes, axis=-1, outputs=len(weights), out=names or "")

    def rms_norm(self, x: str, weight: np.ndarray, eps: float) -> str:
        return self.op("RMSNormalization", x, self.const(weight.astype(np.float32), "norm"), axis=-1, epsilon=eps)

    def model(self, inputs: list, outputs: list, name: str):
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
        return helper.make_model(graph, opset_imports=opsets, producer_name="assistant")


def quantize_blocks(
    weight: np.ndarray, bits: int, block: int, levels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric blockwise quantization for MatMulNBits: weight [out, in] → (uint8 [out, blocks,
    block * bits / 8], float32 scales [out, blocks]).

    Each block's value of largest magnitude maps to -2^(bits-1) exactly (as llama.cpp's Q4_0 does),
    so all 2^bits levels are used; values are stored with the zero point 2^(bits-1) added, the
    layout MatMulNBits reads. `levels` < 2^(bits-1) narrows the range (see int8_levels).
    """
    half = 1 << (bits - 1)
    levels = levels or half
    n, k = weight.shape
    blocks = -(-k // block)
    packed = np.empty((n, blocks, block * bits // 8), np.uint8)
    scales = np.empty((n, blocks), np.float32)
    for start in range(0, n, 8192):  # in slices of rows: a 151,936-row lm_head stays small in memory
        w = np.zeros((min(8192, n - start), blocks * block), np.float32)
        w[:, :k] = weight[start : start + len(w)]
        w = w.reshape(len(w), blocks, block)
        peak = np.take_along_axis(w, np.abs(w).argmax(-1)[..., None], -1)[..., 0]
        scale = peak / -levels
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale[..., None]), -levels, levels - 1).astype(np.int16) + half
        q = q.astype(np.uint8)
        if bits == 4:  # two values a byte, the first in the low nibble
            q = q[..., 0::2] | (q[..., 1::2] << 4)
        packed[start : start + len(w)] = q
        scales[start : start + len(w)] = scale
    return packed, scales


@functools.cache
def int8_levels() -> int:
    """How many negative levels 8-bit weights may use on this CPU: 128 (all 8 bits), or 64.

    Integer kernels without VNNI add pairs of u8 × s8 products in int16, which full-range
    weights and activations can overflow. Rather than guess from CPU flags, run MatMulNBits once
    on the worst case (every weight and activation at its extreme) and keep the full range only
    if the result is exact; otherwise give up one bit, as the kernels' saturation costs far more.
    """
    import onnxruntime as ort

    from assistant.llm.backends import session_options

    k, n = 2 * BLOCK, 4
    rows = np.stack([np.ones(k), -np.ones(k), np.tile([1.0, -1.0], k // 2)]).astype(np.float32)
    for levels in (128, 64):
        weight = np.ones((n, k), np.float32)
        weight[:, 0] = -1.0  # the block peak: every other weight quantizes to the top level
        weight[1] *= -1  # the bottom level
        weight[2, 1::2] *= -1
        weight[3] = np.tile([1.0, -1.0], k // 2) * -weight[0]
        g = Graph("int8", levels)
        g.op("Identity", g.linear("x", weight), out="y")
        model = g.model([_tensor("x", TensorProto.FLOAT, [3, k])], [_tensor("y", TensorProto.FLOAT, [3, n])], "probe")
        options = session_options()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        packed, scales = quantize_blocks(weight, 8, BLOCK, levels)
        q = packed.reshape(n, k).astype(np.float32) - 128
        exact = rows @ (q * np.repeat(scales, BLOCK, axis=1)).T
        if np.allclose(session.run(None, {"x": rows})[0], exact, rtol=1e-3, atol=1e-3):
            return levels
        log.info("8-bit weights: the CPU's integer kernels overflow at %d levels; trying fewer", levels)
    return 64


def _tensor(name: str, elem_type: int, dims: list):
    return helper.make_tensor_value_info(name, elem_type, dims)


def layer_graph(ck: Checkpoint, shape: ModelShape, i: int, weights: str):
    """One decoder layer with the AXERA per-layer I/O contract.

    Written with opset 23's fused operators (RMSNormalization, RotaryEmbedding, Attention with
    grouped K/V heads), which onnxruntime runs as single kernels.
    """
    g = Graph(weights, _levels(weights))
    bits = 4 if weights == "s4" else 8
    p = f"model.layers.{i}."
    heads, kv_heads, head_dim = shape.num_heads, shape.num_kv_heads, shape.head_dim

    def bias(name: str) -> np.ndarray | None:
        """The bias the config gives this projection (a Llama's o_proj and MLP have them too)."""
        if name.startswith("mlp."):
            wanted = shape.mlp_bias
        else:
            wanted = shape.o_proj_bias if name.startswith("self_attn.o_proj") else shape.attention_bias
        return ck.f32(p + name) if wanted and p + name in ck else None

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
        bits=bits,
    )
    q = g.op("RotaryEmbedding", q, cos, sin, num_heads=heads)
    g.op("RotaryEmbedding", k, cos, sin, num_heads=kv_heads, out="K_cache_out")
    keys = g.op("Concat", "K_cache", "K_cache_out", axis=1)
    values = g.op("Concat", "V_cache", "V_cache_out", axis=1)
    attn = g.op("Attention", q, keys, values, "mask", q_num_heads=heads, kv_num_heads=kv_heads, scale=1.0)
    h = g.op("Add", x, g.linear(attn, ck.f32(p + "self_attn.o_proj.weight"), bias("self_attn.o_proj.bias"), bits))

    m = g.rms_norm(h, ck.f32(p + "post_attention_layernorm.weight"), shape.rms_norm_eps)
    gate, up = g.linears(
        m,
        [ck.f32(p + "mlp.gate_proj.weight"), ck.f32(p + "mlp.up_proj.weight")],
        [bias("mlp.gate_proj.bias"), bias("mlp.up_proj.bias")],
        bits=bits,
    )
    act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)  # SiLU(gate) * up; fused by onnxruntime
    down = g.linear(act, ck.f32(p + "mlp.down_proj.weight"), bias("mlp.down_proj.bias"), bits)
    g.op("Add", h, down, out="output")

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


def _levels(weights: str) -> int | None:
    return None if weights == "float" else int8_levels()


def _scaled(bias: np.ndarray | None, scale: np.float32) -> np.ndarray | None:
    return None if bias is None else bias * scale


def post_graph(ck: Checkpoint, shape: ModelShape, weights: str):
    """Final RMSNorm and lm_head (tied to the embeddings when the checkpoint says so).

    The lm_head stays 8-bit with s4 layers: it scores every token of the vocabulary, and 4-bit
    rounding there reorders close candidates (README: "Host backend").
    """
    g = Graph(weights, _levels(weights))
    head = "model.embed_tokens.weight" if shape.tie_word_embeddings else "lm_head.weight"
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

    if weights not in WEIGHT_TYPES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHT_TYPES)}, not {weights!r}")
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
    from tokenizers import Tokenizer

    for file in ("tokenizer.json", "tokenizer_config.json"):
        if not (hf_dir / file).is_file():
            raise ModelError(f"{hf_dir / file}: missing; the model folder needs its tokenizer")
        shutil.copyfile(hf_dir / file, out_dir / file)
    try:  # a file cut short would otherwise be found only by the engine, at its first load
        tokenizer = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    except Exception as e:  # tokenizers raises a bare Exception
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"{hf_dir / 'tokenizer.json'}: not a tokenizer ({problem}); copy or download it again"
        ) from None
    if _add_declared_tokens(tokenizer, hf_dir / "tokenizer_config.json"):
        tokenizer.save(str(out_dir / "tokenizer.json"))
    if (hf_dir / CHAT_TEMPLATE_FILE).is_file():
        shutil.copyfile(hf_dir / CHAT_TEMPLATE_FILE, out_dir / CHAT_TEMPLATE_FILE)
    ChatTemplate(out_dir)  # a model without a chat template fails setup, not the first chat


def _add_declared_tokens(tokenizer, config: Path) -> bool:
    """Add the tokens tokenizer_config.json declares (added_tokens_decoder) that tokenizer.json lacks.

    transformers adds them when it loads the tokenizer, so the model was trained to read them as one
    token each; the engine reads tokenizer.json alone and would split them into pieces. Each takes
    the next id, as in transformers, so a declared id elsewhere is refused. Returns whether any was added.
    """
    from tokenizers import AddedToken

    try:
        declared = json.loads(config.read_text()).get("added_tokens_decoder") or {}
    except (ValueError, AttributeError):  # not a JSON object: the chat template's reading says so
        return False
    try:
        missing = sorted(
            ((int(i), info) for i, info in declared.items() if tokenizer.token_to_id(info["content"]) is None),
            key=lambda pair: pair[0],
        )
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise ModelError(f"{config}: unreadable added_tokens_decoder ({e!r}); copy or download it again") from None
    for token_id, info in missing:
        if token_id != tokenizer.get_vocab_size(with_added_tokens=True):
            raise ModelError(
                f"{config}: added token {info['content']!r} has id {token_id}, which is not in tokenizer.json and "
                f"does not follow on from its {tokenizer.get_vocab_size(with_added_tokens=True)} tokens"
            )
        flags = {key: bool(info.get(key, False)) for key in ("single_word", "lstrip", "rstrip", "special")}
        flags["normalized"] = bool(info.get("normalized", not flags["special"]))
        token = AddedToken(info["content"], **flags)
        (tokenizer.add_special_tokens if flags["special"] else tokenizer.add_tokens)([token])
    return bool(missing)


def new_manifest(hf_dir: Path, name: str, kv_cache_len: int, backends: dict[str, LayerFiles]) -> Manifest:
    shape = read_shape(hf_dir)
    # The manifest's dimensions are the checkpoint's, field for field.
    dims = {f.name: getattr(shape, f.name) for f in dataclasses.fields(Manifest) if hasattr(shape, f.name)}
    return Manifest(
        name=name,
        source=str(hf_dir),
        kv_cache_len=kv_cache_len,
        eos_token_ids=eos_ids(hf_dir, shape.vocab_size),
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
    shape = read_shape(hf_dir)  # an unusable folder fails here, before anything is written
    checkpoint = Checkpoint(hf_dir)
    checkpoint.check(shape, hf_dir / "config.json")
    eos_ids(hf_dir, shape.vocab_size)
    out_dir.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(hf_dir, out_dir)
    write_embeddings(checkpoint, out_dir)
    progress(f"embeddings: {EMBEDDINGS_FILE}")
    layers = export_onnx(hf_dir, out_dir, weights, progress)
    manifest = new_manifest(hf_dir, name or hf_dir.resolve().name, kv_cache_len, {"onnxruntime": layers})
    record_files(out_dir, manifest)
    manifest.save(out_dir)
    return manifest


def eos_ids(hf_dir: Path, vocab_size: int) -> list[int]:
    """eos ids from generation_config.json (Qwen2 lists <|im_end|> and <|endoftext|>), else config.json.

    Checked before a build starts: a model that cannot stop would be refused at its first load.
    """
    ids: list[int] = []
    for file in ("generation_config.json", "config.json"):
        path = hf_dir / file
        if path.is_file():
            try:
                config = json.loads(path.read_text())
            except ValueError as e:
                raise ModelError(f"{path}: invalid JSON: {e}") from None
            value = config.get("eos_token_id") if isinstance(config, dict) else None
            for token in value if isinstance(value, list) else [value]:
                if token is None or token in ids:
                    continue
                if type(token) is not int or not 0 <= token < vocab_size:
                    raise ModelError(f"{path}: eos_token_id {token!r} is not a token id below vocab_size {vocab_size}")
                ids.append(token)
    if not ids:
        raise ModelError(f"{hf_dir}: neither generation_config.json nor config.json gives an eos_token_id")
    return ids
