"""HF HuBERT directories (config.json + safetensors / pytorch_model.bin) <-> our Orbax checkpoints of HubertModel.

A format of ``convert/formats.py`` for chinese-hubert-base (GPT-SoVITS), mHuBERT-147 and any ``HubertModel``
directory (bare keys, as ``HubertModel.save_pretrained`` writes them). The positional conv's weight norm comes as
``weight_g`` / ``weight_v`` (checkpoints saved before torch's parametrizations, e.g. chinese-hubert-base) or as
``parametrizations.weight.original0`` / ``original1``; both are read, and the key style and the weight file kind
(``model.safetensors`` or ``pytorch_model.bin``) are recorded in meta.json so ``jax_to_torch`` writes back the
layout that was read (bit-exact, dtypes kept; transformers loads either style).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from flax import nnx

from sovits2_jax.convert import checkpoint as ckpt
from sovits2_jax.convert import hf_dir
from sovits2_jax.convert.mapping import (
    ConversionError,
    Rule,
    expected_shapes,
    flatten,
    ours_to_torch,
    register_transform,
    torch_to_ours,
    unflatten,
)
from sovits2_jax.convert.torch_io import iter_hf_weights, save_hf_weights, save_torch_state_dict
from sovits2_jax.convert.weight_norm_keys import LEGACY, PARAMETRIZATIONS
from sovits2_jax.models.hubert import HubertConfig, HubertModel

NAME = "hf_hubert"
DESCRIPTION = "a HF HuBERT directory (config.json with model_type hubert + safetensors or pytorch_model.bin)"
PART = "hubert"
PARTS = (PART,)
SAFETENSORS, BIN = "safetensors", "bin"
WEIGHT_FILES = hf_dir.WEIGHT_FILES

# weight norm over torch dim 2 of the positional conv: g is [1, 1, K] in torch, [K] in ours
register_transform(
    "wn_g_dim2", lambda a: np.ascontiguousarray(a.reshape(-1)), lambda a: np.ascontiguousarray(a.reshape(1, 1, -1))
)

_POS = "encoder.pos_conv_embed.conv"
_GV_KEYS = {
    PARAMETRIZATIONS: (f"{_POS}.parametrizations.weight.original0", f"{_POS}.parametrizations.weight.original1"),
    LEGACY: (f"{_POS}.weight_g", f"{_POS}.weight_v"),
}


def rules(style: str | None = None) -> list[Rule]:
    """The rule table; ``style`` picks the weight-norm keys (None: both, for reading)."""
    layer = [
        ("attention.query.kernel", "attention.q_proj.weight", "linear"),
        ("attention.query.bias", "attention.q_proj.bias", "identity"),
        ("attention.key.kernel", "attention.k_proj.weight", "linear"),
        ("attention.key.bias", "attention.k_proj.bias", "identity"),
        ("attention.value.kernel", "attention.v_proj.weight", "linear"),
        ("attention.value.bias", "attention.v_proj.bias", "identity"),
        ("attention.output.kernel", "attention.out_proj.weight", "linear"),
        ("attention.output.bias", "attention.out_proj.bias", "identity"),
        ("attention_norm.scale", "layer_norm.weight", "identity"),
        ("attention_norm.bias", "layer_norm.bias", "identity"),
        ("mlp.up.kernel", "feed_forward.intermediate_dense.weight", "linear"),
        ("mlp.up.bias", "feed_forward.intermediate_dense.bias", "identity"),
        ("mlp.down.kernel", "feed_forward.output_dense.weight", "linear"),
        ("mlp.down.bias", "feed_forward.output_dense.bias", "identity"),
        ("mlp_norm.scale", "final_layer_norm.weight", "identity"),
        ("mlp_norm.bias", "final_layer_norm.bias", "identity"),
    ]
    conv = "feature_extractor.conv_layers.{i}"
    out = [
        Rule(f"{conv}.conv.kernel", f"{conv}.conv.weight", "conv1d"),
        Rule(f"{conv}.conv.bias", f"{conv}.conv.bias"),
        Rule(f"{conv}.norm.scale", f"{conv}.layer_norm.weight"),
        Rule(f"{conv}.norm.bias", f"{conv}.layer_norm.bias"),
        Rule("feature_projection.norm.scale", "feature_projection.layer_norm.weight"),
        Rule("feature_projection.norm.bias", "feature_projection.layer_norm.bias"),
        Rule("feature_projection.projection.kernel", "feature_projection.projection.weight", "linear"),
        Rule("feature_projection.projection.bias", "feature_projection.projection.bias"),
        Rule("masked_spec_embed", "masked_spec_embed"),
    ]
    for s in (style,) if style else (PARAMETRIZATIONS, LEGACY):
        g, v = _GV_KEYS[s]
        out += [
            Rule("encoder.pos_conv.conv.g", g, "wn_g_dim2"),
            Rule("encoder.pos_conv.conv.layer.kernel", v, "conv1d"),
        ]
    out += [
        Rule("encoder.pos_conv.conv.layer.bias", f"{_POS}.bias"),
        Rule("encoder.norm.scale", "encoder.layer_norm.weight"),
        Rule("encoder.norm.bias", "encoder.layer_norm.bias"),
    ]
    out += [Rule(f"encoder.layers.{{i}}.{a}", f"encoder.layers.{{i}}.{b}", tr) for a, b, tr in layer]
    return out


def detect(src: str | Path) -> bool:
    cfg = Path(src) / "config.json"
    if not cfg.is_file():
        return False
    try:
        hf = json.loads(cfg.read_text())
    except ValueError:
        return False
    return isinstance(hf, dict) and hf.get("model_type") == "hubert"


def parts(src: str | Path) -> tuple[str, ...]:
    """A HF HuBERT directory (or our checkpoint of one) holds the encoder."""
    return (PART,)


def load_part(src: str | Path, part: str) -> tuple[dict, HubertConfig]:
    """(nested params, config) of the encoder from a HF HuBERT directory or our ``hf_hubert`` checkpoint."""
    src = Path(src)
    if part != PART:
        raise ConversionError(f"{src}: a HF HuBERT checkpoint holds no {part!r} part (only {PART})")
    if ckpt.meta_path(src) is not None:
        params, meta = ckpt.load_checkpoint(src)
        _check_meta(src, meta)
        return params, HubertConfig.from_dict(meta["config"])
    config = config_from_hf(read_hf_config(src), src)
    flat, _ = load_hf_params(src, config)
    return unflatten(flat), config


def build_model(part: str, config: HubertConfig, rngs: nnx.Rngs) -> nnx.Module:
    if part != PART:
        raise ConversionError(f"{NAME} builds no {part!r} (only {PART})")
    return HubertModel(config, rngs=rngs)


def checkpoint_format(part: str) -> str | None:
    """A one-part checkpoint of the encoder is written back as a HF directory."""
    return NAME if part == PART else None


def read_hf_config(src: str | Path) -> dict:
    path = Path(src) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read the HF config ({e})") from e
    if not isinstance(hf, dict) or hf.get("model_type") != "hubert":
        found = hf.get("model_type") if isinstance(hf, dict) else None
        raise ConversionError(f"{path}: model_type {found!r} is not hubert")
    return hf


def config_from_hf(hf: dict, src: str | Path, **overrides) -> HubertConfig:
    """Our config of a HF config dict; an unsupported variant is a ConversionError naming ``src``."""
    try:
        return HubertConfig.from_hf(hf, **overrides)
    except (ValueError, TypeError) as e:
        raise ConversionError(f"{src}: {e}") from e


class _Layout:
    """Watches the streamed torch keys for the weight-norm key style."""

    def __init__(self):
        self.styles: set[str] = set()

    def watch(self, items: Iterable[tuple[str, np.ndarray]]) -> Iterator[tuple[str, np.ndarray]]:
        for key, value in items:
            for style, keys in _GV_KEYS.items():
                if key in keys:
                    self.styles.add(style)
            yield key, value


def weights_kind(src: str | Path) -> str:
    """``safetensors`` or ``bin``: what ``iter_hf_weights`` reads in ``src`` (safetensors first)."""
    d = Path(src)
    return SAFETENSORS if (d / "model.safetensors.index.json").is_file() or (d / "model.safetensors").is_file() else BIN


def load_hf_params(src: str | Path, config: HubertConfig) -> tuple[dict[str, np.ndarray], str]:
    """(flat params read from a HF directory, strictly checked against ``config``, weight-norm key style)."""
    shapes = expected_shapes(lambda: HubertModel(config, rngs=nnx.Rngs(0)))
    layout = _Layout()
    flat = torch_to_ours(layout.watch(iter_hf_weights(src)), rules(), shapes, source=str(src))
    if len(layout.styles) != 1:
        found = " and ".join(sorted(layout.styles)) or "none"
        raise ConversionError(f"{src}: expected one weight-norm key style for {_POS}, found {found}")
    return flat, layout.styles.pop()


def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    """Converts a HF HuBERT directory to an Orbax checkpoint (other files, e.g. preprocessor_config.json, kept in
    extra/)."""
    src, dst = Path(src), Path(dst)
    hf = read_hf_config(src)
    config = config_from_hf(hf, src)
    kind = weights_kind(src)
    flat, style = load_hf_params(src, config)
    meta = {
        "format": NAME,
        "part": PART,
        "model": "HubertModel",
        "config": config.to_dict(),
        "hf_config": hf,
        "weight_norm_style": style,
        "weights": kind,
    }
    return hf_dir.write_checkpoint_with_extras(src, dst, unflatten(flat), meta)


def _check_meta(src: Path, meta: dict) -> None:
    if meta.get("format") != NAME:
        raise ConversionError(f"{src}: format {meta.get('format')!r} is not {NAME}")


def jax_to_torch(src: str | Path, dst: str | Path) -> Path:
    """Writes a HF directory (config.json, the weights in the key style and file kind that were read, the kept
    files) from our checkpoint; a checkpoint without that record gets the parametrizations style in safetensors."""
    src, dst = Path(src), Path(dst)
    params, meta = ckpt.load_checkpoint(src)
    _check_meta(src, meta)
    config = HubertConfig.from_dict(meta["config"])
    hf = dict(meta.get("hf_config") or config.to_hf())
    style = meta.get("weight_norm_style", PARAMETRIZATIONS)
    if style not in _GV_KEYS:
        raise ConversionError(f"{src}: unknown weight_norm_style {style!r} in meta.json")
    items = ours_to_torch(flatten(params), rules(style))
    if meta.get("weights") == BIN:
        write = lambda d: save_torch_state_dict(items, d / "pytorch_model.bin")
    else:
        write = lambda d: save_hf_weights(items, d)
    return hf_dir.write_hf_dir(src, dst, hf, write)
