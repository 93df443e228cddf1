"""A stand-in for AXERA's pyaxengine that behaves as the real package does on a board.

Followed line by line: AXERA-TECH/pyaxengine at 0.1.3 (commit 3554448). Comments name the file and
function each check comes from. Where the board would silently go wrong (an F-ordered array is
copied in its memory order) this does the same, so the stand-in is never kinder than the board.

The model files are zip archives written by the pulsar2 stand-in: `io.json` (the shape groups)
and `model.onnx` (the compute: the host exporter's float graph, run with onnxruntime on inputs
and outputs rounded to bf16).

Environment (tests only): AXENGINE_STANDIN_PROVIDERS (comma-separated available providers,
default AxEngineExecutionProvider), AXENGINE_STANDIN_VERSION ("0.1.1": run() without shape_group,
as before pyaxengine 0.1.2rc0; "0.1.2rc0": every run with AXCLRTExecutionProvider fails, as in that
release; "0.1.2rc0" and "0.1.3rc0": the board's outputs are views that the session's next run
overwrites), AXENGINE_STANDIN_NO_GROUP_COUNT (a board runtime too old to count shape groups),
AXENGINE_STANDIN_NO_DEVICE (the NPU's driver cannot be opened: on the board its device nodes are
missing or not this user's; with the M.2 card, no card is found), AXENGINE_STANDIN_CMM_BYTES (the
board's CMM, the memory the NPU's models and buffers live in, or the M.2 card's memory, that is still free
for this process),
AXENGINE_STANDIN_CHIP (the board's chip as Pulsar2 names it, AX620E or AX650; unset: the chip each model
was built for; the M.2 card is an AX650 whatever this says), AXENGINE_STANDIN_VNPU (ENABLED, BIG_LITTLE or
LITTLE_BIG: the board's NPU was started split into virtual NPUs by another program).
The package's metadata version is what a test puts on the path beside it.
"""

from __future__ import annotations

import io
import json
import mmap
import os
import threading
import zipfile
from collections.abc import Sequence
from typing import Any

import ml_dtypes
import numpy as np

axengine_provider_name = "AxEngineExecutionProvider"  # _providers.py
axclrt_provider_name = "AXCLRTExecutionProvider"
VERSION = os.environ.get("AXENGINE_STANDIN_VERSION", "0.1.3")
# Releases whose board session returns its outputs as views of its output buffers, which the
# session's next run overwrites (_axe.py run, before commit 87418a8 added `.copy()`).
OUTPUTS_ARE_VIEWS = ("0.1.2rc0", "0.1.3rc0")
RUNS: list[dict] = []  # every run: model file, shape group, input shapes (for tests that check the calls)
_card_sessions: list = []  # _axclrt.py:26 _all_model_instances: every card session that finished __init__


def get_all_providers() -> list[str]:
    return [axengine_provider_name, axclrt_provider_name]


# _providers.py:11-33: the providers are found once, when the package is imported (by their runtime
# libraries); a library installed later is not seen by this process.
_providers = [p for p in os.environ.get("AXENGINE_STANDIN_PROVIDERS", axengine_provider_name).split(",") if p]


def get_available_providers() -> list[str]:
    return _providers


# __init__.py:16-19: importing fails when no provider's library is found.
if not get_available_providers():
    raise ImportError(
        f"No providers found. Please make sure you have installed one of the following: {get_all_providers()}"
    )
print("[INFO] Available providers: ", get_available_providers())


class NodeArg:  # _node.py:10-14
    def __init__(self, name: str, dtype: np.dtype, shape: list[int]):
        self.name = name
        self.dtype = dtype
        self.shape = shape


class SessionOptions:  # _base_session.py:15-16
    pass


def _start_runtime(provider: str) -> None:
    """What importing the provider's session module does once per process, before any model is read.

    _axe.py:77-83, 112: AX_SYS_Init, which opens the board's NPU and memory drivers, fails without
    them ("Failed to initialize ax sys."); the import then fails and the next session tries again.
    _axclrt.py:105-108: the card's runtime finds no card (the device list is checked per session).
    """
    if not os.environ.get("AXENGINE_STANDIN_NO_DEVICE"):
        return
    if provider == axclrt_provider_name:
        raise RuntimeError(f"Get AXCL device failed 0x{0:08x}, find total {0} device.")
    raise RuntimeError("Failed to initialize ax sys.")


