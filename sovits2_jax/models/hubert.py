"""HuBERT speech encoder (HF ``HubertModel`` in eval mode) in Flax NNX: GPT-SoVITS's SSL features.

waveform [B, N] at 16 kHz -> seven strided convolutions (320 samples = 20 ms per frame) -> LayerNorm + Linear to the
hidden size -> plus a grouped, weight-normed positional convolution -> transformer encoder -> [B, T, hidden], HF's
``last_hidden_state`` (what GPT-SoVITS takes from chinese-hubert-base). Two variants, as in transformers:

- ``feat_extract_norm="group"`` (HuBERT base, chinese-hubert-base, mHuBERT-147): a per-channel GroupNorm after the
  first convolution only, a LayerNorm before post-LN layers. transformers feeds it no attention mask (its
  feature extractor returns none), so a padded row there is not the row alone.
- ``feat_extract_norm="layer"`` (large models, usually with ``do_stable_layer_norm``: pre-LN layers and a final
  LayerNorm): a LayerNorm after every convolution; transformers masks padded frames from ``attention_mask``.

``lengths`` (real samples per row) makes a padded batch give each row what the row alone gives, for both variants:
the GroupNorm statistics are taken over the row's real frames (frames whose receptive field holds padding are left
out), padded frames are zeroed before the positional convolution and hidden from attention, and they are zero in
the output. For the "layer" variant this is transformers' masked forward on the real frames; for the "group"
variant it is transformers' forward of each row alone. Without ``lengths`` the forward is transformers' unmasked one.

``BucketedExtractor`` runs a list of waveforms in batches padded to a few length buckets, one compiled forward per
(batch, bucket) shape.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.models.config_base import ConfigBase
from sovits2_jax.nn import attention as attn
from sovits2_jax.nn.layers import Conv1d, LayerNorm, Linear, param
from sovits2_jax.nn.weight_norm import WeightNorm
from sovits2_jax.parallel.sharding import constrain

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}
FEAT_NORMS = ("group", "layer")
DTYPES = ("float32", "bfloat16", "float16")
CONV_NORM_EPS = 1e-5  # torch's default: transformers builds the conv GroupNorm / LayerNorms without the config's eps


@dataclasses.dataclass(frozen=True)
class HubertConfig(ConfigBase):
    """HuBERT architecture (defaults: HuBERT base = chinese-hubert-base = mHuBERT-147) and execution switches."""

    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    feat_proj_layer_norm: bool = True
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layer_norm_eps: float = 1e-5
    do_stable_layer_norm: bool = False
    masked_spec_embed: bool = True  # the checkpoint carries HF's SpecAugment vector (unused in eval, kept for export)
    sample_rate: int = 16000
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str | None = None

    def __post_init__(self):
        problems = []
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride) > 0:
            problems.append("conv_dim, conv_kernel and conv_stride must have the same (non-zero) length")
        if self.feat_extract_norm not in FEAT_NORMS:
            problems.append(f"feat_extract_norm={self.feat_extract_norm!r} not in {FEAT_NORMS}")
        for key in ("feat_extract_activation", "hidden_act"):
            if getattr(self, key) not in ACTIVATIONS:
                problems.append(f"{key}={getattr(self, key)!r} not in {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_heads:
            problems.append(f"num_heads={self.num_heads} does not divide hidden_size={self.hidden_size}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            problems.append(
                f"num_conv_pos_embedding_groups={self.num_conv_pos_embedding_groups} does not divide "
                f"hidden_size={self.hidden_size}"
            )
        for key in ("dtype", "param_dtype"):
            if getattr(self, key) not in DTYPES:
                problems.append(f"{key}={getattr(self, key)!r} not in {DTYPES}")
        if self.attention_impl not in attn.IMPLEMENTATIONS:
            problems.append(f"attention_impl={self.attention_impl!r} not in {attn.IMPLEMENTATIONS}")
        if problems:
            raise ValueError("HubertConfig: " + "; ".join(problems))

    @property
    def hop_length(self) -> int:
        """Samples per output frame (320 = 20 ms at 16 kHz for the base stack)."""
        return math.prod(self.conv_stride)

    @property
    def min_samples(self) -> int:
        """The shortest input that gives one frame (400 samples for the base stack)."""
        n = 1
        for k, s in reversed(list(zip(self.conv_kernel, self.conv_stride))):
            n = (n - 1) * s + k
        return n

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides) -> HubertConfig:
        """From a HF ``config.json`` dict (model_type hubert); ValueError names what we do not implement."""
        unsupported = []
        if hf.get("conv_pos_batch_norm"):
            unsupported.append("conv_pos_batch_norm=true")
        if hf.get("adapter_attn_dim") is not None:
            unsupported.append("adapter_attn_dim (attention adapters)")
        if unsupported:
            raise ValueError("HuBERT variant not supported: " + ", ".join(unsupported))
        default = cls()
        values = dict(
            conv_dim=tuple(hf.get("conv_dim", default.conv_dim)),
            conv_kernel=tuple(hf.get("conv_kernel", default.conv_kernel)),
            conv_stride=tuple(hf.get("conv_stride", default.conv_stride)),
            conv_bias=bool(hf.get("conv_bias", default.conv_bias)),
            feat_extract_norm=hf.get("feat_extract_norm", default.feat_extract_norm),
            feat_extract_activation=hf.get("feat_extract_activation", default.feat_extract_activation),
            feat_proj_layer_norm=bool(hf.get("feat_proj_layer_norm", default.feat_proj_layer_norm)),
            hidden_size=hf.get("hidden_size", default.hidden_size),
            num_layers=hf.get("num_hidden_layers", default.num_layers),
            num_heads=hf.get("num_attention_heads", default.num_heads),
            intermediate_size=hf.get("intermediate_size", default.intermediate_size),
            hidden_act=hf.get("hidden_act", default.hidden_act),
            num_conv_pos_embeddings=hf.get("num_conv_pos_embeddings", default.num_conv_pos_embeddings),
            num_conv_pos_embedding_groups=hf.get(
                "num_conv_pos_embedding_groups", default.num_conv_pos_embedding_groups
            ),
            layer_norm_eps=float(hf.get("layer_norm_eps", default.layer_norm_eps)),
            do_stable_layer_norm=bool(hf.get("do_stable_layer_norm", default.do_stable_layer_norm)),
            masked_spec_embed=(hf.get("mask_time_prob", 0.05) or 0) > 0 or (hf.get("mask_feature_prob") or 0) > 0,
        )
        values.update(overrides)
        return cls(**values)

    def to_hf(self) -> dict[str, Any]:
        """A HF ``config.json`` dict that ``transformers.HubertConfig`` accepts (dropouts as in eval: unused)."""
        return dict(
            architectures=["HubertModel"],
            model_type="hubert",
            conv_dim=list(self.conv_dim),
            conv_kernel=list(self.conv_kernel),
            conv_stride=list(self.conv_stride),
            conv_bias=self.conv_bias,
            feat_extract_norm=self.feat_extract_norm,
            feat_extract_activation=self.feat_extract_activation,
            feat_proj_layer_norm=self.feat_proj_layer_norm,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            hidden_act=self.hidden_act,
            num_conv_pos_embeddings=self.num_conv_pos_embeddings,
            num_conv_pos_embedding_groups=self.num_conv_pos_embedding_groups,
            layer_norm_eps=self.layer_norm_eps,
            do_stable_layer_norm=self.do_stable_layer_norm,
            mask_time_prob=0.05 if self.masked_spec_embed else 0.0,
            mask_feature_prob=0.0,
        )


def hubert_base(**overrides) -> HubertConfig:
    """HuBERT base: chinese-hubert-base (GPT-SoVITS) and mHuBERT-147 (GPT-SoVITS2's plan) share this shape."""
    return HubertConfig(**overrides)


def tiny(**overrides) -> HubertConfig:
    """The base conv strides and kernels (20 ms frames) with narrow channels and two layers, for tests."""
    values = dict(
        conv_dim=(32,) * 7,
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )
    return HubertConfig(**{**values, **overrides})


PRESETS = {"hubert_base": hubert_base, "tiny": tiny}


def output_lengths(config: HubertConfig, lengths):
    """Frames the conv stack makes of ``lengths`` samples (int, numpy or jax array); 0 below ``min_samples``."""
    for k, s in zip(config.conv_kernel, config.conv_stride):
        lengths = (lengths - k) // s + 1
    if isinstance(lengths, (int, np.integer)):
        return max(int(lengths), 0)
    return jnp.maximum(lengths, 0) if isinstance(lengths, jax.Array) else np.maximum(lengths, 0)


def _valid(lengths: jax.Array | None, t: int) -> jax.Array | None:
    return None if lengths is None else jnp.arange(t)[None, :] < lengths[:, None]


class ChannelNorm(nnx.Module):
    """torch ``GroupNorm(C, C)``: each channel normalised over time; with ``valid`` [B, T] over valid frames only."""

    def __init__(self, dim: int, *, eps: float = CONV_NORM_EPS, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.eps = eps
        self.scale = param(rngs, nnx.initializers.ones_init(), (dim,), ("norm",), param_dtype)
        self.bias = param(rngs, nnx.initializers.zeros_init(), (dim,), ("norm",), param_dtype)

    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        xf = x.astype(jnp.float32)
        if valid is None:
            mean = jnp.mean(xf, axis=1, keepdims=True)
            var = jnp.mean(jnp.square(xf - mean), axis=1, keepdims=True)
        else:
            w = valid[..., None].astype(jnp.float32)
            n = jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)
            mean = jnp.sum(xf * w, axis=1, keepdims=True) / n
            var = jnp.sum(jnp.square((xf - mean) * w), axis=1, keepdims=True) / n
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
        return y.astype(x.dtype)


class ConvLayer(nnx.Module):
    """One strided convolution of the feature encoder, its optional norm ("group" / "layer") and activation."""

    def __init__(self, config: HubertConfig, index: int, norm: str | None, *, rngs: nnx.Rngs):
        cin = 1 if index == 0 else config.conv_dim[index - 1]
        cout = config.conv_dim[index]
        pd = jnp.dtype(config.param_dtype)
        self.conv = Conv1d(
            cin, cout, config.conv_kernel[index], stride=config.conv_stride[index], use_bias=config.conv_bias,
            dtype=jnp.dtype(config.dtype), param_dtype=pd, rngs=rngs,
        )  # fmt: skip
        self.kind = norm
        if norm == "group":
            self.norm = ChannelNorm(cout, param_dtype=pd, rngs=rngs)
        elif norm == "layer":
            self.norm = LayerNorm(cout, eps=CONV_NORM_EPS, param_dtype=pd, rngs=rngs)
        else:
            self.norm = None
        self.activation = ACTIVATIONS[config.feat_extract_activation]
        self.kernel_size, self.stride = config.conv_kernel[index], config.conv_stride[index]

    def __call__(self, x: jax.Array, lengths: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        x = self.conv(x)
        if lengths is not None:
            lengths = jnp.maximum((lengths - self.kernel_size) // self.stride + 1, 0)
        if self.kind == "group":
            x = self.norm(x, _valid(lengths, x.shape[1]))
        elif self.kind == "layer":
            x = self.norm(x)
        return self.activation(x), lengths


class FeatureEncoder(nnx.Module):
    """waveform [B, N] -> conv features [B, T, conv_dim[-1]] (and the frames of each row when lengths are given)."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        group = config.feat_extract_norm == "group"
        norms = [("group" if i == 0 else None) if group else "layer" for i in range(len(config.conv_dim))]
        self.conv_layers = nnx.List([ConvLayer(config, i, n, rngs=rngs) for i, n in enumerate(norms)])
        self.dtype = jnp.dtype(config.dtype)

    def __call__(self, wav: jax.Array, lengths: jax.Array | None = None):
        x = wav.astype(self.dtype)[..., None]
        for layer in self.conv_layers:
            x, lengths = layer(x, lengths)
        return x, lengths


class FeatureProjection(nnx.Module):
    """Optional LayerNorm over the conv features, then Linear to the hidden size."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        pd = jnp.dtype(config.param_dtype)
        width = config.conv_dim[-1]
        self.norm = (
            LayerNorm(width, eps=config.layer_norm_eps, param_dtype=pd, rngs=rngs)
            if config.feat_proj_layer_norm
            else None
        )
        self.projection = Linear(
            width, config.hidden_size, axes=("feat", "embed"), dtype=jnp.dtype(config.dtype), param_dtype=pd,
            rngs=rngs,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.projection(x if self.norm is None else self.norm(x))


class PositionalConv(nnx.Module):
    """Grouped convolution over time (weight norm over the kernel axis, torch dim 2), "same" padding with the
    extra frame of an even kernel dropped, then the activation."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        k, d = config.num_conv_pos_embeddings, config.hidden_size
        conv = Conv1d(
            d, d, k, padding=k // 2, groups=config.num_conv_pos_embedding_groups, dtype=jnp.dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype), rngs=rngs,
        )  # fmt: skip
        self.conv = WeightNorm(conv, dim=2)
        self.trim = 1 if k % 2 == 0 else 0
        self.activation = ACTIVATIONS[config.feat_extract_activation]

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(x)
        if self.trim:
            y = y[:, : -self.trim]
        return self.activation(y)


class SelfAttention(nnx.Module):
    """Bidirectional multi-head attention with biases on all four projections."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.query = Linear(d, d, axes=("embed", "heads"), **kw)
        self.key = Linear(d, d, axes=("embed", "heads"), **kw)
        self.value = Linear(d, d, axes=("embed", "heads"), **kw)
        self.output = Linear(d, d, axes=("heads", "embed"), **kw)
        self.num_heads, self.head_dim = config.num_heads, d // config.num_heads
        self.implementation = config.attention_impl

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        b, t, _ = x.shape
        q, k, v = (p(x).reshape(b, t, self.num_heads, self.head_dim) for p in (self.query, self.key, self.value))
        q = constrain(q, ("batch", "length", "act_heads", None))
        out = attn.dot_product_attention(q, k, v, mask=mask, implementation=self.implementation)
        return self.output(out.reshape(b, t, -1))


class FeedForward(nnx.Module):
    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        kw = dict(dtype=jnp.dtype(config.dtype), param_dtype=jnp.dtype(config.param_dtype), rngs=rngs)
        self.up = Linear(config.hidden_size, config.intermediate_size, axes=("embed", "mlp"), **kw)
        self.down = Linear(config.intermediate_size, config.hidden_size, axes=("mlp", "embed"), **kw)
        self.activation = ACTIVATIONS[config.hidden_act]

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.activation(self.up(x))
        return self.down(constrain(h, ("batch", "length", "act_mlp")))


class EncoderLayer(nnx.Module):
    """Post-LN (``pre_norm=False``: norm after each residual add) or pre-LN transformer layer."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        pd = jnp.dtype(config.param_dtype)
        self.attention = SelfAttention(config, rngs=rngs)
        self.attention_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, param_dtype=pd, rngs=rngs)
        self.mlp = FeedForward(config, rngs=rngs)
        self.mlp_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, param_dtype=pd, rngs=rngs)
        self.pre_norm = config.do_stable_layer_norm

    def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
        if self.pre_norm:
            x = x + self.attention(self.attention_norm(x), mask)
            x = x + self.mlp(self.mlp_norm(x))
        else:
            x = self.attention_norm(x + self.attention(x, mask))
            x = self.mlp_norm(x + self.mlp(x))
        return constrain(x, ("batch", "length", "act_embed"))


class Encoder(nnx.Module):
    """Positional conv, LayerNorm (before the layers when post-LN, after them when pre-LN) and the layers."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        self.pos_conv = PositionalConv(config, rngs=rngs)
        self.norm = LayerNorm(
            config.hidden_size, eps=config.layer_norm_eps, param_dtype=jnp.dtype(config.param_dtype), rngs=rngs
        )
        self.layers = nnx.List([EncoderLayer(config, rngs=rngs) for _ in range(config.num_layers)])
        self.pre_norm = config.do_stable_layer_norm

    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
        mask = None
        if valid is not None:
            x = jnp.where(valid[..., None], x, 0)
            mask = valid[:, None, None, :]
        x = x + self.pos_conv(x)
        if not self.pre_norm:
            x = self.norm(x)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x) if self.pre_norm else x


class HubertModel(nnx.Module):
    """waveform [B, N] (+ optional real lengths [B]) -> hidden states [B, T, hidden] (HF ``last_hidden_state``)."""

    def __init__(self, config: HubertConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.feature_extractor = FeatureEncoder(config, rngs=rngs)
        self.feature_projection = FeatureProjection(config, rngs=rngs)
        self.masked_spec_embed = (
            param(rngs, nnx.initializers.uniform(1.0), (config.hidden_size,), ("embed",), jnp.dtype(config.param_dtype))
            if config.masked_spec_embed
            else None
        )
        self.encoder = Encoder(config, rngs=rngs)

    def __call__(self, wav: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """``wav`` [B, N] float; ``lengths`` [B] real samples per row (None: every row is all real)."""
        features, frames = self.feature_extractor(wav, None if lengths is None else jnp.asarray(lengths))
        x = constrain(self.feature_projection(features), ("batch", "length", "act_embed"))
        valid = _valid(frames, x.shape[1])
        x = self.encoder(x, valid)
        return x if valid is None else jnp.where(valid[..., None], x, 0)


def normalize_waveform(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (``Wav2Vec2FeatureExtractor(do_normalize=True)``; GPT-SoVITS's own extraction
    calls the model on the raw waveform and does not normalise)."""
    wav = np.asarray(wav, np.float32)
    return ((wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)).astype(np.float32)


DEFAULT_BUCKET_SECONDS = (2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)


class BucketedExtractor:
    """Features of many waveforms: rows sorted by length, batched ``batch_size`` at a time and padded to the
    smallest bucket that holds the batch's longest row (beyond the last bucket: the next multiple of
    ``overflow_seconds``), so each (batch, bucket) shape compiles once. Returns one [frames, hidden] numpy array
    per waveform, equal to the waveform's forward alone."""

    def __init__(
        self,
        model: HubertModel,
        *,
        batch_size: int = 8,
        bucket_seconds: Sequence[float] = DEFAULT_BUCKET_SECONDS,
        overflow_seconds: float = 5.0,
        normalize: bool = False,
    ):
        self.config = model.config
        self.batch_size = batch_size
        sr = self.config.sample_rate
        self.buckets = sorted({max(round(s * sr), self.config.min_samples) for s in bucket_seconds})
        self.overflow = max(round(overflow_seconds * sr), 1)
        self.normalize = normalize
        graphdef, state = nnx.split(model)
        self._state = state
        self._forward = jax.jit(lambda state, wav, lengths: nnx.merge(graphdef, state)(wav, lengths))

    def bucket_length(self, n: int) -> int:
        """The padded length (samples) of a batch whose longest row has ``n`` samples."""
        for b in self.buckets:
            if n <= b:
                return b
        return -(-n // self.overflow) * self.overflow

    def forward(self, batch: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The compiled forward of one padded batch [rows, samples] with its lengths [rows]: [rows, frames, hidden]."""
        return np.asarray(self._forward(self._state, jnp.asarray(batch), jnp.asarray(lengths, jnp.int32)))

    def __call__(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """[frames, hidden] features of each 16 kHz waveform, in input order (0 frames below ``min_samples``)."""
        wavs = [normalize_waveform(w) if self.normalize else np.asarray(w, np.float32) for w in wavs]
        out: list[np.ndarray | None] = [None] * len(wavs)
        order = sorted(range(len(wavs)), key=lambda i: len(wavs[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = self.bucket_length(max(len(wavs[i]) for i in rows))
            batch = np.zeros((self.batch_size, width), np.float32)
            lengths = np.full((self.batch_size,), width, np.int32)  # filler rows: silence of the full width
            for j, i in enumerate(rows):
                batch[j, : len(wavs[i])] = wavs[i]
                lengths[j] = len(wavs[i])
            hidden = self.forward(batch, lengths)
            for j, i in enumerate(rows):
                out[i] = hidden[j, : output_lengths(self.config, len(wavs[i]))]
        return out
