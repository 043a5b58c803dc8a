"""The ``orbax`` format (this module: ``ours``): checkpoints of ours, read by the format that wrote them.

A source is an Orbax directory with meta.json (``checkpoint.save_checkpoint``): a converted checkpoint, our
converted CosyVoice2 directory, an averaged checkpoint, a trainer step directory (meta.json in its ``meta`` item),
or a trainer workdir / its ``checkpoints/`` (the latest finished step). Its meta.json ``format`` names the writer
(``formats.writer_format``: ``hf_qwen2``, ``gpt_sovits``, ``cosyvoice2``, ``cosyvoice2.<part>``, ...), whose
``parts`` / ``load_part`` read it and whose ``jax_to_torch`` writes the original back. The format holds no part of
its own (``PARTS`` is empty) and has no torch side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import formats
from sovits2_jax.convert.mapping import ConversionError

NAME = "orbax"
DESCRIPTION = "an Orbax checkpoint of ours (converted, averaged, a trainer step or workdir)"
PARTS: tuple[str, ...] = ()


def detect(src: str | Path) -> bool:
    src = ckpt.resolve_checkpoint_dir(src)
    return src.is_dir() and ckpt.meta_path(src) is not None


def parts(src: str | Path) -> tuple[str, ...]:
    src = ckpt.resolve_checkpoint_dir(src)
    return formats.writer_format(src).parts(src)


def load_part(src: str | Path, part: str) -> tuple[dict, Any]:
    src = ckpt.resolve_checkpoint_dir(src)
    return formats.writer_format(src).load_part(src, part)


def architecture_scope(src: str | Path, part: str) -> str:
    """The scope of the format that wrote ``src`` (an Orbax copy of a HF Qwen2 directory is a backbone)."""
    src = ckpt.resolve_checkpoint_dir(src)
    scope = getattr(formats.writer_format(src), "architecture_scope", None)
    return scope(src, part) if scope else ""


def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    name = ckpt.read_meta(ckpt.resolve_checkpoint_dir(src)).get("format")
    raise ConversionError(
        f"{src}: already an Orbax checkpoint of ours (format {name!r}); convert/jax_to_torch.py writes it back"
    )


def jax_to_torch(src: str | Path, dst: str | Path) -> Path:
    src = ckpt.resolve_checkpoint_dir(src)
    return formats.format_of_checkpoint(src).jax_to_torch(src, dst)
