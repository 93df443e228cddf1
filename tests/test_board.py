"""The board path end to end: `assistant setup` through the pulsar2 stand-in, the engine through the
pyaxengine stand-in (tests/standins), every run checked against the shape groups of a real build."""

from __future__ import annotations

import importlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import yaml

from assistant.llm.conversation import Conversation
from assistant.llm.engine import Engine
from assistant.llm.manifest import ModelError
from assistant.llm.sampling import Sampler
from tests.conftest import STANDINS, board_build
from tests.test_engine import GREEDY, greedy_path, prompt, reference_logits

L, P, HIDDEN, KV_DIM = 1023, 128, 64, 32  # the default build of the tiny model: kv_cache_len, prefill_len, dims
HISTORY = [128, 256, 384, 512, 640, 768, 896]  # the default --last_kv_cache_len groups for L = 1023, P = 128
BF16 = np.dtype(ml_dtypes.bfloat16)


def check_run(run: dict) -> None:
    """One layer run against the shape-group rules of a `--prefill_len 128 --last_kv_cache_len …` build."""
    shapes, group = run["shapes"], run["group"]
    if group == 0:
        assert shapes == {"K_cache": [1, L, KV_DIM], "V_cache": [1, L, KV_DIM], "indices": [1, 1],
                          "input": [1, 1, HIDDEN], "mask": [1, 1, L + 1]}  # fmt: skip
        return
    history = ([0] + HISTORY)[group - 1]
    kv = [1, 1, HIDDEN] if history == 0 else [1, history, KV_DIM]
    assert shapes == {"K_cache": kv, "V_cache": kv, "indices": [1, P], "input": [1, P, HIDDEN],
                      "mask": [1, P, history + P]}  # fmt: skip


def layer_runs(axengine) -> list[dict]:
    return [r for r in axengine.RUNS if r["model"] == "qwen_l0"]


def test_setup_passes_the_history_groups_and_ax_llm_build_config(board_model: Path) -> None:
    config = json.loads((board_model / "pulsar2_config.json").read_text())
    assert config == {
        "model_name": "tiny-qwen2", "model_type": "qwen", "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_size": 64, "intermediate_size": 128, "vocab_size": config["vocab_size"],
        "rope_theta_base": 1000000.0, "max_position_embedings": 2048, "rope_partial_factor": 1.0,
        "norm_eps": 1e-6, "norm_type": "rms_norm", "hidden_act": "silu",
    }  # fmt: skip
    board = yaml.safe_load((board_model / "manifest.yaml").read_text())["backends"]["axengine"]
    assert board["prefill_len"] == P and board["kv_history"] == HISTORY and board["chip"] == "AX630C"
    assert board["post"] == "axmodel/qwen_post.axmodel" and len(board["layers"]) == 2


