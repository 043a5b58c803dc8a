"""Semantic-code embedding: GPT-SoVITS's residual VQ codebook (decode = table lookup summed over quantizers,
encode = nearest code) and GPT-SoVITS2's direct S3-token embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sovits2_jax.nn.layers import param


class ResidualCodebook(nnx.Module):
    """``n_q`` Euclidean codebooks [bins, dim] (torch's EMA buffers are carried by the converter, not here)."""

    def __init__(self, dim: int, bins: int, n_q: int = 1, *, rngs: nnx.Rngs):
        init = nnx.initializers.variance_scaling(1.0, "fan_in", "uniform")  # kaiming-uniform like uniform_init
        self.layers = nnx.List([_Codebook(dim, bins, init, rngs) for _ in range(n_q)])

    def decode(self, codes: jax.Array) -> jax.Array:
        """codes [n_q, B, T] int -> [B, T, dim]."""
        if codes.ndim != 3 or codes.shape[0] > len(self.layers):
            raise ValueError(f"codes must be [n_q<={len(self.layers)}, batch, frames], got {codes.shape}")
        out = 0.0
        for i in range(codes.shape[0]):
            out = out + jnp.take(self.layers[i].embed[...], codes[i], axis=0)
        return out

    def encode(self, x: jax.Array) -> jax.Array:
        """x [B, T, dim] -> codes [n_q, B, T] (greedy residual nearest neighbour)."""
        codes = []
        residual = x
        for layer in self.layers:
            e = layer.embed[...]
            d = jnp.sum(residual**2, -1, keepdims=True) - 2 * residual @ e.T + jnp.sum(e**2, -1)
            idx = jnp.argmin(d, axis=-1)
            codes.append(idx)
            residual = residual - jnp.take(e, idx, axis=0)
        return jnp.stack(codes)


class _Codebook(nnx.Module):
    def __init__(self, dim: int, bins: int, init, rngs: nnx.Rngs):
        self.embed = param(rngs, init, (bins, dim), ("codebook", "embed"))


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    """[B, T, C] -> [B, T * factor, C] by repetition (F.interpolate mode='nearest', integer factor)."""
    return x if factor == 1 else jnp.repeat(x, factor, axis=1)


def interpolate_linear(x: jax.Array, size: int) -> jax.Array:
    """[B, T, C] -> [B, size, C] as torch ``F.interpolate(mode='linear', align_corners=False)`` (no antialias)."""
    t = x.shape[1]
    src = jnp.maximum((jnp.arange(size, dtype=jnp.float32) + 0.5) * (t / size) - 0.5, 0.0)
    i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), t - 1)
    i1 = jnp.minimum(i0 + 1, t - 1)
    w = (src - i0)[None, :, None].astype(x.dtype)
    return jnp.take(x, i0, axis=1) * (1 - w) + jnp.take(x, i1, axis=1) * w


def interpolate_nearest(x: jax.Array, size: int) -> jax.Array:
    """[B, T, C] -> [B, size, C] as torch ``F.interpolate(mode='nearest')`` (source index floor(i * T / size))."""
    t = x.shape[1]
    idx = np.minimum(np.floor(np.arange(size) * (t / size)).astype(np.int64), t - 1)
    return jnp.take(x, jnp.asarray(idx), axis=1)
