"""Reference (mel-style) encoder (``modules.MelStyleEncoder``): spectral MLP (Mish), two gated conv blocks,
one multi-head self-attention with residual, projection to ``gin`` channels and a masked mean over time.
Its output ``ge`` is the speaker/style vector that conditions MRTE, the flow, the posterior and the vocoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.vits2.attention import dropout, split_key
from sovits2_jax.nn.layers import Conv1d, Linear


def mish(x: jax.Array) -> jax.Array:
    return x * jnp.tanh(jax.nn.softplus(x))


class GLUConv(nnx.Module):
    """x + a * sigmoid(b), [a, b] = conv_k(x) (same padding)."""

    def __init__(self, channels: int, kernel_size: int, *, rngs: nnx.Rngs):
        if kernel_size % 2 != 1:
            raise ValueError(f"GLUConv kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.conv = Conv1d(channels, 2 * channels, kernel_size, padding=kernel_size // 2, rngs=rngs)

    def __call__(self, x: jax.Array, rate: float = 0.0, key=None) -> jax.Array:
        y = self.conv(x)
        return x + dropout(y[..., : self.channels] * jax.nn.sigmoid(y[..., self.channels :]), rate, key)


class StyleAttention(nnx.Module):
    """Self-attention with temperature sqrt(d_model) (not sqrt(d_head)), key-padding mask, residual."""

    def __init__(self, n_heads: int, d_model: int, *, rngs: nnx.Rngs):
        self.n_heads, self.d_model = n_heads, d_model
        self.w_qs = Linear(d_model, d_model, rngs=rngs)
        self.w_ks = Linear(d_model, d_model, rngs=rngs)
        self.w_vs = Linear(d_model, d_model, rngs=rngs)
        self.fc = Linear(d_model, d_model, rngs=rngs)

    def __call__(self, x: jax.Array, valid: jax.Array, rate: float = 0.0, key=None) -> jax.Array:
        """x [B, T, D], valid [B, T] bool (key padding)."""
        k_p, k_out = split_key(key, 2)
        b, t, d = x.shape
        hd = d // self.n_heads
        q = self.w_qs(x).reshape(b, t, self.n_heads, hd)
        k = self.w_ks(x).reshape(b, t, self.n_heads, hd)
        v = self.w_vs(x).reshape(b, t, self.n_heads, hd)
        scores = jnp.einsum("bthd,bshd->bhts", q, k) / jnp.sqrt(jnp.asarray(d, x.dtype))
        # the reference fills -inf; a finite fill keeps gradients clean and only changes fully padded rows
        scores = jnp.where(valid[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        p = dropout(jax.nn.softmax(scores, axis=-1), rate, k_p)
        out = jnp.einsum("bhts,bshd->bthd", p, v).reshape(b, t, d)
        return dropout(self.fc(out), rate, k_out) + x


class MelStyleEncoder(nnx.Module):
    def __init__(
        self,
        in_channels: int,
        hidden: int = 128,
        out_channels: int = 512,
        kernel_size: int = 5,
        n_heads: int = 2,
        dropout_rate: float = 0.1,
        *,
        rngs: nnx.Rngs,
    ):
        self.in_channels, self.dropout_rate = in_channels, dropout_rate
        self.spectral = nnx.List([Linear(in_channels, hidden, rngs=rngs), Linear(hidden, hidden, rngs=rngs)])
        self.temporal = nnx.List([GLUConv(hidden, kernel_size, rngs=rngs), GLUConv(hidden, kernel_size, rngs=rngs)])
        self.slf_attn = StyleAttention(n_heads, hidden, rngs=rngs)
        self.fc = Linear(hidden, out_channels, rngs=rngs)

    def __call__(self, spec: jax.Array, mask: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        """spec [B, T, >= in_channels] (extra bins are dropped), mask [B, T, 1] -> ge [B, 1, out].
        ``dropout_key`` applies the reference's dropout (0.1) as in training."""
        r = self.dropout_rate
        keys = split_key(dropout_key, 5)
        if spec.shape[-1] < self.in_channels:
            raise ValueError(f"reference spectrogram has {spec.shape[-1]} bins, the encoder needs {self.in_channels}")
        x = spec[..., : self.in_channels] * mask
        valid = mask[..., 0] > 0
        for lin, key in zip(self.spectral, keys[:2]):
            x = dropout(mish(lin(x)), r, key)
        for blk, key in zip(self.temporal, keys[2:4]):
            x = blk(x, r, key)
        x = jnp.where(valid[..., None], x, 0.0)
        x = self.slf_attn(x, valid, r, keys[4])
        x = self.fc(x)
        x = jnp.where(valid[..., None], x, 0.0)
        # an empty reference (a batch's padding row) gives ge = 0 instead of 0 / 0, which would poison the batch
        n = jnp.maximum(jnp.sum(valid, axis=1, keepdims=True), 1).astype(x.dtype)
        return (jnp.sum(x, axis=1) / n)[:, None, :]


def fuse_references(ges: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Multi-reference fusion: the (weighted) mean of style vectors ges [R, B, 1, C] over references."""
    if weights is None:
        return jnp.mean(ges, axis=0)
    w = jnp.asarray(weights, ges.dtype).reshape(-1, *([1] * (ges.ndim - 1)))
    return jnp.sum(ges * w, axis=0) / jnp.sum(w)
