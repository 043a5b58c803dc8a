"""HF Qwen2 directories (config.json + safetensors / pytorch_model.bin) <-> our Orbax checkpoints.

A format of ``convert/formats.py``: a source holds ``qwen2`` (the causal LM) and ``llm``: only its backbone as the
``llm`` subtree of a SpeechLM (CosyVoice's ``qwen_pretrain_path``), with a default SpeechLMConfig around it.
"""

from __future__ import annotations

import json
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
from sovits2_jax.convert.torch_io import iter_hf_weights, save_hf_weights
from sovits2_jax.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from sovits2_jax.models.speech_lm import SpeechLM, SpeechLMConfig

NAME = "hf_qwen2"
DESCRIPTION = "a HF Qwen2 directory (config.json + safetensors)"
PARTS = ("qwen2", "llm")
WEIGHT_FILES = hf_dir.WEIGHT_FILES


def decoder_rules(ours_prefix: str, torch_prefix: str) -> list[Rule]:
    """Rules for a Qwen2Model (embedding, layers, final norm) under the given prefixes."""
    o, t = ours_prefix, torch_prefix
    layer = [
        ("attention_norm.scale", "input_layernorm.weight", "identity"),
        ("attention.query.kernel", "self_attn.q_proj.weight", "linear"),
        ("attention.query.bias", "self_attn.q_proj.bias", "identity"),
        ("attention.key.kernel", "self_attn.k_proj.weight", "linear"),
        ("attention.key.bias", "self_attn.k_proj.bias", "identity"),
        ("attention.value.kernel", "self_attn.v_proj.weight", "linear"),
        ("attention.value.bias", "self_attn.v_proj.bias", "identity"),
        ("attention.output.kernel", "self_attn.o_proj.weight", "linear"),
        ("mlp_norm.scale", "post_attention_layernorm.weight", "identity"),
        ("mlp.gate.kernel", "mlp.gate_proj.weight", "linear"),
        ("mlp.up.kernel", "mlp.up_proj.weight", "linear"),
        ("mlp.down.kernel", "mlp.down_proj.weight", "linear"),
    ]
    rules = [Rule(f"{o}embed_tokens.embedding", f"{t}embed_tokens.weight")]
    rules += [Rule(f"{o}layers.{{i}}.{a}", f"{t}layers.{{i}}.{b}", tr) for a, b, tr in layer]
    rules.append(Rule(f"{o}final_norm.scale", f"{t}norm.weight"))
    return rules


RULES = [*decoder_rules("model.", "model."), Rule("lm_head.kernel", "lm_head.weight", "linear")]
# Old checkpoints store RoPE tables; tied checkpoints may still carry a copy of the embedding as lm_head.
IGNORE_ALWAYS = (r"rotary_emb\.inv_freq$",)


def detect(src: str | Path) -> bool:
    cfg = Path(src) / "config.json"
    if not cfg.is_file():
        return False
    try:
        hf = json.loads(cfg.read_text())
    except ValueError:
        return False
    return hf.get("model_type") == "qwen2" or "Qwen2ForCausalLM" in hf.get("architectures", [])


def parts(src: str | Path) -> tuple[str, ...]:
    """Every HF Qwen2 directory (or our checkpoint of one) holds the causal LM and, as an ``llm``, its backbone."""
    return PARTS


def load_part(src: str | Path, part: str) -> tuple[dict, Qwen2Config | SpeechLMConfig]:
    """(nested params, config) of ``part`` from a HF Qwen2 directory or our ``hf_qwen2`` checkpoint."""
    src = Path(src)
    if part not in PARTS:
        raise ConversionError(f"{src}: a HF Qwen2 checkpoint holds no {part!r} part (only {', '.join(PARTS)})")
    if ckpt.meta_path(src) is not None:
        params, meta = ckpt.load_checkpoint(src)
        if meta.get("format") != NAME:
            raise ConversionError(f"{src}: format {meta.get('format')!r} is not {NAME}")
        config = Qwen2Config.from_dict(meta["config"])
    else:
        config = Qwen2Config.from_hf(read_hf_config(src))
        params = unflatten(load_hf_params(src, config))
    return (params, config) if part == "qwen2" else backbone_as_llm(params, config)