_cmm_taken = 0  # bytes of the board's CMM this process holds


def _cmm_alloc(size: int) -> bool:
    """AX_SYS_MemAllocCached, and the runtime's own allocation of a model's weights: False when
    the CMM left (AXENGINE_STANDIN_CMM_BYTES, unlimited when unset) cannot hold `size` more bytes."""
    global _cmm_taken
    free = os.environ.get("AXENGINE_STANDIN_CMM_BYTES")
    if free is not None and _cmm_taken + size > int(free):
        return False
    _cmm_taken += size
    return True


_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "uint32": np.dtype(np.uint32), "float32": np.dtype(np.float32)}


class _AxeSession:
    """_axe.py AXEngineSession, with the NPU replaced by onnxruntime on bf16-rounded tensors."""

    def __init__(self, path_or_bytes: str | bytes | os.PathLike, provider: str):
        import onnxruntime

        self._provider = provider
        self._model_id = None  # _axclrt.py:100, then 153: the card's model handle, set once a card is found
        _start_runtime(provider)
        self._model_id = [0]
        # _axe.py run() fills the session's one set of IO buffers and runs its one context: two runs
        # at once on one session mix their inputs and outputs. The board does so silently; this raises.
        self._running = threading.Lock()
        if provider == axclrt_provider_name:
            model = self._read_on_the_card(path_or_bytes)
        else:
            model = self._read_on_the_board(path_or_bytes)
        board = provider == axengine_provider_name
        try:
            with zipfile.ZipFile(io.BytesIO(model)) as archive:
                table = json.loads(archive.read("io.json"))
                onnx_bytes = archive.read("model.onnx")
        except (KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            table = {"chip": None}
        # The chip that runs it: the board's own (AXENGINE_STANDIN_CHIP), or the M.2 card's, which
        # is an AX650N whatever the host (AXERA's M.2 accelerator cards are AX650N / AX8850, AX650 to Pulsar2).
        chip = os.environ.get("AXENGINE_STANDIN_CHIP", table["chip"]) if board else "AX650"
        self._chip = chip
        if table["chip"] != chip:
            # _axe.py:151, 272: the board's runtime is first asked the file's model type, which fails for
            # a file that is not an axmodel of this chip (before "Failed to load model.", 197-199).
            # _axclrt.py:185-187: the card's runtime loads the file whole, and fails in its one message.
            raise RuntimeError("Failed to get model type." if board else "axclrtEngineLoadFromFile failed.")
        if board:
            self._check_vnpu(table.get("npu_mode"))
        self._groups = table["groups"]
        # The model's weights go into the NPU's memory: the board's CMM, or the card's own memory
        # (both AXENGINE_STANDIN_CMM_BYTES, for the one this process uses).
        if not _cmm_alloc(len(model)):  # _axe.py:197-199: AX_ENGINE_CreateHandleV2 copies the model in
            raise RuntimeError("Failed to load model." if board else "axclrtEngineLoadFromFile failed.")
        self._model_bytes = len(model)  # given back by __del__ (_axe.py:263, 323-326; _axclrt.py:226-228)
        if board and os.environ.get("AXENGINE_STANDIN_NO_GROUP_COUNT"):
            # _axe.py:203-207: a board runtime without AX_ENGINE_GetGroupIOInfoCount (cffi raises
            # AttributeError) counts one group, whose IO info is the model's default (group 0's).
            print("[WARNING] function/symbol 'AX_ENGINE_GetGroupIOInfoCount' not found in library")
            self._groups = self._groups[:1]
        self._shape_count = len(self._groups)  # _axe.py:204, _get_shape_count()
        self._inputs = [[NodeArg(n, _DTYPES[d], s) for n, d, s in g["inputs"]] for g in self._groups]
        self._outputs = [[NodeArg(n, _DTYPES[d], s) for n, d, s in g["outputs"]] for g in self._groups]
        # _axe.py:229-261: one buffer per input and output, the size of its largest shape group.
        self._in_buffers = [bytearray(max(_nbytes(g[i]) for g in self._inputs)) for i in range(len(self._inputs[0]))]
        self._out_buffers = [bytearray(max(_nbytes(g[i]) for g in self._outputs)) for i in range(len(self._outputs[0]))]
        for kind, buffers in (("input", self._in_buffers), ("output", self._out_buffers)):
            for i, buffer in enumerate(buffers):
                if _cmm_alloc(len(buffer)):
                    # the board's are never freed (_axe.py has no AX_SYS_MemFree); the card's are (_axclrt.py:215-223)
                    self._model_bytes += 0 if board else len(buffer)
                elif board:  # _axe.py:238-242, 255-259
                    raise RuntimeError(f"Failed to allocate memory for {kind}.")
                else:  # _axclrt.py:310-312, 322-324 (its status when the card's memory is short is not known here)
                    raise RuntimeError(f"axclrtMalloc failed 0x{0:08x} for {kind} {i}.")
        from assistant.llm.backends import session_options  # the process's onnxruntime set-up, if any

        self._compute = onnxruntime.InferenceSession(onnx_bytes, session_options(), providers=["CPUExecutionProvider"])
        if provider == axclrt_provider_name:
            self._model_id = [1]
            _card_sessions.append(self)  # _axclrt.py:175, the last line of __init__

    def _check_vnpu(self, npu_mode: str | None) -> None:
        """_axe.py:167-192: a board whose NPU another program started split into virtual NPUs (the
        mode _initialize_engine adopts, 86-93) refuses a model built for more of it than one vNPU.

        Model types (_axe_types.py): on the AX620E, NPU1 is HALF and anything more FULL; on the AX650,
        NPU1, NPU2, NPU3 are SINGLE, DUAL (printed as FULL, its alias), TRIPLE. A model without an
        npu_mode (llm_build's) is taken as the whole NPU.
        """
        vnpu = os.environ.get("AXENGINE_STANDIN_VNPU", "DISABLED").upper()
        cores = {"NPU1": 1, "NPU2": 2, "NPU3": 3}.get(npu_mode or "", 3)
        if self._chip == "AX620E":
            refused, model_type = vnpu == "ENABLED" and cores > 1, "FULL" if cores > 1 else "HALF"
        else:
            model_type = {1: "SINGLE", 2: "FULL", 3: "TRIPLE"}[cores]
            refused = (vnpu == "ENABLED" and cores > 1) or (vnpu in ("BIG_LITTLE", "LITTLE_BIG") and cores == 3)
        if refused:
            raise ValueError(
                f"Model type 'ModelType.{model_type}' is not allowed when vnpu is inited as VNPUType.{vnpu}."
            )

    def __del__(self) -> None:
        """_axclrt.py:177-179, 214-228: a card session that failed in __init__ raises here when it is
        collected (None[0] before a card was found, list.remove after), which Python prints to stderr
        as "Exception ignored in ... Traceback". The board's session (_axe.py:263, 323) does not."""
        global _cmm_taken
        _cmm_taken -= getattr(self, "_model_bytes", 0)
        if self._provider == axclrt_provider_name:
            if self._model_id[0] is not None and self._model_id[0] != 0:
                self._model_id[0] = 0
            _card_sessions.remove(self)

    def _read_on_the_board(self, path_or_bytes) -> bytes:
        """_axe.py:136-148: a path is opened and mapped by Python, so its errors are Python's own
        (FileNotFoundError, PermissionError; ValueError "cannot mmap an empty file"), not the runtime's."""
        if isinstance(path_or_bytes, (str, os.PathLike)):
            self._model_name = os.path.splitext(os.path.basename(path_or_bytes))[0]
            with open(path_or_bytes, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return bytes(mapped)
        if isinstance(path_or_bytes, bytes):  # _axe.py:144-146 sets no _model_name, which _load (283) reads
            raise AttributeError("'AXEngineSession' object has no attribute '_model_name'")
        raise TypeError(f"Unable to load model from type '{type(path_or_bytes)}'")

    def _read_on_the_card(self, path_or_bytes) -> bytes:
        """_axclrt.py:181-207: the card's runtime opens a path itself, given as `path.encode('utf-8')`
        (a pathlib.Path has no encode: AttributeError); any failure is its one message."""
        if isinstance(path_or_bytes, (str, os.PathLike)):
            name = path_or_bytes.encode("utf-8")
            self._model_name = os.path.splitext(os.path.basename(path_or_bytes))[0]
            try:
                with open(name, "rb") as f:
                    return f.read()
            except OSError:
                raise RuntimeError("axclrtEngineLoadFromFile failed.") from None
        if isinstance(path_or_bytes, bytes):
            self._model_name = ""
            return path_or_bytes
        raise TypeError(f"Unable to load model from type '{type(path_or_bytes)}'")

    # _base_session.py:25-38
    def _validate_input(self, feed_input_names: dict[str, np.ndarray]) -> None:
        missing_input_names = [i.name for i in self.get_inputs() if i.name not in feed_input_names]
        if missing_input_names:
            raise ValueError(
                f"Required inputs ({missing_input_names}) are missing from input feed ({feed_input_names})."
            )

    def _validate_output(self, output_names: list[str] | None) -> None:
        if output_names is not None:
            for name in output_names:
                if name not in [o.name for o in self.get_outputs()]:
                    raise ValueError(f"Output name '{name}' is not in model outputs name list.")

    def get_inputs(self, shape_group: int = 0) -> list[NodeArg]:
        if shape_group > self._shape_count:  # _base_session.py:41: `>`, so group == count raises IndexError below
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._inputs[shape_group]

    def get_outputs(self, shape_group: int = 0) -> list[NodeArg]:
        if shape_group > self._shape_count:
            raise ValueError(f"Shape group '{shape_group}' is out of range, total {self._shape_count}.")
        return self._outputs[shape_group]

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0) -> list[np.ndarray]:
        if not self._running.acquire(blocking=False):
            raise RuntimeError("two runs at once on one pyaxengine session (its IO buffers are shared)")
        try:
            return self._run(output_names, input_feed, shape_group)
        finally:
            self._running.release()

    def _run(self, output_names, input_feed, shape_group: int) -> list[np.ndarray]:
        # _axe.py:348-419, run(), in its order: validation 355-356, outputs 358-359, group 361-362,
        # exact shape and dtype 368-370, contiguity 372-373, memmove of npy.nbytes 376-378.
        self._validate_input(input_feed)
        self._validate_output(output_names)
        if None is output_names:
            output_names = [o.name for o in self.get_outputs(shape_group)]
        if (shape_group > self._shape_count - 1) or (shape_group < 0):
            raise ValueError(f"Invalid shape group: {shape_group}")
        for key, npy in input_feed.items():
            for i, one in enumerate(self.get_inputs(shape_group)):
                if one.name == key:
                    however = "howerver" if self._provider == axclrt_provider_name else "however"  # _axclrt.py:358
                    assert list(one.shape) == list(npy.shape) and one.dtype == npy.dtype, (
                        f"model inputs({key}) expect shape {one.shape} and dtype {one.dtype}, "
                        f"{however} gets input with shape {npy.shape} and dtype {npy.dtype}"
                    )
                    if not (npy.flags.c_contiguous or npy.flags.f_contiguous):
                        npy = np.ascontiguousarray(npy)
                    raw = npy.ravel(order="K").view(np.uint8)  # memmove of npy.nbytes: memory order, as it lies
                    self._in_buffers[i][: npy.nbytes] = raw.tobytes()
                    break
        RUNS.append(
            {
                "model": self._model_name,
                "group": shape_group,
                "shapes": {k: list(v.shape) for k, v in input_feed.items()},
            }
        )
        self._execute(shape_group)
        outputs = []
        # _axe.py:398-399: a model output missing from output_names raises ValueError here.
        origin_output_names = [o.name for o in self.get_outputs(shape_group)]
        outputs_ranks = [output_names.index(name) for name in origin_output_names]
        for i in outputs_ranks:
            meta = self.get_outputs(shape_group)[i]
            size = meta.dtype.itemsize * int(np.prod(meta.shape))
            npy = np.frombuffer(self._out_buffers[i], dtype=meta.dtype, count=size // meta.dtype.itemsize)
            npy = npy.reshape(meta.shape)  # _axe.py:407-413: read back in the group's shape
            if not (self._provider == axengine_provider_name and VERSION in OUTPUTS_ARE_VIEWS):
                npy = npy.copy()  # since 87418a8; the card's session always copied (_axclrt.py:384-386)
            if meta.name in output_names:
                outputs.append(npy)
        return outputs

    def _execute(self, group: int) -> None:
        """What the NPU computes: the graph on the buffers' contents, read in the group's shapes."""
        feeds = {}
        for i, meta in enumerate(self._inputs[group]):
            array = np.frombuffer(self._in_buffers[i], dtype=meta.dtype, count=int(np.prod(meta.shape)))
            array = array.reshape(meta.shape)
            feeds[meta.name] = array if meta.dtype == np.uint32 else array.astype(np.float32)
        history = self._groups[group].get("history")
        if history == 0:  # the history-free prefill group ignores its one-row dummy cache
            kv_dim = self._outputs[group][0].shape[-1]
            feeds["K_cache"] = feeds["V_cache"] = np.zeros((1, 0, kv_dim), np.float32)
        results = self._compute.run(None, feeds)
        for i, (meta, result) in enumerate(zip(self._outputs[group], results, strict=True)):
            if list(result.shape) != list(meta.shape):
                raise RuntimeError("Failed to run model.")
            data = result.astype(meta.dtype).tobytes()
            self._out_buffers[i][: len(data)] = data


def _nbytes(meta: NodeArg) -> int:
    return meta.dtype.itemsize * int(np.prod(meta.shape))


class InferenceSession:
    """_session.py:19-84 InferenceSession: provider selection (the messages of lines 42, 67, 69, 73, 74),
    then the session of that provider."""

    def __init__(
        self,
        path_or_bytes: str | bytes | os.PathLike,
        sess_options: SessionOptions | None = None,
        providers: Sequence[str | tuple[str, dict[Any, Any]]] | None = None,
        provider_options: Sequence[dict[Any, Any]] | None = None,
        **kwargs,
    ) -> None:
        available = get_available_providers()
        provider = None
        if providers is None:
            provider = available[0]
        elif isinstance(providers, str):
            if providers not in available:
                raise ValueError(f"Selected provider: '{providers}' is not available.")
            provider = providers
        elif isinstance(providers, list):
            unavailable = []
            for p in providers:
                assert isinstance(p, (str, tuple)), f"Invalid provider type: {type(p)}. Must be str or tuple."
                if isinstance(p, tuple):  # _session.py:56-58
                    assert len(p) == 2, f"Invalid provider type: {p}. Must be tuple with 2 elements."
                    assert isinstance(p[0], str), f"Invalid provider type: {type(p[0])}. Must be str."
                    assert isinstance(p[1], dict), f"Invalid provider type: {type(p[1])}. Must be dict."
                name = p if isinstance(p, str) else p[0]
                if name not in available:
                    unavailable.append(name)
                elif provider is None:
                    provider = name
            if unavailable:
                if provider is None:
                    raise ValueError(f"Selected provider(s): {unavailable} is(are) not available.")
                print(f"[WARNING] Selected provider(s): {unavailable} is(are) not available.")
        if provider is None:
            raise ValueError(f"No available provider found in {providers}.")
        print(f"[INFO] Using provider: {provider}")
        self._provider = provider
        self._sess = _AxeSession(path_or_bytes, provider)

    def get_providers(self):
        return self._provider

    def get_inputs(self, shape_group: int = 0) -> list[NodeArg]:
        return self._sess.get_inputs(shape_group)

    def get_outputs(self, shape_group: int = 0) -> list[NodeArg]:
        return self._sess.get_outputs(shape_group)

    def run(self, output_names, input_feed, run_options=None, shape_group: int = 0) -> list[np.ndarray]:
        return self._sess.run(output_names, input_feed, run_options, shape_group)


if VERSION == "0.1.2rc0":  # its M.2-card session reads outputs through a void * (_axclrt.py:382, fixed in 8ab2455)
    _run_with_groups = InferenceSession.run

    def _run_on_the_card_fails(self, output_names, input_feed, run_options=None, shape_group: int = 0):
        if self._provider == axclrt_provider_name:
            raise AttributeError("cdata 'void *' has no attribute 'pOutputs'")
        return _run_with_groups(self, output_names, input_feed, run_options, shape_group)

    InferenceSession.run = _run_on_the_card_fails

if VERSION == "0.1.1":  # before shape groups (commit 6bc2ac8): run() had no shape_group

    def _run_without_groups(self, output_names, input_feed, run_options=None) -> list[np.ndarray]:
        return self._sess.run(output_names, input_feed, run_options, 0)

    InferenceSession.run = _run_without_groups
