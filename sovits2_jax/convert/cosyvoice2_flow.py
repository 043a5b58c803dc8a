"""CosyVoice2 ``flow.pt`` (CausalMaskedDiffWithXvec state_dict) <-> our flow parameters.

A part module of the ``cosyvoice2`` format: ``config_from_yaml``, ``default_config``, ``build_model``,
``torch_to_params``, ``params_to_torch``. flow.pt is a plain state_dict; training checkpoints' ``epoch``/``step``
entries are dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from flax import nnx

from sovits2_jax.convert.mapping import Rule, expected_shapes, flatten, ours_to_torch, torch_to_ours, unflatten
from sovits2_jax.models.flow import CausalMaskedDiffWithXvec
from sovits2_jax.models.flow.config import CFMConfig, EncoderConfig, EstimatorConfig, FlowConfig

IGNORE = (r"^epoch$", r"^step$")


def _linear(ours: str, torch: str, bias: bool = True) -> list[Rule]:
    rules = [Rule(f"{ours}.kernel", f"{torch}.weight", "linear")]
    return [*rules, Rule(f"{ours}.bias", f"{torch}.bias")] if bias else rules


def _conv(ours: str, torch: str) -> list[Rule]:
    return [Rule(f"{ours}.kernel", f"{torch}.weight", "conv1d"), Rule(f"{ours}.bias", f"{torch}.bias")]


def _norm(ours: str, torch: str) -> list[Rule]:
    return [Rule(f"{ours}.scale", f"{torch}.weight"), Rule(f"{ours}.bias", f"{torch}.bias")]


def _conformer(ours: str, torch: str) -> list[Rule]:
    return [
        *_norm(f"{ours}.attn_norm", f"{torch}.norm_mha"),
        *_linear(f"{ours}.attn.query", f"{torch}.self_attn.linear_q"),
        *_linear(f"{ours}.attn.key", f"{torch}.self_attn.linear_k"),
        *_linear(f"{ours}.attn.value", f"{torch}.self_attn.linear_v"),
        *_linear(f"{ours}.attn.out", f"{torch}.self_attn.linear_out"),
        *_linear(f"{ours}.attn.position", f"{torch}.self_attn.linear_pos", bias=False),
        Rule(f"{ours}.attn.pos_bias_u", f"{torch}.self_attn.pos_bias_u"),
        Rule(f"{ours}.attn.pos_bias_v", f"{torch}.self_attn.pos_bias_v"),
        *_norm(f"{ours}.ff_norm", f"{torch}.norm_ff"),
        *_linear(f"{ours}.ff_in", f"{torch}.feed_forward.w_1"),
        *_linear(f"{ours}.ff_out", f"{torch}.feed_forward.w_2"),
    ]


def _causal_block(ours: str, torch: str) -> list[Rule]:
    return [*_conv(f"{ours}.conv.conv", f"{torch}.block.0"), *_norm(f"{ours}.norm", f"{torch}.block.2")]


def _stage(ours: str, torch: str, t: str) -> list[Rule]:
    """One (resnet, transformer blocks) stage; ``t`` is the placeholder of the transformer index."""
    return [
        *_causal_block(f"{ours}.resnet.block1", f"{torch}.0.block1"),
        *_causal_block(f"{ours}.resnet.block2", f"{torch}.0.block2"),
        *_linear(f"{ours}.resnet.time_proj", f"{torch}.0.mlp.1"),
        *_conv(f"{ours}.resnet.res_conv", f"{torch}.0.res_conv"),
        *_norm(f"{ours}.transformers.{t}.norm1", f"{torch}.1.{t}.norm1"),
        *_linear(f"{ours}.transformers.{t}.query", f"{torch}.1.{t}.attn1.to_q", bias=False),
        *_linear(f"{ours}.transformers.{t}.key", f"{torch}.1.{t}.attn1.to_k", bias=False),
        *_linear(f"{ours}.transformers.{t}.value", f"{torch}.1.{t}.attn1.to_v", bias=False),
        *_linear(f"{ours}.transformers.{t}.out", f"{torch}.1.{t}.attn1.to_out.0"),
        *_norm(f"{ours}.transformers.{t}.norm3", f"{torch}.1.{t}.norm3"),
        *_linear(f"{ours}.transformers.{t}.ff_in", f"{torch}.1.{t}.ff.net.0.proj"),
        *_linear(f"{ours}.transformers.{t}.ff_out", f"{torch}.1.{t}.ff.net.2"),
    ]


def encoder_rules(ours: str = "encoder", torch: str = "encoder") -> list[Rule]:
    return [
        *_linear(f"{ours}.embed.linear", f"{torch}.embed.out.0"),
        *_norm(f"{ours}.embed.norm", f"{torch}.embed.out.1"),
        *_conv(f"{ours}.pre_lookahead.conv1", f"{torch}.pre_lookahead_layer.conv1"),
        *_conv(f"{ours}.pre_lookahead.conv2", f"{torch}.pre_lookahead_layer.conv2"),
        *_conformer(f"{ours}.blocks.{{i}}", f"{torch}.encoders.{{i}}"),
        *_conv(f"{ours}.upsample.conv", f"{torch}.up_layer.conv"),
        *_linear(f"{ours}.up_embed.linear", f"{torch}.up_embed.out.0"),
        *_norm(f"{ours}.up_embed.norm", f"{torch}.up_embed.out.1"),
        *_conformer(f"{ours}.up_blocks.{{i}}", f"{torch}.up_encoders.{{i}}"),
        *_norm(f"{ours}.final_norm", f"{torch}.after_norm"),
    ]


def estimator_rules(ours: str = "estimator", torch: str = "decoder.estimator") -> list[Rule]:
    return [
        *_linear(f"{ours}.time_in", f"{torch}.time_mlp.linear_1"),
        *_linear(f"{ours}.time_out", f"{torch}.time_mlp.linear_2"),
        *_stage(f"{ours}.down", f"{torch}.down_blocks.0", "{j}"),
        *_conv(f"{ours}.down_conv.conv", f"{torch}.down_blocks.0.2"),
        *_stage(f"{ours}.mid.{{i}}", f"{torch}.mid_blocks.{{i}}", "{j}"),
        *_stage(f"{ours}.up", f"{torch}.up_blocks.0", "{j}"),
        *_conv(f"{ours}.up_conv.conv", f"{torch}.up_blocks.0.2"),
        *_causal_block(f"{ours}.final_block", f"{torch}.final_block"),
        *_conv(f"{ours}.final_proj", f"{torch}.final_proj"),
    ]


def rules() -> list[Rule]:
    """Our flat parameter paths <-> flow.pt keys."""
    return [
        Rule("input_embedding.embedding", "input_embedding.weight"),
        *_linear("speaker_projection", "spk_embed_affine_layer"),
        *encoder_rules(),
        *_linear("encoder_proj", "encoder_proj"),
        *estimator_rules(),
    ]


def default_config() -> FlowConfig:
    """CosyVoice2-0.5B's flow (examples/libritts/cosyvoice2/conf/cosyvoice2.yaml)."""
    return FlowConfig()


