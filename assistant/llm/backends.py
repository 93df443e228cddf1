"""Per-layer sessions: axmodels through pyaxengine on the board, ONNX through onnxruntime elsewhere.

Both expose the same thing to the engine: `run(feeds, group)` returning the contract's outputs in
the model's order (K_cache_out, V_cache_out, output for a layer; output for post) as numpy arrays.
The board's graphs have fixed shapes per shape group; `BoardShapes` is what the engine needs to
know of them, read from the sessions themselves (README: "The board path").
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import inspect
import logging
import re
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assistant.llm.manifest import CHAT_TEMPLATE_FILE, FIX, LayerFiles, Manifest, ModelError, verify_files

log = logging.getLogger(__name__)

LAYER_INPUTS = ("K_cache", "V_cache", "indices", "input", "mask")
LAYER_OUTPUTS = ("K_cache_out", "V_cache_out", "output")
POST_OUTPUTS = ("output",)  # Pulsar2's post model names its logits "output" (ax-llm reads get_output("output"))
MIN_PYAXENGINE = "0.1.2rc0"  # the first release whose run() takes shape_group
# 0.1.2rc0's M.2-card session reads its outputs through a void * (axengine/_axclrt.py, run) and
# fails every run with AttributeError; fixed in 0.1.3rc0, whose metadata says 0.1.3.
MIN_PYAXENGINE_AXCLRT = (0, 1, 3)
AXCLRT = "AXCLRTExecutionProvider"
BUILD_FOR_THE_NPU = "`assistant setup --target ax630c` (AX630C) or `--target ax650n` (AX650N) on a PC with Pulsar2"
OTHER_CHIP = {"AX630C": "AX650N", "AX650N": "AX630C"}  # the two chips `assistant setup` builds for
CARD_CHIP = "AX650N"  # the chip of AXERA's M.2 cards (AXCLRTExecutionProvider), whatever the host is
FREE_CARD = "stop other programs that use the card (`axcl-smi` shows them and its memory)"
# pyaxengine's own messages when the NPU runtime cannot start, before any model is read: the board's
# drivers (axengine/_axe.py, _initialize_engine, run on the first session) or the M.2 card
# (axengine/_axclrt.py, _initialize_axclrt and AXCLRTSession.__init__).
RUNTIME_FAILURES = ("Failed to initialize", "VNPU attribute", "AXCL device", "Device index", "axclrtEngineInit")
# The board's CMM: the memory its NPU's models and buffers take, shared with every other program using the NPU.
FREE_CMM = "stop other programs that use the NPU or give the board more CMM (free: /proc/ax_proc/mem_cmm_info)"


@dataclass
class PrefillGroup:
    """One prefill shape group of the board's layer graphs."""

    index: int  # the shape_group number passed to run()
    tokens: int  # P: every run takes exactly this many tokens (padding rows masked)
    history: int  # H: cache rows the group attends to before its chunk (mask width H + P)
    kv_shape: tuple[int, ...]  # exact K_cache / V_cache shape: [1, H, kv_dim], or a one-row dummy when H = 0


@dataclass
class BoardShapes:
    """The fixed shapes of the board's layer graphs: group 0 decodes, groups 1.. prefill."""

    kv_rows: int  # L: group 0 takes all L cache rows and a mask of L + 1
    prefill: list[PrefillGroup] = field(default_factory=list)  # by growing history

    def prefill_group(self, pos: int) -> PrefillGroup | None:
        """The smallest prefill group whose history holds the `pos` rows already in the cache."""
        return next((g for g in self.prefill if g.history >= pos), None)


@dataclass
class Sessions:
    backend: str
    layers: list[Any]  # one runner per decoder layer
    post: Any
    dtype: Any  # numpy dtype of K/V caches, hidden states and mask
    board: BoardShapes | None  # None: the graphs take any T and any number of cache rows (ONNX)


_ort_threads: int | None = None


