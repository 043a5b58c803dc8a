"""The file handling every HF-directory format shares (hf_qwen2, hf_xlm_roberta, hf_hubert): an Orbax checkpoint
of ours that keeps the directory's other files (tokenizer, preprocessor config, ...) in ``extra/``, and the HF
directory written back with them. Both writes are atomic (a staging directory, then a rename)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from sovits2_jax.convert import checkpoint as ckpt

WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
EXTRA = "extra"


def write_checkpoint_with_extras(src: Path, dst: Path, params: dict, meta: dict) -> Path:
    """Our Orbax checkpoint of ``params`` at ``dst``, with every non-weight file of the HF directory ``src``
    (config.json aside: meta holds it) copied into ``dst/extra``."""
    tmp = ckpt.staging_dir(dst)
    try:
        ckpt.write_checkpoint(tmp, params, meta)
        extra = tmp / EXTRA
        extra.mkdir()
        for f in Path(src).iterdir():
            if f.is_file() and f.name not in (*WEIGHT_FILES, "config.json") and f.suffix not in WEIGHT_SUFFIXES:
                shutil.copy2(f, extra / f.name)
        ckpt.commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(dst)


def write_hf_dir(src: Path, dst: Path, hf_config: dict, write_weights: Callable[[Path], None]) -> Path:
    """The HF directory ``dst``: ``write_weights(staging_dir)``, config.json and the files ``src/extra`` kept."""
    tmp = ckpt.staging_dir(dst)
    try:
        write_weights(tmp)
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2))
        extra = Path(src) / EXTRA
        if extra.is_dir():
            for f in extra.iterdir():
                shutil.copy2(f, tmp / f.name)
        ckpt.commit(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(dst)
