"""Reading a Hugging Face checkpoint folder: its config and its safetensors, memory-mapped.

safetensors is read by hand (an 8-byte header length, a JSON header, raw little-endian data) so
that bf16 tensors, which numpy has no dtype for, can be mapped without torch and without loading
the whole file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from assistant.llm.manifest import ModelError

SUPPORTED_MODEL_TYPES = ("qwen2", "llama")
MISMATCH = "config.json and the *.safetensors beside it must be of the same model"
AGAIN = "copy or download the checkpoint again"
FLOAT_DTYPES = ("F32", "F16", "BF16")
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I8": np.int8, "U8": np.uint8}


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    attention_bias: bool
    max_position_embeddings: int
    mlp_bias: bool = False
    o_proj_bias: bool = False

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim


def read_shape(model_dir: Path) -> ModelShape:
    """The dimensions of a Qwen2 / Llama checkpoint from its config.json."""
    path = model_dir / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: not found; is {model_dir} a Hugging Face model folder?") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: invalid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{path}: not a model config (a JSON object); is {model_dir} a Hugging Face model folder?")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelError(f"{path}: model_type {model_type!r} is not supported (supported: qwen2, llama)")
    rope = cfg.get("rope_parameters") or {}
    # transformers 4.x spells scaling as rope_scaling, transformers 5 as rope_parameters' rope_type.
    for key in ("rope_scaling", "rope_parameters"):
        value = cfg.get(key) or {}
        kind = value.get("rope_type", value.get("type", "default")) if isinstance(value, dict) else value
        if kind != "default":
            raise ModelError(
                f"{path}: {key} of type {kind!r} is not supported (the exporter applies plain rotary embeddings); "
                f"build from a config without it"
            )
    if cfg.get("hidden_act", "silu") not in ("silu", "swish"):  # the exporter's MLP is SiLU(gate) * up
        raise ModelError(f"{path}: hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
    # transformers 5 takes rope_parameters' rope_theta over a top-level one.
    theta = rope.get("rope_theta", cfg.get("rope_theta"))
    if theta is None:
        raise ModelError(f"{path}: no rope_theta (neither at top level nor in rope_parameters)")

    def whole(key: str, default: int | None = None) -> int:
        value = cfg.get(key) if cfg.get(key) is not None else default
        if value is None:
            raise ModelError(f"{path}: no {key}; a {model_type} config.json gives it")
        if type(value) is not int or value <= 0:
            raise ModelError(f"{path}: {key} is {value!r}, not a positive whole number")
        return value

    def positive(key: str, value: object) -> float:
        if type(value) not in (int, float) or not value > 0:
            raise ModelError(f"{path}: {key} is {value!r}, not a positive number")
        return float(value)

    heads, hidden = whole("num_attention_heads"), whole("hidden_size")
    max_positions = whole("max_position_embeddings", 32768)
    if (window := _sliding_window(cfg, whole("num_hidden_layers"))) and window < max_positions:
        raise ModelError(
            f"{path}: use_sliding_window with sliding_window {window} is not supported (the exporter attends to "
            f"the whole context; a window of at least max_position_embeddings, {max_positions}, would be)"
        )
    if "rms_norm_eps" not in cfg:
        raise ModelError(f"{path}: no rms_norm_eps; a {model_type} config.json gives it")
    return ModelShape(
        model_type=model_type,
        num_layers=whole("num_hidden_layers"),
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=whole("num_key_value_heads", heads),
        head_dim=whole("head_dim", hidden // heads),
        intermediate_size=whole("intermediate_size"),
        vocab_size=whole("vocab_size"),
        rope_theta=positive("rope_theta", theta),
        rms_norm_eps=positive("rms_norm_eps", cfg["rms_norm_eps"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        # Qwen2 always has q/k/v biases; Llama has them only when attention_bias says so, and then
        # on o_proj too, and on the MLP's three projections when mlp_bias says so.
        attention_bias=model_type == "qwen2" or bool(cfg.get("attention_bias", False)),
        max_position_embeddings=max_positions,
        mlp_bias=model_type == "llama" and bool(cfg.get("mlp_bias", False)),
        o_proj_bias=model_type == "llama" and bool(cfg.get("attention_bias", False)),
    )


def _sliding_window(cfg: dict, num_layers: int) -> int | None:
    """The attention window of a Qwen2 config's sliding layers, as transformers applies it (None: no layer has one).

    transformers limits layers to the last `sliding_window` tokens only with use_sliding_window,
    and then only the layers that `layer_types` (or, without it, max_window_layers) marks sliding.
    """
    window = cfg.get("sliding_window", 4096)  # Qwen2Config's default
    if cfg.get("model_type") != "qwen2" or not cfg.get("use_sliding_window") or not isinstance(window, int):
        return None  # Llama has no window, whatever its config says
    first = cfg.get("max_window_layers", 28)  # Qwen2Config's default
    kinds = cfg.get("layer_types") or ["sliding_attention" if i >= first else "full" for i in range(num_layers)]
    return window if "sliding_attention" in kinds else None


class Checkpoint:
    """All tensors of a (possibly sharded) safetensors checkpoint, each mapped on first use."""

    def __init__(self, model_dir: Path):
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise ModelError(f"{model_dir}: no *.safetensors files (only safetensors checkpoints are supported)")
        index = model_dir / "model.safetensors.index.json"
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):  # one file, or no usable index
            shards = set()
        if missing := sorted(name for name in shards if not (model_dir / name).is_file()):
            raise ModelError(f"{model_dir / missing[0]}: missing ({index.name} lists it); {AGAIN}")
        if shards:  # as transformers reads it: other *.safetensors beside (an older download) are not this model
            files = [model_dir / name for name in sorted(shards)]
        self._where: dict[str, tuple[Path, dict, int]] = {}
        for file in files:
            header, data_start = _read_header(file)
            for name, info in header.items():
                if name in self._where:
                    raise ModelError(
                        f"{file}: holds tensor {name} as {self._where[name][0].name} does: two checkpoints in one "
                        f"folder; keep one of them"
                    )
                self._where[name] = (file, info, data_start)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> list[int] | None:
        """The tensor's shape as its file's header gives it (None when the tensor is missing)."""
        return self._where[name][1].get("shape") if name in self._where else None

    def check(self, shape: ModelShape, config: Path) -> None:
        """Every tensor a build reads is there with the shape `config` gives it, before any work.

        A config.json beside another model's safetensors (or edited by hand) would otherwise build
        a model directory that fails at its first use, or half a build that fails at the first
        missing layer.
        """
        h, q, kv, inner = shape.hidden_size, shape.num_heads * shape.head_dim, shape.kv_dim, shape.intermediate_size
        expected = {"model.embed_tokens.weight": [shape.vocab_size, h], "model.norm.weight": [h]}
        if not shape.tie_word_embeddings:  # transformers would make up an lm_head missing from an untied model
            expected["lm_head.weight"] = [shape.vocab_size, h]
        for i in range(shape.num_layers):
            p = f"model.layers.{i}."
            expected |= {
                p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                p + "self_attn.q_proj.weight": [q, h], p + "self_attn.k_proj.weight": [kv, h],
                p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, q],
                p + "mlp.gate_proj.weight": [inner, h], p + "mlp.up_proj.weight": [inner, h],
                p + "mlp.down_proj.weight": [h, inner],
            }  # fmt: skip
            biases = {}
            if shape.attention_bias:
                biases |= {"self_attn.q_proj.bias": q, "self_attn.k_proj.bias": kv, "self_attn.v_proj.bias": kv}
            if shape.o_proj_bias:
                biases["self_attn.o_proj.bias"] = h
            if shape.mlp_bias:
                biases |= {"mlp.gate_proj.bias": inner, "mlp.up_proj.bias": inner, "mlp.down_proj.bias": h}
            for name, size in biases.items():  # present or not, as the exporter reads them
                if p + name in self:
                    expected[p + name] = [size]
        for name, dims in expected.items():
            actual = self.shape(name)
            if actual is None and name.removesuffix("weight") + "qweight" in self:
                raise ModelError(
                    f"{config.parent}: a quantized checkpoint ({name.removesuffix('weight')}qweight); setup reads "
                    "float or bf16 weights: build from the model it was quantized from"
                )
            if actual is None and name == "lm_head.weight":
                raise ModelError(
                    f"{config}: tie_word_embeddings is false, but the checkpoint has no lm_head.weight; {MISMATCH}"
                )
            if actual is None:
                raise ModelError(f"{config}: describes tensor {name}, which the checkpoint lacks; {MISMATCH}")
            file, info, _ = self._where[name]
            if info.get("dtype") not in FLOAT_DTYPES:  # int8 / 4-bit packed / fp8 weights under the float name
                raise ModelError(
                    f"{file}: tensor {name} is {info.get('dtype')}: a quantized checkpoint; setup reads float16, "
                    "bfloat16 or float32 weights: build from the model it was quantized from"
                )
            if list(actual) != dims:
                raise ModelError(f"{config}: makes tensor {name} {dims}, the checkpoint's is {actual}; {MISMATCH}")

    def raw(self, name: str) -> tuple[np.ndarray, str]:
        """The tensor as stored (bf16 as uint16), memory-mapped, with its safetensors dtype."""
        if name not in self._where:
            raise ModelError(f"tensor {name} is missing from the checkpoint")
        file, info, data_start = self._where[name]
        begin, end = info["data_offsets"]
        dtype = info["dtype"]
        if dtype not in _DTYPES:
            raise ModelError(f"{file}: tensor {name} has unsupported dtype {dtype}")
        array = np.memmap(file, dtype=_DTYPES[dtype], mode="r", offset=data_start + begin, shape=tuple(info["shape"]))
        if array.nbytes != end - begin:
            raise ModelError(f"{file}: tensor {name} size disagrees with its header (truncated file?)")
        return array, dtype

    def f32(self, name: str) -> np.ndarray:
        """The tensor as float32 (a new array; bf16 widened exactly)."""
        array, dtype = self.raw(name)
        if dtype == "BF16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return np.asarray(array, dtype=np.float32)


def _read_header(file: Path) -> tuple[dict, int]:
    """A safetensors file's tensor table and where its data starts, checked against the file's size.

    A copy or download cut short fails here, naming the file, instead of partway through a build.
    """
    size = file.stat().st_size
    with open(file, "rb") as f:
        start = f.read(8)
        if len(start) < 8:
            raise ModelError(f"{file}: only {size} bytes, not a safetensors file (cut short?); {AGAIN}")
        (header_len,) = struct.unpack("<Q", start)
        if 8 + header_len > size:
            raise ModelError(f"{file}: its header needs {8 + header_len} bytes but the file has {size}; {AGAIN}")
        try:
            header = json.loads(f.read(header_len))
        except ValueError:  # not JSON, or not UTF-8
            header = None
    if not isinstance(header, dict):
        raise ModelError(f"{file}: its header is not a safetensors tensor table; {AGAIN}")
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    end = data_start
    for name, info in header.items():
        try:
            begin, stop = info["data_offsets"]
            ok = isinstance(begin, int) and isinstance(stop, int) and 0 <= begin <= stop
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ModelError(f"{file}: tensor {name} has no valid data_offsets in its header; {AGAIN}")
        end = max(end, data_start + stop)
    if end > size:
        raise ModelError(f"{file}: its tensors need {end} bytes but the file has only {size} (cut short?); {AGAIN}")
    return header, data_start
