"""Conversion between PyTorch checkpoints and our Orbax checkpoints, the one function behind
``python -m sovits2_jax.convert`` and the ``convert/*.py`` wrappers."""

from __future__ import annotations

from pathlib import Path

DIRECTIONS = ("auto", "jax", "torch")


def convert(src: str | Path, dst: str | Path, to: str = "auto") -> str:
    """Converts ``src`` into ``dst``; returns the line that says what was written. ``to``: ``jax`` (a PyTorch
    checkpoint -> an Orbax checkpoint), ``torch`` (an Orbax checkpoint of ours -> its PyTorch format) or ``auto``
    (``torch`` when ``src`` is an Orbax checkpoint of ours, else ``jax``). Raises ``ConversionError``."""
    from sovits2_jax.convert import ours
    from sovits2_jax.convert.checkpoint import resolve_checkpoint_dir
    from sovits2_jax.convert.formats import detect_torch_format, format_of_checkpoint
    from sovits2_jax.convert.mapping import ConversionError

    if to not in DIRECTIONS:
        raise ConversionError(f"--to must be one of {', '.join(DIRECTIONS)}, got {to!r}")
    if not Path(src).exists():
        raise ConversionError(f"{src}: no such file or directory")
    if to == "auto":
        to = "torch" if ours.detect(src) else "jax"
    if to == "jax":
        fmt = detect_torch_format(src)
        fmt.torch_to_jax(src, dst)
        return f"{src} -> {dst} ({fmt.NAME}, PyTorch -> Orbax)"
    step = resolve_checkpoint_dir(src)  # a trainer workdir -> its latest step
    fmt = format_of_checkpoint(step)
    fmt.jax_to_torch(step, dst)
    return f"{src} -> {dst} ({fmt.NAME}, Orbax -> PyTorch)"