def _onnxruntime_environment(threads: int):
    """Set up onnxruntime once per process: one thread pool and one arena for all sessions.

    With a pool per session, 25 pools spin against each other on two cores and a token takes
    twenty times longer; with an arena per session, prefill buffers add hundreds of MB.
    """
    global _ort_threads
    import onnxruntime as ort

    if _ort_threads is None:
        from onnxruntime.capi import _pybind_state

        _pybind_state.set_global_thread_pool_sizes(threads, 1)
        arena = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(arena, None)
        _ort_threads = threads
    elif threads != _ort_threads:
        log.warning("onnxruntime already runs with %d threads in this process; ignoring %d", _ort_threads, threads)
    return ort


def _release_freed_memory() -> None:
    """Hand memory that glibc keeps after parsing a model back to the system (~250 MB for 0.5B)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def session_options():
    """SessionOptions for any onnxruntime session in this process (the LLM's, the voice's).

    Once the LLM has set up the shared thread pool, every later session must use it too:
    onnxruntime refuses a session with threads of its own in such a process.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if _ort_threads is not None:
        options.use_per_session_threads = False
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


class OnnxRunner:
    """One onnxruntime session; dynamic shapes, so the shape group is ignored."""

    def __init__(self, path: Path, threads: int):
        ort = _onnxruntime_environment(threads)
        options = session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a corrupt file
            raise ModelError(f"{path}: cannot be loaded by onnxruntime ({str(e).splitlines()[0]}); {FIX}") from None
        _release_freed_memory()
        self.path = path

    def inputs(self, group: int = 0) -> dict[str, list]:
        return {i.name: i.shape for i in self.session.get_inputs()}

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        return self.session.run(None, feeds)


class AxRunner:
    """One pyaxengine session (.axmodel on the NPU).

    Outputs are always asked for as None: pyaxengine raises for a name the model lacks and, since
    0.1.3, for a list that leaves any model output out (axengine/_axe.py, `run`: outputs_ranks).
    A session has one set of IO buffers that every run fills and reads back (axengine/_axe.py,
    `run`), so two runs at once would mix their tensors without an error: runs take turns here
    (the voice's decoder is run by a reply and by an announcement, each on its own thread).
    """

    def __init__(self, path: Path, provider: str, chip: str = ""):
        with _prints_to_stderr():
            import axengine

        _check_pyaxengine(provider)  # every run passes shape_group, the LLM's layers and the voice's decoder alike
        try:
            with _prints_to_stderr():
                self.session = axengine.InferenceSession(str(path), providers=[provider])
        except (ValueError, RuntimeError, OSError) as e:
            _drop_half_built_session(e)
            raise ModelError(_cannot_open(path, provider, e, chip)) from None
        self.path = path
        self._one_run = threading.Lock()

    def inputs(self, group: int = 0) -> dict[str, list]:
        return {i.name: list(i.shape) for i in self.session.get_inputs(shape_group=group)}

    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def group_count(self) -> int:
        """How many shape groups the model has (pyaxengine exposes no count; asking past it raises)."""
        count = 0
        while True:
            try:
                self.session.get_inputs(shape_group=count)
            except (ValueError, IndexError):  # _base_session.py get_inputs: "> count" raises, "== count" indexes past
                return count
            count += 1

    def run(self, feeds: dict[str, np.ndarray], group: int = 0) -> list[np.ndarray]:
        with self._one_run:
            outputs = self.session.run(None, feeds, shape_group=group)
            # Before 0.1.3.rc1 they are views of the session's buffers, which the next run (another
            # thread's, once the lock is let go) overwrites: those are copied while the lock is held.
            return [out if out.base is None else out.copy() for out in outputs]


