"""CosyVoice2 ``llm.pt`` (``cosyvoice.llm.llm.Qwen2LM`` state dict) <-> our SpeechLM parameters.

Torch keys: ``llm.model.model.<Qwen2 decoder>`` (the Qwen2ForCausalLM inside ``Qwen2Encoder``),
``llm.model.lm_head.weight`` (unused by Qwen2LM; a copy of the embedding when the backbone ties them),
``llm_embedding.weight``, ``speech_embedding.weight``, ``llm_decoder.{weight,bias}``. Training checkpoints add
integer ``epoch`` / ``step`` entries, which are dropped. The backbone's shape comes from the ``config.json`` of
the directory the yaml's ``qwen_pretrain_path`` points at (``CosyVoice-BlankEN``).

A GPT-SoVITS2 AR with several codebooks per frame (``num_codebooks`` K > 1) adds its codebooks 1..K-1 stacked:
``codebook_embedding`` [K-1, V, D] (row k: codebook k+1's embedding table) and ``codebook_decoder.{weight,bias}``
[K-1, V, D] / [K-1, V] (row k: codebook k+1's head in torch Linear layout).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from sovits2_jax.convert import hf_qwen2
from sovits2_jax.convert.mapping import (
    ConversionError,
    Rule,
    expected_shapes,
    flatten,
    ours_to_torch,
    register_transform,
    stack_layers,
    torch_to_ours,
    unflatten,
    unstack_layers,
)
from sovits2_jax.models.qwen2 import Qwen2Config
from sovits2_jax.models.sampling_config import SamplingConfig
from sovits2_jax.models.speech_lm import SpeechLM, SpeechLMConfig

PART = "llm"
# ours [K-1, D, V] <-> torch [K-1, V, D]: one Linear weight per stacked codebook
register_transform("stacked_linear", lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2)),
                   lambda a: np.ascontiguousarray(np.swapaxes(a, -1, -2)))  # fmt: skip
IGNORE = (r"^epoch$", r"^step$", r"rotary_emb\.inv_freq$")
LM_HEAD = "llm.model.lm_head.weight"
LAYERS = "llm.model.layers"


def rules(config: SpeechLMConfig) -> list[Rule]:
    out = hf_qwen2.decoder_rules("llm.model.", "llm.model.model.")
    if not config.backbone.tie_word_embeddings:
        out.append(Rule("llm.lm_head.kernel", LM_HEAD, "linear"))
    out += [
        Rule("llm_embedding.embedding", "llm_embedding.weight"),
        Rule("speech_embedding.embedding", "speech_embedding.weight"),
        Rule("llm_decoder.kernel", "llm_decoder.weight", "linear"),
        Rule("llm_decoder.bias", "llm_decoder.bias"),
    ]
    if config.num_codebooks > 1:
        out += [
            Rule("codebooks.embedding", "codebook_embedding"),
            Rule("codebooks.kernel", "codebook_decoder.weight", "stacked_linear"),
            Rule("codebooks.bias", "codebook_decoder.bias"),
        ]
    if config.text_feature_dim:
        for ours, torch in (("hidden", "0"), ("out", "2")):
            out.append(Rule(f"text_feature_proj.{ours}.kernel", f"text_feature_proj.{torch}.weight", "linear"))
            out.append(Rule(f"text_feature_proj.{ours}.bias", f"text_feature_proj.{torch}.bias"))
    return out


def default_config() -> SpeechLMConfig:
    return SpeechLMConfig()


def build_model(config: SpeechLMConfig, rngs: nnx.Rngs) -> SpeechLM:
    return SpeechLM(config, rngs=rngs)


def _llm_section(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    llm = cfg.get("llm")
    if not isinstance(llm, Mapping) or not str(llm.get("__class__", "")).endswith("Qwen2LM"):
        found = llm.get("__class__") if isinstance(llm, Mapping) else type(llm).__name__
        raise ConversionError(f"yaml key 'llm' must be a !new:cosyvoice.llm.llm.Qwen2LM, found {found!r}")
    return llm


def config_from_yaml(cfg: Mapping[str, Any], **backbone_overrides) -> SpeechLMConfig:
    """SpeechLMConfig from the parsed yaml; the backbone shape from ``<qwen_pretrain_path>/config.json``."""
    llm = _llm_section(cfg)
    encoder = llm.get("llm") or {}
    path = encoder.get("pretrain_path") if isinstance(encoder, Mapping) else None
    if not path:
        raise ConversionError("yaml llm.llm.pretrain_path is empty: pass the CosyVoice-BlankEN directory")
    backbone = Qwen2Config.from_hf(hf_qwen2.read_hf_config(path), **backbone_overrides)
    for key in ("llm_input_size", "llm_output_size"):
        if key in llm and int(llm[key]) != backbone.hidden_size:
            raise ConversionError(
                f"yaml llm.{key}={llm[key]} does not match hidden_size={backbone.hidden_size} of {path}"
            )
    return SpeechLMConfig(
        backbone=backbone,
        speech_token_size=int(llm.get("speech_token_size", 6561)),
        mix_ratio=tuple(llm.get("mix_ratio", (5, 15))),
        lsm_weight=float(llm.get("lsm_weight", 0.0)),
        length_normalized_loss=bool(llm.get("length_normalized_loss", True)),
    )


def sampling_from_yaml(cfg: Mapping[str, Any]) -> SamplingConfig:
    """The yaml's ``llm.sampling`` (``!name:cosyvoice.utils.common.ras_sampling`` with its arguments)."""
    s = _llm_section(cfg).get("sampling") or {}
    name = str(s.get("__name__", ""))
    method = {"ras_sampling": "ras", "nucleus_sampling": "nucleus", "random_sampling": "random"}.get(
        name.rsplit(".", 1)[-1]
    )
    if method is None:
        raise ConversionError(f"yaml llm.sampling {name!r} is not a cosyvoice sampling function")
    keys = ("top_p", "top_k", "win_size", "tau_r")
    return SamplingConfig(method=method, **{k: s[k] for k in keys if k in s})


