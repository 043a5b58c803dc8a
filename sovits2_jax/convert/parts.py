"""One part's params and model config from any checkpoint we read (``--config.init.path``, inference loading).

``load(path, part)`` resolves ``path`` (a trainer workdir or its ``checkpoints/`` -> the latest step), finds the one
format whose ``detect`` accepts it (``formats.detect_format``: the format modules of ``sovits2_jax/convert/``) and
calls its ``load_part``. The parts (``formats.known_parts()``): ``qwen2`` (a Qwen2ForCausalLM), ``llm`` (a
SpeechLM; from a HF Qwen2 source only its backbone), ``flow``, ``hift`` (CosyVoice2's), ``vits``. Sources:

- a HF Qwen2 directory (``hf_qwen2``): ``qwen2``, ``llm``;
- a CosyVoice2 model directory (``cosyvoice2``: ``cosyvoice2.yaml`` + ``<part>.pt``): ``llm``, ``flow``, ``hift``,
  the architecture from its yaml;
- a GPT-SoVITS s2 ``.pth`` (``gpt_sovits``): ``vits``;
- an Orbax directory of ours (``orbax``: a converted checkpoint, a converted CosyVoice2 directory, an averaged
  checkpoint, a trainer step directory or workdir), read by the format its meta.json names.

Params come back as the model's ``nnx.to_pure_dict`` layout of numpy arrays. ``build_module(part, config, rngs)``
is the model those params fill.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import formats
from sovits2_jax.convert.mapping import ConversionError, flatten, stack_layers, unflatten, unstack_layers

# where the decoder layers sit (stacked when the config scans them)
LAYERS = {"qwen2": "model.layers", "llm": "llm.model.layers"}


def export_meta(part: str, config: Any, player: str = "model") -> dict:
    """meta.json for a trainer checkpoint whose ``player`` params are ``part`` (a ``Family.export_meta`` body): its
    format is the one whose ``jax_to_torch`` writes the part back (``checkpoint_format``)."""
    for mod in formats.available_formats():
        fmt = mod.checkpoint_format(part) if part in mod.PARTS else None
        if fmt is not None:
            return {"format": fmt, "part": part, "config": config.to_dict(), ckpt.PLAYER: player}
    raise ValueError(f"unknown part {part!r} (one of {', '.join(formats.known_parts())})")


def load(path: str | Path, part: str, *, scan_layers: bool | None = None) -> tuple[dict, Any]:
    """(nested numpy params, model config) of ``part`` from ``path``; ``scan_layers`` restacks qwen2/llm layers."""
    known = formats.known_parts()
    if part not in known:
        raise ConversionError(f"unknown part {part!r} (one of {', '.join(known)})")
    src = Path(path)
    if not src.exists():
        raise ConversionError(f"{src}: no such file or directory")
    src = ckpt.resolve_checkpoint_dir(src)
    try:
        params, config = formats.detect_format(src).load_part(src, part)
    except (OSError, KeyError, TypeError) as e:
        raise ConversionError(f"{src}: cannot load part {part!r} ({type(e).__name__}: {e})") from e
    if scan_layers is not None and part in LAYERS:
        params, config = _relayer(params, config, part, scan_layers)
    return params, config


def load_buffers(path: str | Path, part: str) -> dict:
    """The non-gradient state stored with ``part`` at ``path`` (nested numpy, e.g. ``{"grvq": ...}``, the
    ``ssl_grvq`` VITS's codebooks): a checkpoint of ours' ``buffers`` item; ``{}`` for a source without one."""
    if part not in formats.known_parts():
        raise ConversionError(f"unknown part {part!r} (one of {', '.join(formats.known_parts())})")
    src = ckpt.resolve_checkpoint_dir(Path(path))
    if not src.is_dir() or ckpt.meta_path(src) is None:
        return {}
    return ckpt.load_buffers(src)


def load_config(path: str | Path, part: str) -> tuple[Any, str]:
    """(model config of ``part`` at ``path``, scope): scope "" when the source defines the whole part's
    architecture, else the section of it that it defines (a HF Qwen2 directory read as an ``llm`` defines its
    ``backbone``; the format's optional ``architecture_scope(src, part)`` says so)."""
    _, config = load(path, part)
    src = ckpt.resolve_checkpoint_dir(path)
    scope = getattr(formats.detect_format(src), "architecture_scope", None)
    return config, scope(src, part) if scope else ""


def held_parts(path: str | Path) -> tuple[str, ...]:
    """The parts ``path`` holds (its format's ``parts``), read without loading weights."""
    src = ckpt.resolve_checkpoint_dir(path)
    return tuple(formats.detect_format(src).parts(src))


def build_module(part: str, config: Any, rngs: Any = None):
    """The nnx module whose params ``load(.., part)`` returns, for ``config`` (``rngs`` default: ``nnx.Rngs(0)``)."""
    if rngs is None:
        from flax import nnx

        rngs = nnx.Rngs(0)
    for mod in formats.available_formats():
        if part in mod.PARTS:
            return mod.build_model(part, config, rngs)
    raise ConversionError(f"unknown part {part!r} (one of {', '.join(formats.known_parts())})")


def _relayer(params: dict, config: Any, part: str, scan_layers: bool) -> tuple[dict, Any]:
    backbone = config if part == "qwen2" else config.backbone
    if backbone.scan_layers == scan_layers:
        return params, config
    flat = flatten(params)
    flat = stack_layers(flat, LAYERS[part]) if scan_layers else unstack_layers(flat, LAYERS[part])
    backbone = dataclasses.replace(backbone, scan_layers=scan_layers)
    config = backbone if part == "qwen2" else dataclasses.replace(config, backbone=backbone)
    return unflatten(flat), config
