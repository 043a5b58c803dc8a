"""The checkpoint formats, found in ``sovits2_jax/convert/`` (found, not listed: a new format is a new module).

A format module defines, at top level, ``NAME`` and ``detect`` (what discovery looks for, read without importing)
and the rest of the protocol:

- ``NAME``: the format's name, and the meta.json ``"format"`` of the Orbax checkpoints its ``torch_to_jax`` writes
  (``NAME.<part>`` for a checkpoint of one part of a multi-part format, e.g. ``cosyvoice2.flow``);
- ``DESCRIPTION``: what a source looks like ("a HF Qwen2 directory"), for error messages;
- ``PARTS``: every part a source of the format can hold (``qwen2``, ``llm``, ``flow``, ``hift``, ``vits``);
- ``detect(src) -> bool``: whether ``src`` is a source of this format;
- ``parts(src) -> tuple[str, ...]``: the parts ``src`` holds;
- ``load_part(src, part) -> (nested numpy params, model config)``: a ``ConversionError`` naming ``src`` and
  ``part`` when ``src`` does not hold it;
- ``torch_to_jax(src, dst)`` / ``jax_to_torch(src, dst)``: the two save directions;
- for each of ``PARTS``: ``build_model(part, config, rngs)`` (the nnx module the part's params fill) and
  ``checkpoint_format(part)`` (the meta.json format of a one-part checkpoint of ours holding ``part`` that
  ``jax_to_torch`` writes back, or None); a format whose one-part checkpoints are ``NAME.<part>`` also gives
  ``part_format(part)``, their writer (``NAME``, ``load``, ``jax_to_torch``).

``parts`` / ``load_part`` also read the Orbax checkpoints of ours whose meta.json names the format (the ``orbax``
format hands them over); ``detect`` accepts only the format's own sources, so exactly one format detects a path.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

from sovits2_jax.convert.checkpoint import read_meta
from sovits2_jax.convert.mapping import ConversionError


def available_formats() -> list[ModuleType]:
    """The checkpoint format modules of ``sovits2_jax.convert`` in name order: each module of the package's path
    that defines ``NAME`` and ``detect(src)``. Modules whose optional dependencies are not installed are left out."""
    from sovits2_jax import convert

    mods = []
    for info in sorted(pkgutil.iter_modules(convert.__path__), key=lambda i: i.name):
        if not _declares_format(Path(getattr(info.module_finder, "path", "")) / f"{info.name}.py"):
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


def known_parts() -> tuple[str, ...]:
    """Every part some format holds, in the formats' order."""
    return tuple(dict.fromkeys(p for mod in available_formats() for p in mod.PARTS))


def detect_format(src: str | Path) -> ModuleType:
    """The one format whose ``detect`` accepts ``src``."""
    src = Path(src)
    if not src.exists():
        raise ConversionError(f"{src}: no such file or directory")
    mods = available_formats()
    found = [mod for mod in mods if mod.detect(src)]
    if not found:
        kinds = "; ".join(f"{m.NAME}: {m.DESCRIPTION}" for m in mods)
        hint = ""
        if src.is_file() and src.suffix == ".pt":  # e.g. a bare flow.pt: its yaml (the architecture) is beside it
            hint = f"give the model directory that holds {src.name} and its yaml, not the file; "
        raise ConversionError(f"{src}: not a checkpoint of a known format ({hint}{kinds})")
    if len(found) > 1:
        raise ConversionError(f"{src}: detected as several formats ({', '.join(m.NAME for m in found)})")
    return found[0]


def detect_torch_format(src: str | Path) -> ModuleType:
    """The format of a ``convert/torch_to_jax.py --src`` (``detect_format``; an Orbax checkpoint of ours is the
    ``orbax`` format, whose ``torch_to_jax`` says so)."""
    return detect_format(src)


def writer_format(src: str | Path) -> ModuleType:
    """The format that wrote the Orbax checkpoint ``src``: its meta.json ``format`` is the format's ``NAME``, or
    ``NAME.<part>`` for one part."""
    name = str(read_meta(src).get("format"))
    base = name.partition(".")[0]
    for mod in available_formats():
        if base == mod.NAME and mod.PARTS:  # the orbax format writes none of its own
            return mod
    raise ConversionError(f"{src}: unknown checkpoint format {name!r}")


def format_of_checkpoint(src: str | Path) -> Any:
    """The writer of an Orbax checkpoint of ours (``jax_to_torch``), from its meta.json ``format``: the format
    module, or for ``NAME.<part>`` the module's ``part_format(part)``."""
    mod = writer_format(src)
    name = str(read_meta(src).get("format"))
    part = name.partition(".")[2]
    if not part:
        return mod
    if part not in mod.PARTS or not hasattr(mod, "part_format"):
        raise ConversionError(f"{src}: unknown checkpoint format {name!r}")
    return mod.part_format(part)