def _cannot_open(path: Path, provider: str, e: Exception, chip: str = "") -> str:
    """One line for a session pyaxengine could not open: what failed, and what fixes it.

    `chip`: what the manifest says the file was built for, when it says so.
    """
    if isinstance(e, ValueError) and "vnpu" in str(e):  # axengine/_axe.py, AXEngineSession.__init__: model type
        return (
            f"{path}: the NPU is split into virtual NPUs (vNPU) by another program that uses it, and this model "
            f"needs the whole NPU ({e}); stop that program, or start it without vNPU, then start the assistant again"
        )
    if isinstance(e, ValueError):  # an unavailable provider: axengine/_session.py, InferenceSession.__init__
        return f"{path}: pyaxengine cannot open it with {provider} ({e}); check llm.axengine_provider"
    if isinstance(e, OSError):  # on the board pyaxengine opens the file itself (axengine/_axe.py, __init__)
        return f"{path}: pyaxengine cannot open it ({e.strerror}); {FIX}"
    if any(words in str(e) for words in RUNTIME_FAILURES):
        return f"pyaxengine cannot start the NPU ({e}); {_runtime_fix(provider)}"
    if "allocate memory" in str(e):  # axengine/_axe.py, AXEngineSession.__init__: AX_SYS_MemAllocCached
        return f"{path}: the NPU's memory is full ({e}); {FREE_CMM}"
    if provider == AXCLRT and "axclrtMalloc" in str(e):  # axengine/_axclrt.py, _prepare_io: the session's buffers
        return f"{path}: the M.2 card's memory is full ({e}); {FREE_CARD}"
    if provider == AXCLRT and "LoadFromFile" in str(e):  # axengine/_axclrt.py, _load: the card's one message
        if chip == CARD_CHIP:
            return (
                f"{path}: the M.2 card cannot load it ({e}): is the card's memory full ({FREE_CARD}), "
                "or the file damaged (`assistant setup --verify DIR` checks it)?"
            )
        built = f"it was built for the {chip}" if chip else "was it built for the AX630C?"
        return (
            f"{path}: the M.2 card cannot load it ({e}): {built}, and the card is an {CARD_CHIP}; build it with "
            f"`assistant setup --target {CARD_CHIP.lower()}` on a PC with Pulsar2"
        )
    # "Failed to get model type.": the runtime cannot read this file as its model; "Failed to load
    # model.": nor load it, which also happens when its weights do not fit in the CMM that is left
    if "model type" in str(e) and (other := OTHER_CHIP.get(chip)):
        return (
            f"{path}: pyaxengine cannot load it ({e}): it was built for the {chip}; on an {other} build it "
            f"with `assistant setup --target {other.lower()}` on a PC with Pulsar2"
        )
    cmm = f", or the NPU's memory full ({FREE_CMM})" if "load model" in str(e) else ""
    return f"{path}: pyaxengine cannot load it ({e}): built for another chip{cmm}? build it with {BUILD_FOR_THE_NPU}"


def _drop_half_built_session(error: Exception) -> None:
    """Let go of the session pyaxengine failed to build, now and quietly.

    Its M.2-card session raises in __del__ when __init__ did not finish (axengine/_axclrt.py:
    `self._model_id[0]` on None, `_all_model_instances.remove`), which Python prints as a traceback
    under the one-line error whenever the exception that holds it is dropped.
    """
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: log.debug("pyaxengine, dropping a session: %r", unraisable.exc_value)
    try:
        traceback.clear_frames(error.__traceback__)  # the frames that still hold the half-built session
    finally:
        sys.unraisablehook = hook


def _prints_to_stderr() -> contextlib.AbstractContextManager:
    """pyaxengine print()s its set-up ("[INFO] Using provider", the chip, every model's compiler
    version) to stdout, where `assistant chat` writes its replies: send them to stderr with the log."""
    return contextlib.redirect_stdout(sys.stderr)


def _runtime_fix(provider: str) -> str:
    if provider == AXCLRT:
        return "is the M.2 card seated, its AXCL driver loaded (/dev/axcl_host), and may this user open it?"
    return "are the board's NPU drivers loaded (the /dev/ax_* nodes) and may this user open them (the service's too)?"


def axengine_problem() -> str | None:
    """Why pyaxengine cannot be used here, or None when it imports."""
    try:
        with _prints_to_stderr():
            import axengine  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "axengine":
            return "pyaxengine is not installed (see README: pyaxengine on the board)"
        return f"pyaxengine cannot be imported ({e})"
    except ImportError as e:  # axengine/__init__.py: no provider's runtime library was found
        return (
            f"pyaxengine finds no NPU runtime ({e}): the board's libax_engine.so (its BSP, /soc/lib) or the "
            "M.2 card's libaxcl_rt.so must be on the library path (ldconfig)"
        )
    return None


