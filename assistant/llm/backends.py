"""Per-layer sessions: axmodels through pyaxengine on the board, ONNX through onnxruntime elsewhere.

Both expose the same thing to the engine: `run(feeds, prefill)` returning the contract's outputs
(K_cache_out, V_cache_out, output for a layer; logits for post) as numpy arrays, plus the dtype
the sessions take and whether their KV length is fixed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from assistant.llm.manifest import FIX, LayerFiles, Manifest, ModelError, verify_files

log = logging.getLogger(__name__)

LAYER_OUTPUTS = ("K_cache_out", "V_cache_out", "output")


@dataclass
class Sessions:
    backend: str
    layers: list[Any]  # one runner per decoder layer
    post: Any
    dtype: Any  # numpy dtype of K/V caches, hidden states and mask
    fixed_kv_len: bool  # axmodels take all L cache rows; ONNX graphs take just the valid ones
    prefill_len: int  # fixed prefill chunk of the graphs (0: any length, or no prefill graph)


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
    """One onnxruntime session; outputs in the contract's order."""

    def __init__(self, path: Path, threads: int, outputs: tuple[str, ...]):
        ort = _onnxruntime_environment(threads)
        options = session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for a corrupt file
            raise ModelError(f"{path}: cannot be loaded by onnxruntime ({str(e).splitlines()[0]}); {FIX}") from None
        _release_freed_memory()
        self.outputs = list(outputs)

    def input_shapes(self) -> dict[str, list]:
        return {i.name: i.shape for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray], prefill: bool = False) -> list[np.ndarray]:
        return self.session.run(self.outputs, feeds)


class AxRunner:
    """One pyaxengine session (.axmodel on the NPU); shape group 0 decodes, group 1 prefills."""

    def __init__(self, path: Path, provider: str, outputs: tuple[str, ...]):
        import axengine

        self.session = axengine.InferenceSession(str(path), providers=[provider])
        self.outputs = list(outputs)

    def input_shapes(self) -> dict[str, list]:
        return {i.name: list(i.shape) for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray], prefill: bool = False) -> list[np.ndarray]:
        return self.session.run(self.outputs, feeds, shape_group=1 if prefill else 0)


def axengine_available() -> bool:
    try:
        import axengine  # noqa: F401
    except ImportError:
        return False
    return True


def open_sessions(
    model_dir: Path,
    manifest: Manifest,
    backend: str = "auto",
    threads: int = 2,
    provider: str = "AxEngineExecutionProvider",
) -> Sessions:
    """Check the chosen backend's files against the manifest, then open one session per graph."""
    if backend == "auto":
        backend = "axengine" if "axengine" in manifest.backends and axengine_available() else "onnxruntime"
    files = manifest.backends.get(backend)
    if files is None:
        have = ", ".join(manifest.backends) or "none"
        raise ModelError(f"{model_dir}: has no {backend} graphs (it has: {have}); {FIX} for this target")
    if len(files.layers) != manifest.num_layers:
        raise ModelError(f"{model_dir}: manifest lists {len(files.layers)} {backend} layers, not {manifest.num_layers}")
    verify_files(model_dir, manifest, [manifest.tokenizer, manifest.embeddings, *files.layers, files.post])
    log.info("opening %d %s layer sessions from %s", len(files.layers), backend, model_dir)
    if backend == "axengine":
        import ml_dtypes

        if not axengine_available():
            raise ModelError("backend axengine: pyaxengine is not installed (see README: installing on the board)")
        layers = [AxRunner(model_dir / f, provider, LAYER_OUTPUTS) for f in files.layers]
        post = AxRunner(model_dir / files.post, provider, ("logits",))
        sessions = Sessions(backend, layers, post, np.dtype(ml_dtypes.bfloat16), True, files.prefill_len)
    else:
        post = OnnxRunner(model_dir / files.post, threads, ("logits",))  # the largest first: lower peak RSS
        layers = [OnnxRunner(model_dir / f, threads, LAYER_OUTPUTS) for f in files.layers]
        sessions = Sessions(backend, layers, post, np.dtype(np.float32), False, files.prefill_len)
    _check_dims(model_dir, manifest, files, sessions)
    return sessions


def _check_dims(model_dir: Path, manifest: Manifest, files: LayerFiles, sessions: Sessions) -> None:
    """The graphs' declared shapes must agree with the manifest before anything runs."""
    for rel, runner in zip(files.layers, sessions.layers, strict=True):
        shapes = runner.input_shapes()
        expected = {"K_cache": manifest.kv_dim, "V_cache": manifest.kv_dim, "input": manifest.hidden_size}
        for name, size in expected.items():
            if name not in shapes:
                raise ModelError(f"{model_dir / rel}: has no input {name!r}; not a layer graph of this contract")
            if shapes[name][-1] != size:
                raise ModelError(
                    f"{model_dir / rel}: input {name} has last dimension {shapes[name][-1]}, "
                    f"the manifest says {size}; {FIX}"
                )
