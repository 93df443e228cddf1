"""Speech models made ready for streaming: the piper voice cut in three, the decoder built for the NPU,
and vosk's endpoint rules.

A piper (VITS) voice is one ONNX graph: the text encoder and duration predictor turn phoneme ids
into the prior z_p [1, C, frames] (hop 256 samples a frame), the flow turns z_p into z, and the
HiFi-GAN decoder turns z into audio. Flow and decoder are convolutional along time, so they can
run over a sentence in windows of frames; cutting the graph at their inputs gives
`<voice>.encoder.onnx`, `<voice>.flow.onnx` and `<voice>.decoder.onnx`, described by
`<voice>.stream.json`. No PyTorch checkpoint is needed: the published `.onnx` is cut as downloaded.
"""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from assistant.setup.download import SetupError, write_problem

log = logging.getLogger(__name__)

CHUNK_FRAMES = 32  # frames of audio a decoder window adds (0.37 s at 22.05 kHz)
FIRST_FRAMES = 12  # on a CPU, the first window of a sentence adds only these (0.14 s): first audio sooner
CALIBRATION_SENTENCES = [
    "The kitchen light is on now.",
    "Your timer for five minutes has started.",
    "It is twenty three degrees and sunny, with a light breeze from the west.",
    "I have added milk, eggs and bread to your shopping list.",
    "Sorry, I did not catch that. Could you say it again?",
    "Good morning! Today you have two meetings and a dentist appointment at four.",
]
# Endpoint rules written into the vosk model's conf/model.conf (kaldi's OnlineEndpointConfig).
# rule2: the decoder can end here (best final path within 2.0 of the best path) and 0.25 s of
# silence followed; rule3: any text and 0.6 s of silence; rule4: 1.0 s. A pause inside a
# command leaves the sentence unfinishable under a grammar, so rule2 does not close it.
ENDPOINT_RULES = {
    "--endpoint.rule2.min-trailing-silence": "0.25",
    "--endpoint.rule3.min-trailing-silence": "0.6",
    "--endpoint.rule4.min-trailing-silence": "1.0",
}


# A voice file that no piper could load: an error page saved in its place, another file.
VOICE_FIX = "delete it and run the same command again (check tts.voice_url)"


class NotAVoice(SetupError):
    """The voice or its settings file is not one at all, rather than a voice that cannot be split."""