def build_model(config: FlowConfig, rngs: nnx.Rngs | None) -> CausalMaskedDiffWithXvec:
    """The flow model; ``rngs=None`` gives every parameter the same fixed key (for abstract shapes only)."""
    return CausalMaskedDiffWithXvec(config, rngs=rngs)


def _require(section: str, d: Mapping[str, Any], key: str, allowed) -> None:
    if key in d and d[key] not in allowed:
        raise ValueError(f"{section}.{key}={d[key]!r} is not supported (supported: {list(allowed)})")


def config_from_yaml(cfg: Mapping[str, Any]) -> FlowConfig:
    """FlowConfig from the parsed cosyvoice2.yaml (the whole file as plain dicts, or just its ``flow`` entry)."""
    flow = cfg.get("flow", cfg)
    if not isinstance(flow, Mapping) or "encoder" not in flow or "decoder" not in flow:
        raise ValueError("cosyvoice2.yaml: 'flow' must hold 'encoder' and 'decoder' sections")
    enc, dec = flow["encoder"], flow["decoder"]
    est = dec.get("estimator")
    if not isinstance(est, Mapping):
        raise ValueError("cosyvoice2.yaml: flow.decoder.estimator is missing")
    cfm = dec.get("cfm_params", {})
    cfm = cfm.get("content", cfm) if isinstance(cfm, Mapping) else {}
    _require("flow.encoder", enc, "input_layer", ("linear",))
    _require("flow.encoder", enc, "pos_enc_layer_type", ("rel_pos_espnet",))
    _require("flow.encoder", enc, "selfattention_layer_type", ("rel_selfattn",))
    _require("flow.encoder", enc, "use_cnn_module", (False,))
    _require("flow.encoder", enc, "macaron_style", (False,))
    _require("flow.encoder", enc, "normalize_before", (True,))
    _require("flow.encoder", enc, "activation_type", ("swish",))
    _require("flow.decoder.estimator", est, "act_fn", ("gelu",))
    _require("flow.decoder.estimator", est, "dropout", (0, 0.0))
    _require("flow.decoder.cfm_params", cfm, "solver", ("euler",))
    d = EncoderConfig()
    encoder = EncoderConfig(
        input_size=int(enc.get("input_size", flow.get("input_size", d.input_size))),
        output_size=int(enc.get("output_size", d.output_size)),
        attention_heads=int(enc.get("attention_heads", d.attention_heads)),
        linear_units=int(enc.get("linear_units", d.linear_units)),
        num_blocks=int(enc.get("num_blocks", d.num_blocks)),
        dropout_rate=float(enc.get("dropout_rate", d.dropout_rate)),
        positional_dropout_rate=float(enc.get("positional_dropout_rate", d.positional_dropout_rate)),
        attention_dropout_rate=float(enc.get("attention_dropout_rate", d.attention_dropout_rate)),
        static_chunk_size=int(enc.get("static_chunk_size", d.static_chunk_size) or d.static_chunk_size),
        pre_lookahead_len=int(flow.get("pre_lookahead_len", d.pre_lookahead_len)),
        upsample_stride=int(flow.get("token_mel_ratio", d.upsample_stride)),
        key_bias=bool(enc.get("key_bias", d.key_bias)),
    )
    e = EstimatorConfig()
    estimator = EstimatorConfig(
        in_channels=int(est.get("in_channels", e.in_channels)),
        out_channels=int(est.get("out_channels", e.out_channels)),
        channels=tuple(int(c) for c in est.get("channels", e.channels)),
        attention_head_dim=int(est.get("attention_head_dim", e.attention_head_dim)),
        n_blocks=int(est.get("n_blocks", e.n_blocks)),
        num_mid_blocks=int(est.get("num_mid_blocks", e.num_mid_blocks)),
        num_heads=int(est.get("num_heads", e.num_heads)),
        static_chunk_size=int(est.get("static_chunk_size", e.static_chunk_size)),
        num_decoding_left_chunks=int(est.get("num_decoding_left_chunks", e.num_decoding_left_chunks)),
    )
    c = CFMConfig()
    cfm_config = CFMConfig(
        sigma_min=float(cfm.get("sigma_min", c.sigma_min)),
        t_scheduler=str(cfm.get("t_scheduler", c.t_scheduler)),
        training_cfg_rate=float(cfm.get("training_cfg_rate", c.training_cfg_rate)),
        inference_cfg_rate=float(cfm.get("inference_cfg_rate", c.inference_cfg_rate)),
    )
    f = FlowConfig()
    return FlowConfig(
        vocab_size=int(flow.get("vocab_size", f.vocab_size)),
        input_size=int(flow.get("input_size", f.input_size)),
        output_size=int(flow.get("output_size", f.output_size)),
        spk_embed_dim=int(flow.get("spk_embed_dim", f.spk_embed_dim)),
        token_mel_ratio=int(flow.get("token_mel_ratio", f.token_mel_ratio)),
        encoder=encoder,
        estimator=estimator,
        cfm=cfm_config,
    )


def torch_to_params(items: Iterable[tuple[str, np.ndarray]], config: FlowConfig, *, source: str = "flow.pt") -> dict:
    """flow.pt (key, array) pairs -> our nested params; strict (every missing/unexpected/mis-shaped key named)."""
    # rngs=None: abstract construction without an nnx.Rngs counter (tracing that counter costs ~40 ms/param)
    shapes = expected_shapes(lambda: build_model(config, None))
    flat = torch_to_ours(items, rules(), shapes, ignore=IGNORE, source=source)
    return unflatten(flat)


def params_to_torch(params_nested: Mapping, config: FlowConfig) -> Iterator[tuple[str, np.ndarray]]:
    """Our nested params -> flow.pt (key, array) pairs."""
    del config  # the key table does not depend on sizes
    return ours_to_torch(flatten(params_nested), rules())
