"""Non-causal WaveNet stack (``modules.WN``): dilated gated convolutions with residual and skip outputs,
optionally conditioned on the speaker vector; every conv is weight-normed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sovits2_jax.models.vits2.attention import conv1x1, gated_tanh
from sovits2_jax.nn.layers import Conv1d
from sovits2_jax.nn.weight_norm import weight_norm


class WaveNet(nnx.Module):
    def __init__(
        self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int, *, gin_channels: int = 0,
        rngs: nnx.Rngs,
    ):  # fmt: skip
        if kernel_size % 2 != 1:
            raise ValueError(f"WaveNet kernel_size must be odd, got {kernel_size}")
        self.hidden_channels, self.n_layers = hidden_channels, n_layers
        h = hidden_channels
        if gin_channels:
            self.cond_layer = weight_norm(conv1x1(gin_channels, 2 * h * n_layers, rngs=rngs))
        else:
            self.cond_layer = None
        in_layers, res_skip = [], []
        for i in range(n_layers):
            d = dilation_rate**i
            pad = (kernel_size * d - d) // 2
            in_layers.append(weight_norm(Conv1d(h, 2 * h, kernel_size, dilation=d, padding=pad, rngs=rngs)))
            out = 2 * h if i < n_layers - 1 else h  # the last layer only feeds the skip sum
            res_skip.append(weight_norm(conv1x1(h, out, rngs=rngs)))
        self.in_layers = nnx.List(in_layers)
        self.res_skip_layers = nnx.List(res_skip)

    def __call__(self, x: jax.Array, mask: jax.Array, g: jax.Array | None = None) -> jax.Array:
        """x [B, T, H], mask [B, T, 1], g [B, 1, gin] -> skip sum [B, T, H] (masked)."""
        h = self.hidden_channels
        out = jnp.zeros_like(x)
        if g is not None:
            g = self.cond_layer(g)
        for i in range(self.n_layers):
            x_in = self.in_layers[i](x)
            g_l = g[..., 2 * h * i : 2 * h * (i + 1)] if g is not None else 0.0
            acts = gated_tanh(x_in, g_l, h)
            rs = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                x = (x + rs[..., :h]) * mask
                out = out + rs[..., h:]
            else:
                out = out + rs
        return out * mask