def test_conversation_runs_every_group_with_its_exact_shapes(board_model: Path, axengine, caplog) -> None:
    engine = Engine(board_model, backend="axengine")
    assert engine.sessions.backend == "axengine" and engine.dtype == BF16
    system = " ".join(f"rule {i}: keep the kitchen light on at {i} percent." for i in range(18))
    chat = Conversation(engine, system, max_new_tokens=12)
    warm_up = layer_runs(axengine)
    cached = len(engine.prompt_cache.tokens)
    assert 257 <= cached <= 384, cached  # a system prompt of three prefill chunks
    # The warm-up prefills in 128-token chunks on growing history groups, never token by token.
    assert [r["group"] for r in warm_up] == list(range(1, 1 + -(-cached // P)))

    for turn in range(3):
        axengine.RUNS.clear()
        reply = "".join(chat.reply(f"turn {turn}: set a timer for {turn + 2} minutes", Sampler(seed=turn)))
        runs = layer_runs(axengine)
        # The turn after the cached system prompt is a prefill on the smallest group holding the cache.
        first = runs[0]
        assert first["group"] >= 2 and ([0] + HISTORY)[first["group"] - 1] >= cached
        assert all(r["group"] == 0 for r in runs[1:] if r["shapes"]["indices"] == [1, 1])
        assert reply == "".join(chat.messages[-1]["content"])

    # Turns that grow the context past the largest history group (896 rows), then past L.
    axengine.RUNS.clear()
    with caplog.at_level(logging.WARNING, logger="assistant.llm.engine"):
        for turn in range(24):
            list(chat.reply("please " * (20 if turn < 16 else 200) + f"turn {turn}", Sampler(seed=turn)))
            assert engine.tokens[:cached] == engine.prompt_cache.tokens  # the system prompt is never cut
    runs = layer_runs(axengine)
    assert len(HISTORY) + 1 in {r["group"] for r in runs}  # the largest history group
    for run in [*warm_up, *runs]:
        check_run(run)
    # Past the largest group the rest of a prompt runs on group 0, and the log says so once.
    fallbacks = [r for r in caplog.records if "one token at a time" in r.getMessage()]
    assert len(fallbacks) == 1 and "the largest holds 896 rows" in fallbacks[0].getMessage()
    decode_runs = [r for r in runs if r["group"] == 0]
    assert len(decode_runs) > 24 * 12  # more than the replies' tokens: prompt tokens ran one by one too
    assert len(chat.messages) < 2 * 24  # old turns were dropped


def test_board_greedy_equals_host_and_agrees_with_transformers(
    board_model: Path, tiny_float: Path, hf_reference, axengine
) -> None:
    """bf16 tensors between the layers (the board's) against float32 on the host, both float weights.

    Tolerance: teacher-forced along transformers' greedy path, the board's top-1 token equals the
    host's at ≥ 97% of steps and its logits have cosine ≥ 0.995 to the reference (bf16 keeps 8 bits).
    """
    board, host = Engine(board_model, backend="axengine"), Engine(tiny_float)
    same, agree, cosines, steps = 0, 0, [], 0
    for seed in range(3):
        ids = prompt(seed, n=150)  # two prefill chunks on the board
        path = greedy_path(hf_reference, ids, 20)
        board_logits, host_logits = board.prefill(ids), host.prefill(ids)
        for step, token in enumerate(path):
            ref = reference_logits(hf_reference, ids + path[:step])
            same += int(np.argmax(board_logits)) == int(np.argmax(host_logits))
            agree += int(np.argmax(board_logits)) == token
            cosines.append(float(board_logits @ ref / np.linalg.norm(board_logits) / np.linalg.norm(ref)))
            board_logits, host_logits = board.forward([token]), host.forward([token])
            steps += 1
    assert same >= 0.97 * steps, f"board and host top-1 equal at {same}/{steps} steps"
    assert agree >= 0.9 * steps, f"board agrees with transformers at {agree}/{steps} steps"
    assert min(cosines) >= 0.995, min(cosines)
    # Free-running greedy continuations are the same tokens.
    ids = prompt(7, n=40)
    assert list(board.generate(ids, GREEDY, 12)) == list(host.generate(ids, GREEDY, 12))


def test_a_wrong_feed_fails_as_pyaxengine_fails(board_model: Path, axengine) -> None:
    layer = axengine.InferenceSession(
        str(board_model / "axmodel/qwen_l0.axmodel"), providers=["AxEngineExecutionProvider"]
    )
    feed = {
        "K_cache": np.zeros((1, L, KV_DIM), BF16),
        "V_cache": np.zeros((1, L, KV_DIM), BF16),
        "indices": np.zeros((1, P), np.uint32),
        "input": np.zeros((1, P, HIDDEN), BF16),
        "mask": np.zeros((1, P, L + P), BF16),
    }
    # The full cache sent to the prefill group: the message pyaxengine's _axe.py run() asserts with.
    with pytest.raises(AssertionError, match=r"model inputs\(K_cache\) expect shape \[1, 1, 64\]"):
        layer.run(None, feed, shape_group=1)
    with pytest.raises(AssertionError, match="dtype bfloat16, however gets input with shape .* dtype float32"):
        layer.run(None, {**feed, "indices": np.zeros((1, 1), np.uint32), "input": np.zeros((1, 1, HIDDEN), np.float32)})
    # Groups past the last: pyaxengine's own off-by-one (`>` in _base_session.py) gives IndexError at 9.
    with pytest.raises(IndexError):
        layer.run(None, feed, shape_group=9)
    with pytest.raises(ValueError, match=r"Shape group '10' is out of range, total 9"):
        layer.run(None, feed, shape_group=10)
    with pytest.raises(ValueError, match=r"Invalid shape group: -1"):
        layer.run(None, feed, shape_group=-1)
    post = axengine.InferenceSession(
        str(board_model / "axmodel/qwen_post.axmodel"), providers=["AxEngineExecutionProvider"]
    )
    with pytest.raises(ValueError, match="Output name 'logits' is not in model outputs name list"):
        post.run(["logits"], {"input": np.zeros((1, 1, HIDDEN), BF16)})
    with pytest.raises(ValueError, match=r"Required inputs \(\['mask'\]\) are missing"):
        layer.run(None, {k: v for k, v in feed.items() if k != "mask"})


def board_chat(model: Path, text: str = "", backend: str = "axengine", standins: bool = True, **env: str):
    """`assistant chat` on `model`, with the pyaxengine stand-in importable (or no pyaxengine at all)."""
    path = f"{STANDINS}:" if standins else ""
    return subprocess.run(
        [sys.executable, "-m", "assistant", "chat", "--model", str(model), "--backend", backend,
         "--max-new-tokens", "6"],
        input=text, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{path}{os.environ.get('PYTHONPATH', '')}", **env},
    )  # fmt: skip


def test_chat_on_the_board_path_and_its_one_line_errors(board_model: Path, tmp_path: Path) -> None:
    def chat(text: str = "", **env: str) -> subprocess.CompletedProcess:
        return board_chat(board_model, text, **env)

    works = chat("turn on the kitchen light\nand the hallway\n")
    assert works.returncode == 0 and "on axengine" in works.stderr, works.stderr
    assert "[INFO]" not in works.stdout and "[INFO] Using provider" in works.stderr  # pyaxengine's own prints
    assert works.stderr.count("tokens prefilled") == 2  # two replies streamed from the board path

    old = chat(AXENGINE_STANDIN_VERSION="0.1.1")
    assert old.returncode == 78, old.stderr
    error = [line for line in old.stderr.splitlines() if "error" in line.lower()]
    assert len(error) == 1 and "need pyaxengine >= 0.1.2rc0" in error[0] and "Traceback" not in old.stderr

    card_only = chat(AXENGINE_STANDIN_PROVIDERS="AXCLRTExecutionProvider")
    assert card_only.returncode == 78 and "llm.axengine_provider" in card_only.stderr


SETUP_FOR_THE_NPU = "build it with `assistant setup --target ax630c` (AX630C) or `--target ax650n` (AX650N)"


@pytest.mark.parametrize(
    ("case", "backend", "standins", "env", "line"),
    [
        (  # the board's NPU drivers not loaded, or their nodes not the service user's
            "no NPU device", "axengine", True, {"AXENGINE_STANDIN_NO_DEVICE": "1"},
            "error: pyaxengine cannot start the NPU (Failed to initialize ax sys.); are the board's NPU drivers "
            "loaded (the /dev/ax_* nodes) and may this user open them (the service's too)?",
        ),
        (  # pyaxengine installed, the BSP's libax_engine.so not found: pyaxengine's import fails
            "no NPU runtime", "axengine", True, {"AXENGINE_STANDIN_PROVIDERS": ""},
            "error: backend axengine: pyaxengine finds no NPU runtime (No providers found. Please make sure you have "
            "installed one of the following: ['AxEngineExecutionProvider', 'AXCLRTExecutionProvider']): the board's "
            "libax_engine.so (its BSP, /soc/lib) or the M.2 card's libaxcl_rt.so must be on the library path "
            "(ldconfig)",
        ),
        (
            "no NPU runtime, auto", "auto", True, {"AXENGINE_STANDIN_PROVIDERS": ""},
            "holds only the NPU's axmodels, and pyaxengine finds no NPU runtime (No providers found.",
        ),
        (
            "no pyaxengine, auto", "auto", False, {},
            "holds only the NPU's axmodels, and pyaxengine is not installed (see README: pyaxengine on the board); "
            "add the CPU's layers with `assistant setup` without --no-host",
        ),
        (  # an AX630C build on an AX650N board
            "another chip", "axengine", True, {"AXENGINE_STANDIN_CHIP": "AX650"},
            "qwen_l0.axmodel: pyaxengine cannot load it (Failed to get model type.): it was built for the AX630C; "
            "on an AX650N build it with `assistant setup --target ax650n` on a PC with Pulsar2",
        ),
    ],
)  # fmt: skip
def test_an_npu_that_cannot_run_the_model_is_one_line_with_its_fix(
    board_model: Path, case: str, backend: str, standins: bool, env: dict, line: str
) -> None:
    result = board_chat(board_model, "hello\n", backend, standins, **env)
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert result.returncode == 78 and "Traceback" not in result.stderr, (case, result.stderr)
    assert len(errors) == 1 and line in errors[0], (case, errors)


@pytest.mark.parametrize(
    ("weights_fit", "line"),
    [
        (  # another program holds the CMM: the first layer's weights do not fit
            False,
            "qwen_l0.axmodel: pyaxengine cannot load it (Failed to load model.): built for another chip, or the "
            "NPU's memory full (stop other programs that use the NPU or give the board more CMM (free: "
            "/proc/ax_proc/mem_cmm_info))?",
        ),
        (  # the weights fit, the session's buffers do not
            True,
            "qwen_l0.axmodel: the NPU's memory is full (Failed to allocate memory for input.); stop other programs "
            "that use the NPU or give the board more CMM (free: /proc/ax_proc/mem_cmm_info)",
        ),
    ],
)
def test_a_board_whose_npu_memory_is_full_is_one_line(board_model: Path, weights_fit: bool, line: str) -> None:
    free = 1000 + ((board_model / "axmodel/qwen_l0.axmodel").stat().st_size if weights_fit else 0)
    result = board_chat(board_model, "hello\n", AXENGINE_STANDIN_CMM_BYTES=str(free))
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert result.returncode == 78 and "Traceback" not in result.stderr, result.stderr
    assert len(errors) == 1 and line in errors[0], errors


def test_a_board_build_without_its_chip_recorded_guesses_the_chip(board_model: Path, tmp_path: Path) -> None:
    """Manifests written before the chip was recorded load as before, and a chip mismatch is still named."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(board_model, model)
    manifest = yaml.safe_load((model / "manifest.yaml").read_text())
    del manifest["backends"]["axengine"]["chip"]
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    assert board_chat(model, "hello\n").returncode == 0
    result = board_chat(model, "hello\n", AXENGINE_STANDIN_CHIP="AX650")
    line = "qwen_l0.axmodel: pyaxengine cannot load it (Failed to get model type.): built for another chip? "
    assert f"{line}{SETUP_FOR_THE_NPU} on a PC with Pulsar2" in result.stderr.strip().splitlines()[-1], result.stderr


def test_a_host_build_on_the_board_names_the_board_build(tiny_float: Path) -> None:
    result = board_chat(tiny_float, "hello\n")
    assert result.returncode == 78 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {tiny_float}: has no axengine graphs (it has: onnxruntime); "
        f"{SETUP_FOR_THE_NPU.replace('build it', 'build them')} on a PC with Pulsar2"
    )


def test_a_host_build_on_a_machine_with_an_npu_says_the_cpu_runs_it(tiny_float: Path) -> None:
    result = board_chat(tiny_float, "hello\n", "auto")
    assert result.returncode == 0 and "on onnxruntime" in result.stderr, result.stderr
    assert (
        f"{tiny_float}: has no axmodels, so its layers run on the CPU although pyaxengine finds an NPU here; "
        f"{SETUP_FOR_THE_NPU.replace('build it', 'build them')}"
    ) in result.stderr


def test_pyaxengine_installed_without_its_runtime_says_why_the_cpu_runs(tiny_float: Path, tmp_path: Path) -> None:
    """A build with both backends, on a board whose libax_engine.so is not found: the CPU runs, and the log says why."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_float, model)
    manifest = yaml.safe_load((model / "manifest.yaml").read_text())
    manifest["backends"]["axengine"] = {**manifest["backends"]["onnxruntime"], "prefill_len": P}
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    result = board_chat(model, "hello\n", "auto", AXENGINE_STANDIN_PROVIDERS="")
    assert result.returncode == 0 and "on onnxruntime" in result.stderr, result.stderr
    assert "pyaxengine finds no NPU runtime (No providers found." in result.stderr
    assert "the layers run on the CPU instead" in result.stderr


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"AXENGINE_STANDIN_NO_DEVICE": "1"},
            "error: pyaxengine cannot start the NPU (Get AXCL device failed 0x00000000, find total 0 device.); "
            "is the M.2 card seated, its AXCL driver loaded (/dev/axcl_host), and may this user open it?",
        ),
        (  # the card is an AX650N on any host, an AX630C board's too: the AX630C build is not for it
            {"AXENGINE_STANDIN_CHIP": "AX620E"},
            "qwen_l0.axmodel: the M.2 card cannot load it (axclrtEngineLoadFromFile failed.): it was built for the "
            "AX630C, and the card is an AX650N; build it with `assistant setup --target ax650n` on a PC with Pulsar2",
        ),
    ],
)
def test_the_m2_card_failing_to_open_a_model_is_one_line(board_model: Path, env: dict, line: str) -> None:
    """The card's session raises in __del__ when its __init__ failed: no traceback may follow the line."""
    code = (
        "import sys\nfrom assistant.llm.engine import Engine\nfrom assistant.llm.manifest import ModelError\n"
        "try:\n    Engine(sys.argv[1], backend='axengine', provider='AXCLRTExecutionProvider')\n"
        "except ModelError as e:\n    print(f'error: {e}', file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{STANDINS}:{os.environ.get('PYTHONPATH', '')}",
           "AXENGINE_STANDIN_PROVIDERS": "AxEngineExecutionProvider,AXCLRTExecutionProvider", **env}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code, str(board_model)], capture_output=True, text=True, env=env)
    assert line in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_two_runs_at_once_on_one_session_are_refused(board_model: Path, axengine) -> None:
    """pyaxengine's session has one set of IO buffers: a second run during the first would mix them."""
    import threading

    post = axengine.InferenceSession(str(board_model / "axmodel/qwen_post.axmodel"))
    compute, started, finish = post._sess._compute, threading.Event(), threading.Event()

    class Slow:  # the NPU still busy with the first run
        def run(self, *args):
            started.set()
            finish.wait(30)
            return compute.run(*args)

    post._sess._compute = Slow()
    feed = {"input": np.ones((1, 1, HIDDEN), BF16)}
    first = threading.Thread(target=post.run, args=(None, feed))
    first.start()
    assert started.wait(30)
    with pytest.raises(RuntimeError, match="two runs at once on one pyaxengine session"):
        post.run(None, feed)
    finish.set()
    first.join()
    post._sess._compute = compute
    assert post.run(None, feed)[0].shape == (1, 1, 1005)


