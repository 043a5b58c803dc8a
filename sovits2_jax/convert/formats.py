"""The checkpoint formats the converters know, found in ``sovits2_jax/convert/`` (a module with ``NAME`` and
``detect``), tried in name order."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

from sovits2_jax.convert.checkpoint import read_meta
from sovits2_jax.convert.mapping import ConversionError


def available_formats() -> list[ModuleType]:
    """The checkpoint format modules of ``sovits2_jax.convert``: each module that defines ``NAME`` and
    ``detect(src)`` (found, not listed: a new format is a new module). Modules whose optional dependencies are not
    installed are left out."""
    from sovits2_jax import convert

    mods = []
    for info in sorted(pkgutil.iter_modules(convert.__path__), key=lambda i: i.name):
        if not _declares_format(Path(convert.__path__[0]) / f"{info.name}.py"):
            continue
        name = f"{convert.__name__}.{info.name}"
        try:
            mods.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if e.name and not e.name.startswith("sovits2_jax"):
                continue
            raise
    return mods


def _declares_format(path: Path) -> bool:
    """Whether the module file assigns ``NAME`` and defines ``detect`` at top level (read without importing)."""
    if not path.is_file():
        return False
    body = ast.parse(path.read_text()).body
    names = {t.id for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return "NAME" in names and any(isinstance(n, ast.FunctionDef) and n.name == "detect" for n in body)


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
