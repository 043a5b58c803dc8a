"""UpsampleConformerEncoder of CosyVoice2's flow: tokens (25 Hz) -> hidden frames (50 Hz).

Linear input layer + ESPnet relative positional encoding, pre-norm conformer blocks with relative self-attention
(Transformer-XL ``pos_bias_u``/``pos_bias_v``), a pre-lookahead conv, nearest x2 upsampling with a causal conv, a
second block stack and a final LayerNorm. Layout (batch, time, channels).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.models.flow.common import CONV_AXES, Dropout, attention_mask
from sovits2_jax.models.flow.config import EncoderConfig
from sovits2_jax.nn.layers import Conv1d, LayerNorm, Linear, param
from sovits2_jax.parallel.sharding import constrain


def relative_position_encoding(length: int, dim: int) -> np.ndarray:
    """[2*length - 1, dim] sinusoids for relative positions length-1, ..., 0, ..., -(length-1) (ESPnet order)."""
    pos = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2, dtype=np.float32) * -(math.log(10000.0) / dim))
    pe = np.zeros((2 * length - 1, dim), np.float32)
    pe[:, 0::2] = np.sin(pos * div)
    pe[:, 1::2] = np.cos(pos * div)
    return pe


def _rel_shift(x: jax.Array) -> jax.Array:
    """[..., T, 2T-1] scores over relative positions -> [..., T, T] with out[i, j] = x[i, T-1-i+j]."""
    *lead, t, p = x.shape
    x = jnp.concatenate([jnp.zeros((*lead, t, 1), x.dtype), x], axis=-1)
    x = x.reshape(*lead, p + 1, t)[..., 1:, :]
    return x.reshape(*lead, t, p)[..., :t]


class RelPositionAttention(nnx.Module):
    """Multi-head self-attention with Transformer-XL relative positions (content + position score terms)."""

    def __init__(self, dim: int, heads: int, *, key_bias: bool = True, rngs: nnx.Rngs):
        self.heads, self.head_dim = heads, dim // heads
        self.query = Linear(dim, dim, axes=("embed", "heads"), rngs=rngs)
        self.key = Linear(dim, dim, use_bias=key_bias, axes=("embed", "heads"), rngs=rngs)
        self.value = Linear(dim, dim, axes=("embed", "heads"), rngs=rngs)
        self.out = Linear(dim, dim, axes=("heads", "embed"), rngs=rngs)
        self.position = Linear(dim, dim, use_bias=False, axes=("embed", "heads"), rngs=rngs)
        init = nnx.initializers.xavier_uniform()
        self.pos_bias_u = param(rngs, init, (heads, self.head_dim), ("attn_heads", "head_dim"))
        self.pos_bias_v = param(rngs, init, (heads, self.head_dim), ("attn_heads", "head_dim"))

    def __call__(self, x, pos_emb, mask, dropout: Dropout, rate: float):
        b, t, _ = x.shape
        split = lambda y: y.reshape(*y.shape[:-1], self.heads, self.head_dim)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        p = split(self.position(pos_emb))  # [2T-1, H, D]
        content = jnp.einsum("bthd,bshd->bhts", q + self.pos_bias_u[...].astype(q.dtype), k)
        position = _rel_shift(jnp.einsum("bthd,phd->bhtp", q + self.pos_bias_v[...].astype(q.dtype), p))
        scores = (content + position) / math.sqrt(self.head_dim)
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
        probs = jnp.where(mask, probs, 0.0)
        probs = dropout(probs, rate)
        y = jnp.einsum("bhts,bshd->bthd", probs, v).reshape(b, t, -1)
        return self.out(y)


class ConformerBlock(nnx.Module):
    """Pre-norm block: x + attn(LN(x)), then x + FFN(LN(x)) with a SiLU FFN (LayerNorm eps 1e-12)."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        d = cfg.output_size
        self.cfg = cfg
        self.attn_norm = LayerNorm(d, eps=1e-12, rngs=rngs)
        self.attn = RelPositionAttention(d, cfg.attention_heads, key_bias=cfg.key_bias, rngs=rngs)
        self.ff_norm = LayerNorm(d, eps=1e-12, rngs=rngs)
        self.ff_in = Linear(d, cfg.linear_units, axes=("embed", "mlp"), rngs=rngs)
        self.ff_out = Linear(cfg.linear_units, d, axes=("mlp", "embed"), rngs=rngs)

    def __call__(self, x, pos_emb, mask, dropout: Dropout):
        cfg = self.cfg
        y = self.attn(self.attn_norm(x), pos_emb, mask, dropout, cfg.attention_dropout_rate)
        x = x + dropout(y, cfg.dropout_rate)
        y = dropout(jax.nn.silu(self.ff_in(self.ff_norm(x))), cfg.dropout_rate)
        x = x + dropout(self.ff_out(y), cfg.dropout_rate)
        return constrain(x, ("batch", "length", "act_embed"))