def architecture_scope(src: str | Path, part: str) -> str:
    """An ``llm`` read from a Qwen2 source has only its backbone from it (CosyVoice's ``qwen_pretrain_path``)."""
    return "backbone" if part == "llm" else ""


def backbone_as_llm(params: dict, backbone: Qwen2Config) -> tuple[dict, SpeechLMConfig]:
    """A Qwen2ForCausalLM's params as the ``llm`` subtree of a SpeechLM (the lm_head only when untied)."""
    sub = {"model": params["model"]}
    if not backbone.tie_word_embeddings and "lm_head" in params:
        sub["lm_head"] = params["lm_head"]
    return {"llm": sub}, SpeechLMConfig(backbone=backbone)


def build_model(part: str, config, rngs: nnx.Rngs) -> nnx.Module:
    if part not in PARTS:
        raise ConversionError(f"{NAME} builds no {part!r} (only {', '.join(PARTS)})")
    return Qwen2ForCausalLM(config, rngs=rngs) if part == "qwen2" else SpeechLM(config, rngs=rngs)


def checkpoint_format(part: str) -> str | None:
    """Our checkpoint of the causal LM is written back as a HF directory; a SpeechLM is not one."""
    return NAME if part == "qwen2" else None


def read_hf_config(src: str | Path) -> dict:
    path = Path(src) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: cannot read the HF config ({e})") from e
    if hf.get("model_type") != "qwen2":
        raise ConversionError(f"{path}: model_type {hf.get('model_type')!r} is not qwen2")
    return hf


def load_hf_params(src: str | Path, config: Qwen2Config) -> dict[str, np.ndarray]:
    """Flat params (unscanned layout) read from a HF directory, strictly checked against ``config``."""
    shapes = expected_shapes(lambda: Qwen2ForCausalLM(_unscanned(config), rngs=nnx.Rngs(0)))
    ignore = list(IGNORE_ALWAYS)
    if config.tie_word_embeddings:
        ignore.append(r"^lm_head\.weight$")
    return torch_to_ours(iter_hf_weights(src), RULES, shapes, ignore=ignore, source=str(src))


def _unscanned(config: Qwen2Config) -> Qwen2Config:
    return Qwen2Config(**{**config.to_dict(), "scan_layers": False})


def torch_to_jax(src: str | Path, dst: str | Path) -> Path:
    """Converts a HF Qwen2 directory to an Orbax checkpoint directory (tokenizer files kept in extra/)."""
    src, dst = Path(src), Path(dst)
    hf = read_hf_config(src)
    config = Qwen2Config.from_hf(hf)
    flat = load_hf_params(src, config)
    meta = {"format": NAME, "model": "Qwen2ForCausalLM", "config": config.to_dict(), "hf_config": hf}
    return hf_dir.write_checkpoint_with_extras(src, dst, unflatten(flat), meta)


def jax_to_torch(src: str | Path, dst: str | Path) -> Path:
    """Writes a HF directory (config.json, safetensors, the kept tokenizer files) from our checkpoint."""
    src, dst = Path(src), Path(dst)
    params, meta = ckpt.load_checkpoint(src)
    if meta.get("format") != NAME:
        raise ConversionError(f"{src}: format {meta.get('format')!r} is not {NAME}")
    config = Qwen2Config.from_dict(meta["config"])
    hf = dict(meta.get("hf_config") or config.to_hf())
    items = ours_to_torch(flatten(params), RULES)
    return hf_dir.write_hf_dir(src, dst, hf, lambda d: save_hf_weights(items, d))
