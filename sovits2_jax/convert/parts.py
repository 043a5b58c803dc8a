"""Pretrained weights for ``--config.init.from``: one part's params and model config from any converter ``--src``.

``load(path, part)`` accepts, for ``part`` in ``qwen2 | llm | flow | hift | vits``:

- a HF Qwen2 directory: ``qwen2``, or ``llm`` (only the backbone, as CosyVoice's ``qwen_pretrain_path``: the params
  hold just the ``llm`` subtree and the config is a default SpeechLMConfig around that backbone);
- a CosyVoice2 model directory (``cosyvoice2.yaml`` + ``<part>.pt``): ``llm``, ``flow``, ``hift``, the
  architecture from its yaml;
- a GPT-SoVITS s2 ``.pth``: ``vits``;
- an Orbax directory of ours (a converted checkpoint, a converted CosyVoice2 directory, an averaged checkpoint);
- a trainer checkpoint step directory, or a trainer workdir / its ``checkpoints/`` (the latest step).

Params come back as the model's ``nnx.to_pure_dict`` layout of numpy arrays. Every reader is the converters'.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert.formats import PartFormat
from sovits2_jax.convert.mapping import ConversionError, flatten, stack_layers, unflatten, unstack_layers

PARTS = ("qwen2", "llm", "flow", "hift", "vits")
# the part each of our checkpoint formats holds
FORMAT_PARTS = {
    "hf_qwen2": "qwen2",
    "gpt_sovits": "vits",
    "cosyvoice2.llm": "llm",
    "cosyvoice2.flow": "flow",
    "cosyvoice2.hift": "hift",
}
# where the decoder layers sit (stacked when the config scans them)
LAYERS = {"qwen2": "model.layers", "llm": "llm.model.layers"}


def export_meta(part: str, config: Any, player: str = "model") -> dict:
    """meta.json for a trainer checkpoint whose ``player`` params are ``part`` (a ``Family.export_meta`` body)."""
    fmt = {v: k for k, v in FORMAT_PARTS.items()}.get(part)
    if fmt is None:
        raise ValueError(f"unknown part {part!r} (one of {', '.join(PARTS)})")
    return {"format": fmt, "part": part, "config": config.to_dict(), ckpt.PLAYER: player}


def load(path: str | Path, part: str, *, scan_layers: bool | None = None) -> tuple[dict, Any]:
    """(nested numpy params, model config) of ``part`` from ``path``; ``scan_layers`` restacks qwen2/llm layers."""
    if part not in PARTS:
        raise ConversionError(f"unknown part {part!r} (one of {', '.join(PARTS)})")
    src = Path(path)
    if not src.exists():
        raise ConversionError(f"{src}: no such file or directory")
    src = ckpt.resolve_checkpoint_dir(src)
    try:
        if ckpt.meta_path(src) is not None:
            params, config = _from_ours(src, part)
        else:
            params, config = _from_torch(src, part)
    except (OSError, KeyError, TypeError) as e:
        raise ConversionError(f"{src}: cannot load part {part!r} ({type(e).__name__}: {e})") from e
    if scan_layers is not None and part in LAYERS:
        params, config = _relayer(params, config, part, scan_layers)
    return params, config


def _from_ours(src: Path, part: str) -> tuple[dict, Any]:
    from sovits2_jax.convert import cosyvoice2

    fmt = ckpt.read_meta(src).get("format")
    if fmt == cosyvoice2.NAME:
        if part not in cosyvoice2.COSYVOICE2_PARTS:
            raise ConversionError(f"{src}: a CosyVoice2 directory has no part {part!r}")
        return cosyvoice2.load_part(src, part)
    have = FORMAT_PARTS.get(fmt)
    if have is None:
        raise ConversionError(f"{src}: unknown checkpoint format {fmt!r}")
    if have == "qwen2" and part == "llm":
        params, meta = ckpt.load_checkpoint(src)
        return _backbone_as_llm(params, _config_class("qwen2").from_dict(meta["config"]))
    if have != part:
        raise ConversionError(f"{src}: holds part {have!r} ({fmt}), not {part!r}")
    if fmt.startswith(cosyvoice2.NAME + "."):
        return PartFormat(part).load(src)
    params, meta = ckpt.load_checkpoint(src)
    return params, _config_class(part).from_dict(meta["config"])


def _from_torch(src: Path, part: str) -> tuple[dict, Any]:
    from sovits2_jax.convert import cosyvoice2, gpt_sovits, hf_qwen2

    if hf_qwen2.detect(src):
        if part not in ("qwen2", "llm"):
            raise ConversionError(f"{src}: a HF Qwen2 directory holds no {part!r} part")
        config = _config_class("qwen2").from_hf(hf_qwen2.read_hf_config(src))
        params = unflatten(hf_qwen2.load_hf_params(src, config))
        return (params, config) if part == "qwen2" else _backbone_as_llm(params, config)
    if cosyvoice2.detect(src):
        return _from_cosyvoice2_dir(src, part)
    if src.is_file() and gpt_sovits.detect(src):
        if part != "vits":
            raise ConversionError(f"{src}: a GPT-SoVITS s2 .pth holds the vits part, not {part!r}")
        return _from_s2_pth(src)
    raise ConversionError(
        f"{src}: not a HF Qwen2 directory, CosyVoice2 model directory, GPT-SoVITS s2 .pth, Orbax checkpoint of "
        "ours or trainer checkpoint/workdir"
    )


def _from_cosyvoice2_dir(src: Path, part: str) -> tuple[dict, Any]:
    from sovits2_jax.convert import cosyvoice2
    from sovits2_jax.convert.torch_io import iter_torch_file

    if part not in cosyvoice2.COSYVOICE2_PARTS:
        raise ConversionError(f"{src}: a CosyVoice2 model directory has no part {part!r}")
    weights = src / f"{part}.pt"
    if not weights.is_file():
        raise ConversionError(f"{src}: CosyVoice2 model directory without {weights.name}")
    mod = cosyvoice2.part_modules()[part]
    config = mod.config_from_yaml(cosyvoice2.read_yaml(src))
    return mod.torch_to_params(iter_torch_file(weights), config, source=str(weights)), config


def _from_s2_pth(src: Path) -> tuple[dict, Any]:
    from sovits2_jax.convert import gpt_sovits
    from sovits2_jax.convert.torch_io import tensor_to_numpy

    obj, _ = gpt_sovits.load_pth(src)
    weight = {str(k): tensor_to_numpy(v) for k, v in obj["weight"].items()}
    config = gpt_sovits.config_from_pth(obj["config"], gpt_sovits.normalize_dict(weight))
    flat, _buffers = gpt_sovits.torch_items_to_flat(weight.items(), config, source=str(src))
    return unflatten(flat), config


def _config_class(part: str):
    if part == "qwen2":
        from sovits2_jax.models.qwen2 import Qwen2Config

        return Qwen2Config
    from sovits2_jax.models.vits2.config import VitsConfig

    return VitsConfig


def _backbone_as_llm(params: dict, backbone) -> tuple[dict, Any]:
    """A Qwen2ForCausalLM's params as the ``llm`` subtree of a SpeechLM (the lm_head only when untied)."""
    from sovits2_jax.models.speech_lm import SpeechLMConfig

    sub = {"model": params["model"]}
    if not backbone.tie_word_embeddings and "lm_head" in params:
        sub["lm_head"] = params["lm_head"]
    return {"llm": sub}, SpeechLMConfig(backbone=backbone)


def _relayer(params: dict, config: Any, part: str, scan_layers: bool) -> tuple[dict, Any]:
    import dataclasses

    backbone = config if part == "qwen2" else config.backbone
    if backbone.scan_layers == scan_layers:
        return params, config
    flat = flatten(params)
    flat = stack_layers(flat, LAYERS[part]) if scan_layers else unstack_layers(flat, LAYERS[part])
    backbone = dataclasses.replace(backbone, scan_layers=scan_layers)
    config = backbone if part == "qwen2" else dataclasses.replace(config, backbone=backbone)
    return unflatten(flat), config
