"""HF XLM-RoBERTa directories (BGE-M3: config.json + safetensors / pytorch_model.bin) <-> our Orbax checkpoints.

A format of ``convert/formats.py`` for GPT-SoVITS2's text encoder. What an ``XLMRobertaModel.save_pretrained``
directory holds converts both ways bit-exactly: the weights with or without a ``roberta.`` prefix (one prefix per
checkpoint, recorded in meta.json and written back) and the pooler when present (``with_pooler`` in the config).
The ``embeddings.position_ids`` / ``token_type_ids`` buffers that older checkpoints store are constants, not
weights: they are skipped and not written back. Everything else must match the model, or one ``ConversionError``
names every missing, unexpected and mis-shaped key.
"""

from __future__ import annotations

import json
import re
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
    torch_to_ours,
    unflatten,
)
from sovits2_jax.convert.torch_io import iter_hf_weights, load_torch_object, save_hf_weights
from sovits2_jax.models.xlm_roberta import XLMRobertaConfig, XLMRobertaModel

NAME = "hf_xlm_roberta"
DESCRIPTION = "a HF XLM-RoBERTa / BGE-M3 directory (config.json with model_type xlm-roberta + weights)"
PART = "xlm_roberta"
PARTS = (PART,)
MODEL_TYPE = "xlm-roberta"
PREFIX = "roberta."  # the base model's name inside HF's task models (XLMRobertaForMaskedLM, ...)
WEIGHT_FILES = hf_dir.WEIGHT_FILES
WEIGHT_SUFFIXES = (".safetensors", ".bin")  # shards of either kind
BUFFERS = r"embeddings\.(position_ids|token_type_ids)$"


def rules(prefix: str = "") -> list[Rule]:
    """The rule table of an XLMRobertaModel whose torch keys start with ``prefix``."""
    p = prefix
    layer = [
        ("attention.query", "attention.self.query", "linear"),
        ("attention.key", "attention.self.key", "linear"),
        ("attention.value", "attention.self.value", "linear"),
        ("attention.output", "attention.output.dense", "linear"),
        ("mlp.up", "intermediate.dense", "linear"),
        ("mlp.down", "output.dense", "linear"),
    ]
    norms = [("embeddings.norm", "embeddings.LayerNorm")]
    table = [
        Rule("embeddings.word.embedding", f"{p}embeddings.word_embeddings.weight"),
        Rule("embeddings.position.embedding", f"{p}embeddings.position_embeddings.weight"),
        Rule("embeddings.token_type.embedding", f"{p}embeddings.token_type_embeddings.weight"),
        Rule("pooler.kernel", f"{p}pooler.dense.weight", "linear"),
        Rule("pooler.bias", f"{p}pooler.dense.bias"),
    ]
    for ours, torch, transform in layer:
        table.append(Rule(f"layers.{{i}}.{ours}.kernel", f"{p}encoder.layer.{{i}}.{torch}.weight", transform))
        table.append(Rule(f"layers.{{i}}.{ours}.bias", f"{p}encoder.layer.{{i}}.{torch}.bias"))
    norms += [
        ("layers.{i}.attention_norm", "encoder.layer.{i}.attention.output.LayerNorm"),
        ("layers.{i}.mlp_norm", "encoder.layer.{i}.output.LayerNorm"),
    ]
    for ours, torch in norms:
        table.append(Rule(f"{ours}.scale", f"{p}{torch}.weight"))
        table.append(Rule(f"{ours}.bias", f"{p}{torch}.bias"))
    return table


def detect(src: str | Path) -> bool:
    cfg = Path(src) / "config.json"
    if not cfg.is_file():
        return False
    try:
        hf = json.loads(cfg.read_text())
    except ValueError:
        return False
    return isinstance(hf, dict) and hf.get("model_type") == MODEL_TYPE


def parts(src: str | Path) -> tuple[str, ...]:
    """The parts a source holds: the encoder."""
    return PARTS


def load_part(src: str | Path, part: str) -> tuple[dict, XLMRobertaConfig]:
    """(nested params, config) of the ``xlm_roberta`` part from a HF directory or our checkpoint of one."""
    if part != PART:
        raise ConversionError(f"{src}: a HF XLM-RoBERTa checkpoint holds no {part!r} part (only {PART})")
    return load(src)


def load(src: str | Path) -> tuple[dict, XLMRobertaConfig]:
    """(nested params, config) of the encoder from a HF XLM-RoBERTa directory or our ``hf_xlm_roberta`` checkpoint."""
    src = Path(src)
    if ckpt.meta_path(src) is not None:
        params, meta = _our_checkpoint(src)
        return params, XLMRobertaConfig.from_dict(meta["config"])
    config, prefix = source_config(src)
    return unflatten(load_hf_params(src, config, prefix)), config