def test_pyaxengine_0_1_2_is_refused_for_the_m2_card_before_any_run(board_model: Path, tmp_path: Path) -> None:
    """0.1.2rc0's card session fails every run (AttributeError, deep in a turn); its metadata says 0.1.2."""
    dist = tmp_path / "axengine-0.1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: axengine\nVersion: 0.1.2\n")
    code = (
        "import sys\nfrom assistant.llm.engine import Engine\nfrom assistant.llm.manifest import ModelError\n"
        "try:\n    Engine(sys.argv[1], backend='axengine', provider=sys.argv[2])\n"
        "except ModelError as e:\n    print(e)\nelse:\n    print('opened')\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{STANDINS}:{os.environ.get('PYTHONPATH', '')}",
           "AXENGINE_STANDIN_VERSION": "0.1.2rc0", "AXENGINE_STANDIN_PROVIDERS": "AxEngineExecutionProvider,"
           "AXCLRTExecutionProvider"}  # fmt: skip

    def open_with(provider: str) -> str:
        run = [sys.executable, "-c", code, str(board_model), provider]
        return subprocess.run(run, capture_output=True, text=True, env=env, timeout=120).stdout.splitlines()[-1]

    assert "pyaxengine 0.1.2 fails every run on the M.2 card" in open_with("AXCLRTExecutionProvider")
    assert open_with("AxEngineExecutionProvider") == "opened"  # the board's own provider works in 0.1.2rc0


