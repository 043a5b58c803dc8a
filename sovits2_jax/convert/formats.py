"""Checkpoint formats known to the converter CLIs, tried in order."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from sovits2_jax.convert.checkpoint import read_meta
from sovits2_jax.convert.mapping import ConversionError

FORMATS = (
    "sovits2_jax.convert.hf_qwen2",
    "sovits2_jax.convert.cosyvoice2",
    "sovits2_jax.convert.gpt_sovits",
)


def available_formats() -> list[ModuleType]:
    """The format modules that are importable in this installation."""
    mods = []
    for name in FORMATS:
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
    return mods


def detect_torch_format(src: str | Path) -> ModuleType:
    src = Path(src)
    if not src.exists():
        raise ConversionError(f"{src}: no such file or directory")
    for mod in available_formats():
        if mod.detect(src):
            return mod
    names = ", ".join(m.NAME for m in available_formats())
    raise ConversionError(f"{src}: not a checkpoint of a known format ({names})")


def format_of_checkpoint(src: str | Path) -> ModuleType:
    name = read_meta(src).get("format")
    for mod in available_formats():
        if name == mod.NAME:
            return mod
    raise ConversionError(f"{src}: unknown checkpoint format {name!r}")
