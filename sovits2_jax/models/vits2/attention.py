"""VITS transformer pieces (GPT-SoVITS ``attentions.py``): multi-head attention over 1x1 convolutions with
windowed relative-position keys/values (or RoPE), the conv FFN, and the post-norm encoder stack.

Masked scores are filled with -1e4 (not -inf) as in the reference, so fully padded query rows stay finite.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.nn.layers import Conv1d, LayerNorm, param
from sovits2_jax.nn.rope import apply_rope, rope_cos_sin
from sovits2_jax.nn.weight_norm import weight_norm
from sovits2_jax.parallel.sharding import constrain

MASK_FILL = -1e4

xavier_uniform = nnx.initializers.xavier_uniform(in_axis=(0, 1), out_axis=2)


def conv1x1(cin: int, cout: int, *, rngs: nnx.Rngs, kernel_init=None, axes=("conv_in", "conv_out")) -> Conv1d:
    return Conv1d(cin, cout, 1, kernel_init=kernel_init, axes=axes, rngs=rngs)


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity without a key (inference) or at rate 0."""
    if key is None or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def split_key(key: jax.Array | None, n: int) -> list:
    return [None] * n if key is None else list(jax.random.split(key, n))


def _relative_index(length: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """[T, T] table index j - i + window, and whether |j - i| <= window."""
    rel = np.arange(length)[None, :] - np.arange(length)[:, None]
    return np.clip(rel + window, 0, 2 * window), np.abs(rel) <= window


class MultiHeadAttention(nnx.Module):
    """Attention of x [B, T, C] over c [B, S, C]; ``window_size`` adds relative-position embeddings
    shared by all heads (self-attention only); ``rope_theta`` rotates q and k instead."""

    def __init__(
        self,
        channels: int,
        out_channels: int,
        n_heads: int,
        *,
        window_size: int | None = None,
        rope_theta: float | None = None,
        rngs: nnx.Rngs,
    ):
        if channels % n_heads:
            raise ValueError(f"n_heads {n_heads} must divide channels {channels}")
        self.n_heads, self.head_dim = n_heads, channels // n_heads
        self.window_size, self.rope_theta = window_size, rope_theta
        self.conv_q = conv1x1(channels, channels, kernel_init=xavier_uniform, rngs=rngs)
        self.conv_k = conv1x1(channels, channels, kernel_init=xavier_uniform, rngs=rngs)
        self.conv_v = conv1x1(channels, channels, kernel_init=xavier_uniform, rngs=rngs)
        self.conv_o = conv1x1(channels, out_channels, rngs=rngs)
        if window_size is not None:
            init = nnx.initializers.normal(self.head_dim**-0.5)
            shape = (1, 2 * window_size + 1, self.head_dim)
            self.emb_rel_k = param(rngs, init, shape, (None, "relpos", "head_dim"))
            self.emb_rel_v = param(rngs, init, shape, (None, "relpos", "head_dim"))

    def __call__(
        self, x: jax.Array, c: jax.Array, mask: jax.Array | None = None, *, rate: float = 0.0, key=None
    ) -> jax.Array:
        """``mask`` boolean, broadcastable to [B, 1, T, S] (True = attend); ``key`` drops attention weights."""
        b, t, _ = x.shape
        s = c.shape[1]
        q = self.conv_q(x).reshape(b, t, self.n_heads, self.head_dim)
        k = self.conv_k(c).reshape(b, s, self.n_heads, self.head_dim)
        v = self.conv_v(c).reshape(b, s, self.n_heads, self.head_dim)
        if self.rope_theta is not None:
            cos, sin = rope_cos_sin(jnp.arange(t)[None], self.head_dim, self.rope_theta)
            q = apply_rope(q, cos, sin)
            cos, sin = rope_cos_sin(jnp.arange(s)[None], self.head_dim, self.rope_theta)
            k = apply_rope(k, cos, sin)
        q = q / math.sqrt(self.head_dim)
        scores = jnp.einsum("bthd,bshd->bhts", q, k)
        if self.window_size is not None:
            if s != t:
                raise ValueError("relative attention is only available for self-attention")
            idx, valid = _relative_index(t, self.window_size)
            rel = jnp.einsum("bthd,md->bhtm", q, self.emb_rel_k[0].astype(q.dtype))
            local = jnp.take_along_axis(rel, jnp.broadcast_to(idx, (b, self.n_heads, t, t)), axis=-1)
            scores = scores + jnp.where(valid, local, 0.0)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.asarray(MASK_FILL, scores.dtype))
        p = dropout(jax.nn.softmax(scores, axis=-1), rate, key)
        out = jnp.einsum("bhts,bshd->bthd", p, v)
        if self.window_size is not None:
            w = self.window_size
            p_pad = jnp.pad(p, ((0, 0), (0, 0), (0, 0), (w, w)))
            diag = np.arange(t)[:, None] + np.arange(2 * w + 1)[None, :]  # column of key i + m - w, shifted by w
            rel_p = jnp.take_along_axis(p_pad, jnp.broadcast_to(diag, (b, self.n_heads, t, 2 * w + 1)), axis=-1)
            out = out + jnp.einsum("bhtm,md->bthd", rel_p, self.emb_rel_v[0].astype(p.dtype))
        return self.conv_o(out.reshape(b, t, self.n_heads * self.head_dim))


