"""Posterior encoder q(z | linear spectrogram): 1x1 conv -> WaveNet (speaker-conditioned) -> mean, log-std."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.vits2.attention import conv1x1
from sovits2_jax.models.vits2.wavenet import WaveNet


class PosteriorEncoder(nnx.Module):
    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int,
        n_layers: int, *, gin_channels: int = 0, rngs: nnx.Rngs,
    ):  # fmt: skip
        self.out_channels = out_channels
        self.pre = conv1x1(in_channels, hidden_channels, rngs=rngs)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels=gin_channels, rngs=rngs)
        self.proj = conv1x1(hidden_channels, 2 * out_channels, rngs=rngs)

    def __call__(
        self, spec: jax.Array, mask: jax.Array, g: jax.Array | None, key: jax.Array | None, eps: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """spec [B, T, F] -> (z, m, logs) each [B, T, out]; z = m + eps * exp(logs) with eps ~ N(0, 1) from ``key``
        (or given; 0 without either)."""
        if g is not None:
            g = jax.lax.stop_gradient(g)
        x = self.pre(spec) * mask
        x = self.enc(x, mask, g)
        stats = self.proj(x) * mask
        m, logs = stats[..., : self.out_channels], stats[..., self.out_channels :]
        if eps is None:
            eps = jnp.zeros_like(m) if key is None else jax.random.normal(key, m.shape, m.dtype)
        z = (m + eps * jnp.exp(logs)) * mask
        return z, m, logs