def axengine_available() -> bool:
    return axengine_problem() is None


@functools.cache  # asked by every session (each layer, the post model, the voice's decoder): looked up once
def _check_pyaxengine(provider: str) -> None:
    """Shape groups need pyaxengine >= 0.1.2rc0 (an older run() raises TypeError on every call), and
    the M.2 card's provider >= 0.1.3rc0."""
    import axengine

    try:
        from importlib.metadata import version

        installed = version("axengine")
    except Exception:  # no metadata: installed from a source tree
        installed = "(version unknown)"
    if "shape_group" not in inspect.signature(axengine.InferenceSession.run).parameters:
        raise ModelError(
            f"pyaxengine {installed} has no shape groups (run(..., shape_group=)); the LLM layers need "
            f"pyaxengine >= {MIN_PYAXENGINE}: install AXERA's newer release wheel (see README)"
        )
    numbers = tuple(int(n) for n in re.findall(r"\d+", installed)[:3])
    if provider == AXCLRT and numbers and numbers < MIN_PYAXENGINE_AXCLRT:
        raise ModelError(
            f"pyaxengine {installed} fails every run on the M.2 card ({AXCLRT}); it needs pyaxengine >= 0.1.3rc0: "
            "install AXERA's newer release wheel (see README)"
        )


def open_sessions(
    model_dir: Path,
    manifest: Manifest,
    backend: str = "auto",
    threads: int = 2,
    provider: str = "AxEngineExecutionProvider",
) -> Sessions:
    """Check the chosen backend's files against the manifest, then open one session per graph."""
    if backend == "auto":
        backend = _auto_backend(model_dir, manifest)
    files = manifest.backends.get(backend)
    if files is None:
        have = ", ".join(manifest.backends) or "none"
        fix = f"build them with {BUILD_FOR_THE_NPU}" if backend == "axengine" else f"{FIX} for this target"
        raise ModelError(f"{model_dir}: has no {backend} graphs (it has: {have}); {fix}")
    if len(files.layers) != manifest.num_layers:
        raise ModelError(f"{model_dir}: manifest lists {len(files.layers)} {backend} layers, not {manifest.num_layers}")
    names = [manifest.tokenizer, manifest.chat_template, manifest.embeddings, *files.layers, files.post]
    names += [CHAT_TEMPLATE_FILE] if CHAT_TEMPLATE_FILE in manifest.files else []
    verify_files(model_dir, manifest, names)
    log.info("opening %d %s layer sessions from %s", len(files.layers), backend, model_dir)
    if backend == "axengine":
        import ml_dtypes

        if problem := axengine_problem():
            raise ModelError(f"backend axengine: {problem}")
        layers = [AxRunner(model_dir / f, provider, files.chip) for f in files.layers]
        post = AxRunner(model_dir / files.post, provider, files.chip)
        board = board_shapes(layers, manifest, files)
        sessions = Sessions(backend, layers, post, np.dtype(ml_dtypes.bfloat16), board)
    else:
        post = OnnxRunner(model_dir / files.post, threads)  # the largest first: lower peak RSS
        layers = [OnnxRunner(model_dir / f, threads) for f in files.layers]
        sessions = Sessions(backend, layers, post, np.dtype(np.float32), None)
    _check_contract(manifest, sessions)
    return sessions


def _auto_backend(model_dir: Path, manifest: Manifest) -> str:
    """The NPU's layers when pyaxengine can run them here, else the CPU's; the log says why when
    pyaxengine is installed, since then the NPU was meant."""
    installed = importlib.util.find_spec("axengine") is not None
    problem = axengine_problem() if installed or "axengine" in manifest.backends else None
    if "axengine" in manifest.backends:
        if problem is None:
            return "axengine"
        if "onnxruntime" not in manifest.backends:  # the board's build only, and no NPU here
            raise ModelError(
                f"{model_dir}: holds only the NPU's axmodels, and {problem}; add the CPU's layers with "
                "`assistant setup` without --no-host"
            )
        if installed:
            log.warning("%s; the layers run on the CPU instead", problem)
    elif installed and problem is None:
        log.warning(
            "%s: has no axmodels, so its layers run on the CPU although pyaxengine finds an NPU here; "
            "build them with %s",
            model_dir,
            BUILD_FOR_THE_NPU,
        )
    return "onnxruntime"