def build_model(part: str, config: XLMRobertaConfig, rngs: nnx.Rngs) -> nnx.Module:
    if part != PART:
        raise ConversionError(f"{NAME} builds no {part!r} (only {PART})")
    return XLMRobertaModel(config, rngs=rngs)


def checkpoint_format(part: str) -> str | None:
    """Our checkpoint of the encoder is written back as a HF directory."""
    return NAME if part == PART else None


def read_hf_config(src: str | Path) -> dict:
    path = Path(src) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read the HF config ({e})") from e
    if not isinstance(hf, dict) or hf.get("model_type") != MODEL_TYPE:
        found = hf.get("model_type") if isinstance(hf, dict) else None
        raise ConversionError(f"{path}: model_type {found!r} is not {MODEL_TYPE}")
    return hf


def weight_names(src: str | Path) -> list[str]:
    """The tensor names of a HF directory's weights, in the file order ``iter_hf_weights`` reads: from the shard
    index or the safetensors header (no tensor data), or from a memory-mapped pytorch_model.bin."""
    d = Path(src)
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (d / index_name).is_file():
            try:
                return list(json.loads((d / index_name).read_text())["weight_map"])
            except (ValueError, KeyError, TypeError) as e:
                raise ConversionError(f"{d / index_name}: not a valid shard index ({e})") from e
        if (d / single).is_file():
            return _single_file_names(d / single)
    raise ConversionError(f"{d}: no model.safetensors(.index.json) or pytorch_model.bin(.index.json) found")


def _single_file_names(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                return list(f.keys())
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e
    state = load_torch_object(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a state dict, found {type(state).__name__}")
    return list(state)


def source_config(src: str | Path) -> tuple[XLMRobertaConfig, str]:
    """(config, torch key prefix) of a HF directory: the architecture from config.json; the prefix (``roberta.``
    or none) and whether it has a pooler from its weight names."""
    hf = read_hf_config(src)
    names = weight_names(src)
    prefix = PREFIX if any(n.startswith(PREFIX) for n in names) else ""
    with_pooler = any(n in (f"{prefix}pooler.dense.weight", f"{prefix}pooler.dense.bias") for n in names)
    try:
        config = XLMRobertaConfig.from_hf(hf, with_pooler=with_pooler)
    except (ValueError, KeyError) as e:
        raise ConversionError(f"{Path(src) / 'config.json'}: unsupported XLM-RoBERTa config ({e})") from e
    return config, prefix


def load_hf_params(src: str | Path, config: XLMRobertaConfig, prefix: str = "") -> dict[str, np.ndarray]:
    """Flat params read one tensor at a time from a HF directory, strictly checked against ``config``."""
    shapes = expected_shapes(lambda: XLMRobertaModel(config, rngs=nnx.Rngs(0)))
    ignore = [rf"^{re.escape(prefix)}{BUFFERS}"]
    return torch_to_ours(iter_hf_weights(src), rules(prefix), shapes, ignore=ignore, source=str(src))


def _our_checkpoint(src: Path) -> tuple[dict, dict]:
    params, meta = ckpt.load_checkpoint(src)
    if meta.get("format") != NAME:
        raise ConversionError(f"{src}: format {meta.get('format')!r} is not {NAME}")
    return params, meta


def checkpoint_meta(config: XLMRobertaConfig, hf_config: dict | None = None, prefix: str = "") -> dict:
    """meta.json of our checkpoint of an encoder: ``jax_to_torch`` writes ``hf_config`` (default: the config's own
    HF form) back as config.json and the weights under ``prefix``."""
    hf = hf_config if hf_config is not None else config.to_hf()
    return {"format": NAME, "model": "XLMRobertaModel", "config": config.to_dict(), "hf_config": hf,
            "torch_prefix": prefix}  # fmt: skip


def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    """Converts a HF XLM-RoBERTa directory to an Orbax checkpoint directory; its other top-level files (tokenizer,
    sentence-transformers settings) are kept in ``extra/``."""
    src, dst = Path(src), Path(dst)
    hf = read_hf_config(src)
    config, prefix = source_config(src)
    flat = load_hf_params(src, config, prefix)
    meta = checkpoint_meta(config, hf, prefix)
    return hf_dir.write_checkpoint_with_extras(src, dst, unflatten(flat), meta)


def jax_to_torch(src: str | Path, dst: str | Path) -> Path:
    """Writes a HF directory (config.json, model.safetensors under the source's key prefix, the kept files) from
    our checkpoint."""
    src, dst = Path(src), Path(dst)
    params, meta = _our_checkpoint(src)
    config = XLMRobertaConfig.from_dict(meta["config"])
    hf = dict(meta.get("hf_config") or config.to_hf())
    items = ours_to_torch(flatten(params), rules(meta.get("torch_prefix", "")))
    return hf_dir.write_hf_dir(src, dst, hf, lambda d: save_hf_weights(items, d))