def test_doctor_looks_for_the_npu_runtime_as_pyaxengine_does(board_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  model_dir: {board_model}\n  backend: axengine\n")
    env = {**os.environ, "PYTHONPATH": f"{STANDINS}:{os.environ.get('PYTHONPATH', '')}"}
    doctor = [sys.executable, "-m", "assistant", "doctor", "--config", str(config), "--text-only"]
    report = subprocess.run(doctor, capture_output=True, text=True, env=env, timeout=120).stdout
    assert "pyaxengine installed" in report
    assert "libax_engine.so is not found" in report  # this machine has no NPU runtime
    assert "/dev/ax_mmb_dev" not in report  # the M.2 card's host driver node, not the board's


def test_doctor_names_a_manifest_cut_short_and_the_board_build(board_model: Path, tmp_path: Path) -> None:
    import shutil

    from assistant.doctor import diagnose

    model = tmp_path / "model"
    shutil.copytree(board_model, model)
    manifest = yaml.safe_load((model / "manifest.yaml").read_text())
    del manifest["files"]["tokenizer.json"]  # the end of the file lost in a copy to the board
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  model_dir: {model}\n  backend: axengine\n")
    found = next(f for f in diagnose(config, text_only=True) if f.what == "llm.model_dir")
    assert "tokenizer.json: not listed in manifest.yaml" in found.detail
    assert found.fix.startswith("`assistant setup --target ax630c` (or ax650n) on a PC with Pulsar2")


def test_groups_that_disagree_with_the_manifest_are_refused(board_model: Path, tmp_path: Path, axengine) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(board_model, copy)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    manifest["backends"]["axengine"]["kv_history"] = [256, 512]
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    with pytest.raises(ModelError, match=r"prefill groups .* differ from the manifest's"):
        Engine(copy, backend="axengine")


def test_a_model_the_service_user_cannot_read_is_one_line(board_model: Path, tmp_path: Path) -> None:
    """A model copied to the board as root with private file modes, run by the service's own user."""
    import ctypes
    import shutil

    def without_root_reading() -> None:  # root reads every file: drop the capabilities that let it
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, from the bounding set (PR_CAPBSET_DROP)
            if libc.prctl(24, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    model = tmp_path / "model"
    shutil.copytree(board_model, model)
    env = {**os.environ, "PYTHONPATH": f"{STANDINS}:{os.environ.get('PYTHONPATH', '')}"}
    chat = [sys.executable, "-m", "assistant", "chat", "--model", str(model), "--backend", "axengine"]
    for name in (
        "manifest.yaml",
        "axmodel/qwen_l1.axmodel",
        "tokenizer.json",
        "model.embed_tokens.weight.bfloat16.bin",
    ):
        (model / name).chmod(0)
        result = subprocess.run(
            chat, input="hello\n", capture_output=True, text=True, env=env, timeout=120,
            preexec_fn=without_root_reading if os.geteuid() == 0 else None,
        )  # fmt: skip
        (model / name).chmod(0o644)
        assert result.returncode == 78 and "Traceback" not in result.stderr, (name, result.stderr)
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: {model / name}: the user ") and "cannot read it" in error, error
        assert error.endswith(f"(chmod -R a+rX {model})")


@pytest.mark.parametrize("release", ["0.1.2rc0", "0.1.3rc0"])
def test_releases_whose_outputs_are_views_give_the_same_tokens(board_model: Path, monkeypatch, release: str) -> None:
    """Before 0.1.3.rc1 pyaxengine returned each output as a view of the session's output buffer,
    which the session's next run overwrites: nothing may keep an output past its session's next run."""
    import importlib

    def axengine():
        sys.modules.pop("axengine", None)
        return importlib.import_module("axengine")

    monkeypatch.syspath_prepend(str(STANDINS))
    axengine()
    expected = list(Engine(board_model, backend="axengine").generate(prompt(3, n=150), GREEDY, 12))
    monkeypatch.setenv("AXENGINE_STANDIN_VERSION", release)
    post = axengine().InferenceSession(str(board_model / "axmodel/qwen_post.axmodel"))
    first = post.run(None, {"input": np.ones((1, 1, HIDDEN), BF16)})[0]
    kept = first.copy()
    post.run(None, {"input": -np.ones((1, 1, HIDDEN), BF16)})
    assert not np.array_equal(first, kept)  # the release's own behaviour: overwritten by the next run
    assert list(Engine(board_model, backend="axengine").generate(prompt(3, n=150), GREEDY, 12)) == expected
    sys.modules.pop("axengine", None)


def test_verify_checks_every_file_a_board_manifest_points_to(board_model: Path, tmp_path: Path) -> None:
    """A manifest cut short (copied while written, a full disk) lists fewer files than its graphs."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(board_model, model)
    text = (model / "manifest.yaml").read_text()
    (model / "manifest.yaml").write_text(text[: text.index("  axmodel/qwen_post.axmodel:\n")])
    verify = [sys.executable, "-m", "assistant", "setup", "--verify", str(model)]
    cut = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert cut.returncode == 78 and "Traceback" not in cut.stderr, cut.stderr
    assert cut.stderr.strip().splitlines()[-1] == (
        f"error: {model / 'axmodel/qwen_post.axmodel'}: not listed in manifest.yaml; re-run `assistant setup`"
    )
    manifest = yaml.safe_load(text)
    manifest["backends"]["axengine"]["layers"].pop()
    (model / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    short = subprocess.run(verify, capture_output=True, text=True, timeout=120)
    assert short.returncode == 78 and "manifest.yaml: lists 1 axengine layers, not 2" in short.stderr, short.stderr


@pytest.fixture(scope="module")
def card_model(tiny_hf: Path, pulsar2_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint built for the AX650N (board files only): the chip of the M.2 card."""
    return board_build(tiny_hf, pulsar2_bin, tmp_path_factory.mktemp("card") / "tiny-ax650n", "ax650n")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pyaxengine's __del__, as on a card
def test_the_m2_card_runs_the_same_tokens(card_model: Path, axengine, monkeypatch) -> None:
    """The card's session opens the model by `path.encode()` (a pathlib.Path fails there) and copies
    its outputs from the device; the engine gives it exactly what it gives the board's."""
    monkeypatch.setenv("AXENGINE_STANDIN_PROVIDERS", "AxEngineExecutionProvider,AXCLRTExecutionProvider")
    with pytest.raises(ValueError, match=r"\['AXCLRTExecutionProvider'\] is\(are\) not available"):
        axengine.InferenceSession(str(card_model / "axmodel/qwen_post.axmodel"), providers=["AXCLRTExecutionProvider"])
    axengine = importlib.reload(axengine)  # pyaxengine finds its providers when it is imported
    with pytest.raises(AttributeError):
        axengine.InferenceSession(card_model / "axmodel/qwen_post.axmodel", providers=["AXCLRTExecutionProvider"])
    ids = prompt(5, n=150)
    board = list(Engine(card_model, backend="axengine").generate(ids, GREEDY, 12))  # an AX650N board
    card = Engine(card_model, backend="axengine", provider="AXCLRTExecutionProvider")
    assert card.sessions.post.session.get_providers() == "AXCLRTExecutionProvider"
    assert list(card.generate(ids, GREEDY, 12)) == board


def fresh_axengine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next `import axengine` loads the stand-in anew, and the test leaves it behind for no other."""
    monkeypatch.setitem(sys.modules, "axengine", None)  # undone after the test: what was there, or nothing
    del sys.modules["axengine"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pyaxengine's __del__, as on a card
def test_an_m2_card_build_the_card_cannot_load_is_one_line(card_model: Path, tmp_path: Path, monkeypatch) -> None:
    """A file of the card's chip that its runtime still cannot load: its size right, its bytes not."""
    import shutil

    monkeypatch.setenv("AXENGINE_STANDIN_PROVIDERS", "AXCLRTExecutionProvider")
    monkeypatch.syspath_prepend(str(STANDINS))
    fresh_axengine(monkeypatch)  # found with the card's provider when imported
    copy = tmp_path / "model"
    shutil.copytree(card_model, copy)
    layer = copy / "axmodel/qwen_l1.axmodel"
    layer.write_bytes(bytes(layer.stat().st_size))
    with pytest.raises(ModelError) as error:
        Engine(copy, backend="axengine", provider="AXCLRTExecutionProvider")
    assert str(error.value) == (
        f"{layer}: the M.2 card cannot load it (axclrtEngineLoadFromFile failed.): is the card's memory full (stop "
        "other programs that use the card (`axcl-smi` shows them and its memory)), or the file damaged "
        "(`assistant setup --verify DIR` checks it)?"
    )


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # pyaxengine's __del__, as on a card
def test_an_m2_card_whose_memory_is_full_is_one_line(card_model: Path, monkeypatch) -> None:
    """The weights fit in the card's memory, the session's buffers do not: the card's own words, then the fix."""
    monkeypatch.setenv("AXENGINE_STANDIN_PROVIDERS", "AXCLRTExecutionProvider")
    monkeypatch.setenv("AXENGINE_STANDIN_CMM_BYTES", str((card_model / "axmodel/qwen_l0.axmodel").stat().st_size))
    monkeypatch.syspath_prepend(str(STANDINS))
    fresh_axengine(monkeypatch)
    with pytest.raises(ModelError) as error:
        Engine(card_model, backend="axengine", provider="AXCLRTExecutionProvider")
    assert str(error.value) == (
        f"{card_model / 'axmodel/qwen_l0.axmodel'}: the M.2 card's memory is full (axclrtMalloc failed 0x00000000 "
        "for input 0.); stop other programs that use the card (`axcl-smi` shows them and its memory)"
    )


def test_a_runtime_that_cannot_count_shape_groups_is_named_not_the_model(
    board_model: Path, axengine, monkeypatch
) -> None:
    """pyaxengine counts one group when the board's libax_engine lacks the call that counts them."""
    monkeypatch.setenv("AXENGINE_STANDIN_NO_GROUP_COUNT", "1")
    with pytest.raises(ModelError) as error:
        Engine(board_model, backend="axengine")
    assert "reports 1 shape group for a model built with 9" in str(error.value)
    assert str(error.value).endswith("update the board's SDK") and "assistant setup" not in str(error.value)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda m: m["backends"]["axengine"]["layers"].__setitem__(1, 7), r"backends\.axengine names its layers"),
        (
            lambda m: m["backends"]["axengine"].__setitem__("prefill_len", "128"),
            r"backends.axengine: prefill_len '128' or kv_history",
        ),
        (lambda m: m.__setitem__("embeddings", None), r"embeddings is None, not a file name"),
        (lambda m: m.__setitem__("files", ["tokenizer.json"]), r"files is \['tokenizer.json'\], not each file"),
        (lambda m: m["files"]["tokenizer.json"].pop("size"), r"files: tokenizer.json is listed as \{'sha256'"),
    ],
)
def test_a_hand_edited_manifest_entry_is_named(board_model: Path, tmp_path: Path, axengine, edit, words: str) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(board_model, copy)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    edit(manifest)
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    with pytest.raises(ModelError, match=rf"manifest\.yaml: {words}.*; re-run `assistant setup`"):
        Engine(copy, backend="axengine")