class LinearInput(nnx.Module):
    """Linear + LayerNorm(1e-5) + dropout, then x * sqrt(d) (ESPnet rel-pos scaling; positions go to attention)."""

    def __init__(self, in_dim: int, dim: int, *, rngs: nnx.Rngs):
        self.dim = dim
        self.linear = Linear(in_dim, dim, axes=("embed_in", "embed"), rngs=rngs)
        self.norm = LayerNorm(dim, eps=1e-5, rngs=rngs)

    def __call__(self, x, dropout: Dropout, rate: float, pos_rate: float):
        x = dropout(self.norm(self.linear(x)), rate)
        return dropout(x * math.sqrt(self.dim), pos_rate)


class PreLookahead(nnx.Module):
    """Residual conv pair: conv k=L+1 looking L frames ahead, leaky ReLU, causal conv k=3."""

    def __init__(self, dim: int, lookahead: int, *, rngs: nnx.Rngs):
        self.lookahead = lookahead
        self.conv1 = Conv1d(dim, dim, lookahead + 1, padding=(0, lookahead), axes=CONV_AXES, rngs=rngs)
        self.conv2 = Conv1d(dim, dim, 3, padding=(2, 0), axes=CONV_AXES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv2(jax.nn.leaky_relu(self.conv1(x), 0.01))
        return x + y


class Upsample(nnx.Module):
    """Nearest-neighbour repeat by ``stride``, then a causal conv of width 2*stride+1."""

    def __init__(self, dim: int, stride: int, *, rngs: nnx.Rngs):
        self.stride = stride
        self.conv = Conv1d(dim, dim, 2 * stride + 1, padding=(2 * stride, 0), axes=CONV_AXES, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(x, self.stride, axis=1))


class UpsampleConformerEncoder(nnx.Module):
    """Token embeddings [B, T, input_size] -> frames [B, stride*T, output_size]."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.output_size
        self.embed = LinearInput(cfg.input_size, d, rngs=rngs)
        self.pre_lookahead = PreLookahead(d, cfg.pre_lookahead_len, rngs=rngs)
        self.blocks = nnx.List([ConformerBlock(cfg, rngs=rngs) for _ in range(cfg.num_blocks)])
        self.upsample = Upsample(d, cfg.upsample_stride, rngs=rngs)
        self.up_embed = LinearInput(d, d, rngs=rngs)
        self.up_blocks = nnx.List([ConformerBlock(cfg, rngs=rngs) for _ in range(cfg.num_up_blocks)])
        self.final_norm = LayerNorm(d, eps=1e-5, rngs=rngs)

    def __call__(
        self,
        xs: jax.Array,
        lengths: jax.Array,
        *,
        streaming=False,
        lookahead_lengths: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Encodes ``xs`` [B, T, C]; returns (frames [B, stride*T, D], valid [B, stride*T] bool).

        ``lookahead_lengths`` (>= lengths): tokens past ``lengths`` that the pre-lookahead conv may read (the
        reference's ``context``: in streaming the next tokens are already known); positions past it read zeros.
        Only the first ``lengths`` tokens are encoded. ``streaming`` selects the static chunk masks.
        """
        cfg = self.cfg
        if xs.ndim != 3 or xs.shape[-1] != cfg.input_size:
            raise ValueError(f"encoder input must be [batch, time, {cfg.input_size}], got {xs.shape}")
        drop = Dropout(dropout_key)
        t = xs.shape[1]
        valid = jnp.arange(t)[None, :] < lengths[:, None]
        x = self.embed(xs, drop, cfg.dropout_rate, cfg.positional_dropout_rate)
        pos = drop(jnp.asarray(relative_position_encoding(t, cfg.output_size), x.dtype), cfg.positional_dropout_rate)
        if lookahead_lengths is not None:
            x = x * (jnp.arange(t)[None, :] < lookahead_lengths[:, None])[..., None].astype(x.dtype)
        elif cfg.zero_padding_before_lookahead:
            x = x * valid[..., None].astype(x.dtype)
        x = self.pre_lookahead(x)
        mask = attention_mask(valid, cfg.static_chunk_size, streaming)
        for block in self.blocks:
            x = block(x, pos, mask, drop)

        x = self.upsample(x)
        t_up = x.shape[1]
        valid = jnp.arange(t_up)[None, :] < (lengths * cfg.upsample_stride)[:, None]
        x = self.up_embed(x, drop, cfg.dropout_rate, cfg.positional_dropout_rate)
        pos = drop(
            jnp.asarray(relative_position_encoding(t_up, cfg.output_size), x.dtype),
            cfg.positional_dropout_rate,
        )
        mask = attention_mask(valid, cfg.static_chunk_size * cfg.upsample_stride, streaming)
        for block in self.up_blocks:
            x = block(x, pos, mask, drop)
        return self.final_norm(x), valid
