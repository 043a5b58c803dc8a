"""Semantic-code embedding: GPT-SoVITS's residual VQ codebook (decode = table lookup summed over quantizers,
encode = nearest code) and GPT-SoVITS2's direct S3-token embedding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