def _voice_settings(voice: Path) -> dict:
    path = Path(f"{voice}.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # not JSON, or not text
        raise NotAVoice(f"{path}: not a piper voice's settings ({e}); {VOICE_FIX}") from None
    if not isinstance(config, dict):
        raise NotAVoice(f"{path}: not a piper voice's settings (not a JSON object); {VOICE_FIX}")
    return config


@dataclass
class StreamConfig:
    """`<voice>.stream.json`: how to run a voice cut in two."""

    encoder: str  # file name beside the voice: phoneme ids → z_p, the flow's input (prior and noise)
    flow: str  # z_p and a frame mask → z, the decoder's input
    decoder: str  # z → audio, any number of frames
    channels: int  # C of z [1, C, frames]
    hop_length: int  # audio samples per frame
    pad: int  # frames of context each side of a window: the decoder's receptive field
    chunk: int  # frames of new audio per window
    first: int | None = None  # frames of the first window, where window sizes are free (onnxruntime)
    flow_pad: int = 0  # frames of context each side of a flow window: the flow's receptive field
    axmodel: str | None = None  # the decoder built for the NPU, window = chunk + 2 * pad frames
    chip: str | None = None

    @property
    def window(self) -> int:
        return self.chunk + 2 * self.pad

    @staticmethod
    def load(voice: Path) -> StreamConfig | None:
        path = stream_config_path(voice)
        return StreamConfig(**json.loads(path.read_text())) if path.is_file() else None


def stream_config_path(voice: Path) -> Path:
    return voice.with_name(voice.name.removesuffix(".onnx") + ".stream.json")


def decoder_input(model) -> tuple[str, int]:
    """The tensor the HiFi-GAN decoder starts from, and its channel count.

    The decoder is the only part of a VITS graph with transposed convolutions (its upsampling);
    its first one is fed by conv_pre (→ LeakyReLU, → Add of the speaker embedding in
    multi-speaker voices), whose data input is z. Found by structure, not by node names, which
    differ between exporters.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    first = next((n for n in model.graph.node if n.op_type == "ConvTranspose"), None)
    if first is None:
        raise SetupError("the voice has no transposed convolution: not a piper (VITS) voice, cannot split it")
    node = producer[first.input[0]]
    while node.op_type != "Conv":
        if node.op_type not in ("LeakyRelu", "Add") or node.input[0] not in producer:
            raise SetupError(f"unexpected {node.op_type} before the decoder's first upsampling: cannot split")
        node = producer[node.input[0]]
    weights = next(i for i in model.graph.initializer if i.name == node.input[1])
    return node.input[0], int(weights.dims[1])


def flow_input(model, cut: str) -> tuple[str, str]:
    """The flow's input z_p (prior mean plus scaled noise) and the frame mask, found by structure.

    The decoder's input is z * y_mask (a Mul); z_p is the Add after the graph's last
    RandomNormalLike (its noise); of the Mul's two inputs, the flow's output is the one computed
    from z_p, the other is the mask.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    noise = [n for n in model.graph.node if n.op_type == "RandomNormalLike"]
    mul = producer.get(cut)
    if not noise or mul is None or mul.op_type != "Mul":
        raise SetupError("no flow before the decoder where a VITS voice has one: cannot split it further")
    node = noise[-1]
    while node.op_type != "Add":
        following = consumers.get(node.output[0], [])
        if len(following) != 1:
            raise SetupError("the flow's input is not where a VITS voice has it: cannot split it further")
        node = following[0]
    z_p = node.output[0]

    def reaches_z_p(name: str) -> bool:
        seen, todo = set(), [name]
        while todo:
            tensor = todo.pop()
            if tensor == z_p:
                return True
            if tensor in producer and tensor not in seen:
                seen.add(tensor)
                todo += [i for i in producer[tensor].input if i]
        return False

    mask = mul.input[1] if reaches_z_p(mul.input[0]) else mul.input[0]
    return z_p, mask


def _part(model, name: str, inputs: list, outputs: list, renames: dict[str, str]):
    """The nodes of `model` that compute `outputs` from `inputs` (value infos named as after `renames`,
    a map from the model's tensor names to the part's)."""
    import onnx
    from onnx import helper

    original = {new: old for old, new in renames.items()}
    given = {original.get(i.name, i.name) for i in inputs}
    wanted, nodes = {original.get(o.name, o.name) for o in outputs}, []
    for node in reversed(model.graph.node):  # backwards from the outputs, stopping at the inputs
        if any(out in wanted and out not in given for out in node.output):
            nodes.append(node)
            wanted.update(i for i in node.input if i)
    renamed = []
    for node in reversed(nodes):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        for names in (copy.input, copy.output):
            for k, value in enumerate(names):
                names[k] = renames.get(value, value)
        renamed.append(copy)
    used = [i for i in inputs if original.get(i.name, i.name) in wanted]
    initializers = [t for t in model.graph.initializer if t.name in wanted]
    graph = helper.make_graph(renamed, name, used, outputs, initializers)
    part = helper.make_model(graph, opset_imports=list(model.opset_import))
    part.ir_version = model.ir_version  # as exported, so the board's older onnxruntime loads it too
    try:
        onnx.checker.check_model(part)
    except onnx.checker.ValidationError as e:  # it needs a tensor from outside its inputs
        raise SetupError(f"the {name} cannot be cut out of the voice ({str(e).splitlines()[0]})") from None
    return part


def receptive_field(path: Path, feed: dict[str, np.ndarray]) -> int:
    """Frames each side that reach one output frame: change one input frame, see how far the output moves.

    `feed`: the part's inputs over some frames, the first of them the one to change. Windows padded
    by this many frames give exactly the whole-sentence output at their seams.
    """
    import onnxruntime

    from assistant.llm.backends import session_options

    session = onnxruntime.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    name = next(iter(feed))
    frames = feed[name].shape[-1]
    nudged = {**feed, name: feed[name].copy()}
    nudged[name][..., frames // 2] += 1.0
    a, b = (session.run(None, f)[0] for f in (feed, nudged))
    changed = np.flatnonzero((a != b).reshape(-1, a.shape[-1]).any(axis=0))  # along time, the last axis
    moved = changed // (a.shape[-1] // frames)  # output samples (or frames) → frames
    return int(max(frames // 2 - moved.min(), moved.max() - frames // 2))


def split_voice(voice: Path, chunk: int = CHUNK_FRAMES) -> StreamConfig:
    """Write the encoder, the flow, the decoder and `<voice>.stream.json` beside `voice`; return the config."""
    import onnx
    from onnx import TensorProto, helper

    config = _voice_settings(voice)
    if int(config.get("num_speakers", 1)) > 1:
        # The flow and decoder of a multi-speaker voice also take the speaker's embedding (from "sid"):
        # not handled yet, so such a voice speaks whole sentences.
        raise SetupError("a multi-speaker voice is not split")
    try:
        model = onnx.load(str(voice))
    except Exception as e:  # protobuf's DecodeError and friends: a truncated or foreign file
        raise NotAVoice(f"{voice}: not an ONNX model ({str(e).splitlines()[0]}); {VOICE_FIX}") from None
    cut, channels = decoder_input(model)
    z_p, mask = flow_input(model, cut)
    renames = {cut: "z", z_p: "z_p", mask: "mask"}

    def frames(name: str, rows: int):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, rows, "frames"])

    stem = voice.name.removesuffix(".onnx")
    names = {"encoder": f"{stem}.encoder.onnx", "flow": f"{stem}.flow.onnx", "decoder": f"{stem}.decoder.onnx"}
    inputs = list(model.graph.input)
    parts = {
        "encoder": (inputs, [frames("z_p", channels)]),
        "flow": ([frames("z_p", channels), frames("mask", 1)], [frames("z", channels)]),
        "decoder": ([frames("z", channels)], list(model.graph.output)),
    }
    written = []
    try:
        for part, (ins, outs) in parts.items():
            written.append(voice.with_name(names[part]))
            onnx.save(_part(model, part, ins, outs, renames), written[-1])
    except BaseException:  # a full disk or Ctrl-C: no part left to take the room
        for path in written:
            path.unlink(missing_ok=True)
        raise
    hop = int(config.get("audio", {}).get("hop_length", 256))
    z = np.random.default_rng(0).standard_normal((1, channels, 96)).astype(np.float32)
    flow_pad = receptive_field(voice.with_name(names["flow"]), {"z_p": z, "mask": np.ones((1, 1, 96), np.float32)})
    pad = receptive_field(voice.with_name(names["decoder"]), {"z": z})
    stream = StreamConfig(**names, channels=channels, hop_length=hop, pad=pad, chunk=chunk, first=FIRST_FRAMES,
                          flow_pad=flow_pad)  # fmt: skip
    stream_config_path(voice).write_text(json.dumps(asdict(stream), indent=2))
    log.info("%s: split into encoder, flow (%d frames of context) and decoder (windows of %d frames, %d of "
             "context)", voice, flow_pad, stream.window, pad)  # fmt: skip
    return stream


# -- the decoder on the NPU ---------------------------------------------------------------------------


def pulsar2_build_config(window: int, channels: int, calibration: str, count: int) -> dict:
    """`pulsar2 build --config`: float z in at the fixed window shape, calibrated on the voice's own z."""
    return {
        "model_type": "ONNX",
        "npu_mode": "NPU1",
        "input_shapes": f"z:1x{channels}x{window}",
        "quant": {
            "input_configs": [
                {
                    "tensor_name": "z",
                    "calibration_dataset": calibration,
                    "calibration_size": count,
                    "calibration_format": "Numpy",
                }
            ],
            "calibration_method": "MinMax",
        },
        "input_processors": [{"tensor_name": "z", "src_dtype": "FP32"}],
        "compiler": {"check": 0},
    }


def calibration_windows(voice: Path, stream: StreamConfig, sentences: list[str]) -> list[np.ndarray]:
    """Decoder windows [1, C, window] of z from the voice's own encoder on sample sentences."""
    from assistant.voice.tts import Voice

    encoder = Voice(voice, decoder="onnxruntime")
    windows = []
    for sentence in sentences:
        for z in map(encoder.flow_whole, encoder.latents(sentence)):
            for start in range(0, max(z.shape[2] - stream.window, 0) + 1, stream.chunk):
                window = np.zeros((1, stream.channels, stream.window), np.float32)
                part = z[:, :, start : start + stream.window]
                window[:, :, : part.shape[2]] = part
                windows.append(window)
    return windows


def build_decoder_axmodel(
    voice: Path, target: str, pulsar2: str | None = None, image: str | None = None
) -> StreamConfig:
    """Compile the fixed-shape decoder window with `pulsar2 build`; record it in the stream config."""
    from assistant.setup.pulsar2 import CHIPS, pulsar2_prefix, run_pulsar2

    stream = StreamConfig.load(voice)
    if stream is None:
        stream = split_voice(voice)
    chip = CHIPS[target]
    windows = calibration_windows(voice, stream, CALIBRATION_SENTENCES)
    name = voice.name.removesuffix(".onnx") + ".decoder.axmodel"
    with tempfile.TemporaryDirectory(dir=voice.parent) as tmp:
        work = Path(tmp)
        with tarfile.open(work / "calibration.tar", "w") as tar:
            for i, window in enumerate(windows):
                np.save(work / f"{i}.npy", window)
                tar.add(work / f"{i}.npy", arcname=f"{i}.npy")
        shutil.copy(voice.with_name(stream.decoder), work / "decoder.onnx")
        root = "/data/work" if image else str(work)
        prefix = pulsar2_prefix(target, pulsar2, image, [(work, root)])
        config = pulsar2_build_config(stream.window, stream.channels, f"{root}/calibration.tar", len(windows))
        (work / "config.json").write_text(json.dumps(config, indent=2))
        run_pulsar2(
            [*prefix, "build", "--input", f"{root}/decoder.onnx", "--output_dir", f"{root}/out",
             "--output_name", name, "--config", f"{root}/config.json", "--target_hardware", chip],
            work,
        )  # fmt: skip
        built = work / "out" / name
        if not built.is_file():
            raise SetupError(f"pulsar2 build finished without {name}")
        shutil.move(built, voice.with_name(name))
    stream.axmodel, stream.chip = name, chip
    stream_config_path(voice).write_text(json.dumps(asdict(stream), indent=2))
    log.info("%s: decoder built for the %s (%s)", voice, target, name)
    return stream


# -- vosk endpointing ---------------------------------------------------------------------------------


def check_vosk_model(folder: Path) -> None:
    """The files without which vosk cannot load the model (its Model() looks for am/final.mdl):
    a folder already there is never downloaded again, so one that lacks them is named with the fix."""
    for name in ("am/final.mdl", "conf/model.conf"):
        if not (folder / name).is_file():
            raise SetupError(
                f"{folder} is not a vosk model folder (it lacks {name}); delete it and run the same command again "
                "(check asr.model_url)"
            )


def write_endpoint_rules(vosk_model: Path, rules: dict[str, str] = ENDPOINT_RULES) -> Path:
    """Set the endpoint rules in the model's conf/model.conf, which vosk reads when it loads the model."""
    path = vosk_model / "conf" / "model.conf"
    if not path.is_file():
        raise SetupError(f"{path} not found: {vosk_model} is not a vosk model folder")
    lines = [line for line in path.read_text().splitlines() if line.split("=")[0] not in rules]
    path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in rules.items())]) + "\n")
    return path


