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


def format_of_checkpoint(src: str | Path) -> ModuleType | PartFormat:
    """The writer of an Orbax checkpoint of ours, from its meta.json ``format`` (``cosyvoice2.<part>``: one part)."""
    name = read_meta(src).get("format")
    for mod in available_formats():
        if name == mod.NAME:
            return mod
    prefix, _, part = str(name).partition(".")
    if prefix == "cosyvoice2" and part:
        from sovits2_jax.convert import cosyvoice2

        if part in cosyvoice2.part_modules():
            return PartFormat(part)
    raise ConversionError(f"{src}: unknown checkpoint format {name!r}")


class PartFormat:
    """One CosyVoice2 part as its own checkpoint (a converted part, a trainer step, an average) -> ``<part>.pt``."""

    def __init__(self, part: str):
        self.part = part
        self.NAME = f"cosyvoice2.{part}"

    def load(self, src: str | Path) -> tuple[dict, object]:
        """(nested params, part config from meta.json)."""
        from sovits2_jax.convert import cosyvoice2
        from sovits2_jax.convert.checkpoint import load_checkpoint

        params, meta = load_checkpoint(src)
        mod = cosyvoice2.part_modules()[self.part]
        try:
            return params, type(mod.default_config()).from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConversionError(f"{src}: meta.json has no valid {self.part} config ({e})") from None

    def jax_to_torch(self, src: str | Path, dst: str | Path) -> Path:
        """Writes the part's state dict to ``dst`` (``dst/<part>.pt`` when ``dst`` is a directory)."""
        from sovits2_jax.convert import cosyvoice2
        from sovits2_jax.convert.torch_io import save_torch_state_dict

        dst = Path(dst)
        if dst.is_dir():
            dst = dst / f"{self.part}.pt"
        params, config = self.load(src)
        save_torch_state_dict(cosyvoice2.part_modules()[self.part].params_to_torch(params, config), dst)
        return dst