def _check_contract(manifest: Manifest, sessions: Sessions) -> None:
    """Names, order and last dimensions of every graph's I/O must match the contract before anything runs."""
    expected = {"K_cache": manifest.kv_dim, "V_cache": manifest.kv_dim, "input": manifest.hidden_size}
    for runner in sessions.layers:
        shapes = runner.inputs()
        if sorted(shapes) != sorted(LAYER_INPUTS):
            raise ModelError(f"{runner.path}: inputs {sorted(shapes)}, not the layer contract's {list(LAYER_INPUTS)}")
        if tuple(runner.output_names()) != LAYER_OUTPUTS:
            raise ModelError(f"{runner.path}: outputs {runner.output_names()}, not {list(LAYER_OUTPUTS)}; {FIX}")
        for name, size in expected.items():
            if shapes[name][-1] != size:
                raise ModelError(
                    f"{runner.path}: input {name} has last dimension {shapes[name][-1]}, "
                    f"the manifest says {size}; {FIX}"
                )
    if tuple(sessions.post.output_names()) != POST_OUTPUTS:
        raise ModelError(f"{sessions.post.path}: outputs {sessions.post.output_names()}, not ['output']; {FIX}")


def board_shapes(layers: list[AxRunner], manifest: Manifest, files: LayerFiles) -> BoardShapes:
    """Read the shape groups from the layer sessions and check them against the manifest.

    Group 0 decodes one token over all L rows; every further group prefills P tokens after H
    history rows, H read from its mask ([1, P, H + P]), since the history-free group takes a
    one-row dummy cache whose shape says nothing.
    """
    first = layers[0]
    count = first.group_count()
    decode = first.inputs(0)
    rows = decode["K_cache"][1]
    if decode["mask"] != [1, 1, rows + 1] or decode["input"][1] != 1 or rows != manifest.kv_cache_len:
        raise ModelError(
            f"{first.path}: shape group 0 takes K_cache {decode['K_cache']} and mask {decode['mask']}, not a "
            f"one-token decode over kv_cache_len {manifest.kv_cache_len} rows; {FIX}"
        )
    board = BoardShapes(kv_rows=rows)
    for index in range(1, count):
        shapes = first.inputs(index)
        tokens = shapes["indices"][1]
        history = shapes["mask"][2] - tokens
        if history and shapes["K_cache"] != [1, history, manifest.kv_dim]:
            raise ModelError(f"{first.path}: shape group {index} has K_cache {shapes['K_cache']} for {history} rows")
        board.prefill.append(PrefillGroup(index, tokens, history, tuple(shapes["K_cache"])))
    board.prefill.sort(key=lambda g: g.history)
    table = [(g.index, g.tokens, g.history) for g in board.prefill]
    for runner in layers[1:]:
        if runner.group_count() != count or runner.inputs(count - 1) != first.inputs(count - 1):
            raise ModelError(f"{runner.path}: its shape groups differ from {first.path.name}'s; {FIX}")
    built = [(g.tokens, g.history) for g in board.prefill]
    declared = [(files.prefill_len, h) for h in [0, *files.kv_history]] if files.prefill_len else []
    if count == 1 and declared:  # pyaxengine counts one group when the runtime cannot count them (_axe.py)
        raise ModelError(
            f"{first.path}: the NPU runtime reports 1 shape group for a model built with {len(declared) + 1}: "
            "this board's libax_engine cannot count shape groups (pyaxengine warned that "
            "AX_ENGINE_GetGroupIOInfoCount is missing); update the board's SDK"
        )
    if built != declared:
        raise ModelError(
            f"{first.path}: prefill groups (tokens, history) {built} differ from the manifest's {declared}; {FIX}"
        )
    log.info("board shape groups: decode over %d rows; prefill (group, tokens, history) %s", rows, table)
    return board