def test_a_layer_of_another_build_copied_over_is_named_as_such(board_model: Path, tmp_path: Path, axengine) -> None:
    """The axmodel folder of a --kv-cache-len 2047 build copied over part of this one (bigger files)."""
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(board_model, copy)
    layer = copy / "axmodel/qwen_l1.axmodel"
    layer.write_bytes(layer.read_bytes() + b"\0" * 100)
    with pytest.raises(
        ModelError, match=r"qwen_l1\.axmodel: \d+ bytes, the manifest says \d+ \(a file of another build\?\)"
    ):
        Engine(copy, backend="axengine")


def test_an_npu_split_into_virtual_npus_is_named_not_the_provider(board_model: Path) -> None:
    """Another program started the board's NPU as vNPUs, which pyaxengine adopts: a model built for the
    whole NPU is refused with a ValueError (as an unavailable provider is), which names the vNPU."""
    result = board_chat(board_model, "hello\n", AXENGINE_STANDIN_VNPU="enabled")
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert result.returncode == 78 and "Traceback" not in result.stderr, result.stderr
    assert errors == [
        f"error: {board_model / 'axmodel/qwen_l0.axmodel'}: the NPU is split into virtual NPUs (vNPU) by another "
        "program that uses it, and this model needs the whole NPU (Model type 'ModelType.FULL' is not allowed "
        "when vnpu is inited as VNPUType.ENABLED.); stop that program, or start it without vNPU, then start "
        "the assistant again"
    ], errors