def _unscanned(config: SpeechLMConfig) -> SpeechLMConfig:
    bb = Qwen2Config(**{**config.backbone.to_dict(), "scan_layers": False})
    return dataclasses.replace(config, backbone=bb)


def torch_to_params(items: Iterable[tuple[str, np.ndarray]], config: SpeechLMConfig, *, source: str = "llm.pt") -> dict:
    """Nested params for ``SpeechLM(config)`` from (key, array) pairs of a Qwen2LM state dict (strict)."""
    flat_config = _unscanned(config)
    shapes = expected_shapes(lambda: SpeechLM(flat_config, rngs=nnx.Rngs(0)))
    ignore = list(IGNORE)
    if config.backbone.tie_word_embeddings:
        ignore.append("^" + LM_HEAD.replace(".", r"\.") + "$")
    flat = torch_to_ours(items, rules(config), shapes, ignore=ignore, source=source)
    if config.backbone.scan_layers:
        flat = stack_layers(flat, LAYERS)
    return unflatten(flat)


def params_to_torch(params_nested: Mapping, config: SpeechLMConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(torch key, array) pairs of a Qwen2LM state dict; a tied backbone gets its lm_head copy back."""
    flat = {k: np.asarray(v) for k, v in flatten(params_nested).items()}
    if config.backbone.scan_layers:
        flat = unstack_layers(flat, LAYERS)
    yield from ours_to_torch(flat, rules(config))
    if config.backbone.tie_word_embeddings:
        yield LM_HEAD, flat["llm.model.embed_tokens.embedding"].copy()


def load_llm_pt(path: str | Path, config: SpeechLMConfig) -> dict:
    """Nested params from an ``llm.pt`` file."""
    from sovits2_jax.convert.torch_io import iter_torch_file

    return torch_to_params(iter_torch_file(path), config, source=str(path))