def _prepared(voice: Path, target: str) -> StreamConfig | None:
    """The voice's split (and, for a board, its decoder for that chip) when an earlier setup made them
    from this very voice file: a re-run neither spends a pulsar2 build on them again nor, if that
    build failed, leaves the voice without the decoder it had."""
    from assistant.setup.pulsar2 import CHIPS

    try:
        stream = StreamConfig.load(voice)
        split_at = stream_config_path(voice).stat().st_mtime_ns
    except (OSError, ValueError, TypeError):  # none yet, or a config cut short
        return None
    if (
        stream is None
        or split_at < max(voice.stat().st_mtime_ns, Path(f"{voice}.json").stat().st_mtime_ns)
        or (stream.chunk, stream.first) != (CHUNK_FRAMES, FIRST_FRAMES)
    ):
        return None
    parts = [stream.encoder, stream.flow, stream.decoder]
    if target in CHIPS:
        if stream.chip != CHIPS[target] or not stream.axmodel:
            return None
        parts.append(stream.axmodel)
    return stream if all(voice.with_name(name).is_file() for name in parts) else None


def prepare_speech(vosk_model: Path, voice: Path, target: str, pulsar2: str | None, image: str | None) -> list[Path]:
    """The setup step after the downloads: endpoint rules, the voice split, its decoder for the board."""
    try:
        return _prepare_speech(vosk_model, voice, target, pulsar2, image)
    except OSError as e:  # its writes name no file: the voice's folder, not wherever setup builds the model
        raise SetupError(write_problem(e, voice)) from None


def _prepare_speech(vosk_model: Path, voice: Path, target: str, pulsar2: str | None, image: str | None) -> list[Path]:
    files = [write_endpoint_rules(vosk_model)]
    stream = _prepared(voice, target)
    if stream is not None:
        log.info("%s: already split%s", voice, f" and its decoder built for the {target}" if stream.axmodel else "")
    else:
        try:
            stream = split_voice(voice)
        except NotAVoice:  # `assistant run` could not load it either
            raise
        except SetupError as e:
            log.warning("%s: %s; it will speak whole sentences", voice, e)
            return files
        if target in ("ax630c", "ax650n"):
            stream = build_decoder_axmodel(voice, target, pulsar2, image)
    names = [stream.encoder, stream.flow, stream.decoder, *([stream.axmodel] if stream.axmodel else [])]
    return [*files, stream_config_path(voice), *(voice.with_name(n) for n in names)]