class FFN(nnx.Module):
    """conv(k) -> relu -> conv(k), masked, 'same' padding ((k-1)//2 left, k//2 right)."""

    def __init__(self, in_channels: int, out_channels: int, filter_channels: int, kernel_size: int, *, rngs):
        pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = Conv1d(in_channels, filter_channels, kernel_size, padding=pad, axes=("embed", "mlp"), rngs=rngs)
        self.conv_2 = Conv1d(filter_channels, out_channels, kernel_size, padding=pad, axes=("mlp", "embed"), rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array, *, rate: float = 0.0, key=None) -> jax.Array:
        x = dropout(jax.nn.relu(self.conv_1(x * mask)), rate, key)
        return self.conv_2(x * mask) * mask


def attention_mask(q_mask: jax.Array, kv_mask: jax.Array | None = None) -> jax.Array:
    """[B, 1, T, S] boolean from float/bool masks q_mask [B, T, 1] and kv_mask [B, S, 1]."""
    kv_mask = q_mask if kv_mask is None else kv_mask
    return (q_mask[:, None, :, :] > 0) & (kv_mask[:, None, None, :, 0] > 0)


class Encoder(nnx.Module):
    """Post-norm transformer encoder: x = LN(x + attn(x)); x = LN(x + FFN(x)).

    With ``gin_channels`` (the transformer coupling flow) each layer first gates x with the speaker vector:
    x = tanh(a + g_a) * sigmoid(b + g_b) where [a, b] = cond_pre(x) and g comes from a weight-normed cond_layer.
    """

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int = 1,
        *,
        window_size: int | None = 4,
        rope_theta: float | None = None,
        gin_channels: int = 0,
        p_dropout: float = 0.0,
        rngs: nnx.Rngs,
    ):
        self.n_layers, self.hidden_channels, self.p_dropout = n_layers, hidden_channels, p_dropout
        self.attn_layers = nnx.List(
            [
                MultiHeadAttention(
                    hidden_channels,
                    hidden_channels,
                    n_heads,
                    window_size=window_size,
                    rope_theta=rope_theta,
                    rngs=rngs,
                )
                for _ in range(n_layers)
            ]
        )
        self.norm_layers_1 = nnx.List([LayerNorm(hidden_channels, rngs=rngs) for _ in range(n_layers)])
        self.ffn_layers = nnx.List(
            [FFN(hidden_channels, hidden_channels, filter_channels, kernel_size, rngs=rngs) for _ in range(n_layers)]
        )
        self.norm_layers_2 = nnx.List([LayerNorm(hidden_channels, rngs=rngs) for _ in range(n_layers)])
        self.gin_channels = gin_channels
        if gin_channels:
            self.cond_pre = conv1x1(hidden_channels, 2 * hidden_channels, rngs=rngs)
            self.cond_layer = weight_norm(conv1x1(gin_channels, 2 * hidden_channels * n_layers, rngs=rngs))

    def __call__(
        self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None, *, dropout_key: jax.Array | None = None
    ) -> jax.Array:
        """x [B, T, C], mask [B, T, 1] float; g [B, 1, gin] when conditioned; ``dropout_key`` = training."""
        attn_mask = attention_mask(mask)
        x = x * mask
        if g is not None:
            g = self.cond_layer(g)
        h = self.hidden_channels
        r = self.p_dropout
        keys = split_key(dropout_key, 4 * self.n_layers)
        for i in range(self.n_layers):
            k_attn, k_out, k_ffn, k_ffn_out = keys[4 * i : 4 * i + 4]
            if g is not None:
                x = self.cond_pre(x)
                g_l = g[..., 2 * h * i : 2 * h * (i + 1)]
                x = gated_tanh(x, g_l, h)
            y = self.attn_layers[i](x, x, attn_mask, rate=r, key=k_attn)
            x = self.norm_layers_1[i](x + dropout(y, r, k_out))
            y = self.ffn_layers[i](x, mask, rate=r, key=k_ffn)
            x = self.norm_layers_2[i](x + dropout(y, r, k_ffn_out))
            x = constrain(x, ("batch", "length", "embed"))
        return x * mask


def gated_tanh(a: jax.Array, b: jax.Array, n: int) -> jax.Array:
    """WaveNet gate: tanh(first n channels of a + b) * sigmoid(the rest)."""
    s = a + b
    return jnp.tanh(s[..., :n]) * jax.nn.sigmoid(s[..., n:])
