"""Piper voices built locally for tests.

`make_medium_voice`: a real-size voice, piper's medium architecture built with the training code
piper-tts ships (`piper.train.vits`) and exported as piper's `export_onnx.py` does, with random
weights (it says nothing sensible, but takes the time, memory and graph of a published voice).

`make_piper_voice`: a real piper ONNX interface with a trivial synthesiser inside, for tests that
only need a voice to exist and be fast.

The graph takes what every piper (VITS) voice takes — "input" phoneme ids int64 [1, n],
"input_lengths" int64 [1], "scales" float32 [3] (noise, length, noise_w) — and returns "output"
float32 [1, 1, 1, samples], so the real `piper` package phonemises text with espeak-ng and runs it
exactly as it runs a downloaded voice. Each phoneme id becomes round(256 * length_scale) samples of
a tone whose pitch depends on the id: longer text gives longer audio, and slower speech too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# One VITS frame (hop length 256) per phoneme id at length_scale 1.0, so durations are in the same ballpark as a
# real voice's and tests can compute the exact audio length: len(ids) * round(length_scale * 256).
SAMPLES_PER_PHONEME = 256.0


def _graph(sample_rate: int) -> onnx.ModelProto:
    def const(name: str, value: np.ndarray | np.generic) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value), name)

    nodes = [
        # samples per phoneme id, from the length scale
        helper.make_node("Gather", ["scales", "one"], ["length_scale"], axis=0),
        helper.make_node("Mul", ["length_scale", "per_phoneme"], ["samples_f"]),
        helper.make_node("Round", ["samples_f"], ["samples_r"]),
        helper.make_node("Cast", ["samples_r"], ["samples"], to=TensorProto.INT64),
        helper.make_node("Range", ["zero_i", "samples", "one_i"], ["t_i"]),
        helper.make_node("Cast", ["t_i"], ["t"], to=TensorProto.FLOAT),
        # one tone per phoneme id, 120 Hz + 12 Hz per id: ids as a column times the time row broadcast to
        # [n, samples], which flattens row by row into each id's tone in phoneme order
        helper.make_node("Cast", ["input"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["ids", "column"], ["ids_col"]),
        helper.make_node("Mul", ["ids_col", "hz_per_id"], ["hz_extra"]),
        helper.make_node("Add", ["hz_extra", "base_hz"], ["hz"]),
        helper.make_node("Mul", ["hz", "t"], ["cycles"]),
        helper.make_node("Mul", ["cycles", "radians_per_cycle_sample"], ["phase"]),
        helper.make_node("Sin", ["phase"], ["tone"]),
        helper.make_node("Mul", ["tone", "amplitude"], ["quiet"]),
        helper.make_node("Reshape", ["quiet", "audio_shape"], ["output"]),
    ]
    initializers = [
        const("one", np.int64(1)),
        const("per_phoneme", np.float32(SAMPLES_PER_PHONEME)),
        const("zero_i", np.int64(0)),
        const("one_i", np.int64(1)),
        const("column", np.array([-1, 1], dtype=np.int64)),
        const("hz_per_id", np.float32(12.0)),
        const("base_hz", np.float32(120.0)),
        const("radians_per_cycle_sample", np.float32(2 * np.pi / sample_rate)),
        const("amplitude", np.float32(0.5)),
        const("audio_shape", np.array([1, 1, 1, -1], dtype=np.int64)),
    ]
    graph = helper.make_graph(
        nodes,
        "test_voice",
        [
            # names and dynamic axes as piper's export_onnx.py declares them; "input_lengths" goes unused, as
            # batch size is always 1 in piper, but it must exist because piper always feeds it
            helper.make_tensor_value_info("input", TensorProto.INT64, ["batch_size", "phonemes"]),
            helper.make_tensor_value_info("input_lengths", TensorProto.INT64, ["batch_size"]),
            helper.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 1, 1, "time"])],
        initializers,
    )
    # opset 15 as piper's export_onnx.py uses, and IR version 8 as that export writes, so any onnxruntime a board
    # may have (not only the newest one that onnx's default IR version needs) loads the voice
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _voice_config(name: str, sample_rate: int, language: str, num_symbols: int) -> dict:
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP  # the espeak symbol table real voices use

    return {
        "dataset": name,
        "audio": {"sample_rate": sample_rate, "quality": "medium"},
        "espeak": {"voice": language},
        "language": {"code": language},
        "inference": {"noise_scale": 0.667, "length_scale": 1.0, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_map": {},
        "phoneme_id_map": DEFAULT_PHONEME_ID_MAP,
        "num_symbols": num_symbols,
        "num_speakers": 1,
        "speaker_id_map": {},
        "piper_version": "1.0.0",
    }


def make_medium_voice(out_dir: Path, name: str = "medium-voice", seed: int = 0) -> Path:
    """Write `<name>.onnx` (~63 MB, as en_US-lessac-medium) and its config into out_dir; return the .onnx path."""
    import math

    import torch
    from piper.train.vits.models import SynthesizerTrn

    torch.manual_seed(seed)
    # piper.train.vits.lightning.VitsModel's defaults: the medium quality voices (lessac, amy, ...).
    model = SynthesizerTrn(
        n_vocab=256, spec_channels=513, segment_size=32, inter_channels=192, hidden_channels=192,
        filter_channels=768, n_heads=2, n_layers=6, kernel_size=3, p_dropout=0.1, resblock="2",
        resblock_kernel_sizes=(3, 5, 7), resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
        upsample_rates=(8, 8, 4), upsample_initial_channel=256, upsample_kernel_sizes=(16, 16, 8),
        n_speakers=1, gin_channels=0, use_sdp=True,
    )  # fmt: skip
    with torch.no_grad():
        # Untrained, the duration predictor gives about one frame per phoneme id; trained voices
        # give about two (an 8-word sentence is ~2 s). Its last affine step sets that rate.
        model.dp.flows[0].m[0] = -math.log(2.0)
        # The flow's coupling layers start as the identity (their last convolution is zero-initialised);
        # trained, they mix neighbouring frames. Random values make the flow do so here too.
        for layer in model.flow.flows:
            if hasattr(layer, "post"):
                layer.post.weight.normal_(0.0, 0.02)
        model.dec.remove_weight_norm()  # as export_onnx.py does
    model.eval()

    def infer(text, text_lengths, scales, sid=None):  # export_onnx.py's forward
        audio = model.infer(
            text, text_lengths, noise_scale=scales[0], length_scale=scales[1], noise_scale_w=scales[2], sid=sid
        )[0]
        return audio.unsqueeze(1)

    model.forward = infer
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.onnx"
    ids = torch.randint(0, 256, (1, 50))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on piper's Python-side shape checks
        torch.onnx.export(
            model, (ids, torch.LongTensor([50]), torch.FloatTensor([0.667, 1.0, 0.8]), None), str(path),
            opset_version=15, dynamo=False, input_names=["input", "input_lengths", "scales", "sid"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
                          "output": {0: "batch_size", 2: "time"}},
        )  # fmt: skip
    config = _voice_config(name, 22050, "en-us", 256)
    Path(f"{path}.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def make_piper_voice(
    out_dir: Path, *, sample_rate: int = 22050, language: str = "en-us", name: str = "test-voice"
) -> Path:
    """Write `<name>.onnx` and `<name>.onnx.json` into out_dir; return the .onnx path.

    Single speaker (no "sid" input), espeak phonemes in `language`, audio at `sample_rate`. `language` must be a voice
    name piper's bundled espeak-ng accepts ("en-us", "en", "en-gb-x-rp"; not "en-gb"), or synthesis raises.
    """
    from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP

    out_dir.mkdir(parents=True, exist_ok=True)
    model = out_dir / f"{name}.onnx"
    onnx.save(_graph(sample_rate), model)
    num_symbols = max(i for ids in DEFAULT_PHONEME_ID_MAP.values() for i in ids) + 1
    config = _voice_config(name, sample_rate, language, num_symbols)
    # utf-8 explicitly: the map's keys are IPA, and piper reads the config as utf-8 whatever the locale
    Path(f"{model}.json").write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    return model
